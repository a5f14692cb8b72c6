// The yamux wire format (HashiCorp's spec.md): every frame starts with a 12-byte big-endian
// header, version (1 byte), type (1), flags (2), stream id (4), length (4). Only Data frames carry
// a body, `length` bytes of it; for the other types `length` is a value (a window delta, a ping's
// opaque value, a go-away code).

/** The only version of the protocol. */
export const PROTOCOL_VERSION = 0;
export const HEADER_SIZE = 12;

export const FrameType = { Data: 0, WindowUpdate: 1, Ping: 2, GoAway: 3 } as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export const Flag = { SYN: 1, ACK: 2, FIN: 4, RST: 8 } as const;

/** What a GoAway frame's length field says. */
export const GoAwayCode = { Normal: 0, ProtocolError: 1, InternalError: 2 } as const;
export type GoAwayCode = (typeof GoAwayCode)[keyof typeof GoAwayCode];

/** Every stream starts with this receive window, both ways, before any window update. */
export const INITIAL_WINDOW = 256 * 1024;
export const MAX_UINT32 = 0xffff_ffff;

export interface Header {
  version: number;
  type: number;
  flags: number;
  streamId: number;
  length: number;
}

export function encodeHeader(type: FrameType, flags: number, streamId: number, length: number): Buffer {
  const header = Buffer.allocUnsafe(HEADER_SIZE);
  header[0] = PROTOCOL_VERSION;
  header[1] = type;
  header.writeUInt16BE(flags, 2);
  header.writeUInt32BE(streamId, 4);
  header.writeUInt32BE(length, 8);
  return header;
}

export function decodeHeader(bytes: Uint8Array, offset = 0): Header {
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, HEADER_SIZE);
  return {
    version: view.getUint8(0),
    type: view.getUint8(1),
    flags: view.getUint16(2),
    streamId: view.getUint32(4),
    length: view.getUint32(8),
  };
}

/** What FrameReader hands each frame to. */
export interface FrameSink {
  /**
   * A frame's header. Returns how many body bytes follow it that the reader must pass to `body`
   * (a Data frame's length, once the sink has checked it), or 0. The sink decides before any of
   * the body is read, so nothing is ever allocated from a length the peer chose.
   */
  header(header: Header): number;
  /** A piece of the body announced by the last header, as it arrives (a view, never a copy). */
  body(piece: Buffer): void;
  /** The last piece of that body has been passed. */
  bodyEnd(): void;
}

/**
 * Splits the bytes of a transport into frames. Holds at most one partial header (12 bytes); bodies
 * go to the sink piece by piece as they arrive.
 */
export class FrameReader {
  private readonly partial = Buffer.alloc(HEADER_SIZE);
  private filled = 0;
  private bodyLeft = 0;
  private stopped = false;

  constructor(private readonly sink: FrameSink) {}

  /** Nothing more is parsed: the rest of this chunk and every later one are ignored. */
  stop(): void {
    this.stopped = true;
  }

  feed(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.length && !this.stopped) {
      if (this.bodyLeft > 0) {
        const take = Math.min(this.bodyLeft, chunk.length - offset);
        this.bodyLeft -= take;
        this.sink.body(chunk.subarray(offset, offset + take));
        offset += take;
        if (this.bodyLeft === 0 && !this.stopped) this.sink.bodyEnd();
        continue;
      }
      let header: Header;
      if (this.filled === 0 && chunk.length - offset >= HEADER_SIZE) {
        header = decodeHeader(chunk, offset);
        offset += HEADER_SIZE;
      } else {
        const take = Math.min(HEADER_SIZE - this.filled, chunk.length - offset);
        chunk.copy(this.partial, this.filled, offset, offset + take);
        this.filled += take;
        offset += take;
        if (this.filled < HEADER_SIZE) return;
        this.filled = 0;
        header = decodeHeader(this.partial);
      }
      this.bodyLeft = this.sink.header(header);
    }
  }
}
