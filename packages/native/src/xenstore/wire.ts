/**
 * The XenStore wire format (Xen's xs_wire.h), shared by the @xen-vchan/xenstore client and the
 * simulated daemon: it lives below both, so that the real client never needs the simulation.
 * A message is a 16-byte header {u32 type, u32 req_id, u32 tx_id, u32 len} in the host's byte
 * order, then `len` bytes of payload, usually NUL-terminated strings.
 */
import os from 'node:os';

/** enum xsd_sockmsg_type. */
export const XsType = {
  CONTROL: 0,
  DIRECTORY: 1,
  READ: 2,
  GET_PERMS: 3,
  WATCH: 4,
  UNWATCH: 5,
  TRANSACTION_START: 6,
  TRANSACTION_END: 7,
  INTRODUCE: 8,
  RELEASE: 9,
  GET_DOMAIN_PATH: 10,
  WRITE: 11,
  MKDIR: 12,
  RM: 13,
  SET_PERMS: 14,
  WATCH_EVENT: 15,
  ERROR: 16,
  IS_DOMAIN_INTRODUCED: 17,
  RESUME: 18,
  SET_TARGET: 19,
  RESET_WATCHES: 21,
  DIRECTORY_PART: 22,
  /**
   * Simulation only, and always the first message on a connection to the simulated daemon:
   * payload "<domid>\0" names the domain the connection acts as (on Xen, xenstored knows it from
   * the ring or socket the message came through). Far outside xs_wire.h's numbers, so real
   * xenstored would refuse it.
   */
  SIM_DECLARE_DOMAIN: 0x5853_4d01,
} as const;

export type XsTypeName = keyof typeof XsType;

export const XS_HEADER_BYTES = 16;
/** Largest payload of one message (XENSTORE_PAYLOAD_MAX). */
export const XENSTORE_PAYLOAD_MAX = 4096;
/** Longest absolute path (XENSTORE_ABS_PATH_MAX). */
export const XENSTORE_ABS_PATH_MAX = 3072;

export interface XsMessage {
  type: number;
  reqId: number;
  txId: number;
  payload: Buffer;
}

const littleEndian = os.endianness() === 'LE';

function writeU32(buffer: Buffer, value: number, offset: number): void {
  if (littleEndian) buffer.writeUInt32LE(value >>> 0, offset);
  else buffer.writeUInt32BE(value >>> 0, offset);
}

function readU32(buffer: Buffer, offset: number): number {
  return littleEndian ? buffer.readUInt32LE(offset) : buffer.readUInt32BE(offset);
}

export function encodeXsMessage(type: number, reqId: number, txId: number, payload: Buffer): Buffer {
  const message = Buffer.allocUnsafe(XS_HEADER_BYTES + payload.length);
  writeU32(message, type, 0);
  writeU32(message, reqId, 4);
  writeU32(message, txId, 8);
  writeU32(message, payload.length, 12);
  payload.copy(message, XS_HEADER_BYTES);
  return message;
}

/**
 * A header announcing more than XENSTORE_PAYLOAD_MAX bytes: the stream cannot be trusted after it.
 * It carries the header's request and transaction ids, so a daemon can answer E2BIG to that request.
 */
export class XsOversizedMessage extends Error {
  readonly code = 'E2BIG';

  constructor(
    readonly length: number,
    readonly reqId = 0,
    readonly txId = 0,
  ) {
    super(`a XenStore message announced ${length} bytes of payload, over the limit of ${XENSTORE_PAYLOAD_MAX}`);
  }
}

/** Splits a byte stream into messages; `push` returns those completed by `chunk`. */
export class XsMessageReader {
  private pending: Buffer = Buffer.alloc(0);
  private broken: XsOversizedMessage | null = null;

  push(chunk: Buffer): XsMessage[] {
    if (this.broken) throw this.broken;
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const messages: XsMessage[] = [];
    while (this.pending.length >= XS_HEADER_BYTES) {
      const length = readU32(this.pending, 12);
      if (length > XENSTORE_PAYLOAD_MAX) {
        const oversized = new XsOversizedMessage(length, readU32(this.pending, 4), readU32(this.pending, 8));
        // Nothing after a broken frame can be parsed; the reader keeps failing rather than guess.
        this.broken = oversized;
        this.pending = Buffer.alloc(0);
        throw oversized;
      }
      if (this.pending.length < XS_HEADER_BYTES + length) break;
      messages.push({
        type: readU32(this.pending, 0),
        reqId: readU32(this.pending, 4),
        txId: readU32(this.pending, 8),
        // A copy, so that one retained message does not pin the whole chunk it came in.
        payload: Buffer.from(this.pending.subarray(XS_HEADER_BYTES, XS_HEADER_BYTES + length)),
      });
      this.pending = this.pending.subarray(XS_HEADER_BYTES + length);
    }
    return messages;
  }
}

/** Strings each followed by a NUL, the usual payload. */
export function xsStrings(...strings: string[]): Buffer {
  return Buffer.from(strings.map((text) => `${text}\0`).join(''));
}

/**
 * The NUL-terminated strings at the start of a payload, as xenstored's get_strings reads them:
 * bytes after the last NUL are not a string and are left out.
 */
export function splitXsStrings(payload: Buffer): string[] {
  const strings: string[] = [];
  let start = 0;
  for (let end = payload.indexOf(0, start); end >= 0; end = payload.indexOf(0, start)) {
    strings.push(payload.toString('utf8', start, end));
    start = end + 1;
  }
  return strings;
}
