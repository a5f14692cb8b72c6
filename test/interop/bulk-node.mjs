// The Node twin of vchan-peer.c's bulk mode, for test/xen/bench.test.ts: one process plays one
// end of a one-way transfer through the public vchan API, as its parent asks over IPC
// (child_process.fork). Same data as the C peer: a 1048573-byte xorshift32 pattern (seed
// `seed`, one byte per step) repeated to `bytes`, written in `writeChunk` pieces; the receiver
// compares each piece with the pattern at its offset (Buffer#equals, a memcmp, as the C side
// does) and times from the first byte's arrival to the last's.
//
// Requests (one at a time or several; each answered with { id, result } or { id, error }):
//   { id, op: 'send', domid, name, ring, bytes, seed, writeChunk }
//       serves `name` with both rings of `ring` bytes; answers { id, listening: { path, address } }
//       once published, then, once the client has read everything and closed, { id, result }.
//   { id, op: 'recv', domid, name, bytes, seed, timeout, views }
//       connects, reads and checks `bytes` bytes, closes, answers the result; with `views`
//       through Vchan.views(), each view compared where it lies in the ring (zero-copy).
//   { id, op: 'exit' }
import { performance } from 'node:perf_hooks';
import { connect, createServer } from '@xen-vchan/vchan';

/** @typedef {import('@xen-vchan/vchan').Vchan} Vchan */
/** @typedef {{ domid: number; name: string; ring: number; bytes: number; seed: number; writeChunk: number }} SendRequest */
/** @typedef {{ domid: number; name: string; bytes: number; seed: number; timeout?: number; views?: boolean }} RecvRequest */
/** @typedef {{ id: number } & (({ op: 'send' } & SendRequest) | ({ op: 'recv' } & RecvRequest) | { op: 'exit' })} Request */

export const PATTERN_SIZE = 1048573;

/**
 * The pattern twice over: any window of up to PATTERN_SIZE bytes is contiguous.
 * @param {number} seed
 */
export function makePattern(seed) {
  const pattern = Buffer.allocUnsafe(2 * PATTERN_SIZE);
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < PATTERN_SIZE; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    pattern[i] = x & 0xff;
  }
  pattern.copy(pattern, PATTERN_SIZE, 0, PATTERN_SIZE);
  return pattern;
}

/** @type {Map<number, Buffer>} */
const patterns = new Map();
/** @param {number} seed */
function patternFor(seed) {
  let pattern = patterns.get(seed);
  if (!pattern) {
    pattern = makePattern(seed);
    patterns.set(seed, pattern);
  }
  return pattern;
}

/**
 * @param {NodeJS.EventEmitter} emitter
 * @param {string} event
 * @returns {Promise<void>}
 */
function waitFor(emitter, event) {
  return new Promise((resolve, reject) => {
    /** @param {Error} [error] */
    const done = (error) => {
      emitter.off(event, onEvent);
      emitter.off('close', onClose);
      emitter.off('error', onError);
      if (error) reject(error);
      else resolve();
    };
    const onEvent = () => done();
    const onClose = () => done(event === 'close' ? undefined : new Error(`the vchan closed while waiting for '${event}'`));
    const onError = (/** @type {Error} */ error) => done(error);
    emitter.on(event, onEvent);
    emitter.on('close', onClose);
    emitter.on('error', onError);
  });
}

/**
 * Serves one client, writes `bytes` pattern bytes, waits for the client to close.
 * @param {SendRequest} request
 * @param {(listening: { path: string | null; address: ReturnType<import('@xen-vchan/vchan').VchanServer['address']> }) => void} listening
 */
async function send({ domid, name, ring, bytes, seed, writeChunk }, listening) {
  if (writeChunk > PATTERN_SIZE) throw new Error(`writeChunk must be at most ${PATTERN_SIZE}`);
  const pattern = patternFor(seed);
  const server = createServer({ domid, name, readMin: ring, writeMin: ring });
  try {
    /** @type {Promise<Vchan>} */
    const accepted = new Promise((resolve) => server.once('channel', resolve));
    await server.listen();
    listening({ path: server.path, address: server.address() });
    const channel = await accepted;
    const rings = { readRing: channel.readRingSize, writeRing: channel.writeRingSize };
    const closed = new Promise((resolve) => channel.once('close', resolve));
    // Set by the listener: typed as what it may leave, not as the null it starts as.
    let error = /** @type {Error | null} */ (null);
    channel.on('error', (failure) => (error ??= failure));
    // Reading nothing, but flowing: the peer's close then ends the stream and closes it.
    channel.resume();
    const startedAt = performance.now();
    /** @type {(failure?: Error | null) => void} */
    let onLastWrite = () => {};
    let sent = 0;
    /** @type {Promise<void>} */
    let lastWrite = Promise.resolve();
    while (sent < bytes) {
      const size = Math.min(writeChunk, bytes - sent);
      const offset = sent % PATTERN_SIZE;
      sent += size;
      const last = sent === bytes;
      // Every byte is in the ring once the last write's callback has run.
      if (last) lastWrite = new Promise((resolve, reject) => (onLastWrite = (failure) => (failure ? reject(failure) : resolve())));
      if (!channel.write(pattern.subarray(offset, offset + size), last ? (failure) => onLastWrite(failure) : undefined)) {
        if (!last) await waitFor(channel, 'drain');
      }
    }
    await lastWrite;
    const writtenAt = performance.now();
    await closed; // the receiver closes once it has read everything
    if (error) throw error;
    return {
      direction: 'send',
      ok: true,
      bytes,
      sent,
      ...rings,
      writeMs: writtenAt - startedAt,
      totalMs: performance.now() - startedAt,
      stats: channel.stats(),
    };
  } finally {
    await server.close();
  }
}

/**
 * Connects, reads `bytes` bytes and checks them against the pattern, then closes.
 * @param {RecvRequest} request
 */
async function recv({ domid, name, bytes, seed, timeout = 30_000, views = false }) {
  const pattern = patternFor(seed);
  const channel = await connect({ domid, name, timeout });
  const connectedAt = performance.now();
  const rings = { readRing: channel.readRingSize, writeRing: channel.writeRingSize };
  let received = 0;
  let firstMismatch = -1;
  let reads = 0;
  let firstRead = 0;
  let firstAt = 0;
  let lastAt = 0;
  /** Takes one piece (a copy, or a view of the ring); true once all `bytes` arrived. */
  const take = (/** @type {Uint8Array} */ chunk) => {
    // The clock is read at the first piece and the last only: in a PV guest every read of it is
    // a system call, which the bench counts (the C peer too reads it only at both ends).
    if (reads++ === 0) {
      firstAt = performance.now();
      firstRead = chunk.length;
    }
    if (firstMismatch < 0) {
      // Pieces are at most a ring (1 MiB), below the pattern's length, and never overshoot: the
      // sender writes exactly `bytes`. Compare with memcmp, then find the byte if it differs.
      const offset = received % PATTERN_SIZE;
      const length = Math.min(chunk.length, PATTERN_SIZE);
      const piece = Buffer.from(chunk.buffer, chunk.byteOffset, length);
      if (!piece.equals(pattern.subarray(offset, offset + length)) || length < chunk.length) {
        for (let i = 0; i < chunk.length; i++) {
          if (chunk[i] !== pattern[(received + i) % PATTERN_SIZE]) {
            firstMismatch = received + i;
            break;
          }
        }
      }
    }
    received += chunk.length;
    if (received < bytes) return false;
    lastAt = performance.now();
    return true;
  };
  /** @type {'complete' | 'ended early'} */
  const outcome = views
    ? await (async () => {
        for await (const view of channel.views()) if (take(view.bytes)) return 'complete';
        return 'ended early';
      })()
    : await new Promise((resolve, reject) => {
        const onData = (/** @type {Buffer} */ chunk) => {
          if (!take(chunk)) return;
          channel.off('data', onData);
          resolve('complete');
        };
        channel.on('data', onData);
        channel.once('end', () => resolve('ended early'));
        channel.once('error', reject);
      });
  const stats = channel.stats();
  const closed = new Promise((resolve) => channel.once('close', resolve));
  channel.destroy(); // all read: closing loses nothing, and lets the sender go
  await closed;
  const ms = lastAt - firstAt;
  return {
    direction: 'recv',
    ok: outcome === 'complete' && received === bytes && firstMismatch === -1,
    outcome,
    bytes,
    received,
    firstMismatch,
    reads,
    firstRead,
    ...rings,
    ms,
    totalMs: (lastAt || performance.now()) - connectedAt,
    mibps: ms > 0 ? (received - firstRead) / 2 ** 20 / (ms / 1000) : 0,
    stats,
  };
}

if (process.send) {
  const reply = process.send.bind(process);
  process.on('message', (/** @type {Request} */ request) => {
    const { id, op } = request;
    const fail = (/** @type {NodeJS.ErrnoException | undefined} */ error) =>
      reply({ id, error: { message: error?.stack ?? String(error), code: error?.code } });
    if (request.op === 'exit') {
      reply({ id, result: 'bye' });
      setImmediate(() => process.exit(0));
    } else if (request.op === 'send') {
      send(request, (listening) => reply({ id, listening })).then((result) => reply({ id, result }), fail);
    } else if (request.op === 'recv') {
      recv(request).then((result) => reply({ id, result }), fail);
    } else {
      fail(new Error(`unknown op ${op}`));
    }
  });
  process.on('disconnect', () => process.exit(0));
  reply({ ready: true });
}
