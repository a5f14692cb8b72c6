export { Session, type SessionEvents, type SessionStats } from './session.js';
export { MuxStream } from './stream.js';
export { openSession, type OpenSessionOptions, type SidedDuplex } from './open.js';
export type { SessionOptions } from './options.js';
export {
  encodeHeader,
  decodeHeader,
  Flag,
  FrameType,
  GoAwayCode,
  HEADER_SIZE,
  INITIAL_WINDOW,
  PROTOCOL_VERSION,
  type Header,
} from './frame.js';
export { XenVchanError, type XenVchanErrorCode, errorCode } from '@xen-vchan/native';
