export { XenVchanError, abortError, checkDomainId, errorCode, explainError, explained, invalidArgument } from './errors.js';
export { DOMID_FIRST_RESERVED, MAX_GUEST_DOMID, isGuestDomainId } from './domains.js';
export { loadAddon } from './addon.js';
export { FdFinalizer } from './fds.js';
export { chooseBackend, type BackendName, type BackendChoice } from './backend.js';

/** Size of a Xen page; grants and mappings are counted in these. */
export const PAGE_SIZE = 4096;

/** Blocks this thread for `milliseconds`, for the rare waits inside synchronous device calls. */
export function sleepSync(milliseconds: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, milliseconds);
}
