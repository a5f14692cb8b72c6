#!/usr/bin/env node
// Hostile-peer fuzzing of the message layers (MessageChannel, RpcPeer with both codecs), seeded and
// bounded in time. Each iteration connects our side to a hostile peer over an in-process Duplex
// pair (an in-memory pair with real backpressure, or a Unix socket pair). The peer reads our
// frames and answers our calls honestly, wrongly, late, twice or never; sends calls of its own
// (known and unknown methods, random parameters), cancels, answers to calls we gave up on,
// messages split at random points, floods of calls while it reads nothing; and ends with a
// definite violation (a length just over maxMessageSize or huge, an empty or random-byte
// message, a random JSON or structured-clone value, a message of each type with one field of the
// wrong type, an answer to a call we never made), a message cut short and a close, a clean close,
// or an abrupt destroy. Our side keeps calling (or sending) all along. Checked:
//   - no exception or rejection escapes (an 'uncaughtException' and 'unhandledRejection' listener
//     is installed for the run; each one is a failure);
//   - every error our side reports has a code in ALLOWED_ERRORS (a RemoteError, whose code the
//     peer chooses, counts as 'RemoteError');
//   - a definite violation closes our side within 1 s, with EPROTO (EMSGSIZE for a length);
//   - nothing else closes it early, and messages arrive intact and in order;
//   - what our side holds (the stream's buffers both ways, the channel's queue and unsent
//     messages) never exceeds a bound set by the high-water marks and the options;
//   - every stream and handle opened is closed at the end.
//   node test/fuzz/framing-fuzz.mjs [--seconds 10] [--seed 1] [--json]
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import v8 from 'node:v8';
import { MessageChannel, RpcPeer, jsonCodec, structuredCloneCodec } from '@xen-vchan/vchan';
import { random } from '../support/stream-data.mjs';
import { startReport } from './part-report.mjs';

/** @typedef {ReturnType<typeof chooseSetup>} Setup */
/**
 * @typedef {import('./fuzz.mjs').PartReport & {
 *   violations: number; closedByViolation: number; backpressureReached: number; mostHeldRatio: number;
 * }} FramingReport
 */
/**
 * Our side of one iteration: the channel whose queues count towards what it holds, how to stop
 * it, and (for plain messages) a check of what arrived.
 * @typedef {{ channel: MessageChannel; stop(): Promise<void>; check?: () => void }} OurSide
 */
/**
 * How the peer's last act ended: a definite violation our side must close on (with `expect`, from
 * `at`), a close of some kind, or nothing.
 * @typedef {{ violation: true; closes?: undefined; what: string; expect: string; at: number }
 *   | { violation?: undefined; closes: true; what: string }
 *   | { violation: false; closes?: undefined }} Ending
 */
/**
 * A message as the peer decoded it: any value the codec gives (reading these fields of a
 * primitive gives undefined, as for a message without them).
 * @typedef {{ type?: unknown; id?: unknown; method?: unknown; params?: unknown; value?: unknown } | null | undefined} Decoded
 */

const CLOSE_WITHIN_MS = 1000;
/**
 * Codes our side may report: EPROTO / EMSGSIZE (the peer broke the protocol), ECONNRESET (the
 * channel closed, or ended inside a message; pending calls fail with it), EPIPE (the peer went
 * away while we wrote), ETIMEDOUT (our own calls' timeouts), and RemoteError (an error answer:
 * its code is the peer's to choose).
 */
export const ALLOWED_ERRORS = ['EPROTO', 'EMSGSIZE', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'RemoteError'];
/** Our side keeps this many calls in flight (RPC) or sends this many messages in a row. */
const OUR_IN_FLIGHT = 4;
const OUR_PARAMS_MAX = 2048;

const KEYS = [
  'type',
  'id',
  'method',
  'params',
  'value',
  'error',
  'code',
  'message',
  'name',
  '__proto__',
  'constructor',
  'toString',
  '',
  'x',
];
const TYPES = ['call', 'result', 'error', 'cancel'];
/**
 * For each field of each message type, values of the wrong kind (undefined: the field is left out).
 * @type {Record<string, unknown[]>}
 */
const WRONG = {
  type: [undefined, null, 0, 'CALL', 'calls', '', ['call'], {}, true],
  id: [undefined, null, 0, -1, -0.5, 1.5, '1', 2 ** 53, 2 ** 64, [], {}, true, Number.NaN, Number.POSITIVE_INFINITY],
  method: [undefined, null, 1, [], {}, 'm'.repeat(257), true],
  error: [undefined, null, 'EBUSY', 1, [], true],
  'error.code': [undefined, null, 1, [], {}, false],
  'error.message': [undefined, null, 1, {}, [], false],
  'error.name': [null, 1, {}, [], true],
};
/** @type {Record<string, string[]>} */
const FIELDS = {
  call: ['type', 'id', 'method'],
  result: ['type', 'id'],
  error: ['type', 'id', 'error', 'error.code', 'error.message', 'error.name'],
  cancel: ['type', 'id'],
};

/**
 * Two connected Duplex ends in memory, like a socket pair: what one writes the other reads, a
 * write completes only once the reader's buffer is under its high-water mark (so a reader that
 * stops reading holds the writer up), no half-close, and destroying one end ends the other's
 * readable side and fails its blocked write with EPIPE.
 * @returns {[PairEnd, PairEnd]}
 */
export function duplexPair(highWaterMark = 16384) {
  const a = new PairEnd(highWaterMark);
  const b = new PairEnd(highWaterMark);
  a.other = b;
  b.other = a;
  return [a, b];
}

class PairEnd extends Duplex {
  /** @param {number} highWaterMark */
  constructor(highWaterMark) {
    super({ allowHalfOpen: false, readableHighWaterMark: highWaterMark, writableHighWaterMark: highWaterMark });
    /** @type {PairEnd | null} set by duplexPair */
    this.other = null;
    /**
     * The other end's write waiting for room in our readable buffer.
     * @type {((error?: Error | null) => void) | null}
     */
    this.blocked = null;
    this.eof = false;
  }

  /** @override */
  _read() {
    const blocked = this.blocked;
    this.blocked = null;
    blocked?.();
  }

  /**
   * @override
   * @param {Buffer} chunk
   * @param {BufferEncoding} _encoding
   * @param {(error?: Error | null) => void} callback
   */
  _write(chunk, _encoding, callback) {
    const other = this.other;
    if (!other || other.destroyed || other.eof) {
      callback(Object.assign(new Error('The other end is closed.'), { code: 'EPIPE' }));
      return;
    }
    if (other.push(chunk)) callback();
    else other.blocked = callback;
  }

  /**
   * @override
   * @param {(error?: Error | null) => void} callback
   */
  _final(callback) {
    this.other?.end_();
    callback();
  }

  /**
   * @override
   * @param {Error | null} error
   * @param {(error?: Error | null) => void} callback
   */
  _destroy(error, callback) {
    const blocked = this.blocked;
    this.blocked = null;
    blocked?.(Object.assign(new Error('The other end is closed.'), { code: 'EPIPE' }));
    this.other?.end_();
    callback(error);
  }

  end_() {
    if (this.eof || this.destroyed) return;
    this.eof = true;
    this.push(null);
  }
}

const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** @param {Uint8Array} body */
function frame(body) {
  const header = Buffer.alloc(4);
  header.writeUInt32LE(body.length, 0);
  return Buffer.concat([header, body]);
}

/** @param {number} length */
function header(length) {
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32LE(length >>> 0, 0);
  return bytes;
}

/**
 * @param {() => number} next
 * @param {number} size
 */
function randomBytes(next, size) {
  const bytes = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) bytes[i] = next() & 0xff;
  return bytes;
}

/**
 * @param {() => number} next
 * @param {number} [most]
 */
function randomString(next, most = 20) {
  const length = next() % (most + 1);
  let text = '';
  for (let i = 0; i < length; i++) {
    const kind = next() % 10;
    text +=
      kind < 7
        ? String.fromCharCode(32 + (next() % 95))
        : kind < 9
          ? String.fromCharCode(next() % 0x3000)
          : String.fromCharCode(0xd800 + (next() % 0x800));
  }
  return text;
}

/**
 * A random value: JSON's kinds, and with `rich` what structured clone adds (BigInt, Map, Date, typed arrays, cycles).
 * @param {() => number} next
 * @param {boolean} rich
 * @param {number} [depth]
 * @returns {unknown}
 */
function randomValue(next, rich, depth = 0) {
  const kinds = depth > 3 ? 6 : 9;
  switch (next() % (rich ? kinds + 3 : kinds)) {
    case 0:
      return null;
    case 1:
      return next() % 2 === 0;
    case 2:
      return [0, -1, 1, 2 ** 53, -(2 ** 31), next(), -next()][next() % 7];
    case 3:
      return next() / (1 + (next() % 1000));
    case 4:
      return randomString(next);
    case 5:
      return KEYS[next() % KEYS.length];
    case 6:
      return Array.from({ length: next() % 5 }, () => randomValue(next, rich, depth + 1));
    case 7: {
      const object = {};
      for (let i = next() % 5; i > 0; i--)
        Object.defineProperty(object, next() % 3 === 0 ? randomString(next, 5) : KEYS[next() % KEYS.length], {
          value: randomValue(next, rich, depth + 1),
          enumerable: true,
          writable: true,
          configurable: true,
        });
      return object;
    }
    case 8: {
      let nested = randomValue(next, rich, 4);
      for (let i = next() % 50; i > 0; i--) nested = next() % 2 === 0 ? [nested] : { type: nested };
      return nested;
    }
    case kinds:
      return [BigInt(next()), undefined, Number.NaN, -0, new Date(next())][next() % 5];
    case kinds + 1:
      return [
        new Map([[randomValue(next, rich, depth + 1), 1]]),
        new Set([1, 'a']),
        new Uint8Array(next() % 16),
        new Error(randomString(next)),
      ][next() % 4];
    default: {
      /** @type {{ type: string; id: number; method?: unknown }} */
      const cyclic = { type: 'call', id: 1 };
      cyclic.method = cyclic;
      return cyclic;
    }
  }
}

/**
 * A random value that is certainly not a well-formed message: not an object, or one with a wrong type.
 * @param {() => number} next
 * @param {boolean} rich
 */
function randomNonMessage(next, rich) {
  const value = randomValue(next, rich);
  if (typeof value === 'object' && value !== null && !Array.isArray(value) && Object.getPrototypeOf(value) === Object.prototype) {
    /** @type {Record<string, unknown>} */ (value).type = WRONG.type[1 + (next() % (WRONG.type.length - 1))];
  }
  return value;
}

/**
 * @param {Record<string, unknown>} message
 * @param {string} path  a field, or a field of an object field ('error.code')
 * @param {unknown} value
 */
function setPath(message, path, value) {
  const [first, second] = path.split('.');
  if (second === undefined) {
    if (value === undefined) delete message[first];
    else message[first] = value;
    return;
  }
  const inner = /** @type {Record<string, unknown>} */ (message[first]);
  if (value === undefined) delete inner[second];
  else inner[second] = value;
}

/**
 * The setup of one iteration, all from the seeded generator.
 * @param {() => number} next
 */
function chooseSetup(next) {
  const mode = /** @type {const} */ (['rpc-json', 'rpc-json', 'rpc-v8', 'messages'])[next() % 4];
  return {
    mode,
    codec: mode === 'rpc-v8' ? structuredCloneCodec : jsonCodec,
    rich: mode === 'rpc-v8',
    transport: next() % 5 === 0 ? 'unix' : 'memory',
    highWaterMark: [1024, 16384, 65536][next() % 3],
    maxMessageSize: [256, 4096, 65536][next() % 3],
    maxConcurrentCalls: [1, 8, 64][next() % 3],
    maxQueuedMessages: [4, 64, 256][next() % 3],
    maxQueuedBytes: [1024, 65536, 1 << 20][next() % 3],
    steps: 3 + (next() % 25),
    ending: next() % 10,
    hostileSeed: next(),
    ourSeed: next(),
  };
}

/**
 * The most our side may hold: the stream's buffers (each a high-water mark plus one chunk or
 * frame over it), the channel's queue (its byte bound plus one message), a message being
 * assembled, and answers waiting to be written (one per call served at once, each no larger than
 * the largest call the peer sent, or a short error), plus our own calls and cancels.
 */
/**
 * @param {Duplex} ours
 * @param {Setup} setup
 * @param {number} largestFromPeer
 */
function boundFor(ours, setup, largestFromPeer) {
  const message = setup.maxMessageSize + 4;
  const chunk = Math.max(largestFromPeer, 65536);
  const answer = Math.min(largestFromPeer, message) + 1024;
  return (
    ours.writableHighWaterMark +
    ours.readableHighWaterMark +
    chunk +
    setup.maxQueuedBytes +
    2 * message +
    (setup.maxConcurrentCalls + 1) * answer +
    4 * OUR_IN_FLIGHT * (OUR_PARAMS_MAX + 256)
  );
}

/** @param {import('./fuzz.mjs').PartOptions} options */
export async function fuzzFraming({ seconds, seed, log = () => {} }) {
  const master = random(seed);
  /** @type {FramingReport} */
  const report = startReport('framing', seed, seconds, { backpressureReached: 0, mostHeldRatio: 0 });
  const fail = (/** @type {string} */ what) => {
    if (report.failures.length < 200) report.failures.push(`iteration ${report.iterations}: ${what}`);
  };
  const count = (/** @type {string} */ code) => {
    report.errors[code] = (report.errors[code] ?? 0) + 1;
    if (!ALLOWED_ERRORS.includes(code)) return false;
    return true;
  };
  const onUncaught = (/** @type {unknown} */ error) =>
    fail(`uncaught: ${/** @type {Error | undefined} */ (error)?.stack?.split('\n').slice(0, 4).join(' | ') ?? String(error)}`);
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  /** @type {Set<Duplex>} */
  const streams = new Set();
  const track = (/** @type {Duplex} */ stream) => {
    streams.add(stream);
    stream.once('close', () => streams.delete(stream));
  };
  const start = resources(streams);
  /** @type {Awaited<ReturnType<typeof unixListener>> | null} */
  let unix = null;
  const deadline = Date.now() + seconds * 1000;
  try {
    while (Date.now() < deadline) {
      report.iterations++;
      const setup = chooseSetup(master);
      let pair;
      if (setup.transport === 'unix') {
        unix ??= await unixListener();
        pair = await unix.pair();
      } else pair = duplexPair(setup.highWaterMark);
      const [ours, theirs] = pair;
      track(ours);
      track(theirs);
      try {
        await iteration({ setup, ours, theirs, report, fail, count });
      } catch (error) {
        fail(`the iteration itself failed: ${/** @type {Error | undefined} */ (error)?.stack ?? error}`);
      } finally {
        ours.destroy();
        theirs.destroy();
      }
      if (report.iterations % 25 === 0)
        log(`  framing: ${report.iterations} iterations, ${report.violations} violations, ${report.failures.length} failures`);
    }
  } finally {
    await unix?.close();
    // Give the last closes their tick, then see that nothing was left open.
    for (let tries = 0; tries < 50 && streams.size > 0; tries++) await sleep(10);
    await sleep(20);
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  }
  const end = resources(streams);
  report.resources = { start, end };
  if (end.streams !== 0) fail(`${end.streams} streams were left open`);
  for (const [type, number] of Object.entries(end.handles))
    if (number > (start.handles[type] ?? 0)) fail(`${number - (start.handles[type] ?? 0)} ${type} handles were left open`);
  report.mostHeldRatio = Number(report.mostHeldRatio.toFixed(3));
  report.slowestCloseMs = Number(report.slowestCloseMs.toFixed(1));
  report.ok = report.failures.length === 0;
  return report;
}

/**
 * Open streams, and the process's active handles by type (timers apart: they come and go).
 * @param {Set<Duplex>} streams
 */
function resources(streams) {
  /** @type {Record<string, number>} */
  const handles = {};
  for (const type of process.getActiveResourcesInfo())
    if (type !== 'Timeout' && type !== 'Immediate') handles[type] = (handles[type] ?? 0) + 1;
  return { streams: streams.size, handles };
}

async function unixListener() {
  const directory = mkdtempSync(join(tmpdir(), 'framing-fuzz-'));
  const path = join(directory, 'socket');
  const server = net.createServer();
  server.listen(path);
  await once(server, 'listening');
  return {
    /** @returns {Promise<[net.Socket, net.Socket]>} */
    async pair() {
      const accepted = once(server, 'connection');
      const ours = net.connect(path);
      await once(ours, 'connect');
      const [theirs] = await accepted;
      return [ours, theirs];
    },
    async close() {
      await new Promise((resolve) => server.close(resolve));
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

/**
 * @param {{ setup: Setup; ours: Duplex; theirs: Duplex; report: FramingReport; fail: (what: string) => void; count: (code: string) => boolean }} args
 */
async function iteration({ setup, ours, theirs, report, fail, count }) {
  /** @type {{ error: NodeJS.ErrnoException | null; closedAt: number | null; closedEarly: boolean }} */
  const outcome = { error: null, closedAt: null, closedEarly: false };
  ours.on('error', (error) => (outcome.error ??= error));
  theirs.on('error', () => {});
  /** @type {Promise<number>} */
  const closed = new Promise((resolve) =>
    ours.once('close', () => {
      outcome.closedAt = performance.now();
      resolve(outcome.closedAt);
    }),
  );
  const hostile = new Hostile(theirs, setup, fail);
  const side = setup.mode === 'messages' ? ourMessages(ours, setup, hostile, fail, count) : ourRpc(ours, setup, fail, count);
  const sample = () => {
    if (ours.destroyed) return;
    const held = ours.writableLength + ours.readableLength + (side.channel.queuedBytes ?? 0) + (side.channel.unsentBytes ?? 0);
    const bound = boundFor(ours, setup, hostile.largestSent);
    report.mostHeldRatio = Math.max(report.mostHeldRatio, held / bound);
    if (held > bound)
      fail(
        `our side held ${held} bytes, over the bound of ${bound} (${setup.mode}, ${setup.transport}, hwm ${setup.highWaterMark}, max message ${setup.maxMessageSize})`,
      );
  };
  hostile.sample = sample;
  const sampler = setInterval(sample, 1);
  try {
    await hostile.play(setup.steps);
    report.backpressureReached += hostile.backpressureReached;
    if (outcome.closedAt !== null) {
      fail(
        `our side closed before any violation (${outcome.error?.code ?? 'no error'}: ${outcome.error?.message ?? ''}) after ${hostile.log.slice(-3).join(', ')}`,
      );
      return;
    }
    // Reading again, and written out, so the ending is read promptly: backpressure is not a hang.
    theirs.resume();
    if (!(await hostile.flushed(CLOSE_WITHIN_MS))) fail(`our side did not read on within ${CLOSE_WITHIN_MS} ms once the peer read again`);
    const ending = await hostile.end(setup.ending);
    if (ending.violation) {
      report.violations++;
      const ended = await Promise.race([closed, sleep(CLOSE_WITHIN_MS).then(() => /** @type {const} */ ('timeout'))]);
      if (ended === 'timeout') fail(`no close within ${CLOSE_WITHIN_MS} ms of a definite violation (${ending.what}, ${setup.mode})`);
      else {
        report.closedByViolation++;
        report.slowestCloseMs = Math.max(report.slowestCloseMs, ended - ending.at);
        if (outcome.error?.code !== ending.expect)
          fail(
            `closed with ${outcome.error?.code ?? 'no error'} after ${ending.what}, expected ${ending.expect}: ${outcome.error?.message}`,
          );
      }
    } else if (ending.closes) {
      const ended = await Promise.race([closed, sleep(CLOSE_WITHIN_MS).then(() => 'timeout')]);
      if (ended === 'timeout') fail(`no close within ${CLOSE_WITHIN_MS} ms of the peer's ${ending.what}`);
    }
    sample();
  } finally {
    clearInterval(sampler);
    // What failed our stream before we tear it down ourselves.
    const error = outcome.error;
    ours.destroy();
    await side.stop();
    if (error) {
      const code = error.code ?? 'none';
      if (!count(code)) fail(`our stream failed with ${code}: ${error.message}`);
    }
    // The messages the peer sent before a clean ending all arrived, intact and in order.
    side.check?.();
  }
}

/**
 * Our side as an RPC peer: serves a few methods and keeps calling the peer's.
 * @param {Duplex} ours
 * @param {Setup} setup
 * @param {(what: string) => void} fail
 * @param {(code: string) => boolean} count
 * @returns {OurSide}
 */
function ourRpc(ours, setup, fail, count) {
  const next = random(setup.ourSeed);
  const rpc = new RpcPeer(ours, {
    codec: setup.codec,
    maxMessageSize: setup.maxMessageSize,
    maxQueuedMessages: setup.maxQueuedMessages,
    maxQueuedBytes: setup.maxQueuedBytes,
    maxConcurrentCalls: setup.maxConcurrentCalls,
    maxCallsInFlight: OUR_IN_FLIGHT * 2,
    timeout: 300,
    handlers: {
      echo: (params) => params,
      add: ({ a, b }) => a + b,
      sleep: (params, { signal }) =>
        new Promise((resolve, reject) => {
          const timer = setTimeout(resolve, Math.min(Number(params?.ms) || 0, 20), 'slept');
          signal.addEventListener('abort', () => {
            clearTimeout(timer);
            reject(signal.reason);
          });
        }),
    },
  });
  rpc.on('close', () => {});
  let stopped = false;
  let inFlight = 0;
  /** @type {Set<Promise<void>>} */
  const calls = new Set();
  const loop = (async () => {
    while (!stopped && !ours.destroyed) {
      if (inFlight >= OUR_IN_FLIGHT) {
        await Promise.race(calls);
        continue;
      }
      const method = ['echo', 'echo', 'add', 'nosuch', 'slow'][next() % 5];
      let params = safe(randomValue(next, setup.rich));
      try {
        if (setup.codec.encode(params).length > OUR_PARAMS_MAX) params = null;
      } catch {
        params = null;
      }
      inFlight++;
      /** @type {Promise<void>} */
      const call = rpc
        .call(method, params, { timeout: 20 + (next() % 200) })
        .then(
          () => {},
          (error) => {
            const code = error?.name === 'RemoteError' ? 'RemoteError' : (error?.code ?? 'none');
            if (!count(code)) fail(`our call ${method} failed with ${code}: ${error?.message}`);
          },
        )
        .finally(() => {
          inFlight--;
          calls.delete(call);
        });
      calls.add(call);
      if (next() % 3 === 0) await sleep(next() % 3);
      else await new Promise(setImmediate);
    }
  })();
  return {
    channel: rpc.messages,
    async stop() {
      stopped = true;
      await loop;
      await Promise.allSettled([...calls]);
    },
  };
}

/**
 * Our side as a plain MessageChannel: reads every message (stalling now and then) and sends its own.
 * @param {Duplex} ours
 * @param {Setup} setup
 * @param {Hostile} hostile
 * @param {(what: string) => void} fail
 * @param {(code: string) => boolean} count
 * @returns {OurSide}
 */
function ourMessages(ours, setup, hostile, fail, count) {
  const next = random(setup.ourSeed);
  const channel = new MessageChannel(ours, {
    maxMessageSize: setup.maxMessageSize,
    maxQueuedMessages: setup.maxQueuedMessages,
    maxQueuedBytes: setup.maxQueuedBytes,
  });
  /** @type {number[]} */
  const received = [];
  let stopped = false;
  const reading = (async () => {
    try {
      for await (const message of channel) {
        received.push(message.length === 0 ? 0 : message.length * 256 + message[0]);
        if (message.length > 0 && message[message.length - 1] !== message[0]) fail(`message ${received.length - 1} arrived corrupted`);
        if (next() % 200 === 0) await sleep(next() % 5);
      }
    } catch (caught) {
      const error = /** @type {NodeJS.ErrnoException | null | undefined} */ (caught);
      const code = error?.code ?? 'none';
      if (!count(code)) fail(`our reading failed with ${code}: ${error?.message}`);
    }
  })();
  const sending = (async () => {
    while (!stopped && !ours.destroyed) {
      try {
        await channel.send(Buffer.alloc(next() % Math.min(OUR_PARAMS_MAX, setup.maxMessageSize), 7));
      } catch (caught) {
        const error = /** @type {NodeJS.ErrnoException | null | undefined} */ (caught);
        const code = error?.code ?? 'none';
        if (!count(code)) fail(`our send failed with ${code}: ${error?.message}`);
        return;
      }
      if (next() % 4 === 0) await sleep(1);
      else await new Promise(setImmediate);
    }
  })();
  return {
    channel,
    async stop() {
      stopped = true;
      await sending;
      await Promise.race([reading, sleep(CLOSE_WITHIN_MS)]);
    },
    check() {
      const sent = hostile.messagesSent;
      const complete = hostile.cleanEnding;
      if (complete ? received.length !== sent.length : received.length > sent.length) {
        fail(`${received.length} messages arrived of the ${sent.length} sent${complete ? ' before a clean close' : ''}`);
      }
      for (let i = 0; i < Math.min(received.length, sent.length); i++) {
        if (received[i] !== sent[i]) {
          fail(`message ${i} arrived as ${received[i]}, sent as ${sent[i]}`);
          break;
        }
      }
    },
  };
}

/**
 * Functions are not data: a value our side can send with either codec (no symbols, no functions).
 * @param {unknown} value
 */
function safe(value) {
  return typeof value === 'symbol' || typeof value === 'function' ? null : value;
}

/** The peer: reads our frames and answers what it likes, and writes what its script says. */
class Hostile {
  /**
   * @param {Duplex} stream
   * @param {Setup} setup
   * @param {(what: string) => void} fail
   */
  constructor(stream, setup, fail) {
    this.stream = stream;
    this.setup = setup;
    this.fail = fail;
    this.next = random(setup.hostileSeed);
    this.answers = random(setup.hostileSeed ^ 0x5bd1e995);
    this.codec = setup.codec;
    this.nextId = 1;
    /**
     * Ids of our calls it has seen (answers to them are legitimate, however late).
     * @type {unknown[]}
     */
    this.seen = [];
    /**
     * Its own echo calls, to check our answers (keyed by the id as the answer carries it).
     * @type {Map<unknown, { expected: unknown }>}
     */
    this.echoes = new Map();
    this.largestSent = 0;
    this.backpressureReached = 0;
    /** @type {number[]} */
    this.messagesSent = [];
    this.cleanEnding = false;
    /** @type {number[]} */
    this.log = [];
    /** @type {() => void} */
    this.sample = () => {};
    /** @type {Buffer} */
    this.pending = Buffer.alloc(0);
    stream.on('data', (/** @type {Buffer} */ chunk) => this.onData(chunk));
  }

  /** @param {Buffer} chunk */
  onData(chunk) {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= 4) {
      const length = this.pending.readUInt32LE(0);
      if (this.pending.length < 4 + length) return;
      const body = this.pending.subarray(4, 4 + length);
      this.pending = this.pending.subarray(4 + length);
      if (this.setup.mode !== 'messages') this.onMessage(body);
    }
  }

  /** @param {Buffer} body */
  onMessage(body) {
    /** @type {Decoded} */
    let message;
    try {
      message = /** @type {Decoded} */ (this.codec.decode(body));
    } catch (error) {
      this.fail(`our side sent a message the peer cannot decode: ${/** @type {Error} */ (error).message}`);
      return;
    }
    if (message?.type === 'call') {
      this.seen.push(message.id);
      // Answered later, never from inside our write: honest, wrong, an error, twice, late, or never.
      const choice = this.answers() % 10;
      const answer = () => {
        if (choice < 4)
          this.send({
            type: 'result',
            id: message.id,
            value: message.method === 'echo' ? message.params : randomValue(this.answers, this.setup.rich),
          });
        else if (choice < 6)
          this.send({
            type: 'error',
            id: message.id,
            error: { code: randomString(this.answers, 12), message: randomString(this.answers), ...(choice === 5 ? { name: 'X' } : {}) },
          });
        else if (choice === 6) {
          this.send({ type: 'result', id: message.id, value: 1 });
          this.send({ type: 'result', id: message.id, value: 2 });
        } else if (choice === 7)
          setTimeout(() => this.send({ type: 'result', id: message.id, value: 'late' }), 50 + (this.answers() % 300));
      };
      setImmediate(answer);
    } else if (message?.type === 'result' || message?.type === 'error') {
      const params = this.echoes.get(message.id);
      this.echoes.delete(message.id);
      if (params !== undefined && message.type === 'result' && !isDeepStrictEqual(message.value, params.expected)) {
        this.fail(`our echo answered ${JSON.stringify(message.value)?.slice(0, 80)} for ${JSON.stringify(params.expected)?.slice(0, 80)}`);
      }
    }
  }

  /**
   * Encodes and writes a message (whatever it holds); false when the codec refuses it.
   * @param {unknown} message
   */
  send(message) {
    let bytes;
    try {
      bytes = this.codec.encode(message);
    } catch {
      return false;
    }
    if (bytes.length > this.setup.maxMessageSize) return false;
    this.write(frame(bytes));
    return true;
  }

  /** @param {Uint8Array} bytes */
  write(bytes) {
    if (this.stream.destroyed || this.stream.writableEnded) return false;
    this.largestSent = Math.max(this.largestSent, bytes.length);
    const more = this.stream.write(bytes);
    this.sample();
    return more;
  }

  /**
   * Writes one frame in pieces, each its own chunk (so our side sees it across 'data' events), all
   * at once: the peer's other writes (its answers) must not land inside the frame.
   * @param {Buffer} bytes
   * @param {number} most
   */
  writeSplit(bytes, most) {
    for (let at = 0; at < bytes.length; ) {
      const part = at < 6 ? 1 : 1 + (this.next() % most);
      this.write(bytes.subarray(at, at + part));
      at += part;
    }
  }

  /**
   * Waits (at most `ms`) for what it wrote to be taken; false when it was not: backpressure.
   * @param {number} ms
   * @returns {Promise<boolean>}
   */
  flushed(ms) {
    const stream = this.stream;
    if (!stream.writableNeedDrain || stream.destroyed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (/** @type {boolean} */ result) => {
        clearTimeout(timer);
        stream.off('drain', onDrain);
        stream.off('close', onDrain);
        resolve(result);
      };
      const onDrain = () => done(true);
      const timer = setTimeout(done, ms, false);
      stream.on('drain', onDrain);
      stream.on('close', onDrain);
    });
  }

  /** @param {number} steps */
  async play(steps) {
    const next = this.next;
    for (let step = 0; step < steps && !this.stream.destroyed; step++) {
      const action = next() % 12;
      this.log.push(action);
      if (this.setup.mode === 'messages') await this.messageStep(action);
      else await this.rpcStep(action);
      if (!(await this.flushed(5))) this.backpressureReached++;
      if (next() % 3 === 0) await sleep(next() % 3);
      else await new Promise(setImmediate);
    }
  }

  /**
   * Stops reading, then makes up to `count` writes with `writeOne` (which says whether the stream
   * takes more, as write() does). When it does not, waits up to 10 ms for the stream to drain;
   * if it has not, the flood has reached backpressure and ends.
   * @param {number} count
   * @param {(i: number) => boolean} writeOne
   */
  async flood(count, writeOne) {
    this.stream.pause();
    for (let i = count; i > 0 && !this.stream.destroyed; i--) {
      if (!writeOne(i) && !(await this.flushed(10))) {
        this.backpressureReached++;
        return;
      }
    }
  }

  /** @param {number} action */
  async messageStep(action) {
    const next = this.next;
    const message = (small = false) => {
      const size = small
        ? next() % 100
        : [0, 1, next() % 100, next() % (this.setup.maxMessageSize + 1), this.setup.maxMessageSize][next() % 5];
      const index = this.messagesSent.length;
      this.messagesSent.push(size === 0 ? 0 : size * 256 + (index & 0xff));
      return frame(Buffer.alloc(size, index & 0xff));
    };
    switch (action) {
      case 0:
      case 1:
      case 2:
        this.write(message());
        return;
      case 3: {
        // One message split at random points, a byte at a time at first (each piece its own chunk).
        this.writeSplit(message(), 5000);
        return;
      }
      case 4:
      case 5:
        // A flood while reading nothing: it is held up once our side stops reading.
        await this.flood(200 + (next() % 4000), () => this.write(message(true)));
        return;
      case 6:
        this.stream.pause();
        return;
      default:
        this.stream.resume();
        this.write(message());
    }
  }

  /**
   * @param {string} method
   * @param {unknown} params
   */
  call(method, params) {
    const id = this.nextId++;
    if (method === 'echo')
      this.echoes.set(id, { expected: /** @type {{ v: unknown }} */ (this.codec.decode(this.codec.encode({ v: params }))).v });
    if (!this.send({ type: 'call', id, method, params })) this.echoes.delete(id);
  }

  /** @param {number} action */
  async rpcStep(action) {
    const next = this.next;
    const rich = this.setup.rich;
    switch (action) {
      case 0:
      case 1:
        this.call('echo', randomValue(next, rich));
        return;
      case 2:
        this.call(
          ['add', 'sleep'][next() % 2],
          next() % 2 === 0 ? { a: next() % 100, b: next() % 100, ms: next() % 20 } : randomValue(next, rich),
        );
        return;
      case 3:
        // Valid-looking calls to methods nobody serves, names up to the longest allowed.
        this.call(next() % 4 === 0 ? 'm'.repeat(256) : randomString(next, 30), randomValue(next, rich));
        return;
      case 4:
        // Cancels: for its own calls, and for ids that never were.
        this.send({ type: 'cancel', id: next() % 2 === 0 ? Math.max(1, this.nextId - 1) : 1 + (next() % 100000) });
        return;
      case 5:
        // An answer to a call of ours it already answered, or never answered: legitimate, if late.
        if (this.seen.length > 0) {
          const id = this.seen[next() % this.seen.length];
          if (next() % 2 === 0) this.send({ type: 'result', id, value: randomValue(next, rich) });
          else this.send({ type: 'error', id, error: { code: randomString(next, 8), message: randomString(next) } });
        }
        return;
      case 6:
      case 7: {
        // A flood of calls while reading nothing: our side must stop serving, not buffer.
        await this.flood(
          200 + (next() % 6000),
          (i) => this.send({ type: 'call', id: this.nextId++, method: 'echo', params: { i } }) && !this.stream.writableNeedDrain,
        );
        return;
      }
      case 8: {
        // A valid call split at random points.
        this.writeSplit(
          frame(Buffer.from(this.codec.encode({ type: 'call', id: this.nextId++, method: 'add', params: { a: 1, b: 2 } }))),
          7,
        );
        return;
      }
      case 9:
        this.stream.pause();
        return;
      default:
        this.stream.resume();
        this.call('echo', { big: 'x'.repeat(next() % this.setup.maxMessageSize) });
    }
  }

  /**
   * The last act: a definite violation, a close of some kind, or nothing.
   * @param {number} choice
   * @returns {Promise<Ending>}
   */
  async end(choice) {
    const next = this.next;
    const at = () => performance.now();
    const max = this.setup.maxMessageSize;
    if (choice === 0 || (this.setup.mode === 'messages' && choice <= 5)) {
      // A length over the limit: just over, far over, the largest a u32 holds; with or without bytes after it.
      const length = [max + 1, max + 1 + (next() % 1000), 0xffff_ffff, 0x8000_0000][next() % 4];
      this.write(Buffer.concat([header(length), randomBytes(next, next() % 64)]));
      return { violation: true, what: `a ${length}-byte length`, expect: 'EMSGSIZE', at: at() };
    }
    if (this.setup.mode !== 'messages' && choice <= 5) {
      const kind = next() % 5;
      let bytes;
      let what;
      if (kind === 0) {
        bytes = Buffer.alloc(0);
        what = 'an empty message';
      } else if (kind === 1) {
        // Random bytes: only a violation if they do not decode to a well-formed message (they never do, but see).
        bytes = randomBytes(next, 1 + (next() % Math.min(max, 300)));
        if (this.setup.mode === 'rpc-v8' && next() % 2 === 0) v8.serialize(null).copy(bytes, 0, 0, 2);
        what = 'random bytes';
        try {
          const value = this.codec.decode(bytes);
          if (
            value &&
            typeof value === 'object' &&
            /** @type {unknown[]} */ (TYPES).includes(/** @type {{ type?: unknown }} */ (value).type)
          )
            return { violation: false };
        } catch {
          /* undecodable: the violation stands */
        }
      } else if (kind === 2) {
        bytes = this.encodeOrNull(randomNonMessage(next, this.setup.rich));
        what = 'a random value';
      } else if (kind === 3) {
        const type = TYPES[next() % TYPES.length];
        const message = { type, id: this.nextId++, method: 'echo', params: 1, value: 1, error: { code: 'E', message: 'm' } };
        const field = FIELDS[type][next() % FIELDS[type].length];
        const wrong = WRONG[field][next() % WRONG[field].length];
        setPath(message, field, wrong);
        bytes = this.encodeOrNull(message);
        what = `a ${type} with ${field} ${this.setup.rich ? String(wrong) : JSON.stringify(wrong)}`;
      } else {
        bytes = this.encodeOrNull({
          type: next() % 2 === 0 ? 'result' : 'error',
          id: 2 ** 40 + (next() % 1000),
          value: 1,
          error: { code: 'E', message: 'm' },
        });
        what = 'an answer to a call never made';
      }
      if (bytes === null || bytes.length > max) return { violation: false };
      this.write(frame(bytes));
      return { violation: true, what, expect: 'EPROTO', at: at() };
    }
    if (choice === 6) {
      // A message cut short, then a close: our side sees the channel end mid-message.
      const length = 1 + (next() % max);
      this.write(Buffer.concat([header(length), randomBytes(next, next() % length)]));
      this.stream.end();
      return { closes: true, what: 'close in the middle of a message' };
    }
    if (choice === 7) {
      this.cleanEnding = true;
      this.stream.end();
      return { closes: true, what: 'clean close' };
    }
    if (choice === 8) {
      this.stream.destroy();
      return { closes: true, what: 'destroy' };
    }
    return { violation: false };
  }

  /** @param {unknown} value */
  encodeOrNull(value) {
    try {
      return Buffer.from(this.codec.encode(value));
    } catch {
      return null;
    }
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    args: process.argv.slice(2).filter((arg) => arg !== '--'),
    options: { seconds: { type: 'string', default: '10' }, seed: { type: 'string', default: '1' }, json: { type: 'boolean' } },
  });
  const report = await fuzzFraming({ seconds: Number(values.seconds), seed: Number(values.seed), log: (line) => console.error(line) });
  if (values.json) console.log(JSON.stringify(report, null, 2));
  else {
    console.log(
      `framing fuzz: seed ${report.seed}, ${report.seconds} s: ${report.iterations} iterations, ${report.violations} definite violations, ${report.closedByViolation} closed for them (slowest ${report.slowestCloseMs} ms)`,
    );
    console.log(
      `  errors: ${JSON.stringify(report.errors)}; backpressure reached ${report.backpressureReached} times; most held ${(report.mostHeldRatio * 100).toFixed(1)}% of the bound`,
    );
    console.log(`  resources: start ${JSON.stringify(report.resources?.start)}, end ${JSON.stringify(report.resources?.end)}`);
    for (const failure of report.failures.slice(0, 20)) console.log(`  FAILURE ${failure}`);
    console.log(report.ok ? '  ok' : `  ${report.failures.length} FAILURES (reproduce with --seed ${report.seed})`);
  }
  process.exit(report.ok ? 0 : 1);
}
