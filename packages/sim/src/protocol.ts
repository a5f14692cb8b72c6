/**
 * Control calls between a process and the sim daemon: each a frame of a u32 little-endian length
 * and a JSON body. Calls are synchronous and strictly one at a time per connection, like ioctls,
 * so frames need no ids. Errors come back as { error: { code, message } } with an errno name.
 */
/**
 * Bumped whenever a call or reply changes shape; a daemon serves only clients of its own version.
 * A new call needs none (an older daemon answers it ENOSYS, and the client says so), nor a field
 * added to a reply that older clients can ignore and newer ones do without.
 */
export const PROTOCOL_VERSION = 1;

export interface ControlError {
  code: string;
  message: string;
}

/** The reply to a call of `Op`: its result, or the error the daemon answered with. */
export type Reply<Op extends Operation = Operation> = { ok: Replies[Op] } | { error: ControlError };

export function encodeFrame(body: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(body));
  const frame = Buffer.allocUnsafe(4 + json.length);
  frame.writeUInt32LE(json.length, 0);
  json.copy(frame, 4);
  return frame;
}

/**
 * The longest frame body the daemon reads. The largest legitimate request is a gntdev.map at Linux
 * gntdev's own limit of 65536 grants per call, about 33 bytes of JSON each (2.2 MB); every other
 * call is a few hundred bytes. Without a cap a client could announce 4 GiB and have the daemon
 * buffer toward it.
 */
export const MAX_FRAME_BYTES = 4 << 20;

/**
 * A frame that breaks the protocol: too long, not JSON, or not a call. Nothing after it on the same
 * stream can be trusted, so the daemon answers EPROTO and ends that connection (only that one).
 */
export class FrameViolation extends Error {
  readonly code = 'EPROTO';
}

/**
 * Splits a byte stream into frames. `push` takes a chunk and returns the bodies it completes; it
 * yields them one by one and throws FrameViolation where the stream breaks, so the frames before
 * a bad one are still handled in order. After a violation the reader takes nothing more.
 */
export class FrameReader {
  private pending: Buffer = Buffer.alloc(0);
  private broken: FrameViolation | null = null;

  push(chunk: Buffer): Iterable<unknown> {
    if (!this.broken) this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    return this.drain();
  }

  private *drain(): Generator<unknown> {
    while (!this.broken && this.pending.length >= 4) {
      const length = this.pending.readUInt32LE(0);
      // Checked on the header alone, before waiting for (and buffering) the announced body.
      if (length > MAX_FRAME_BYTES) this.fail(`a frame announced ${length} bytes, over the limit of ${MAX_FRAME_BYTES}`);
      if (this.pending.length < 4 + length) break;
      const text = this.pending.subarray(4, 4 + length).toString();
      this.pending = this.pending.subarray(4 + length);
      yield parseBody(text, (why) => this.fail(why));
    }
    if (this.broken) throw this.broken;
  }

  private fail(why: string): never {
    this.broken = new FrameViolation(why);
    this.pending = Buffer.alloc(0);
    throw this.broken;
  }
}

function parseBody(text: string, fail: (why: string) => never): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return fail(`a frame body is not JSON (${JSON.stringify(text.slice(0, 40))}${text.length > 40 ? '...' : ''})`);
  }
}

/**
 * A frame body as a call: a JSON object with a string `op`, the other members its request. Anything
 * else is a FrameViolation; an unknown op is left to the hypervisor, which answers ENOSYS.
 */
export function parseCall(body: unknown): { op: string; request: Record<string, unknown> } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new FrameViolation(
      `a call must be a JSON object, not ${body === null ? 'null' : Array.isArray(body) ? 'an array' : typeof body}`,
    );
  }
  const { op, ...request } = body as Record<string, unknown>;
  if (typeof op !== 'string') throw new FrameViolation(`a call needs an "op" string, got ${op === undefined ? 'none' : typeof op}`);
  return { op, request };
}

/** A page of a grant as the daemon hands it out: which file, at which byte offset. */
export interface PageLocation {
  file: string;
  offset: number;
}

export interface Requests {
  hello: { pid: number; version: number };
  'gntalloc.open': { domid: number };
  'gntalloc.alloc': { handle: number; domid: number; count: number; writable: boolean };
  'gntalloc.setUnmapNotify': { handle: number; allocation: number; offset: number; clearByte: boolean; port: number | null };
  'gntalloc.release': { handle: number; allocation: number };
  'gntalloc.setLimit': { domid: number; limit: number };
  'gntalloc.getLimit': { domid: number };
  'gntdev.open': { domid: number };
  'gntdev.map': { handle: number; grants: { domid: number; ref: number }[]; writable: boolean };
  'gntdev.setUnmapNotify': { handle: number; mapping: number; offset: number; clearByte: boolean; port: number | null };
  'gntdev.unmap': { handle: number; mapping: number };
  'gntdev.resolveCopy': { handle: number; domid: number; ref: number; write: boolean };
  'evtchn.open': { domid: number };
  'evtchn.bindUnbound': { handle: number; remoteDomain: number };
  'evtchn.bindInterdomain': { handle: number; remoteDomain: number; remotePort: number };
  'evtchn.unbind': { handle: number; port: number };
  'evtchn.restrict': { handle: number; domid: number };
  close: { handle: number };
  'domain.destroy': { domid: number };
  status: Record<string, never>;
  stop: Record<string, never>;
}

export interface Replies {
  hello: { daemonPid: number };
  'gntalloc.open': { handle: number };
  'gntalloc.alloc': { allocation: number; refs: number[]; file: string };
  'gntalloc.setUnmapNotify': null;
  'gntalloc.release': null;
  'gntalloc.setLimit': null;
  'gntalloc.getLimit': { limit: number; used: number };
  'gntdev.open': { handle: number };
  'gntdev.map': { mapping: number; pages: PageLocation[] };
  'gntdev.setUnmapNotify': null;
  'gntdev.unmap': null;
  'gntdev.resolveCopy': { status: number; page?: PageLocation };
  'evtchn.open': { handle: number; wakeup: string };
  'evtchn.bindUnbound': { port: number };
  'evtchn.bindInterdomain': { port: number };
  'evtchn.unbind': null;
  'evtchn.restrict': null;
  close: null;
  'domain.destroy': SimDomainDestroyed;
  status: SimStatus;
  stop: null;
}

export type Operation = keyof Requests;

/** The calls on an open device handle: their request names it in `handle`. */
export type HandleOperation = { [Op in Operation]: Requests[Op] extends { handle: number } ? Op : never }[Operation];

/** A handle call's request without the handle, which SimConnection.callOnHandle adds. */
export type HandleRequest<Op extends HandleOperation> = Omit<Requests[Op], 'handle'>;

/** What destroying a simulated domain did. */
export interface SimDomainDestroyed {
  domid: number;
  /** The processes that acted as the domain (device handles or XenStore connections), sent SIGKILL. */
  killed: number[];
  /** Its gntalloc, gntdev and evtchn handles, closed without running any unmap notification. */
  handlesClosed: number;
  /** Its event-channel ports, closed; the peer end of each went back to unbound, with no event. */
  portsClosed: number;
  /**
   * Its grants that other domains still map: they stay mapped and readable (Xen keeps the domain
   * as a zombie) until the last mapper unmaps them.
   */
  grantsStillMapped: number;
  /** XenStore nodes removed: its home /local/domain/<domid> and every other node it owned. */
  xenstoreNodesRemoved: number;
  /** Its XenStore connections, closed. */
  xenstoreConnectionsClosed: number;
}

/**
 * A domain as the simulated hypervisor sees it: 'live'; 'zombie' once destroyed while others
 * still map its grants; 'gone' once destroyed and unmapped by all (until a process acts as it again).
 */
export type SimDomainState = 'live' | 'zombie' | 'gone';

export interface SimStatus {
  daemonPid: number;
  directory: string;
  clients: { pid: number; handles: number }[];
  domains: { domid: number; state: SimDomainState; grants: number; limit: number; ports: number }[];
  grants: { domid: number; ref: number; grantee: number; writable: boolean; mappedBy: number; released: boolean }[];
  ports: { domid: number; port: number; state: 'unbound' | 'interdomain'; remoteDomain: number; remotePort: number }[];
}
