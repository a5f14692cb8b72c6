export {
  XenVchanError,
  type XenVchanErrorCode,
  abortError,
  checkDomainId,
  errorCode,
  explainError,
  explained,
  invalidArgument,
} from './errors.js';
export { DOMID_FIRST_RESERVED, DOMID_SELF, MAX_GUEST_DOMID, isGuestDomainId } from './domains.js';
export { loadAddon } from './addon.js';
export { lazyModule } from './lazy.js';
export { FdFinalizer } from './fds.js';
export { GrantStatus, PAGE_SIZE, PageSets, unmapNotifyAction, type MappedPages, type PageCalls } from './pages.js';
export { chooseBackend, XEN_DEVICE_DIRECTORY, type BackendName, type BackendChoice } from './backend.js';
export {
  XsType,
  XS_HEADER_BYTES,
  XENSTORE_PAYLOAD_MAX,
  XENSTORE_ABS_PATH_MAX,
  encodeXsMessage,
  XsMessageReader,
  XsOversizedMessage,
  xsStrings,
  splitXsStrings,
  type XsMessage,
  type XsTypeName,
} from './xenstore/wire.js';
export {
  formatXsPermission,
  parseXsPermission,
  isXsAccess,
  MAX_PERMISSION_DOMID,
  type XsAccess,
  type XsPermission,
} from './xenstore/permissions.js';

/** Blocks this thread for `milliseconds`, for the rare waits inside synchronous device calls. */
export function sleepSync(milliseconds: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, milliseconds);
}
