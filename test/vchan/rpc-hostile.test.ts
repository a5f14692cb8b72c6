// MessageChannel and RpcPeer against a hostile peer: another domain controls every byte we read.
// Whatever it sends must end in EPROTO (or EMSGSIZE) on that channel, never an exception that
// escapes, and whatever it does (flood calls, never read the answers) must leave our memory
// bounded by the high-water marks and the largest message. The peer here is written by hand: raw
// frames over a Unix socket pair, or over a real vchan pair (both ends in this process).
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import v8 from 'node:v8';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { MessageChannel, RpcPeer, structuredCloneCodec, Vchan, type RpcOptions } from '@xen-vchan/vchan';
import { connectClientLink, createServerLink } from '@xen-vchan/vchan/internal';
import { backend, PEER, SELF, SETTLE_MS, sleep } from '../support/domains.js';
import { random } from '../support/stream-data.mjs';

const devices = (domid: number) => (backend === 'sim' ? { domid } : {});

let directory = '';
let listener: net.Server;
const opened: Duplex[] = [];
let uncaught: unknown[] = [];
const onUncaught = (error: unknown) => uncaught.push(error);

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'rpc-hostile-'));
  listener = net.createServer();
  listener.listen(join(directory, 'socket'));
  await once(listener, 'listening');
});

afterAll(async () => {
  await new Promise((resolve) => listener.close(resolve));
  rmSync(directory, { recursive: true, force: true });
});

beforeEach(() => {
  uncaught = [];
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
});

afterEach(() => {
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
  for (const stream of opened.splice(0)) stream.destroy();
  // Nothing the peer sent may have thrown past the library.
  expect(uncaught).toEqual([]);
});

type Pair = { ours: Duplex; theirs: Duplex };

/** Two ends of a Unix socket: ours, and the hostile peer's. */
async function unixPair(): Promise<Pair> {
  const accepted = once(listener, 'connection') as Promise<[net.Socket]>;
  const ours = net.connect(join(directory, 'socket'));
  await once(ours, 'connect');
  const [theirs] = await accepted;
  opened.push(ours, theirs);
  return { ours, theirs };
}

/** A real vchan, both ends here: we serve, the hostile peer is the client. */
async function vchanPair(): Promise<Pair & { ours: Vchan; theirs: Vchan }> {
  const shared = createServerLink({ clientDomid: PEER, leftMin: 65536, rightMin: 65536, devices: devices(SELF) });
  const clientLink = connectClientLink({ serverDomid: SELF, ringRef: shared.ringRef, port: shared.port, devices: devices(PEER) });
  const ours = new Vchan(shared.link);
  const theirs = new Vchan(clientLink);
  opened.push(ours, theirs);
  return { ours, theirs };
}

const pairs = { 'a Unix socket': unixPair, 'a vchan': vchanPair };

function frame(body: Uint8Array): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32LE(body.length, 0);
  return Buffer.concat([header, body]);
}

const json = (value: unknown) => frame(Buffer.from(JSON.stringify(value)));

/** How the RPC channel closed: the 'close' event's error. */
function closing(rpc: RpcPeer): Promise<(Error & { code?: string }) | null> {
  return new Promise((resolve) => rpc.once('close', resolve));
}

/** A message as the peer reads it from us: the fields RpcPeer writes, unchecked. */
type PeerFrame = { id: number; type: string; [field: string]: unknown };

/** Splits the frames the peer reads from us, and hands each one (decoded as JSON) to `onMessage`. */
function readFrames(stream: Duplex, onMessage: (message: PeerFrame) => void): void {
  let pending: Buffer = Buffer.alloc(0);
  stream.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32LE(0)) {
      const length = pending.readUInt32LE(0);
      onMessage(JSON.parse(pending.subarray(4, 4 + length).toString()));
      pending = pending.subarray(4 + length);
    }
  });
}

/** Writes `frames` with backpressure; `progress` says how far it got and whether it is held up. */
async function writeAll(stream: Duplex, frames: Iterable<Buffer>, progress = { written: 0, waiting: false }) {
  for (const bytes of frames) {
    if (stream.destroyed) return progress;
    if (!stream.write(bytes)) {
      progress.waiting = true;
      await new Promise<void>((resolve) => {
        const done = () => {
          stream.off('drain', done);
          stream.off('close', done);
          resolve();
        };
        stream.on('drain', done);
        stream.on('close', done);
      });
      progress.waiting = false;
    }
    progress.written++;
  }
  return progress;
}

/** Waits until `done()`, or until `progress()` has not moved for a while (the peer is held up). */
async function quiet(progress: () => number, done: () => boolean): Promise<void> {
  let last = -1;
  let since = performance.now();
  while (!done()) {
    await sleep(20);
    const now = progress();
    if (now !== last) {
      last = now;
      since = performance.now();
    } else if (performance.now() - since > 2 * SETTLE_MS) return;
  }
}

/** Everything our side holds for the channel: the stream's buffers both ways and the channel's own. */
function held(stream: Duplex, messages: MessageChannel): number {
  return stream.writableLength + stream.readableLength + (messages.queuedBytes ?? 0) + (messages.unsentBytes ?? 0);
}

describe('RPC: every malformed message ends in EPROTO', () => {
  it.each(Object.keys(pairs))('an error answer without its error closes with EPROTO over %s, not an uncaught TypeError', async (kind) => {
    const { ours, theirs } = await pairs[kind as keyof typeof pairs]();
    const rpc = new RpcPeer(ours);
    const closed = closing(rpc);
    const call = rpc.call('anything');
    theirs.write(json({ type: 'error', id: 1 }));
    const error = await closed;
    expect(error).toMatchObject({ code: 'EPROTO' });
    expect(error!.message).toMatch(/the error answering call 1 is missing, not an object/);
    await expect(call).rejects.toMatchObject({ code: 'ECONNRESET', cause: { code: 'EPROTO' } });
    expect(ours.destroyed).toBe(true);
  });

  const cases: [what: string, message: unknown, says: RegExp][] = [
    ['a number', 5, /a message is 5, not an object/],
    ['null', null, /a message is null, not an object/],
    ['an array', [{ type: 'call', id: 1, method: 'echo' }], /a message is an array/],
    ['a string', 'call', /a message is "call", not an object/],
    ['no type', { id: 1 }, /the type missing/],
    ['an unknown type', { type: 'notify', id: 1 }, /the type "notify"/],
    ['a type of the wrong kind', { type: ['call'], id: 1 }, /the type an array/],
    ['id 0', { type: 'call', id: 0, method: 'echo' }, /call message has the id 0, not a positive safe integer/],
    ['a negative id', { type: 'cancel', id: -1 }, /cancel message has the id -1/],
    ['a fractional id', { type: 'result', id: 1.5 }, /result message has the id 1.5/],
    ['an id as a string', { type: 'call', id: '1', method: 'echo' }, /the id "1"/],
    ['an id past 2^53', { type: 'call', id: 2 ** 53, method: 'echo' }, /the id 9007199254740992/],
    ['no id', { type: 'error', error: { code: 'E', message: 'm' } }, /the id missing/],
    ['a method that is not a string', { type: 'call', id: 1, method: 7 }, /names the method 7/],
    ['no method', { type: 'call', id: 1 }, /names the method missing/],
    ['a 257-character method', { type: 'call', id: 1, method: 'm'.repeat(257) }, /not a string of at most 256 characters/],
    ['an error that is a string', { type: 'error', id: 1, error: 'EBUSY' }, /the error answering call 1 is "EBUSY", not an object/],
    ['an error code that is a number', { type: 'error', id: 1, error: { code: 5, message: 'm' } }, /has the code 5, not a string/],
    ['an error without a message', { type: 'error', id: 1, error: { code: 'E' } }, /has the message missing, not a string/],
    ['an error name that is an object', { type: 'error', id: 1, error: { code: 'E', message: 'm', name: {} } }, /has the name an object/],
    ['an answer for a call never made', { type: 'result', id: 99, value: 1 }, /an answer came for call 99, which this side never sent/],
  ];

  it.each(cases)('%s', async (_what, message, says) => {
    const { ours, theirs } = await unixPair();
    const rpc = new RpcPeer(ours, { handlers: { echo: (params) => params } });
    const closed = closing(rpc);
    const pending = rpc.call('wait', undefined, { timeout: 0 }); // id 1 is in flight
    pending.catch(() => {});
    theirs.write(json(message));
    const error = await closed;
    expect(error).toMatchObject({ code: 'EPROTO' });
    expect(error!.message).toMatch(says);
    await expect(pending).rejects.toMatchObject({ code: 'ECONNRESET' });
  });

  it('a call whose id is still being served, bytes that are not JSON, and an empty message each close with EPROTO', async () => {
    for (const [bytes, says] of [
      [
        Buffer.concat([json({ type: 'call', id: 3, method: 'slow' }), json({ type: 'call', id: 3, method: 'slow' })]),
        /call 3 arrived while a call with that id was still being served/,
      ],
      [frame(Buffer.from('{"type":')), /a message of 8 bytes could not be decoded/],
      [frame(Buffer.alloc(0)), /a message of 0 bytes could not be decoded/],
    ] as const) {
      const { ours, theirs } = await unixPair();
      const rpc = new RpcPeer(ours, { handlers: { slow: () => sleep(10_000) } });
      const closed = closing(rpc);
      theirs.write(bytes);
      const error = await closed;
      expect(error).toMatchObject({ code: 'EPROTO' });
      expect(error!.message).toMatch(says);
    }
  });

  it('drops a late answer for a call it gave up on, and the channel goes on', async () => {
    const { ours, theirs } = await unixPair();
    const rpc = new RpcPeer(ours);
    const seen: PeerFrame[] = [];
    readFrames(theirs, (message) => seen.push(message));
    await expect(rpc.call('slow', undefined, { timeout: 20 })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    const second = rpc.call('add', { a: 1, b: 2 });
    theirs.write(
      Buffer.concat([
        json({ type: 'result', id: 1, value: 'late' }),
        json({ type: 'error', id: 1, error: { code: 'E', message: 'later' } }),
      ]),
    );
    theirs.write(json({ type: 'result', id: 2, value: 3 }));
    expect(await second).toBe(3);
    expect(seen.map((message) => message.type)).toEqual(['call', 'cancel', 'call']);
    expect(ours.destroyed).toBe(false);
  });

  it('ends in EPROTO on garbage from the structured clone codec, never a crash', async () => {
    const next = random(20260101);
    const garbage: Buffer[] = [
      Buffer.alloc(0),
      v8.serialize(new Map([[1, 2]])),
      v8.serialize([1, 2]),
      v8.serialize({ type: 'call', id: 1n, method: 'x' }),
    ];
    for (let i = 0; i < 40; i++) {
      const bytes = Buffer.alloc(1 + (next() % 200), 0);
      for (let j = 0; j < bytes.length; j++) bytes[j] = next() & 0xff;
      if (i % 2 === 0) v8.serialize(null).copy(bytes, 0, 0, 2); // a valid header, so the body is parsed
      garbage.push(bytes);
    }
    for (const bytes of garbage) {
      const { ours, theirs } = await unixPair();
      const rpc = new RpcPeer(ours, { codec: structuredCloneCodec });
      const closed = closing(rpc);
      theirs.write(frame(bytes));
      expect(await closed).toMatchObject({ code: 'EPROTO' });
    }
  });

  it('answers with an error whatever a handler throws or returns, and nothing escapes', async () => {
    const { ours, theirs } = await unixPair();
    const throwing = {
      get code(): string {
        throw new Error('no code');
      },
      message: 'a getter that throws',
    };
    new RpcPeer(ours, {
      maxMessageSize: 1000,
      handlers: {
        throwsNull: () => {
          throw null;
        },
        throwsUndefined: () => Promise.reject(undefined),
        throwsGetter: () => {
          throw throwing;
        },
        bigint: () => 10n, // JSON cannot encode it
        cyclic: () => {
          const value: Record<string, unknown> = {};
          value.self = value;
          return value;
        },
        huge: () => 'x'.repeat(5000), // over the 1000-byte limit
      },
    });
    const caller = new RpcPeer(theirs, { maxMessageSize: 1 << 20 });
    await expect(caller.call('throwsNull')).rejects.toMatchObject({ name: 'RemoteError', code: 'ERR_RPC_REMOTE', message: 'null' });
    await expect(caller.call('throwsUndefined')).rejects.toMatchObject({ code: 'ERR_RPC_REMOTE', message: 'undefined' });
    await expect(caller.call('throwsGetter')).rejects.toMatchObject({ code: 'ERR_RPC_REMOTE', message: 'a getter that throws' });
    await expect(caller.call('bigint')).rejects.toMatchObject({
      code: 'ERR_RPC_ENCODE',
      message: /answer of "bigint" could not be encoded/,
    });
    await expect(caller.call('cyclic')).rejects.toMatchObject({ code: 'ERR_RPC_ENCODE' });
    await expect(caller.call('huge')).rejects.toMatchObject({ code: 'EMSGSIZE', message: /over the channel's limit of 1000/ });
    await expect(caller.call('nosuch')).rejects.toMatchObject({ code: 'ERR_RPC_NO_METHOD' });
    // A call this side cannot encode fails alone; the channel goes on.
    await expect(caller.call('throwsNull', 1n)).rejects.toMatchObject({ code: 'ERR_RPC_ENCODE' });
    await expect(caller.call('m'.repeat(257))).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(caller.call('throwsNull')).rejects.toMatchObject({ code: 'ERR_RPC_REMOTE' });
  });

  it('closes with EMSGSIZE on a length just over maxMessageSize', async () => {
    const { ours, theirs } = await unixPair();
    const rpc = new RpcPeer(ours, { maxMessageSize: 100 });
    const closed = closing(rpc);
    const header = Buffer.alloc(4);
    header.writeUInt32LE(101, 0);
    theirs.write(header);
    expect(await closed).toMatchObject({ code: 'EMSGSIZE' });
  });
});

describe('RPC and messages: backpressure and bounded memory', () => {
  const CALLS = 30_000;

  /** A hostile peer sends CALLS calls and reads none of the answers; then it starts reading. */
  async function flood(pair: Pair, options: RpcOptions) {
    const { ours, theirs } = pair;
    if (theirs instanceof net.Socket) theirs.pause();
    let served = 0;
    let most = 0;
    const rpc = new RpcPeer(ours, {
      ...options,
      handlers: {
        echo: (params) => {
          served++;
          most = Math.max(most, held(ours, rpc.messages));
          return params;
        },
      },
    });
    const sample = setInterval(() => (most = Math.max(most, held(ours, rpc.messages))), 1);
    const calls = function* () {
      for (let id = 1; id <= CALLS; id++) yield json({ type: 'call', id, method: 'echo', params: { n: id, text: 'hello' } });
    };
    const progress = { written: 0, waiting: false };
    const writing = writeAll(theirs, calls(), progress);
    try {
      await quiet(
        () => served,
        () => progress.written === CALLS,
      );
      const bound = 2 * (ours.writableHighWaterMark + ours.readableHighWaterMark) + rpc.messages.maxMessageSize;
      const stalled = { served, written: progress.written, most, bound };
      // The peer is held up: it could not write all its calls, we stopped serving, and what we hold is bounded.
      expect(stalled.written).toBeLessThan(CALLS);
      expect(stalled.served).toBeLessThan(CALLS);
      expect(progress.waiting).toBe(true);
      expect(stalled.most).toBeLessThanOrEqual(bound);

      // Once the peer reads, every call is served and answered, in full.
      const answered = new Set<number>();
      let finished: () => void;
      const all = new Promise<void>((resolve) => (finished = resolve));
      readFrames(theirs, (message) => {
        expect(message).toMatchObject({ type: 'result', value: { n: message.id, text: 'hello' } });
        answered.add(message.id);
        if (answered.size === CALLS) finished();
      });
      theirs.resume();
      await all;
      await writing;
      expect(most).toBeLessThanOrEqual(bound);
      return { ...stalled, mostOverall: most };
    } finally {
      clearInterval(sample);
    }
  }

  it('a peer that sends 30,000 calls over a vchan and reads no answer meets backpressure; our buffers stay bounded', async () => {
    const report = await flood(await vchanPair(), { maxMessageSize: 65536 });
    console.log(
      `[${backend}] vchan flood: stalled after ${report.written} calls written, ${report.served} served; held at most ${report.mostOverall} bytes (bound ${report.bound})`,
    );
  }, 120_000);

  it('the same over a Unix socket, with a limit of 8 calls served at once', async () => {
    const report = await flood(await unixPair(), { maxMessageSize: 65536, maxConcurrentCalls: 8 });
    console.log(
      `unix flood: stalled after ${report.written} calls written, ${report.served} served; held at most ${report.mostOverall} bytes (bound ${report.bound})`,
    );
  }, 120_000);

  it('a MessageChannel nobody reads stops reading at maxQueuedMessages, and delivers everything in order once read', async () => {
    const { ours, theirs } = await unixPair();
    const messages = new MessageChannel(ours, { maxQueuedMessages: 100 });
    const total = 20_000;
    const progress = { written: 0, waiting: false };
    const writing = writeAll(
      theirs,
      (function* () {
        for (let n = 0; n < total; n++) yield json({ n });
      })(),
      progress,
    );
    await quiet(
      () => progress.written,
      () => progress.written === total,
    );
    expect(progress.written).toBeLessThan(total);
    expect(messages.isPaused()).toBe(false); // nobody paused delivery; the queue is full
    expect(ours.isPaused()).toBe(true);
    // 100 queued messages of 8-12 bytes, the rest of one chunk unsplit, and the socket's buffer.
    expect(messages.queuedBytes).toBeLessThanOrEqual(100 * 12 + 65536);
    expect(ours.readableLength).toBeLessThanOrEqual(ours.readableHighWaterMark + 65536);
    let n = 0;
    for await (const message of messages) {
      expect(JSON.parse(message.toString())).toEqual({ n });
      if (++n === total) break;
    }
    await writing;
  });

  it('send() waits for drain: 1000 sends to a peer that does not read leave the stream at its high-water mark', async () => {
    const { ours } = await vchanPair();
    const messages = new MessageChannel(ours);
    const sends = Array.from({ length: 1000 }, () => messages.send(Buffer.alloc(10_000)));
    const all = Promise.allSettled(sends);
    await sleep(SETTLE_MS);
    expect(ours.writableLength).toBeLessThanOrEqual(ours.writableHighWaterMark + 10_004);
    expect(messages.unsentBytes).toBeGreaterThan(0);
    ours.destroy();
    // Those not yet written fail with the channel's close (the vchan fails the write it was doing as destroyed).
    for (const result of await all)
      if (result.status === 'rejected') expect(['ECONNRESET', 'ERR_STREAM_DESTROYED']).toContain(result.reason.code);
  });

  it('beyond maxCallsInFlight, calls wait their turn: only that many are ever on the wire', async () => {
    const { ours, theirs } = await unixPair();
    const rpc = new RpcPeer(ours, { maxCallsInFlight: 4 });
    const seen: PeerFrame[] = [];
    readFrames(theirs, (message) => seen.push(message));
    const calls = Array.from({ length: 10 }, (_, index) => rpc.call('n', index + 1, { timeout: index === 6 ? 30 : 0 }));
    calls[6]!.catch(() => {});
    const sent = () => seen.filter((message) => message.type === 'call').map((message) => message.id);
    const answer = (...ids: number[]) => theirs.write(Buffer.concat(ids.map((id) => json({ type: 'result', id, value: id * 10 }))));
    const until = async (condition: () => boolean) => {
      while (!condition()) await sleep(5);
    };
    await sleep(SETTLE_MS);
    expect(sent()).toEqual([1, 2, 3, 4]);
    // Call 7 times out while it waits: it is never sent, and no cancel goes out for it.
    await expect(calls[6]).rejects.toMatchObject({ code: 'ETIMEDOUT', message: /still waiting to be sent/ });
    answer(2, 4);
    await until(() => sent().length === 6);
    expect(sent()).toEqual([1, 2, 3, 4, 5, 6]);
    answer(1, 3, 5, 6);
    await until(() => sent().length === 9);
    answer(8, 9, 10);
    const results = await Promise.allSettled(calls);
    expect(results.map((result) => (result.status === 'fulfilled' ? result.value : (result.reason as { code: string }).code))).toEqual([
      10,
      20,
      30,
      40,
      50,
      60,
      'ETIMEDOUT',
      80,
      90,
      100,
    ]);
    expect(sent()).toEqual([1, 2, 3, 4, 5, 6, 8, 9, 10]);
    expect(seen.filter((message) => message.type === 'cancel')).toEqual([]);
    // An answer for an id never sent is still a violation.
    const closed = closing(rpc);
    theirs.write(json({ type: 'result', id: 11, value: 0 }));
    expect(await closed).toMatchObject({ code: 'EPROTO', message: /call 11, which this side never sent/ });
  });
});
