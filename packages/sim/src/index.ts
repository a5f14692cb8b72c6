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
