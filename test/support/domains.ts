import { chooseBackend } from '@xen-vchan/native';

/** The backend this run tests: the same suite runs on 'sim' and, under the harness, on 'xen'. */
export const backend = chooseBackend();

/**
 * Domain ids the tests play. On the simulation each process claims one; on Xen the harness runs
 * everything in dom0, which may grant to and bind with itself, so both are 0. OTHER is a domain
 * no process acts as: grants and ports offered to it must stay out of everyone else's reach.
 */
export const SELF = backend === 'sim' ? 1 : 0;
export const PEER = backend === 'sim' ? 2 : 0;
export const OTHER = 7;

/** How long to allow for something that should be prompt; TCG emulation is slow. */
export const PROMPT_MS = backend === 'sim' ? 100 : 2000;
/** How long to let events settle before asserting that no more arrive. */
export const SETTLE_MS = backend === 'sim' ? 150 : 1500;

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
