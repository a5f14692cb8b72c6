import { XenVchanError } from '@xen-vchan/native';

export { abortError } from '@xen-vchan/native';

/** The peer broke the protocol (it controls the shared page); the channel cannot go on. */
export function protocolError(what: string, cause?: unknown): XenVchanError {
  return new XenVchanError(
    'EPROTO',
    `vchan protocol violation by the peer: ${what}. The channel was closed; nothing was read or written outside it.`,
    cause === undefined ? undefined : { cause },
  );
}

/** Largest delay setTimeout honours; a longer one would fire after 1 ms. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Checks a deadline option in ms: a number from 0 (no deadline) to about 24.8 days, the
 * most a Node timer can wait. Returns it, or `fallback` when not given.
 */
export function deadlineOption(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > MAX_TIMER_MS) {
    throw new XenVchanError(
      'ERR_INVALID_ARG_VALUE',
      `The option ${name} is a time in ms, a number from 0 (no deadline) to ${MAX_TIMER_MS}; got ${String(value)}.`,
    );
  }
  return value;
}
