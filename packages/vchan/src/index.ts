export { XenVchanError, type XenVchanErrorCode, errorCode } from '@xen-vchan/native';
export {
  Vchan,
  type VchanStats,
  type VchanOptions,
  type VchanDeadlines,
  type WaitOptions,
  type VchanView,
  type ViewOptions,
  type ReserveOptions,
} from './stream.js';
export { createServer, VchanServer, type ServerOptions, type ServerEvents } from './server.js';
export { connect, type ConnectOptions } from './connect.js';
export type { BackendOptions } from './options.js';
export { conventionalPath } from './keys.js';
export { presencePath } from './presence.js';
export type { PeerDomainOptions } from './peer-domain.js';
export { pipeFdToVchan, pipeVchanToFd, fdKind, type FdKind, type FdPipeOptions, type FdPipeResult } from './fd-pipe.js';
export { MessageChannel, type MessageChannelOptions, type MessageSendOptions } from './framing.js';
export {
  RpcPeer,
  RemoteError,
  jsonCodec,
  structuredCloneCodec,
  type Codec,
  type Handler,
  type RpcOptions,
  type CallOptions,
} from './rpc.js';
