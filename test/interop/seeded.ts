// The Node twin of vchan-peer.c's test data: the same seeded byte stream and the same 64-bit
// FNV-1a, so either side can check what the other sent without the data crossing twice.
//
// Stream: xorshift32 seeded with `seed` (0 becomes 0x9e3779b9); for each chunk,
// size = min(left, 1 + next() % maxChunk), then each byte = next() & 0xff.
// Messages (vchan-peer --messages): the chunks of such a stream with maxChunk = the ring the sender
// writes, except that the first message fills that ring exactly (no size drawn for it); see
// messageSequence().
// (The same generator as test/support/stream-data.mjs, which hashes with sha256 instead.)
import type { Readable, Writable } from 'node:stream';

export interface StreamSpec {
  seed: number;
  total: number;
  maxChunk: number;
}

export class SeededStream {
  private state: number;
  private totalLeft: number;
  private chunkLeft = 0;

  constructor(private readonly spec: StreamSpec) {
    this.state = spec.seed >>> 0 || 0x9e3779b9;
    this.totalLeft = spec.total;
  }

  private next(): number {
    let x = this.state;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.state = x;
    return x;
  }

  /**
   * The next chunk as the sender writes it, or null at the end. With `size`, the chunk has that
   * size (at most what is left) and no size is drawn: vchan-peer's message mode does this for its
   * first message, which fills the ring exactly.
   */
  nextChunk(size?: number): Buffer | null {
    if (this.totalLeft === 0) return null;
    size = Math.min(this.totalLeft, size ?? 1 + (this.next() % this.spec.maxChunk));
    const chunk = Buffer.allocUnsafe(size);
    for (let i = 0; i < size; i++) chunk[i] = this.next() & 0xff;
    this.totalLeft -= size;
    return chunk;
  }

  /** The next byte, for a receiver that checks as it reads (whatever the read sizes). */
  nextByte(): number {
    if (this.chunkLeft === 0) this.chunkLeft = Math.min(this.totalLeft, 1 + (this.next() % this.spec.maxChunk));
    this.chunkLeft--;
    this.totalLeft--;
    return this.next() & 0xff;
  }
}

/** 64-bit FNV-1a in two 32-bit halves (BigInt per byte would be far too slow under TCG). */
export class Fnv64 {
  private hi = 0xcbf29ce4 | 0;
  private lo = 0x84222325 | 0;

  update(data: Uint8Array): this {
    let hi = this.hi;
    let lo = this.lo;
    for (let i = 0; i < data.length; i++) {
      const x = (lo ^ data[i]!) >>> 0;
      // (hi:x) * 0x100000001b3 = (hi:x) * 0x1b3 + (x << 40), modulo 2^64
      const product = x * 0x1b3; // < 2^41: exact
      hi = (Math.imul(hi, 0x1b3) + Math.floor(product / 0x1_0000_0000) + (x << 8)) | 0;
      lo = product | 0;
    }
    this.hi = hi;
    this.lo = lo;
    return this;
  }

  hex(): string {
    return (this.hi >>> 0).toString(16).padStart(8, '0') + (this.lo >>> 0).toString(16).padStart(8, '0');
  }
}

/**
 * The messages one side of vchan-peer's message mode sends: `count` of them, the first exactly
 * `ringSize` bytes, the rest 1..ringSize, drawn from the stream of `seed`.
 */
export function* messageSequence(seed: number, ringSize: number, count: number): Generator<Buffer> {
  const stream = new SeededStream({ seed, total: Number.MAX_SAFE_INTEGER, maxChunk: ringSize });
  for (let i = 0; i < count; i++) yield stream.nextChunk(i === 0 ? ringSize : undefined)!;
}

/** The hash of a whole seeded stream, as its receiver should compute it. */
export function expectedFnv(spec: StreamSpec): string {
  const stream = new SeededStream(spec);
  const hash = new Fnv64();
  for (let chunk = stream.nextChunk(); chunk; chunk = stream.nextChunk()) hash.update(chunk);
  return hash.hex();
}

export interface Sent {
  bytes: number;
  fnv: string;
}

/** Writes the stream in its chunks, honouring backpressure; does not end the stream. */
export async function sendSeeded(stream: Writable, spec: StreamSpec): Promise<Sent> {
  const source = new SeededStream(spec);
  const hash = new Fnv64();
  let bytes = 0;
  for (let chunk = source.nextChunk(); chunk; chunk = source.nextChunk()) {
    hash.update(chunk);
    bytes += chunk.length;
    if (!stream.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const done = (error?: Error) => {
          stream.off('drain', onDrain);
          stream.off('close', onClose);
          stream.off('error', onError);
          if (error) reject(error);
          else resolve();
        };
        const onDrain = () => done();
        const onClose = () => done(new Error(`the stream closed after ${bytes} of ${spec.total} bytes were written`));
        const onError = (error: Error) => done(error);
        stream.on('drain', onDrain);
        stream.on('close', onClose);
        stream.on('error', onError);
      });
    }
  }
  return { bytes, fnv: hash.hex() };
}

export interface Received {
  bytes: number;
  fnv: string;
  /** Offset of the first byte that differs from the expected stream, or -1. */
  firstMismatch: number;
  /** The stream ended or closed before `total` bytes came. */
  short: boolean;
}

/**
 * Reads the expected stream's `total` bytes, checking each against the regenerated stream.
 * Resolves once they are all there (the stream stays open, for the other direction), or early
 * with `short` if the stream ends or closes first. Bytes beyond `total` that come in the same
 * chunk as the last expected ones count as a mismatch.
 */
export function receiveChecked(stream: Readable, spec: StreamSpec): Promise<Received> {
  const expected = new SeededStream(spec);
  const hash = new Fnv64();
  let bytes = 0;
  let firstMismatch = -1;
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (short: boolean) => {
      if (settled) return;
      settled = true;
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
      resolve({ bytes, fnv: hash.hex(), firstMismatch, short });
    };
    const onData = (chunk: Buffer) => {
      for (let i = 0; i < chunk.length; i++) {
        const want = bytes + i < spec.total ? expected.nextByte() : -1;
        if (chunk[i] !== want && firstMismatch < 0) firstMismatch = bytes + i;
      }
      if (!settled) hash.update(chunk);
      bytes += chunk.length;
      if (bytes >= spec.total) settle(false);
    };
    const onEnd = () => settle(true);
    const onError = (error: Error) => {
      if (!settled) {
        settled = true;
        reject(error);
      }
    };
    // The data listener stays: anything arriving after the total is still noticed.
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('close', onEnd);
    stream.on('error', onError);
    if (spec.total === 0) settle(false);
  });
}
