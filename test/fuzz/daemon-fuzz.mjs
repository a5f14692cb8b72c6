// Hostile-client fuzzing of the sim daemon, seeded and bounded in time. One raw client sends
// seeded frames to the daemon's control socket (lengths up to 4 GiB, random bytes, random JSON,
// real operations with garbage fields) and to its XenStore socket (oversized headers, undeclared
// domains, random messages, some with payloads over the limit), reconnecting whenever it is
// dropped. For every frame the fuzzer knows what the daemon must do: answer it (the connection
// stays, also after the answer) or answer EPROTO/E2BIG and close that connection within 1 s.
// Meanwhile a well-behaved process does real work through the public API (gntalloc
// share/release, evtchn bind/unbind, XenStore write/read, status) and must never fail; the daemon
// must never die; and grants and ports must end as they started.
//   node -e "import('./test/fuzz/daemon-fuzz.mjs').then(m => m.fuzzDaemon({ seconds: 5, seed: 1, log: console.error })).then(r => console.log(JSON.stringify(r)))"
import { existsSync, rmSync } from 'node:fs';
import net from 'node:net';
import { openEventChannel } from '@xen-vchan/evtchn';
import { openGntalloc } from '@xen-vchan/gntalloc';
import { encodeXsMessage, XENSTORE_PAYLOAD_MAX, XS_HEADER_BYTES, XsMessageReader, XsType, xsStrings } from '@xen-vchan/native';
import { SimConnection, simDirectory, simFiles } from '@xen-vchan/sim';
import { openXenStore } from '@xen-vchan/xenstore';
import { random } from '../support/stream-data.mjs';

/** @typedef {import('@xen-vchan/native').XsMessage} XsMessage */
/**
 * A reply on the control socket: `ok` with the result, or `error` (the daemon is trusted to send
 * one of the two).
 * @typedef {{ ok?: unknown; error?: { code: string; message: string } }} ControlReply
 */
/** @typedef {'handle' | 'allocation' | 'mapping' | 'port' | 'ref'} IdKind */

/** The daemon's frame cap (MAX_FRAME_BYTES in packages/sim/src/protocol.ts). */
const MAX_FRAME_BYTES = 4 << 20;
const CLOSE_WITHIN_MS = 1000;
const REPLY_WITHIN_MS = 2000;
/** The well-behaved side's domains; the hostile client never names them, so it cannot starve them. */
const GOOD = 7;
const GOOD_PEER = 8;
/** Valid domains the hostile client may act as or name. */
const HOSTILE_DOMAINS = [100, 101, 102, 103];
/**
 * Operations and their fields, as the daemon knows them ('stop' left out: any client may stop it).
 * @type {Record<string, string[]>}
 */
const OPERATIONS = {
  hello: ['pid', 'version'],
  'gntalloc.open': ['domid'],
  'gntalloc.alloc': ['handle', 'domid', 'count', 'writable'],
  'gntalloc.setUnmapNotify': ['handle', 'allocation', 'offset', 'clearByte', 'port'],
  'gntalloc.release': ['handle', 'allocation'],
  'gntalloc.setLimit': ['domid', 'limit'],
  'gntalloc.getLimit': ['domid'],
  'gntdev.open': ['domid'],
  'gntdev.map': ['handle', 'grants', 'writable'],
  'gntdev.setUnmapNotify': ['handle', 'mapping', 'offset', 'clearByte', 'port'],
  'gntdev.unmap': ['handle', 'mapping'],
  'gntdev.resolveCopy': ['handle', 'domid', 'ref', 'write'],
  'evtchn.open': ['domid'],
  'evtchn.bindUnbound': ['handle', 'remoteDomain'],
  'evtchn.bindInterdomain': ['handle', 'remoteDomain', 'remotePort'],
  'evtchn.unbind': ['handle', 'port'],
  'evtchn.restrict': ['handle', 'domid'],
  close: ['handle'],
  status: [],
};
const OPERATION_NAMES = Object.keys(OPERATIONS);
const UNKNOWN_OPS = ['nope', 'stop ', 'gntalloc.share', '__proto__', 'constructor', 'handle', 'clientGone', 'op_status', '', 'status\0'];
/** @type {unknown[]} */
const GARBAGE = [
  '../x',
  '../../etc/passwd',
  '',
  '1',
  -1,
  1.5,
  1e9,
  2 ** 53,
  -0.5,
  0x7ff0,
  2 ** 32,
  (1 << 20) + 1,
  true,
  null,
  [],
  [1],
  {},
  { toString: 'x' },
  'NaN',
];
const XS_TYPES = Object.values(XsType);

/**
 * A raw connection: collects what arrives (split by `reader`) and when it closed.
 * @template T
 */
class RawLink {
  /**
   * @param {string} path
   * @param {(chunk: Buffer) => T[]} reader
   */
  constructor(path, reader) {
    /** @type {T[]} */
    this.items = [];
    /** @type {(() => void) | null} */
    this.waiter = null;
    /** @type {number | null} */
    this.closedAt = null;
    /**
     * Why this side cut the connection: what the daemon sent could not be parsed.
     * @type {string | null}
     */
    this.unparsable = null;
    this.socket = net.connect(path);
    this.socket.on('error', () => {});
    this.socket.on('data', (chunk) => {
      try {
        for (const item of reader(chunk)) this.items.push(item);
      } catch (error) {
        // The daemon sent something unparsable (a XenStore message over the limit, say): reported
        // as an unexpected close, saying why.
        this.unparsable = /** @type {Error} */ (error).message;
        this.socket.destroy();
      }
      this.wake();
    });
    this.socket.on('close', () => {
      this.closedAt = performance.now();
      this.wake();
    });
    /** @type {Promise<boolean>} */
    this.ready = new Promise((resolve) => {
      this.socket.once('connect', () => resolve(true));
      this.socket.once('close', () => resolve(false));
    });
  }

  /** @param {Buffer} bytes */
  write(bytes) {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /**
   * The first item matching `wanted`, or 'closed', or 'timeout'.
   * @param {(item: T) => boolean} wanted
   * @param {number} timeoutMs
   * @returns {Promise<T | 'closed' | 'timeout'>}
   */
  async take(wanted, timeoutMs) {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const index = this.items.findIndex(wanted);
      if (index >= 0) return this.items.splice(index, 1)[0];
      if (this.closedAt !== null) return 'closed';
      const left = deadline - performance.now();
      if (left <= 0) return 'timeout';
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve(undefined);
        };
      });
    }
  }

  /**
   * Resolves with the close time, or 'timeout'.
   * @param {number} timeoutMs
   * @returns {Promise<number | 'timeout'>}
   */
  async closed(timeoutMs) {
    const seen = await this.take(() => false, timeoutMs);
    // take() says 'closed' only once closedAt is set.
    return seen === 'closed' && this.closedAt !== null ? this.closedAt : 'timeout';
  }

  destroy() {
    this.socket.destroy();
  }

  /** Who closed, for a failure's text. */
  get closedBy() {
    return this.unparsable ? `the fuzzer, on something the daemon sent that it could not parse (${this.unparsable})` : 'the daemon';
  }

  wake() {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }
}

/**
 * Length-prefixed JSON replies from the control socket (the daemon is trusted to frame them).
 * @returns {(chunk: Buffer) => ControlReply[]}
 */
function controlReader() {
  let pending = Buffer.alloc(0);
  return (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    /** @type {ControlReply[]} */
    const replies = [];
    while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32LE(0)) {
      const length = pending.readUInt32LE(0);
      replies.push(JSON.parse(pending.subarray(4, 4 + length).toString()));
      pending = pending.subarray(4 + length);
    }
    return replies;
  };
}

/** @param {Buffer} body */
function frame(body) {
  const header = Buffer.alloc(4);
  header.writeUInt32LE(body.length);
  return Buffer.concat([header, body]);
}

/**
 * What the daemon must do with a frame body: the same rules as its parseCall.
 * @param {Buffer} body
 * @returns {'reply' | 'close'}
 */
function verdictOf(body) {
  let value;
  try {
    value = JSON.parse(body.toString());
  } catch {
    return 'close';
  }
  const isCall = typeof value === 'object' && value !== null && !Array.isArray(value) && typeof value.op === 'string';
  return isCall ? 'reply' : 'close';
}

/** @param {import('./fuzz.mjs').PartOptions} options */
export async function fuzzDaemon({ seconds, seed, log = () => {} }) {
  const next = random(seed);
  const int = (/** @type {number} */ n) => next() % n;
  /**
   * @template T
   * @param {readonly T[]} list
   */
  const pick = (list) => list[int(list.length)];
  const chance = (/** @type {number} */ n) => int(n) === 0;

  const directory = simDirectory();
  const files = simFiles(directory);
  const folderExisted = existsSync(directory);
  const startedDaemon = !(await daemonAnswers(files.socket));
  const sim = SimConnection.open();
  const baseline = sim.call('status', {});
  const daemonPid = baseline.daemonPid;

  /** @type {import('./fuzz.mjs').PartReport & { violations: number }} */
  const report = {
    part: 'daemon',
    seed,
    seconds,
    iterations: 0,
    violations: 0,
    errors: {},
    failures: [],
    slowestCloseMs: 0,
    resources: null,
    ok: false,
  };
  const fail = (/** @type {string} */ what) => {
    report.failures.push(`iteration ${report.iterations}: ${what}`);
    log(`  daemon fuzz FAILURE at iteration ${report.iterations}: ${what}`);
  };
  const countError = (/** @type {string} */ code) => (report.errors[code] = (report.errors[code] ?? 0) + 1);
  let daemonDead = false;
  const checkDaemonAlive = () => {
    try {
      process.kill(daemonPid, 0);
    } catch {
      if (!daemonDead) fail(`the daemon (pid ${daemonPid}) died; see ${files.log}`);
      daemonDead = true;
    }
  };

  // --- the hostile control-socket client ------------------------------------------------
  // Both connections are made and dropped by the steps below: typed as what those leave, not as
  // the null they start as.
  let control = /** @type {RawLink<ControlReply> | null} */ (null);
  /**
   * Ids the daemon handed to the current hostile connection, so some calls reach deep.
   * @type {Record<IdKind, number[]>}
   */
  let known = { handle: [], allocation: [], mapping: [], port: [], ref: [] };
  const connectControl = async () => {
    control = new RawLink(files.socket, controlReader());
    known = { handle: [], allocation: [], mapping: [], port: [], ref: [] };
    if (!(await control.ready)) {
      checkDaemonAlive();
      if (!daemonDead) fail('could not connect to the control socket');
      control = null;
    }
  };

  /** @returns {unknown} */
  const fieldValue = (/** @type {string} */ field) => {
    if (chance(4)) return pick(GARBAGE);
    switch (field) {
      case 'domid':
      case 'remoteDomain':
        return pick(HOSTILE_DOMAINS);
      case 'handle':
      case 'allocation':
      case 'mapping':
        return known[field].length > 0 && !chance(4) ? pick(known[field]) : int(50);
      case 'port':
        return chance(4) ? null : known.port.length > 0 && !chance(3) ? pick(known.port) : int(10);
      case 'remotePort':
        return known.port.length > 0 && !chance(3) ? pick(known.port) : int(4100);
      case 'ref':
        return known.ref.length > 0 && !chance(3) ? pick(known.ref) : 8 + int(8);
      case 'count':
      case 'limit':
        return int(5);
      case 'offset':
        return int(9000);
      case 'writable':
      case 'clearByte':
      case 'write':
        return chance(2);
      case 'grants':
        return Array.from({ length: 1 + int(3) }, () => ({
          domid: pick(HOSTILE_DOMAINS),
          ref: known.ref.length > 0 ? pick(known.ref) : 8 + int(8),
        }));
      case 'pid':
        return process.pid;
      case 'version':
        return chance(3) ? 2 : 1;
      default:
        return pick(GARBAGE);
    }
  };

  const remember = (/** @type {ControlReply} */ reply) => {
    const ok = reply?.ok;
    if (typeof ok !== 'object' || ok === null) return;
    const result = /** @type {Record<string, unknown>} */ (ok);
    for (const field of /** @type {const} */ (['handle', 'allocation', 'mapping', 'port'])) {
      const id = result[field];
      if (typeof id === 'number' && Number.isInteger(id)) known[field].push(id);
    }
    if (Array.isArray(result.refs)) known.ref.push(...result.refs);
  };

  /**
   * One seeded frame, with what the daemon must do with it.
   * @returns {{ bytes: Buffer; verdict: 'reply' | 'close'; what: string }}
   */
  const controlFrame = () => {
    switch (int(8)) {
      case 0: {
        // A length past the cap; now and then exactly at it, which is legal.
        if (chance(200)) {
          const body = Buffer.alloc(MAX_FRAME_BYTES, 0x20);
          body.write('{"op":"status"}');
          return { bytes: frame(body), verdict: 'reply', what: 'a frame of exactly the length limit' };
        }
        const length = chance(2) ? 0xffffffff : MAX_FRAME_BYTES + 1 + int(0xffffffff - MAX_FRAME_BYTES - 1);
        const header = Buffer.alloc(4);
        header.writeUInt32LE(length);
        const tail = Buffer.alloc(int(64), next() & 0xff);
        return { bytes: Buffer.concat([header, tail]), verdict: 'close', what: `a frame claiming ${length} bytes` };
      }
      case 1: {
        const body = Buffer.alloc(int(300));
        for (let i = 0; i < body.length; i++) body[i] = next() & 0xff;
        return { bytes: frame(body), verdict: verdictOf(body), what: `${body.length} random bytes` };
      }
      case 2: {
        const body = Buffer.from(JSON.stringify(randomJson(3)) ?? 'undefined');
        return { bytes: frame(body), verdict: verdictOf(body), what: `JSON ${body.toString().slice(0, 60)}` };
      }
      case 3: {
        const body = Buffer.from(JSON.stringify({ op: pick(UNKNOWN_OPS), domid: pick(GARBAGE) }));
        return { bytes: frame(body), verdict: 'reply', what: `unknown op ${body.toString().slice(0, 60)}` };
      }
      default: {
        const op = pick(OPERATION_NAMES);
        /** @type {Record<string, unknown>} */
        const request = { op };
        for (const field of OPERATIONS[op]) if (!chance(12)) request[field] = fieldValue(field);
        // An own member even for "__proto__", as JSON.parse makes it on the daemon's side.
        if (chance(10))
          Object.defineProperty(request, pick(['extra', '__proto__', 'constructor']), { value: pick(GARBAGE), enumerable: true });
        const body = Buffer.from(JSON.stringify(request));
        return { bytes: frame(body), verdict: 'reply', what: body.toString().slice(0, 100) };
      }
    }
  };

  /**
   * Random JSON, sometimes with an "op" that is not a string, never a real call to 'stop'.
   * @param {number} depth
   * @returns {unknown}
   */
  function randomJson(depth) {
    switch (int(depth > 0 ? 8 : 5)) {
      case 0:
        return null;
      case 1:
        return chance(2);
      case 2:
        return pick([0, -1, 1.5, 1e308, 2 ** 53 + 1, int(1000)]);
      case 3:
        return pick(['', 'op', 'status', '../x', '\u0000', 'é']);
      case 4:
        return {};
      case 5:
        return Array.from({ length: int(4) }, () => randomJson(depth - 1));
      case 6:
        return { op: pick([null, 1, true, [], {}, ['status']]) };
      default: {
        // An "op" here is a string from case 3 at most ('status', '' ...), never 'stop'.
        /** @type {Record<string, unknown>} */
        const value = {};
        for (let i = int(4); i > 0; i--) value[pick(['op', 'domid', 'handle', 'x', 'count'])] = randomJson(depth - 1);
        return value;
      }
    }
  }

  const controlStep = async () => {
    if (!control || control.closedAt !== null) await connectControl();
    if (!control) return;
    const { bytes, verdict, what } = controlFrame();
    const sentAt = performance.now();
    // Sometimes in pieces, as a stream may deliver it.
    if (bytes.length > 8 && chance(3)) {
      const cut = 1 + int(bytes.length - 1);
      control.write(bytes.subarray(0, cut));
      await new Promise((resolve) => setImmediate(resolve));
      control.write(bytes.subarray(cut));
    } else control.write(bytes);
    const reply = await control.take(() => true, verdict === 'close' ? CLOSE_WITHIN_MS : REPLY_WITHIN_MS);
    if (verdict === 'close') {
      report.violations++;
      if (reply === 'timeout') return fail(`no answer and no close within ${CLOSE_WITHIN_MS} ms after ${what}`);
      if (reply !== 'closed') {
        if (reply?.error?.code !== 'EPROTO') fail(`${what} was answered ${JSON.stringify(reply).slice(0, 200)}, not EPROTO`);
        countError(reply?.error?.code ?? 'none');
      }
      const closedAt = await control.closed(Math.max(0, CLOSE_WITHIN_MS - (performance.now() - sentAt)));
      if (closedAt === 'timeout') return fail(`the daemon did not close the connection within ${CLOSE_WITHIN_MS} ms after ${what}`);
      report.slowestCloseMs = Math.max(report.slowestCloseMs, closedAt - sentAt);
      return;
    }
    if (reply === 'timeout') return fail(`no reply within ${REPLY_WITHIN_MS} ms to ${what}`);
    if (reply === 'closed') {
      checkDaemonAlive();
      return fail(`the daemon closed the connection on a well-formed call: ${what}`);
    }
    if (reply.error) {
      countError(reply.error.code);
      if (reply.error.code === 'EPROTO' || reply.error.code === 'EIO')
        fail(`${what} was answered ${reply.error.code}: ${reply.error.message}`);
    } else remember(reply);
  };

  // --- the hostile XenStore client ------------------------------------------------------
  let xs = /** @type {{ link: RawLink<XsMessage>; declared: boolean; answered: string | null } | null} */ (null);
  let reqId = 1;
  const connectXenStore = async () => {
    const reader = new XsMessageReader();
    // Watch events (the hostile client may set watches) answer no request: left out.
    const replies = (/** @type {Buffer} */ chunk) => reader.push(chunk).filter((message) => message.type !== XsType.WATCH_EVENT);
    // `answered`: the last frame, if the daemon answered it and so must keep the connection.
    xs = { link: new RawLink(files.xenstore, replies), declared: false, answered: null };
    if (!(await xs.link.ready)) {
      checkDaemonAlive();
      if (!daemonDead) fail('could not connect to the XenStore socket');
      xs = null;
    }
  };

  /** Whether the frame's payload is over the limit: xenstored refuses its header before anything else. */
  const oversized = (/** @type {Buffer} */ message) => message.length - XS_HEADER_BYTES > XENSTORE_PAYLOAD_MAX;

  const xenStoreStep = async () => {
    if (xs?.link.closedAt != null && xs.answered !== null) {
      // Closed after answering a frame that keeps it (caught here when the close came too late
      // for that frame's own step to see it).
      checkDaemonAlive();
      fail(`the XenStore connection was closed by ${xs.link.closedBy} after ${xs.answered}, which was answered`);
    }
    if (!xs || xs.link.closedAt !== null) await connectXenStore();
    if (!xs) return;
    xs.answered = null;
    const id = reqId++;
    let message;
    let verdict;
    let what;
    if (chance(6)) {
      const length = chance(2) ? 0xffffffff : XENSTORE_PAYLOAD_MAX + 1 + int(100_000);
      message = Buffer.from(Uint32Array.of(pick(XS_TYPES), id, int(3), length).buffer);
      verdict = 'E2BIG';
      what = `a XenStore header claiming ${length} bytes`;
    } else if (!xs.declared) {
      if (chance(5)) {
        message = encodeXsMessage(chance(2) ? XsType.SIM_DECLARE_DOMAIN : pick(XS_TYPES), id, 0, randomPayload());
        const text = message.subarray(XS_HEADER_BYTES).toString('latin1');
        const valid =
          message.readUInt32LE(0) === XsType.SIM_DECLARE_DOMAIN && /^\d{1,5}\0$/.test(text) && Number(text.slice(0, -1)) <= 0x7fef;
        // An oversized frame breaks the framing before the daemon looks at what it says.
        verdict = oversized(message) ? 'E2BIG' : valid ? 'declared' : 'EACCES';
        what = `an undeclared first message of type ${message.readUInt32LE(0)} with ${message.length - XS_HEADER_BYTES} bytes`;
      } else {
        message = encodeXsMessage(XsType.SIM_DECLARE_DOMAIN, id, 0, xsStrings(String(pick(HOSTILE_DOMAINS))));
        verdict = 'declared';
        what = 'a domain declaration';
      }
    } else {
      const type = chance(8) ? next() : pick(XS_TYPES);
      message = encodeXsMessage(type, id, chance(4) ? int(4) : 0, randomPayload());
      // randomPayload may pass XENSTORE_PAYLOAD_MAX (several long strings): a framing violation,
      // refused like an oversized header, whatever the type.
      verdict = oversized(message) ? 'E2BIG' : 'reply';
      what = `XenStore message type ${type} with ${message.length - XS_HEADER_BYTES} bytes`;
    }
    const sentAt = performance.now();
    xs.link.write(message);
    const answered = verdict === 'reply' || verdict === 'declared';
    const reply = await xs.link.take((item) => item.reqId === id, answered ? REPLY_WITHIN_MS : CLOSE_WITHIN_MS);
    if (reply === 'timeout') return fail(`no XenStore answer within the time allowed to ${what}`);
    if (reply !== 'closed' && reply.type === XsType.ERROR) countError(reply.payload.toString('latin1').replace(/\0$/, ''));
    if (answered) {
      if (reply === 'closed') {
        checkDaemonAlive();
        return fail(`the XenStore connection was closed by ${xs.link.closedBy} on ${what}`);
      }
      if (verdict === 'declared') {
        if (reply.type !== XsType.SIM_DECLARE_DOMAIN || reply.payload.toString('latin1') !== 'OK\0') {
          return fail(`${what} was answered type ${reply.type} ${JSON.stringify(reply.payload.toString('latin1'))}, not OK`);
        }
        xs.declared = true;
      }
      xs.answered = what;
      return;
    }
    report.violations++;
    if (reply !== 'closed' && (reply.type !== XsType.ERROR || reply.payload.toString('latin1') !== `${verdict}\0`)) {
      fail(`${what} was answered type ${reply.type} ${JSON.stringify(reply.payload.toString('latin1'))}, not ${verdict}`);
    }
    const closedAt = await xs.link.closed(Math.max(0, CLOSE_WITHIN_MS - (performance.now() - sentAt)));
    if (closedAt === 'timeout') return fail(`the XenStore did not close the connection within ${CLOSE_WITHIN_MS} ms after ${what}`);
    report.slowestCloseMs = Math.max(report.slowestCloseMs, closedAt - sentAt);
  };

  function randomPayload() {
    if (chance(2)) {
      const strings = Array.from({ length: int(4) }, () =>
        pick(['/', '/local/domain/100/x', '@introduceDomain', 'T', 'F', '0', 'r100', '../x', 'é', 'a'.repeat(int(3100))]),
      );
      return xsStrings(...strings);
    }
    const payload = Buffer.alloc(int(200));
    for (let i = 0; i < payload.length; i++) payload[i] = next() & 0xff;
    return payload;
  }

  // --- the well-behaved side ------------------------------------------------------------
  const gntalloc = openGntalloc({ backend: 'sim', domid: GOOD });
  const evtchn = openEventChannel({ backend: 'sim', domid: GOOD });
  const xenstore = await openXenStore({ domid: GOOD, transport: 'sim' });
  const goodNode = `/local/domain/${GOOD}/data/daemon-fuzz`;
  // What the hostile domains may write lives under their data/ folders: removed again at the end.
  const dom0 = await openXenStore({ domid: 0, transport: 'sim' });
  const hostileData = (/** @type {number} */ domid) => `/local/domain/${domid}/data`;
  /** @type {Map<number, Set<string>>} */
  const dataBefore = new Map();
  for (const domid of HOSTILE_DOMAINS) dataBefore.set(domid, new Set(await dom0.directory(hostileData(domid)).catch(() => [])));
  const goodWork = async () => {
    try {
      const pages = gntalloc.share(GOOD_PEER, 1 + int(2));
      new Uint8Array(pages.buffer)[0] = 0xa5;
      const port = evtchn.bindUnbound(GOOD_PEER);
      const status = sim.call('status', {});
      if (status.daemonPid !== daemonPid) fail(`the daemon changed from pid ${daemonPid} to ${status.daemonPid}`);
      if (!status.grants.some((grant) => grant.domid === GOOD && grant.ref === pages.refs[0])) fail('a fresh grant is missing from status');
      if (!status.ports.some((entry) => entry.domid === GOOD && entry.port === port)) fail('a fresh port is missing from status');
      evtchn.unbind(port);
      pages.release();
      if (report.iterations % 4 === 0) {
        const value = `v${report.iterations}`;
        await xenstore.write(goodNode, value);
        const read = await xenstore.read(goodNode);
        if (read !== value) fail(`XenStore read back ${JSON.stringify(read)}, not ${value}`);
      }
    } catch (caught) {
      const error = /** @type {NodeJS.ErrnoException} */ (caught);
      fail(`the well-behaved client failed: ${error.code ?? ''} ${error.message}`);
      checkDaemonAlive();
    }
  };

  const deadline = Date.now() + seconds * 1000;
  let nextProgress = Date.now() + 5000;
  while (Date.now() < deadline && !daemonDead) {
    report.iterations++;
    if (chance(4)) await xenStoreStep();
    else await controlStep();
    if (report.iterations % 8 === 0) await goodWork();
    if (Date.now() >= nextProgress) {
      nextProgress += 5000;
      log(`  daemon fuzz: ${report.iterations} iterations, ${report.violations} violations, ${report.failures.length} failures`);
    }
  }

  // --- the end: everything the hostile connections held must go back ---------------------
  control?.destroy();
  xs?.link.destroy();
  await xenstore.rm(goodNode).catch(() => {});
  xenstore.close();
  for (const domid of HOSTILE_DOMAINS) {
    for (const child of await dom0.directory(hostileData(domid)).catch(() => [])) {
      if (!dataBefore.get(domid)?.has(child)) await dom0.rm(`${hostileData(domid)}/${child}`).catch(() => {});
    }
  }
  dom0.close();
  evtchn.close();
  gntalloc.close();
  /** @type {import('@xen-vchan/sim').SimStatus | null} */
  let after = null;
  if (!daemonDead) {
    try {
      after = sim.call('status', {});
      for (
        let tries = 0;
        tries < 40 && (after.grants.length !== baseline.grants.length || after.ports.length !== baseline.ports.length);
        tries++
      ) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        after = sim.call('status', {});
      }
      if (after.daemonPid !== daemonPid) fail(`the daemon changed from pid ${daemonPid} to ${after.daemonPid}`);
    } catch (caught) {
      const error = /** @type {NodeJS.ErrnoException} */ (caught);
      fail(`status at the end failed: ${error.code ?? ''} ${error.message}`);
      after = null;
    }
  }
  checkDaemonAlive();
  report.resources = {
    start: { grants: baseline.grants.length, ports: baseline.ports.length },
    end: after ? { grants: after.grants.length, ports: after.ports.length } : null,
  };
  if (!after || after.grants.length !== baseline.grants.length || after.ports.length !== baseline.ports.length)
    fail('grants or ports were left behind');
  report.ok = report.failures.length === 0;

  // A daemon started for this run goes with it; so does its folder if the run made it and all went well.
  if (startedDaemon) {
    try {
      if (!daemonDead) sim.call('stop', {});
    } catch {
      /* already gone */
    }
    sim.close();
    if (!folderExisted && report.ok) rmSync(directory, { recursive: true, force: true });
    else if (!report.ok) report.failures.push(`the daemon's log is ${files.log}`);
  }
  return report;
}

/**
 * Whether a daemon already serves `socketPath` (then this run leaves it running).
 * @param {string} socketPath
 * @returns {Promise<boolean>}
 */
function daemonAnswers(socketPath) {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
