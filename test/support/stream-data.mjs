// Deterministic test data for streams: both ends derive the same bytes and chunk sizes from a seed,
// so a receiver can check what arrived without the data ever crossing outside the channel.
import { createHash } from 'node:crypto';

/**
 * xorshift32: small, fast, and the same in every process.
 * @param {number} seed
 * @returns {() => number} the next unsigned 32-bit value on each call
 */
export function random(seed) {
  let state = seed >>> 0 || 0x9e3779b9;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
}

/**
 * The chunks a seeded sender writes: `total` bytes in chunks of 1..maxChunk, sizes and bytes
 * drawn from one generator.
 * @param {{ total: number; seed: number; maxChunk: number }} spec
 * @returns {Generator<Buffer>}
 */
export function* seededChunks({ total, seed, maxChunk }) {
  const next = random(seed);
  for (let sent = 0; sent < total; ) {
    const size = Math.min(total - sent, 1 + (next() % maxChunk));
    const chunk = Buffer.allocUnsafe(size);
    for (let i = 0; i < size; i++) chunk[i] = next() & 0xff;
    sent += size;
    yield chunk;
  }
}

/**
 * Resolves on 'drain'; rejects if the stream closes first.
 * @param {import('node:stream').Writable} stream
 * @returns {Promise<void>}
 */
function drainedOrClosed(stream) {
  return new Promise((resolve, reject) => {
    const onDrain = () => {
      stream.off('close', onClose);
      resolve();
    };
    const onClose = () => {
      stream.off('drain', onDrain);
      reject(new Error('closed while writing'));
    };
    stream.once('drain', onDrain);
    stream.once('close', onClose);
  });
}

/**
 * Writes `pieces` in order, waiting with `drained` whenever the stream asks for a pause
 * (by default for 'drain', failing if the stream closes first); returns their size and sha256.
 * @param {import('node:stream').Writable} stream
 * @param {Iterable<Buffer>} pieces
 * @param {(stream: import('node:stream').Writable) => Promise<unknown>} [drained]
 * @returns {Promise<{ bytes: number; sha256: string }>}
 */
export async function writeHashed(stream, pieces, drained = drainedOrClosed) {
  const hash = createHash('sha256');
  let bytes = 0;
  for (const piece of pieces) {
    hash.update(piece);
    bytes += piece.length;
    if (!stream.write(piece)) await drained(stream);
  }
  return { bytes, sha256: hash.digest('hex') };
}

/**
 * Writes `total` bytes in chunks of 1..maxChunk bytes, honouring backpressure; returns the sha256.
 * @param {import('node:stream').Writable} stream
 * @param {{ total: number; seed: number; maxChunk: number }} spec
 * @returns {Promise<string>}
 */
export async function sendSeeded(stream, spec) {
  return (await writeHashed(stream, seededChunks(spec))).sha256;
}

/**
 * Reads until 'end'; returns the byte count and sha256.
 * @param {AsyncIterable<Buffer>} stream
 * @returns {Promise<{ bytes: number; sha256: string }>}
 */
export async function receiveAll(stream) {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { bytes, sha256: hash.digest('hex') };
}

/**
 * Reads exactly `expected` bytes (the channel stays open, for the other direction); returns count and sha256.
 * @param {import('node:stream').Readable} stream
 * @param {number} expected
 * @returns {Promise<{ bytes: number; sha256: string }>}
 */
export function receiveCount(stream, expected) {
  const hash = createHash('sha256');
  let bytes = 0;
  return new Promise((resolve, reject) => {
    const onData = (/** @type {Buffer} */ chunk) => {
      hash.update(chunk);
      bytes += chunk.length;
      if (bytes >= expected) finish();
    };
    const onClose = () => finish();
    const finish = () => {
      stream.off('data', onData);
      stream.off('close', onClose);
      stream.off('error', reject);
      resolve({ bytes, sha256: hash.digest('hex') });
    };
    stream.on('data', onData);
    stream.on('close', onClose);
    stream.on('error', reject);
    if (expected === 0) finish();
  });
}
