/**
 * What a measurement endpoint accepts, checked in one place before anything acts on it.
 *
 * `vchan bench --serve` takes its requests from the bench in another domain, over a control vchan,
 * and that domain is not to be trusted: a number from it sizes buffers and loops, and a XenStore
 * path from it would be where a dom0 server publishes and then recursively removes (any subtree,
 * /local/domain/7 included). So every field of every request is checked here, types, ranges and
 * enums, unknown fields included, and anything off is refused with EPROTO; the request never gets
 * further, and the serving process stays up for the next one. The forked workers of a local run
 * (worker.ts) go through the same checks: their parent is trusted, but one set of rules is easier
 * to keep right than two.
 */
import { MAX_GUEST_DOMID, XenVchanError } from '@xen-vchan/native';
import { jsonCodec, type Codec } from '@xen-vchan/vchan';
import type { Address, ConnectRequest, ListenRequest, Role, StreamTransport } from './endpoint.js';

/** Largest write: the limit `--chunks` has. The pattern is sized by it (PERIOD plus this). */
export const MAX_CHUNK = 64 * 2 ** 20;
/** readMin/writeMin take 0 .. 1 MiB (chooseOrders: the largest ring is order 20, MAX_ORDER). */
export const MAX_RING = 2 ** 20;
/** `--seconds` goes up to 600 and an RPC measurement takes twice that. */
export const MAX_SECONDS = 1200;
/** A round trip message: the bench uses 64 bytes; a ping allocates one of these per round trip. */
export const MAX_PING = 2 ** 20;
/** RPC calls in flight at once: one async lane each (the bench uses 64). */
export const MAX_IN_FLIGHT = 1024;
/** Lanes of one measurement (streams plus busy ones): each holds a stream window or a socket; the bench uses 64 at most. */
export const MAX_LANES = 128;
/** Measurements listening at once: the bench has one at a time; each holds pages and a port. */
export const MAX_LISTENING = 8;
/** Control messages are a few hundred bytes; no reason to buffer MessageChannel's default 64 MiB. */
export const MAX_CONTROL_MESSAGE = 64 * 1024;

/** A measurement's key: it names a Unix socket file, so no dots and no slashes. */
const KEY = /^[A-Za-z0-9_-]{1,40}$/;
/**
 * The bench's vchan names: a listener publishes `bench-<pid>-<n>` under its own
 * /local/domain/<self>/data/vchan/<client>/, so that is all a connector looks up and all a request
 * may hint at. No dots and no slashes: nothing that leads out of that area.
 */
export const VCHAN_NAME = /^bench-[A-Za-z0-9_-]{1,40}$/;

const TRANSPORTS = ['vchan', 'unix', 'tcp'] as const;
const BACKENDS = ['auto', 'xen', 'sim'] as const;
const OPS = ['hello', 'listen', 'connect', 'result', 'close'] as const;
const ROLES = ['send', 'receive', 'receive-views', 'ping', 'pong', 'rpc-serve', 'rpc-call'] as const;

/** The other domain a `--serve` endpoint serves, and how; its requests cannot change any of it. */
export interface Serving {
  client: number;
  backend: 'auto' | 'xen' | 'sim';
  simDomid?: number;
}

export type CheckedRequest =
  | { op: 'hello' }
  | { op: 'listen'; request: ListenRequest }
  | { op: 'connect'; request: ConnectRequest }
  | { op: 'result'; key: string }
  | { op: 'close'; key: string };

export function protocolError(message: string): XenVchanError {
  return new XenVchanError(
    'EPROTO',
    `The request was refused: ${message}. Run the same version of vchan bench at both ends (only \`vchan bench --domain\` speaks this protocol).`,
  );
}

/** A short quote of what came, for a message; never throws (deeply nested JSON would, as JSON again). */
function show(value: unknown): string {
  if (typeof value === 'number') return String(value); // NaN and -0 too; JSON would say null and 0
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Array.isArray(value) ? 'a list' : `a${typeof value === 'object' ? 'n' : ''} ${typeof value}`;
  }
  return text.length > 60 ? `${text.slice(0, 60)}...` : text;
}

type Fields = Record<string, unknown>;

/** A plain object with no fields but `allowed` (own fields only; JSON gives nothing else). */
function object(value: unknown, what: string, allowed: readonly string[]): Fields {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw protocolError(`${what} must be an object, got ${show(value)}`);
  for (const field of Object.keys(value)) {
    if (!allowed.includes(field)) throw protocolError(`${what} has an unknown field ${show(field)}`);
  }
  return value as Fields;
}

function integer(value: unknown, what: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw protocolError(`${what} must be a whole number from ${min} to ${max}, got ${show(value)}`);
  }
  return value;
}

function seconds(value: unknown, what: string): number {
  // Not 0: a sender's loop and a caller's deadline need some time to run in.
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > MAX_SECONDS) {
    throw protocolError(`${what} must be a number of seconds above 0 and at most ${MAX_SECONDS}, got ${show(value)}`);
  }
  return value;
}

function oneOf<T extends string>(value: unknown, what: string, choices: readonly T[]): T {
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value)) {
    throw protocolError(`${what} must be one of ${choices.join(', ')}, got ${show(value)}`);
  }
  return value as T;
}

function matching(value: unknown, what: string, pattern: RegExp): string {
  if (typeof value !== 'string' || !pattern.test(value)) throw protocolError(`${what} must match ${pattern}, got ${show(value)}`);
  return value;
}

const domid = (value: unknown, what: string) => integer(value, what, 0, MAX_GUEST_DOMID);

function role(value: unknown, maxChunk: number | undefined): Role {
  const kind = oneOf(object(value, 'role', ['role', 'chunk', 'seconds', 'size', 'inFlight']).role, 'role.role', ROLES);
  switch (kind) {
    case 'send': {
      const fields = object(value, 'role', ['role', 'chunk', 'seconds']);
      // The pattern is sized by maxChunk: a larger write would be cut short.
      const chunk = integer(fields.chunk, 'role.chunk', 1, maxChunk ?? MAX_CHUNK);
      return { role: kind, chunk, seconds: seconds(fields.seconds, 'role.seconds') };
    }
    case 'ping': {
      const fields = object(value, 'role', ['role', 'size', 'seconds']);
      return { role: kind, size: integer(fields.size, 'role.size', 1, MAX_PING), seconds: seconds(fields.seconds, 'role.seconds') };
    }
    case 'rpc-call': {
      const fields = object(value, 'role', ['role', 'seconds', 'inFlight']);
      return {
        role: kind,
        seconds: seconds(fields.seconds, 'role.seconds'),
        inFlight: integer(fields.inFlight, 'role.inFlight', 1, MAX_IN_FLIGHT),
      };
    }
    default:
      object(value, 'role', ['role']);
      return { role: kind };
  }
}

/** The fields listen and connect requests share; common() checks them. */
const COMMON_FIELDS = ['transport', 'key', 'role', 'backend', 'simDomid', 'maxChunk', 'seed', 'streams', 'busy'];

/** The fields listen and connect share. */
function common(fields: Fields, serving: Serving | undefined) {
  const transport = oneOf<StreamTransport>(fields.transport, 'transport', TRANSPORTS);
  // Another domain gets vchans to itself, and nothing on this machine's sockets.
  if (serving && transport !== 'vchan')
    throw protocolError(`only vchan measurements are served to domain ${serving.client}, not ${show(transport)}`);
  const maxChunk = fields.maxChunk === undefined ? undefined : integer(fields.maxChunk, 'maxChunk', 1, MAX_CHUNK);
  const backend = fields.backend === undefined ? undefined : oneOf(fields.backend, 'backend', BACKENDS);
  const checkedRole = role(fields.role, maxChunk);
  const streams = fields.streams === undefined ? undefined : integer(fields.streams, 'streams', 1, MAX_LANES);
  const busy = fields.busy === undefined ? undefined : integer(fields.busy, 'busy', 0, MAX_LANES);
  if (streams !== undefined && checkedRole.role !== 'send' && checkedRole.role !== 'receive')
    throw protocolError(`streams is for the send and receive roles, not ${show(checkedRole.role)}`);
  if (busy !== undefined && checkedRole.role !== 'ping' && checkedRole.role !== 'pong')
    throw protocolError(`busy is for the ping and pong roles, not ${show(checkedRole.role)}`);
  if ((streams ?? 1) + (busy ?? 0) > MAX_LANES) throw protocolError(`at most ${MAX_LANES} lanes (streams plus busy) at once`);
  return {
    transport,
    key: matching(fields.key, 'key', KEY),
    role: checkedRole,
    ...(streams !== undefined ? { streams } : {}),
    ...(busy !== undefined ? { busy } : {}),
    ...(maxChunk !== undefined ? { maxChunk } : {}),
    ...(fields.seed !== undefined ? { seed: integer(fields.seed, 'seed', 0, 0xffffffff) } : {}),
    // Checked either way, but a served endpoint uses its own backend whatever the client runs on.
    ...(backend !== undefined && !serving ? { backend } : {}),
  };
}

function checkListen(args: unknown, serving: Serving | undefined): ListenRequest {
  const fields = object(args, 'the listen request', [...COMMON_FIELDS, 'ring', 'peerDomid', 'name', 'path']);
  // The listener publishes under its own vchan area for the client, at a name it picks itself
  // (endpoint.ts): never where a request says, which could be any XenStore subtree.
  if (fields.path !== undefined) {
    throw protocolError(
      `a measurement vchan is published under the server's own /local/domain/<server>/data/vchan/<client>/, at a name the server chooses; a request may not name its XenStore path (got path ${show(fields.path)})`,
    );
  }
  // A name is only a hint, and then ignored (endpoint.ts); one that could leave the area is refused.
  if (fields.name !== undefined) matching(fields.name, 'name', VCHAN_NAME);
  const request: ListenRequest = {
    ...common(fields, serving),
    ...(fields.ring !== undefined ? { ring: integer(fields.ring, 'ring', 0, MAX_RING) } : {}),
  };
  if (fields.peerDomid !== undefined) {
    const peer = domid(fields.peerDomid, 'peerDomid');
    if (serving && peer !== serving.client)
      throw protocolError(`vchans are served to domain ${serving.client} only, not to domain ${peer}`);
    request.peerDomid = peer;
  }
  if (fields.simDomid !== undefined) {
    const simDomid = domid(fields.simDomid, 'simDomid');
    if (serving && simDomid !== serving.simDomid)
      throw protocolError(`the serving end plays the domain it was started as, not domain ${simDomid}`);
    request.simDomid = simDomid;
  }
  return request;
}

function checkAddress(value: unknown, transport: StreamTransport): Address {
  const fields = object(value, 'address', ['name', 'path', 'port']);
  switch (transport) {
    case 'vchan':
      // Only where a listener publishes: its own area, a name of the bench's.
      if (fields.path !== undefined)
        throw protocolError(
          `a measurement vchan is found by its name under the server's vchan area, not at a path (got ${show(fields.path)})`,
        );
      return { name: matching(fields.name, 'address.name', VCHAN_NAME) };
    case 'unix':
      if (typeof fields.path !== 'string' || fields.path.length === 0 || fields.path.length > 1024) {
        throw protocolError(`address.path must be a Unix socket path, got ${show(fields.path)}`);
      }
      return { path: fields.path };
    case 'tcp':
      return { port: integer(fields.port, 'address.port', 1, 65535) };
  }
}

function checkConnect(args: unknown, serving: Serving | undefined): ConnectRequest {
  const fields = object(args, 'the connect request', [...COMMON_FIELDS, 'address', 'serverDomid']);
  const shared = common(fields, serving);
  return {
    ...shared,
    address: checkAddress(fields.address, shared.transport),
    ...(fields.serverDomid !== undefined ? { serverDomid: domid(fields.serverDomid, 'serverDomid') } : {}),
    ...(fields.simDomid !== undefined ? { simDomid: domid(fields.simDomid, 'simDomid') } : {}),
  };
}

/**
 * Checks one request to an endpoint. `serving` is set when the request comes from another domain
 * (`vchan bench --serve`): then only vchan listeners to that domain are served.
 */
export function checkRequest(op: unknown, args: unknown, serving?: Serving): CheckedRequest {
  const checked = oneOf(op, 'the operation', OPS);
  switch (checked) {
    case 'hello':
      // Nothing to read in it; whatever came is left alone.
      return { op: checked };
    case 'listen':
      return { op: checked, request: checkListen(args, serving) };
    case 'connect':
      // A served endpoint only listens: connecting out is for the forked workers of a local run.
      if (serving) throw protocolError(`the serving end only listens; it does not connect out for domain ${serving.client}`);
      return { op: checked, request: checkConnect(args, serving) };
    case 'result':
    case 'close':
      return { op: checked, key: matching(object(args, `the ${checked} request`, ['key']).key, 'key', KEY) };
  }
}

/**
 * The control vchan's codec: JSON, as RpcPeer's default (so either end may be an older build),
 * but a message that is not one of RpcPeer's four shapes is refused as undecodable. RpcPeer then
 * closes that channel with EPROTO; without this, `{"type":"error","id":1}` would throw inside
 * RpcPeer's message listener, outside any of our code, and take the whole process down.
 */
export const controlCodec: Codec = {
  encode: jsonCodec.encode,
  decode(bytes) {
    const message = jsonCodec.decode(bytes) as Fields | null;
    if (typeof message !== 'object' || message === null || Array.isArray(message))
      throw new Error(`a control message must be an object, got ${show(message)}`);
    const type = message.type;
    if (!Number.isSafeInteger(message.id) || (message.id as number) < 0)
      throw new Error(`a control message needs a whole-number id, got ${show(message.id)}`);
    switch (type) {
      case 'call':
        if (typeof message.method !== 'string' || message.method.length > 64)
          throw new Error(`a call needs a method name, got ${show(message.method)}`);
        return message;
      case 'error': {
        const error = message.error as Fields | null;
        if (
          typeof error !== 'object' ||
          error === null ||
          typeof error.code !== 'string' ||
          typeof error.message !== 'string' ||
          (error.name !== undefined && typeof error.name !== 'string')
        ) {
          throw new Error(`an error reply needs an error with a code and a message, got ${show(error)}`);
        }
        return message;
      }
      case 'result':
      case 'cancel':
        return message;
      default:
        throw new Error(`a control message of unknown type ${show(type)}`);
    }
  },
};
