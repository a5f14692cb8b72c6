export { SimConnection, destroySimDomain } from './client.js';
export { simDirectory, simDomid, simFiles, type SimFiles } from './paths.js';
export { PortTable, WakeupSender, signalPort, MAX_PORTS } from './port-table.js';
export type {
  SimStatus,
  SimDomainDestroyed,
  SimDomainState,
  PageLocation,
  Operation as SimOperation,
  Requests as SimRequests,
  Replies as SimReplies,
  HandleOperation as SimHandleOperation,
  HandleRequest as SimHandleRequest,
} from './protocol.js';
export { addon as simAddon } from './addon.js';
export { mapPages, unmapPages } from './memory.js';
export { EventRouter } from './events.js';
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
