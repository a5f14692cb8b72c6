// Interop on real Xen: our vchan against Xen's own C implementation, in dom0 (both ends domid 0).
//  - our server + a libxenvchan client, and a libxenvchan server + our client, for four ring
//    configurations; the C end is test/interop/vchan-peer.c, linked against Debian's libxenvchan;
//  - Xen's vchan-socket-proxy as the vchan server (our client on one side, a Unix socket on the
//    other) and as the vchan client (our server on one side, its stdin/stdout on the other);
//  - messages: our send()/recv() against libxenvchan_send/libxenvchan_recv (all of a message or
//    nothing, exactly the size asked for), both roles, and send() refusing a message larger than
//    the ring (EMSGSIZE) against a C peer.
// Every stream exchange moves seeded data both ways at once, in random chunk sizes, and both ends
// check it (64-bit FNV-1a, and byte by byte against the regenerated stream). A matrix of the
// results is printed at the end for the CI log. Needs the harness (bash test/xen/run.sh): it fails, not
// skips, anywhere else.
import { execFileSync, spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { errorCode } from '@xen-vchan/native';
import { connect, conventionalPath, createServer, type Vchan, type VchanServer } from '@xen-vchan/vchan';
import { chooseOrders, type RingOrders } from '@xen-vchan/vchan/internal';
import {
  expectedFnv,
  Fnv64,
  messageSequence,
  receiveChecked,
  sendSeeded,
  type Received,
  type Sent,
  type StreamSpec,
} from '../interop/seeded.js';
import { interopPeerPath, requireDom0WithPeer } from './dom0.js';
import { onCleanup, xenstoreRemove } from './cleanup.js';

/** Everything runs in dom0: the server's domain and the client's are both 0. */
const DOM0 = 0;
const peerPath = interopPeerPath;
const xenLibraries = `${process.env.XEN_VCHAN_XEN_ROOT ?? ''}/usr/lib/x86_64-linux-gnu`;
/** How long one exchange may take under TCG before we call it hung. */
const EXCHANGE_MS = 90_000;
/** How long a close may take to reach the other end. */
const CLOSE_MS = 15_000;

// ---- bookkeeping ----------------------------------------------------------------------------

interface Row {
  scenario: string;
  rings: string;
  toServer: number;
  toClient: number;
  seconds: number;
  ok: boolean;
}
const matrix: Row[] = [];
afterAll(() => {
  if (matrix.length === 0) return;
  const header = ['scenario', 'rings L/R', 'to server', 'to client', 'seconds', 'MiB/s', 'ok'];
  const rows = matrix.map((row) => [
    row.scenario,
    row.rings,
    String(row.toServer),
    String(row.toClient),
    row.seconds.toFixed(2),
    ((row.toServer + row.toClient) / 2 ** 20 / row.seconds).toFixed(2),
    row.ok ? 'ok' : 'FAIL',
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  const line = (cells: string[]) =>
    cells.map((cell, column) => (column < 2 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join('  ');
  console.log(
    [
      'interop matrix (real Xen, dom0 to dom0; bytes each way; MiB/s = both directions together, from connected to both ends done)',
      line(header),
      ...rows.map(line),
    ].join('\n'),
  );
});

function ringLabel(order: number): string {
  const bytes = 2 ** order;
  return bytes >= 2 ** 20 ? `${bytes / 2 ** 20}M` : `${bytes / 1024}K`;
}

function ringsLabel(orders: RingOrders): string {
  return `${ringLabel(orders.left)}/${ringLabel(orders.right)}`;
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function closed(stream: NodeJS.EventEmitter & { destroyed?: boolean; closed?: boolean }): Promise<void> {
  if (stream.closed) return Promise.resolve();
  return new Promise((resolve) => stream.once('close', () => resolve()));
}

function xenstoreExists(path: string): boolean {
  try {
    execFileSync('xenstore-exists', [path], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Resolves with the server's first channel; keeps the server for cleanup. */
async function listen(options: {
  name?: string;
  readMin?: number;
  writeMin?: number;
}): Promise<{ server: VchanServer; channel: Promise<Vchan> }> {
  let deliver!: (channel: Vchan) => void;
  const channel = new Promise<Vchan>((resolve) => (deliver = resolve));
  const server = createServer({ domid: DOM0, ...options }, (accepted) => {
    onCleanup(() => accepted.destroy());
    deliver(accepted);
  });
  onCleanup(() => server.close());
  await server.listen();
  return { server, channel };
}

/** A child process we may have to kill; rejects `failed` if it exits before we are done with it. */
function track(child: ChildProcess, what: string): { exited: Promise<number | null>; stderr: () => string } {
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (text: string) => (stderr += text));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));
  onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  child.on('error', (error) => (stderr += `\n${what}: ${error.message}`));
  return { exited, stderr: () => stderr };
}

/** Starts Xen's vchan-socket-proxy; `died` rejects if it exits while the test still needs it. */
function startProxy(args: string[], stdio: StdioOptions) {
  const proxy = spawn('vchan-socket-proxy', args, { stdio });
  const tracked = track(proxy, 'vchan-socket-proxy');
  const died = tracked.exited.then((code) => Promise.reject(new Error(`vchan-socket-proxy exited with ${code}: ${tracked.stderr()}`)));
  died.catch(() => {});
  return { proxy, exited: tracked.exited, died };
}

// ---- the libxenvchan peer ----------------------------------------------------------------------

/** The part vchan-peer plays: the server reads the left ring and writes the right one. */
type PeerRole = 'server' | 'client';

/** The ring orders vchan-peer must report when it plays `role`. */
function peerOrders(role: PeerRole, orders: RingOrders): { readOrder: number; writeOrder: number } {
  return role === 'server' ? { readOrder: orders.left, writeOrder: orders.right } : { readOrder: orders.right, writeOrder: orders.left };
}

interface PeerResult {
  role: PeerRole;
  ok: boolean;
  sent: number;
  sentFnv: string;
  received: number;
  receivedFnv: string;
  firstMismatch: number;
  readOrder: number;
  writeOrder: number;
  sendMs: number;
  totalMs: number;
}

/** What vchan-peer --messages reports. */
interface MessagePeerResult {
  mode: 'messages';
  role: PeerRole;
  ok: boolean;
  messagesSent: number;
  messagesReceived: number;
  sent: number;
  sentFnv: string;
  largestSent: number;
  received: number;
  receivedFnv: string;
  firstMismatch: number;
  badMessage: number;
  readOrder: number;
  writeOrder: number;
  sendMs: number;
  totalMs: number;
}

/** Runs vchan-peer; `send` is the stream it writes, `recv` the one it must receive. */
function startPeer(send: StreamSpec, recv: StreamSpec, mode: string[]) {
  return spawnPeer<PeerResult>([
    `--send=${send.total}`,
    `--send-seed=${send.seed}`,
    `--send-chunk=${send.maxChunk}`,
    `--recv=${recv.total}`,
    `--recv-seed=${recv.seed}`,
    `--recv-chunk=${recv.maxChunk}`,
    `--read-chunk=${Math.max(1500, Math.floor(recv.maxChunk / 3))}`,
    ...mode,
  ]);
}

/** Runs vchan-peer in message mode: it sends `count` messages from `sendSeed`, then receives `count` from `recvSeed`. */
function startMessagePeer(count: number, sendSeed: number, recvSeed: number, mode: string[]) {
  return spawnPeer<MessagePeerResult>([`--messages=${count}`, `--send-seed=${sendSeed}`, `--recv-seed=${recvSeed}`, ...mode]);
}

function spawnPeer<R>(argsAndMode: string[]) {
  const mode = argsAndMode.filter((arg) => !arg.startsWith('--'));
  const args = [`--timeout=${Math.round(EXCHANGE_MS / 1000) + 10}`, ...argsAndMode];
  const child = spawn(peerPath, args, {
    env: { ...process.env, LD_LIBRARY_PATH: xenLibraries },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { exited, stderr } = track(child, 'vchan-peer');
  const lines: string[] = [];
  let resolveResult!: (result: R) => void;
  const result = new Promise<R>((resolve, reject) => {
    resolveResult = resolve;
    void exited.then((code) =>
      reject(
        new Error(
          `vchan-peer ${mode.join(' ')} exited with ${code} before its result; stdout: ${lines.join(' | ')}; stderr: ${stderr().trim()}`,
        ),
      ),
    );
  });
  result.catch(() => {}); // awaited by the test; this only keeps an early exit from counting as unhandled
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line);
    if (line.startsWith('RESULT ')) resolveResult(JSON.parse(line.slice('RESULT '.length)) as R);
  });
  // A peer that dies before connecting must fail the test, not leave it waiting.
  const failed = exited.then((code) => Promise.reject(new Error(`vchan-peer exited with ${code}: ${stderr().trim()}`)));
  failed.catch(() => {});
  /** What the peer said so far, for error messages. */
  const said = () => `vchan-peer stdout: ${lines.join(' | ') || '(nothing)'}; stderr: ${stderr().trim() || '(nothing)'}`;
  return { child, result, exited, failed, stderr, said };
}

type Peer<R> = ReturnType<typeof spawnPeer<R>>;

/** Adds what a peer said, and what XenStore holds, to an error on the way through. */
async function explained<T>(promise: Promise<T>, said: () => string): Promise<T> {
  try {
    return await promise;
  } catch (error) {
    let store = '';
    try {
      store = execFileSync('xenstore-ls', ['-p', '/local/domain/0/data/vchan'], { encoding: 'utf8' });
    } catch (listing) {
      store = `(xenstore-ls failed: ${(listing as Error).message})`;
    }
    (error as Error).message += `\n${said()}\nXenStore /local/domain/0/data/vchan:\n${store}`;
    throw error;
  }
}

/**
 * Our server at `name` (rings for `readMin`/`writeMin`), and vchan-peer started by `start` as its
 * client: resolves once the peer has connected.
 */
async function acceptPeer<R>(
  name: string,
  readMin: number,
  writeMin: number,
  start: (path: string) => Peer<R>,
): Promise<{ server: VchanServer; path: string; peer: Peer<R>; channel: Vchan }> {
  const { server, channel: accepted } = await listen({ name: shortName(name), readMin, writeMin });
  const path = server.path!;
  const peer = start(path);
  const channel = await explained(within(Promise.race([accepted, peer.failed]), 30_000, 'the libxenvchan client to connect'), peer.said);
  return { server, path, peer, channel };
}

/** vchan-peer started by `start` as the server at `name`'s conventional path, and our client connected to it. */
async function connectToPeer<R>(name: string, start: (path: string) => Peer<R>): Promise<{ path: string; peer: Peer<R>; channel: Vchan }> {
  const path = conventionalPath(DOM0, DOM0, shortName(name));
  onCleanup(() => xenstoreRemove(path));
  const peer = start(path);
  const channel = await explained(
    within(Promise.race([connect({ domid: DOM0, name, timeout: 30_000 }), peer.failed]), 35_000, 'to connect to the libxenvchan server'),
    peer.said,
  );
  onCleanup(() => channel.destroy());
  return { path, peer, channel };
}

// ---- one exchange, whichever ends play it --------------------------------------------------------

interface Exchange {
  /** Node's end: what it sent and what it received. */
  sent: Sent;
  received: Received;
  seconds: number;
}

/** Our end of an exchange: writes `out` while it reads `into`, both at once. */
async function exchange(channel: Vchan, out: StreamSpec, into: StreamSpec, peerDone: Promise<unknown>): Promise<Exchange> {
  const started = performance.now();
  const [sent, received] = await within(
    Promise.all([sendSeeded(channel, out), receiveChecked(channel, into), peerDone]),
    EXCHANGE_MS,
    'the exchange',
  ).then(([sent, received]) => [sent, received] as const);
  return { sent, received, seconds: (performance.now() - started) / 1000 };
}

/** What the stream tests against vchan-peer vary: who plays what, the rings, the data each way. */
interface StreamScenario {
  scenario: string;
  role: PeerRole;
  orders: RingOrders;
  /** The stream vchan-peer writes (and we must receive), and the one it must receive (we write). */
  peerSends: StreamSpec;
  peerReceives: StreamSpec;
}

/**
 * A stream exchange with a connected vchan-peer until both ends have closed, recorded in the
 * matrix, then checked: the peer sent `peerSends` and received `peerReceives`; we the other way round.
 */
async function expectStreamExchange(
  channel: Vchan,
  peer: Peer<PeerResult>,
  { scenario, role, orders, peerSends, peerReceives }: StreamScenario,
): Promise<void> {
  const channelClosed = closed(channel);
  const run = await explained(exchange(channel, peerReceives, peerSends, peer.result), peer.said);
  const c = await peer.result;
  // The peer closes once it has read everything; we see it go (draining what is left) and close
  // too, and a non-persistent server with us, which unpublishes.
  const exitCode = await within(peer.exited, CLOSE_MS, 'vchan-peer to exit');
  await within(channelClosed, CLOSE_MS, `our channel to close after the ${role} left`);

  const rings = peerOrders(role, orders);
  const ok =
    c.ok &&
    exitCode === 0 &&
    c.readOrder === rings.readOrder &&
    c.writeOrder === rings.writeOrder &&
    c.received === peerReceives.total &&
    c.receivedFnv === run.sent.fnv &&
    !run.received.short &&
    run.received.firstMismatch === -1 &&
    run.received.bytes === peerSends.total &&
    run.received.fnv === c.sentFnv &&
    c.sentFnv === expectedFnv(peerSends);
  const [toServer, toClient] = role === 'client' ? [peerSends, peerReceives] : [peerReceives, peerSends];
  matrix.push({ scenario, rings: ringsLabel(orders), toServer: toServer.total, toClient: toClient.total, seconds: run.seconds, ok });

  expect(c).toMatchObject({ role, ok: true, firstMismatch: -1, ...rings });
  expect(exitCode).toBe(0);
  expect({ bytes: c.received, fnv: c.receivedFnv }).toEqual({ bytes: peerReceives.total, fnv: run.sent.fnv });
  expect(run.received).toEqual({ bytes: peerSends.total, fnv: c.sentFnv, firstMismatch: -1, short: false });
  expect(c.sentFnv).toBe(expectedFnv(peerSends));
}

/**
 * Records a vchan-socket-proxy exchange in the matrix and checks it: each stream arrived whole,
 * in order, with the hash of what its sender wrote; `exitCode`, where the proxy exited, is 0.
 */
function expectProxyExchange(
  row: { scenario: string; rings: string; toServer: StreamSpec; toClient: StreamSpec; seconds: number },
  arrivals: { received: Received; sent: Sent; spec: StreamSpec }[],
  exitCode?: number | null,
): void {
  const whole = (arrival: (typeof arrivals)[number]) =>
    arrival.received.bytes === arrival.spec.total && arrival.received.firstMismatch === -1 && arrival.received.fnv === arrival.sent.fnv;
  const ok = (exitCode === undefined || exitCode === 0) && arrivals.every(whole);
  matrix.push({
    scenario: row.scenario,
    rings: row.rings,
    toServer: row.toServer.total,
    toClient: row.toClient.total,
    seconds: row.seconds,
    ok,
  });
  for (const { received, sent, spec } of arrivals) {
    expect(received).toEqual({ bytes: spec.total, fnv: sent.fnv, firstMismatch: -1, short: false });
  }
  if (exitCode !== undefined) expect(exitCode).toBe(0);
}

/** Our end of a message exchange, as vchan-peer --messages sees it. */
interface MessageRun {
  sent: { messages: number; bytes: number; fnv: string; largest: number };
  received: { messages: number; bytes: number; fnv: string; firstMismatch: number; badMessage: number; wrongSize: number };
  seconds: number;
}

/**
 * Sends `count` messages of `outSeed` with send() while it receives `count` of `inSeed` with
 * recv() (each of exactly the size the sequence predicts), both at once, one call at a time each.
 */
async function exchangeMessages(
  channel: Vchan,
  count: number,
  outSeed: number,
  inSeed: number,
  peerDone: Promise<unknown>,
): Promise<MessageRun> {
  const started = performance.now();
  const sending = (async () => {
    const hash = new Fnv64();
    let bytes = 0;
    let largest = 0;
    let messages = 0;
    for (const message of messageSequence(outSeed, channel.writeRingSize, count)) {
      await channel.send(message);
      hash.update(message);
      bytes += message.length;
      largest = Math.max(largest, message.length);
      messages++;
    }
    return { messages, bytes, fnv: hash.hex(), largest };
  })();
  const receiving = (async () => {
    const hash = new Fnv64();
    let bytes = 0;
    let messages = 0;
    let firstMismatch = -1;
    let badMessage = -1;
    let wrongSize = -1;
    for (const expected of messageSequence(inSeed, channel.readRingSize, count)) {
      const message = await channel.recv(expected.length);
      if (message.length !== expected.length && wrongSize < 0) wrongSize = messages;
      if (!message.equals(expected) && firstMismatch < 0) {
        let at = 0;
        while (at < message.length && message[at] === expected[at]) at++;
        firstMismatch = bytes + at;
        badMessage = messages;
      }
      hash.update(message);
      bytes += message.length;
      messages++;
    }
    return { messages, bytes, fnv: hash.hex(), firstMismatch, badMessage, wrongSize };
  })();
  const [sent, received] = await within(Promise.all([sending, receiving, peerDone]), EXCHANGE_MS, 'the message exchange');
  return { sent, received, seconds: (performance.now() - started) / 1000 };
}

/** The bytes and FNV-1a of a message sequence, as its receiver should see them. */
function sequenceDigest(seed: number, ringSize: number, count: number): { bytes: number; fnv: string } {
  const hash = new Fnv64();
  let bytes = 0;
  for (const message of messageSequence(seed, ringSize, count)) {
    hash.update(message);
    bytes += message.length;
  }
  return { bytes, fnv: hash.hex() };
}

/**
 * Before a message exchange: a message one byte larger than the ring is refused at once
 * (EMSGSIZE, nothing written: the peer's checks of what follows would see any stray byte), and so
 * is a recv() of more than the ring this side reads.
 */
async function expectOversizedRefused(channel: Vchan): Promise<void> {
  const written = channel.stats().bytesWritten;
  await expect(
    within(channel.send(Buffer.alloc(channel.writeRingSize + 1, 0xee)), 5_000, 'send() of an oversized message to settle'),
  ).rejects.toMatchObject({ code: 'EMSGSIZE' });
  await expect(within(channel.recv(channel.readRingSize + 1), 5_000, 'recv() of an oversized message to settle')).rejects.toMatchObject({
    code: 'EMSGSIZE',
  });
  expect(channel.stats().bytesWritten).toBe(written);
}

/** Messages each way in the message tests. */
const MESSAGES = 40;

/** What the message tests against vchan-peer vary: who plays what, the rings, the seeds. */
interface MessageScenario {
  scenario: string;
  role: PeerRole;
  orders: RingOrders;
  /** The seed of our messages, and of the peer's. */
  ourSeed: number;
  peerSeed: number;
}

/**
 * A message exchange with a connected vchan-peer --messages until both ends have closed,
 * recorded in the matrix, then checked. Each side's messages are 1..its write ring, the first the
 * whole ring.
 */
async function expectMessageExchange(
  channel: Vchan,
  peer: Peer<MessagePeerResult>,
  { scenario, role, orders, ourSeed, peerSeed }: MessageScenario,
): Promise<void> {
  const rings = peerOrders(role, orders);
  const [peerWrites, weWrite] = [2 ** rings.writeOrder, 2 ** rings.readOrder];
  const channelClosed = closed(channel);
  expect({ write: channel.writeRingSize, read: channel.readRingSize }).toEqual({ write: weWrite, read: peerWrites });
  await expectOversizedRefused(channel);
  const run = await explained(exchangeMessages(channel, MESSAGES, ourSeed, peerSeed, peer.result), peer.said);
  const c = await peer.result;
  const exitCode = await within(peer.exited, CLOSE_MS, 'vchan-peer to exit');
  // Nothing more came, and a recv() after the peer's close fails as libxenvchan_recv does
  // (nobody reads the stream otherwise, so this is also what lets it end and close).
  const afterClose = await within(
    channel.recv(1).then(() => 'resolved', errorCode),
    CLOSE_MS,
    'recv() after the close to settle',
  );
  await within(channelClosed, CLOSE_MS, `our channel to close after the ${role} left`);

  const peerSent = sequenceDigest(peerSeed, peerWrites, MESSAGES);
  const ok =
    c.ok &&
    exitCode === 0 &&
    afterClose === 'ECONNRESET' &&
    c.messagesReceived === MESSAGES &&
    c.receivedFnv === run.sent.fnv &&
    run.received.messages === MESSAGES &&
    run.received.firstMismatch === -1 &&
    run.received.fnv === c.sentFnv &&
    c.sentFnv === peerSent.fnv;
  const [toServer, toClient] = role === 'client' ? [peerSent.bytes, run.sent.bytes] : [run.sent.bytes, peerSent.bytes];
  matrix.push({ scenario, rings: ringsLabel(orders), toServer, toClient, seconds: run.seconds, ok });

  expect(afterClose).toBe('ECONNRESET');
  expect(c).toMatchObject({
    mode: 'messages',
    role,
    ok: true,
    messagesSent: MESSAGES,
    messagesReceived: MESSAGES,
    firstMismatch: -1,
    ...rings,
    largestSent: peerWrites,
  });
  expect(exitCode).toBe(0);
  expect({ bytes: c.received, fnv: c.receivedFnv }).toEqual({ bytes: run.sent.bytes, fnv: run.sent.fnv });
  expect(run.received).toEqual({
    messages: MESSAGES,
    bytes: peerSent.bytes,
    fnv: peerSent.fnv,
    firstMismatch: -1,
    badMessage: -1,
    wrongSize: -1,
  });
  expect({ bytes: c.sent, fnv: c.sentFnv }).toEqual(peerSent);
  expect(run.sent.largest).toBe(weWrite);
}

/**
 * A vchan name for the conventional path /local/domain/0/data/vchan/0/<name>. Debian's
 * libxenvchan 4.17 builds "<path>/event-channel" and "<path>/ring-ref" in a 64-byte buffer and
 * silently truncates longer ones: the server then publishes "ring-re"-like keys and the client
 * reads missing ones (ENOENT). So the path must stay within 49 characters, the name within 20.
 */
function shortName(name: string): string {
  const path = conventionalPath(DOM0, DOM0, name);
  if (path.length > 49) throw new Error(`${path} is too long for libxenvchan 4.17 (over 49 characters)`);
  return name;
}

/** Chunks up to a bit more than the ring, so that some writes must wait for the reader. */
const chunkFor = (ringBytes: number) => ringBytes + 1000;

const RING_CONFIGS: [number, number][] = [
  [0, 0],
  [4096, 4096],
  [65536, 65536],
  [1048576, 1048576],
];

/**
 * Streams of about three rings each way, for these ring sizes: left, the client writes and the
 * server reads; right, the other way. Seeds differ per test (`seedBase`) and per ring size.
 */
function ringFillingStreams(seedBase: number, orders: RingOrders): { toServer: StreamSpec; toClient: StreamSpec } {
  const seed = seedBase + orders.left * 32 + orders.right;
  return {
    toServer: { seed, total: 3 * 2 ** orders.left + 5, maxChunk: chunkFor(2 ** orders.left) },
    toClient: { seed: seed + 1, total: 3 * 2 ** orders.right + 17, maxChunk: chunkFor(2 ** orders.right) },
  };
}

describe('interop with libxenvchan and vchan-socket-proxy on real Xen', () => {
  // Each test, not the file: outside the harness every test fails (a failing beforeAll would
  // report them as skipped).
  beforeEach(() => {
    requireDom0WithPeer('test/xen/interop.test.ts');
  });

  it.each(RING_CONFIGS)(
    'our server, libxenvchan client: rings for (%i, %i)',
    async (leftMin, rightMin) => {
      const orders = chooseOrders(leftMin, rightMin);
      const { toServer, toClient } = ringFillingStreams(100, orders);

      const { server, path, peer, channel } = await acceptPeer(`c-client-${leftMin}`, leftMin, rightMin, (path) =>
        startPeer(toServer, toClient, ['client', String(DOM0), path]),
      );
      expect(server.address()).toMatchObject({ readOrder: orders.left, writeOrder: orders.right });
      await expectStreamExchange(channel, peer, {
        scenario: 'our server + libxenvchan client',
        role: 'client',
        orders,
        peerSends: toServer,
        peerReceives: toClient,
      });
      await within(server.close(), CLOSE_MS, 'the server to close');
      expect(xenstoreExists(path)).toBe(false);
    },
    150_000,
  );

  it.each(RING_CONFIGS)(
    'libxenvchan server, our client: rings for (%i, %i)',
    async (leftMin, rightMin) => {
      const orders = chooseOrders(leftMin, rightMin);
      const { toServer, toClient } = ringFillingStreams(200, orders);

      const { path, peer, channel } = await connectToPeer(`c-server-${leftMin}`, (path) =>
        startPeer(toClient, toServer, ['server', String(DOM0), path, String(leftMin), String(rightMin)]),
      );
      await expectStreamExchange(channel, peer, {
        scenario: 'libxenvchan server + our client',
        role: 'server',
        orders,
        peerSends: toClient,
        peerReceives: toServer,
      });
      // libxenvchan's server removes its keys when it closes.
      expect(xenstoreExists(path)).toBe(false);
    },
    150_000,
  );

  // vchan-socket-proxy passes (0, 0) to libxenvchan_server_init: a one-page vchan, rings 1K/2K.
  // Its quirks shape these tests: it reads the ring only while both ends are open, and when the
  // vchan client leaves it closes the socket at once. So every byte is received on both sides
  // before anyone closes.
  const PROXY_TO_SERVER = 256 * 1024 + 5;
  const PROXY_TO_CLIENT = 256 * 1024 + 17;

  it('vchan-socket-proxy as the server (vchan to a Unix socket), our client', async () => {
    const socketPath = join(tmpdir(), `xen-vchan-proxy-${process.pid}.sock`);
    const path = conventionalPath(DOM0, DOM0, shortName('proxy-server'));
    rmSync(socketPath, { force: true });
    const unix = net.createServer();
    const accepted = new Promise<net.Socket>((resolve) => unix.once('connection', resolve));
    await new Promise<void>((resolve) => unix.listen(socketPath, resolve));
    onCleanup(() => new Promise((resolve) => unix.close(resolve)));
    onCleanup(() => rmSync(socketPath, { force: true }));
    onCleanup(() => xenstoreRemove(path)); // the proxy never leaves by itself, and is killed

    const { died: proxyDied } = startProxy(['--mode=server', String(DOM0), path, socketPath], ['ignore', 'ignore', 'pipe']);
    const channel = await within(
      Promise.race([connect({ domid: DOM0, path, timeout: 30_000 }), proxyDied]),
      35_000,
      'to connect to vchan-socket-proxy',
    );
    onCleanup(() => channel.destroy());
    // The proxy connects to the socket once a vchan client is there.
    const socket = await within(Promise.race([accepted, proxyDied]), 30_000, 'vchan-socket-proxy to connect to the Unix socket');
    onCleanup(() => socket.destroy());

    // our client -> vchan (left ring) -> proxy -> socket, and socket -> proxy -> vchan (right) -> us
    const toServer: StreamSpec = { seed: 301, total: PROXY_TO_SERVER, maxChunk: 5000 };
    const toClient: StreamSpec = { seed: 302, total: PROXY_TO_CLIENT, maxChunk: 7000 };
    const started = performance.now();
    const [sentHere, atSocket, sentBySocket, receivedHere] = await within(
      Promise.all([
        sendSeeded(channel, toServer),
        receiveChecked(socket, toServer),
        sendSeeded(socket, toClient),
        receiveChecked(channel, toClient),
      ]),
      EXCHANGE_MS,
      'the exchange through vchan-socket-proxy',
    );
    const seconds = (performance.now() - started) / 1000;
    // We leave; the proxy sees the vchan close and closes the socket.
    const socketClosed = closed(socket);
    channel.end();
    await within(socketClosed, CLOSE_MS, 'vchan-socket-proxy to close the socket after our client left');

    expectProxyExchange({ scenario: 'vchan-socket-proxy server + our client', rings: '1K/2K', toServer, toClient, seconds }, [
      { received: atSocket, sent: sentHere, spec: toServer },
      { received: receivedHere, sent: sentBySocket, spec: toClient },
    ]);
  }, 150_000);

  it('vchan-socket-proxy as the client (vchan to its stdin/stdout), our server', async () => {
    const { server, channel: accepted } = await listen({ name: shortName('proxy-client'), readMin: 65536, writeMin: 65536 });
    const {
      proxy,
      exited: proxyExited,
      died: proxyDied,
    } = startProxy(['--mode=client', String(DOM0), server.path!, '-'], ['pipe', 'pipe', 'pipe']);
    const channel = await within(Promise.race([accepted, proxyDied]), 30_000, 'vchan-socket-proxy to connect');
    const channelClosed = closed(channel);

    // proxy stdin -> vchan (left ring) -> us, and us -> vchan (right) -> proxy stdout
    const toServer: StreamSpec = { seed: 401, total: PROXY_TO_SERVER, maxChunk: 5000 };
    const toClient: StreamSpec = { seed: 402, total: PROXY_TO_CLIENT, maxChunk: 70_000 };
    const started = performance.now();
    const [sentHere, atStdout, sentToStdin, receivedHere] = await within(
      Promise.all([
        sendSeeded(channel, toClient),
        receiveChecked(proxy.stdout!, toClient),
        sendSeeded(proxy.stdin!, toServer),
        receiveChecked(channel, toServer),
      ]),
      EXCHANGE_MS,
      'the exchange through vchan-socket-proxy',
    );
    const seconds = (performance.now() - started) / 1000;
    // End of its stdin: the proxy closes the vchan and exits; we see the client go.
    proxy.stdin!.end();
    const exitCode = await within(proxyExited, CLOSE_MS, 'vchan-socket-proxy to exit after the end of its input');
    await within(channelClosed, CLOSE_MS, 'our channel to close after the proxy left');

    expectProxyExchange(
      { scenario: 'our server + vchan-socket-proxy client', rings: '64K/64K', toServer, toClient, seconds },
      [
        { received: atStdout, sent: sentHere, spec: toClient },
        { received: receivedHere, sent: sentToStdin, spec: toServer },
      ],
      exitCode,
    );
  }, 150_000);

  // libxenvchan_send / libxenvchan_recv against our send() / recv(). MESSAGES each way; message
  // sizes 1..ring of the sender's write ring, the first one the whole ring.
  const MESSAGE_CONFIGS: [number, number][] = [
    [4096, 4096],
    [65536, 65536],
    [4096, 65536],
  ];

  it.each(MESSAGE_CONFIGS)(
    'messages: our server, libxenvchan client (send/recv), rings for (%i, %i)',
    async (leftMin, rightMin) => {
      const orders = chooseOrders(leftMin, rightMin);
      const toServerSeed = 500 + orders.left * 32 + orders.right; // the client's messages (left ring)
      const toClientSeed = toServerSeed + 1000; // ours (right ring)
      const { peer, channel } = await acceptPeer(`m-cli-${leftMin}-${rightMin}`, leftMin, rightMin, (path) =>
        startMessagePeer(MESSAGES, toServerSeed, toClientSeed, ['client', String(DOM0), path]),
      );
      await expectMessageExchange(channel, peer, {
        scenario: 'messages: our server + libxenvchan client',
        role: 'client',
        orders,
        ourSeed: toClientSeed,
        peerSeed: toServerSeed,
      });
    },
    150_000,
  );

  it.each(MESSAGE_CONFIGS)(
    'messages: libxenvchan server, our client (send/recv), rings for (%i, %i)',
    async (leftMin, rightMin) => {
      const orders = chooseOrders(leftMin, rightMin);
      const toClientSeed = 600 + orders.left * 32 + orders.right; // the server's messages (right ring)
      const toServerSeed = toClientSeed + 1000; // ours (left ring)
      const { path, peer, channel } = await connectToPeer(`m-srv-${leftMin}-${rightMin}`, (path) =>
        startMessagePeer(MESSAGES, toClientSeed, toServerSeed, ['server', String(DOM0), path, String(leftMin), String(rightMin)]),
      );
      await expectMessageExchange(channel, peer, {
        scenario: 'messages: libxenvchan server + our client',
        role: 'server',
        orders,
        ourSeed: toServerSeed,
        peerSeed: toClientSeed,
      });
      expect(xenstoreExists(path)).toBe(false);
    },
    150_000,
  );
});
