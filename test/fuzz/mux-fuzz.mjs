#!/usr/bin/env node
// Hostile-peer fuzzing of the yamux session (@xen-vchan/mux), seeded and bounded in time. Each
// iteration runs our session (client or server, seeded) over a Unix socket pair against a raw peer
// that writes seeded frames: valid ones (opening streams with the right ids, data within the
// window, window updates, pings and their answers, FIN, RST), in pieces split at random points,
// and, most of the time, one definite violation at the end (a bad version, an unknown type, a
// window update that overflows, data past the window or a huge length, a reused id or one of the
// wrong parity, a frame for a stream never opened, data on stream 0, a second FIN, a ping on a
// stream, an unknown go-away code). Our side echoes the streams it accepts and keeps its own streams
// writing. Checked:
//   - no exception or rejection escapes (listeners for both are installed for the run);
//   - our session and streams fail only with the codes in ALLOWED_ERRORS;
//   - a definite violation ends the session within 1 s with EPROTO;
//   - what our side holds stays bounded: each stream's received bytes within its window, the
//     socket's unsent bytes within a few windows;
//   - every socket is closed at the end.
//   node test/fuzz/mux-fuzz.mjs [--seconds 10] [--seed 1]
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { encodeHeader, Flag, FrameType, INITIAL_WINDOW, Session } from '@xen-vchan/mux';
import { random } from '../support/stream-data.mjs';
import { startReport } from './part-report.mjs';

/** @typedef {import('./fuzz.mjs').PartReport & { violations: number; closedByViolation: number; framesSent: number; mostHeld: number }} MuxReport */

const CLOSE_WITHIN_MS = 1000;
export const ALLOWED_ERRORS = ['EPROTO', 'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT'];
/** What our side may hold: a window per stream is the protocol's bound; the socket's queue a few. */
const MAX_UNSENT = 4 * INITIAL_WINDOW;

/**
 * @param {number} type
 * @param {number} flags
 * @param {number} id
 * @param {number} length
 * @param {Buffer} [body]
 */
function frame(type, flags, id, length, body) {
  const header = encodeHeader(/** @type {0} */ (0), flags, id >>> 0, length >>> 0);
  header[1] = type;
  return body ? Buffer.concat([header, body]) : header;
}

/**
 * The peer's state: the seeded random source, its next stream id, the last it opened, an open one (0: none).
 * @typedef {{ next: () => number; nextId: number; lastId: number; open: number }} PeerState
 */
/**
 * The violations, each given the peer's state.
 * @type {((s: PeerState) => Buffer)[]}
 */
const VIOLATIONS = [
  (s) => Buffer.from([1 + (s.next() % 255), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
  (s) => frame(4 + (s.next() % 252), 0, 0, 0),
  (s) => (s.open ? frame(FrameType.WindowUpdate, 0, s.open, 0xffff_ffff) : frame(FrameType.Data, 0, 0, 1)),
  (s) => frame(FrameType.Data, 0, s.open || s.nextId, INITIAL_WINDOW + 1 + (s.next() % 1000)),
  (s) => frame(FrameType.Data, 0, s.open || s.nextId, 0xffff_ffff),
  (s) => (s.lastId ? frame(FrameType.WindowUpdate, Flag.SYN, s.lastId, 0) : frame(FrameType.Data, 0, 0, 0)),
  (s) => frame(FrameType.WindowUpdate, Flag.SYN, s.nextId + 1, 0), // the other side's parity
  (s) => frame(FrameType.Data, 0, s.nextId + 2 * (1 + (s.next() % 100)), 1, Buffer.alloc(1)),
  () => frame(FrameType.Data, Flag.SYN, 0, 0),
  (s) =>
    s.open
      ? Buffer.concat([frame(FrameType.WindowUpdate, Flag.FIN, s.open, 0), frame(FrameType.WindowUpdate, Flag.FIN, s.open, 0)])
      : frame(FrameType.Ping, Flag.SYN, 5, 0),
  (s) => frame(FrameType.Ping, Flag.SYN, 1 + (s.next() % 1000), 0),
  (s) => frame(FrameType.GoAway, 0, 0, 3 + (s.next() % 1000)),
];

/**
 * @param {{ seconds: number; seed: number; log?: (line: string) => void }} options
 * @returns {Promise<MuxReport>}
 */
export async function fuzzMux({ seconds, seed, log = () => {} }) {
  const next = random(seed);
  /** @type {MuxReport} */
  const report = startReport('mux', seed, seconds, { framesSent: 0, mostHeld: 0 });
  const fail = (/** @type {string} */ what) => report.failures.push(`mux iteration ${report.iterations}: ${what}`);
  const escaped = (/** @type {unknown} */ error) => fail(`escaped: ${error instanceof Error ? error.stack : String(error)}`);
  process.on('uncaughtException', escaped);
  process.on('unhandledRejection', escaped);
  const folder = mkdtempSync(join(tmpdir(), 'xen-vchan-mux-fuzz-'));
  /** @type {net.Socket[]} */
  const sockets = [];
  const deadline = Date.now() + seconds * 1000;
  try {
    while (Date.now() < deadline) {
      report.iterations++;
      await iteration(report, next, fail, folder, sockets);
      if (report.iterations % 50 === 0) log(`  mux: ${report.iterations} iterations, ${report.failures.length} failures`);
    }
  } finally {
    process.off('uncaughtException', escaped);
    process.off('unhandledRejection', escaped);
    rmSync(folder, { recursive: true, force: true });
  }
  const open = sockets.filter((socket) => !socket.destroyed).length;
  report.resources = { start: { sockets: 0 }, end: { sockets: open } };
  if (open > 0) fail(`${open} sockets left open`);
  report.ok = report.failures.length === 0;
  return report;
}

/**
 * @param {MuxReport} report
 * @param {() => number} next
 * @param {(what: string) => void} fail
 * @param {string} folder
 * @param {net.Socket[]} sockets
 */
async function iteration(report, next, fail, folder, sockets) {
  const file = join(folder, `s${report.iterations}`);
  const server = net.createServer();
  await new Promise((resolve) => server.listen(file, () => resolve(undefined)));
  /** @type {Promise<net.Socket>} */
  const accepted = new Promise((resolve) => server.once('connection', resolve));
  const raw = net.connect(file);
  await new Promise((resolve) => raw.once('connect', resolve));
  const ours = await accepted;
  server.close();
  sockets.push(raw, ours);
  raw.on('error', () => {});
  raw.resume(); // the hostile peer drains what we send, sometimes not (below)
  if (next() % 4 === 0) raw.pause();

  const role = next() % 2 ? 'client' : 'server';
  const session = new Session(ours, { role, acceptBacklog: 1 + (next() % 8), maxStreams: 2 + (next() % 16) });
  /** @type {NodeJS.ErrnoException[]} */
  const errors = [];
  const note = (/** @type {NodeJS.ErrnoException} */ error) => errors.push(error);
  session.on('error', note);
  /** @type {import('@xen-vchan/mux').MuxStream[]} */
  const streams = [];
  session.on('stream', (stream) => {
    stream.on('error', note);
    streams.push(stream);
    if (next() % 3) stream.pipe(stream);
  });
  // When the session ended: its error, or its close (the transport may take a while to flush).
  const closed = new Promise((resolve) => {
    session.once('error', () => resolve(performance.now()));
    session.once('close', () => resolve(performance.now()));
  });
  // Our own streams keep writing.
  for (let i = 0; i < next() % 3; i++) {
    try {
      const stream = session.open();
      stream.on('error', note);
      streams.push(stream);
      stream.write(Buffer.alloc(next() % 400_000, 7));
    } catch (error) {
      note(/** @type {NodeJS.ErrnoException} */ (error));
    }
  }

  // The peer's state: its stream ids (the parity our session leaves it) and its open streams.
  const state = {
    next,
    nextId: role === 'client' ? 2 : 1,
    lastId: 0,
    open: 0,
  };
  /** @type {Buffer[]} */
  const frames = [];
  const count = next() % 40;
  for (let i = 0; i < count; i++) {
    const kind = next() % 8;
    if (kind === 0 || !state.open) {
      frames.push(frame(next() % 2 ? FrameType.WindowUpdate : FrameType.Data, Flag.SYN, state.nextId, 0));
      state.lastId = state.open = state.nextId;
      state.nextId += 2;
    } else if (kind === 1) {
      const size = next() % 20_000;
      frames.push(frame(FrameType.Data, 0, state.open, size, Buffer.alloc(size, 1)));
    } else if (kind === 2) frames.push(frame(FrameType.WindowUpdate, 0, state.open, next() % 100_000));
    else if (kind === 3) frames.push(frame(FrameType.Ping, Flag.SYN, 0, next()));
    else if (kind === 4) frames.push(frame(FrameType.Ping, Flag.ACK, 0, next()));
    else if (kind === 5) {
      frames.push(frame(FrameType.WindowUpdate, Flag.RST, state.open, 0));
      state.open = 0;
    } else if (kind === 6) {
      frames.push(frame(FrameType.WindowUpdate, Flag.FIN, state.open, 0));
      state.open = 0;
    } else frames.push(frame(FrameType.WindowUpdate, Flag.ACK, state.open, 0));
  }
  const which = next() % 4 !== 0 ? next() % VIOLATIONS.length : -1;
  const violation = which >= 0 ? VIOLATIONS[which] : null;
  // An overflowing window update or a second FIN breaks the protocol only on a stream our side
  // still has: it may have refused the stream (its limits are small here) or ended it, and frames
  // for such a stream are dropped, as the spec allows.
  const definite = violation !== null && !((which === 2 || which === 9) && state.open);
  if (violation) frames.push(violation(state));
  report.framesSent += frames.length;
  // Written in pieces split at random points.
  const bytes = Buffer.concat(frames);
  let offset = 0;
  while (offset < bytes.length) {
    const size = 1 + (next() % 4096);
    raw.write(bytes.subarray(offset, offset + size));
    offset += size;
    if (next() % 8 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  const sentAt = performance.now();
  const ended = await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, definite ? CLOSE_WITHIN_MS : 20, null))]);
  const held = Math.max(0, ...streams.map((stream) => stream.readableLength));
  report.mostHeld = Math.max(report.mostHeld, held);
  if (held > INITIAL_WINDOW) fail(`a stream holds ${held} bytes, over its window`);
  if (ours.writableLength > MAX_UNSENT) fail(`${ours.writableLength} bytes wait in our socket`);
  if (definite) {
    report.violations++;
    if (ended === null) fail('no close within 1 s of a definite violation');
    else {
      report.closedByViolation++;
      report.slowestCloseMs = Math.max(report.slowestCloseMs, /** @type {number} */ (ended) - sentAt);
      if (!errors.some((error) => error.code === 'EPROTO'))
        fail(`a violation ended the session without EPROTO (${errors.map((e) => e.code)})`);
    }
  }
  for (const error of errors) {
    const code = error.code ?? 'none';
    report.errors[code] = (report.errors[code] ?? 0) + 1;
    if (!ALLOWED_ERRORS.includes(code)) fail(`unexpected error ${code}: ${error.message}`);
  }
  session.destroy();
  raw.destroy();
  await new Promise((resolve) => setImmediate(resolve));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    args: process.argv.slice(2).filter((arg) => arg !== '--'),
    options: { seconds: { type: 'string', default: '10' }, seed: { type: 'string', default: '1' }, json: { type: 'boolean' } },
  });
  const report = await fuzzMux({ seconds: Number(values.seconds), seed: Number(values.seed), log: (line) => console.error(line) });
  console.log(values.json ? JSON.stringify(report, null, 2) : report);
  process.exit(report.ok ? 0 : 1);
}
