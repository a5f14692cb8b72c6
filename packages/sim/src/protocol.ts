/**
 * Control calls between a process and the sim daemon: each a frame of a u32 little-endian length
 * and a JSON body. Calls are synchronous and strictly one at a time per connection, like ioctls,
 * so frames need no ids. Errors come back as { error: { code, message } } with an errno name.
 */
/** Bumped whenever a call or reply changes shape; a daemon serves only clients of its own version. */
export const PROTOCOL_VERSION = 1;

export interface ControlError {
  code: string;
  message: string;
}

export type Reply = { ok: unknown } | { error: ControlError };

export function encodeFrame(body: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(body));
  const frame = Buffer.allocUnsafe(4 + json.length);
  frame.writeUInt32LE(json.length, 0);
  json.copy(frame, 4);
  return frame;
}

/** Splits a byte stream into frames; `push` returns the complete bodies seen so far. */
export class FrameReader {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): unknown[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const bodies: unknown[] = [];
    while (this.pending.length >= 4) {
      const length = this.pending.readUInt32LE(0);
      if (this.pending.length < 4 + length) break;
      bodies.push(JSON.parse(this.pending.subarray(4, 4 + length).toString()));
      this.pending = this.pending.subarray(4 + length);
    }
    return bodies;
  }
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
  status: SimStatus;
  stop: null;
}

export type Operation = keyof Requests;

export interface SimStatus {
  daemonPid: number;
  directory: string;
  clients: { pid: number; handles: number }[];
  domains: { domid: number; grants: number; limit: number; ports: number }[];
  grants: { domid: number; ref: number; grantee: number; writable: boolean; mappedBy: number; released: boolean }[];
  ports: { domid: number; port: number; state: 'unbound' | 'interdomain'; remoteDomain: number; remotePort: number }[];
}
