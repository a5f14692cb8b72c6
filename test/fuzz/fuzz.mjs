#!/usr/bin/env node
// Hostile-peer fuzzing, seeded and bounded in time, in parts that each attack one surface the
// peer (or another local process, for the simulation's daemon) controls:
//   ring     our side (server or client, through the public API) against a peer that does the
//            real handshake and then writes seeded nonsense into the shared page (indices that
//            jump, wrap, run backwards or exceed the ring; orders changed after connect; live and
//            notify bytes of any value; grant refs), poking the event channel each time, while
//            our side keeps writing and reading; some iterations publish garbage in XenStore.
//   waiting  a listening server against a client that maps page 0 and binds the port but never
//            finishes connecting: it flips cli_live, the notify bytes and the indices.
//   close    our side ends the channel while the peer refills the ring as fast as it can.
//   framing  MessageChannel and RpcPeer against random lengths, bytes and JSON in frames.
//   daemon   the simulation daemon's sockets against random frames from one client while
//            another keeps working.
//   mux      a yamux session (@xen-vchan/mux) against a raw peer writing seeded frames, valid and
//            malformed (mux-fuzz.mjs): EPROTO within 1 s of a violation, bounded buffers.
// Our side must never crash or hang, must only ever fail with the codes allowed, must close within
// 1 s of a definite violation, must keep the event loop turning, and must end with all its
// resources back.
//   node test/fuzz/fuzz.mjs [--seconds 10] [--seed 1] [--parts ring,waiting,close,framing,daemon,mux]
import { parseArgs } from 'node:util';
import { connect, createServer } from '@xen-vchan/vchan';
import { SimConnection } from '@xen-vchan/sim';
import { Peer } from '../support/peer.mjs';
import { random } from '../support/stream-data.mjs';
import { fuzzDaemon } from './daemon-fuzz.mjs';
import { fuzzFraming } from './framing-fuzz.mjs';
import { fuzzMux } from './mux-fuzz.mjs';
import { startReport } from './part-report.mjs';

/** @typedef {import('@xen-vchan/vchan').Vchan} Vchan */
/** @typedef {import('@xen-vchan/vchan').VchanServer} VchanServer */
/**
 * What every part is given.
 * @typedef {{ seconds: number; seed: number; log?: (line: string) => void }} PartOptions
 */
/**
 * What every part reports; each adds counters of its own.
 * @typedef {object} PartReport
 * @property {string} part
 * @property {number} seed
 * @property {number} seconds
 * @property {number} iterations
 * @property {number} [violations]
 * @property {number} slowestCloseMs
 * @property {Record<string, number>} errors  how often our side saw each error code
 * @property {string[]} failures
 * @property {{ start: unknown; end: unknown } | null} [resources]  what the part holds at the start and the end
 * @property {boolean} [ok]
 */
/**
 * The hostile peer's answer to connectTo and serve (see hostile-peer.mjs).
 * @typedef {{ side: 'client' | 'server'; readSize: number; writeSize: number }} HostileSide
 */
/**
 * How our side's channel fared under drive(): its first error, when it closed (also what
 * `closed` resolves with) and how much it read.
 * @typedef {{ error: NodeJS.ErrnoException | null; closedAt: number | null; received: number; closed: Promise<number> }} Outcome
 */

const SELF = 1;
const HOSTILE = 2;
const CLOSE_WITHIN_MS = 1000;
/** Longest the event loop may stall while a peer floods or flaps (generous: these machines are noisy). */
const MAX_LAG_MS = 200;
const ALLOWED_ERRORS = new Set(['EPROTO', 'EPIPE', 'ECONNRESET']);
const GARBAGE = ['', '-1', '12abc', '99999999999', ' 5', '0x10', '0', '1e3', '007', '4294967296'];
const SIZES = [0, 1024, 4096, 65536, 1 << 20];

/**
 * The share of the run each part gets.
 * @type {Record<string, number>}
 */
const PARTS = { ring: 0.35, waiting: 0.15, close: 0.2, framing: 0.15, daemon: 0.15, mux: 0.1 };

/** How long any one step may take before the fuzzer calls it a hang (a failure, never a stuck run). */
const STEP_MS = 10_000;

/**
 * Awaits `promise`, or fails with EHUNG naming the step once STEP_MS have passed.
 * @template T
 * @param {string} what
 * @param {T} promise
 * @returns {Promise<Awaited<T>>}
 */
async function step(what, promise) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const hung = new Promise((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(`hung for ${STEP_MS / 1000} s at: ${what}`), { code: 'EHUNG' })), STEP_MS);
  });
  try {
    return await Promise.race([promise, hung]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Keeps writing and reading until the channel closes; records how it ended.
 * @param {Vchan} channel
 * @param {() => number} next
 */
function drive(channel, next) {
  /** @type {Outcome} */
  const outcome = {
    error: null,
    closedAt: null,
    received: 0,
    closed: new Promise((resolve) =>
      channel.on('close', () => {
        outcome.closedAt = performance.now();
        resolve(outcome.closedAt);
      }),
    ),
  };
  channel.on('data', (/** @type {Buffer} */ chunk) => (outcome.received += chunk.length));
  channel.on('error', (error) => (outcome.error ??= error));
  (async () => {
    while (!channel.destroyed && !channel.writableEnded) {
      if (!channel.write(Buffer.alloc(1 + (next() % 9000), next() & 0xff))) {
        await new Promise((resolve) => {
          channel.once('drain', resolve);
          channel.once('close', resolve);
        });
      }
    }
  })().catch(() => {});
  return outcome;
}

/** Watches how late a 10 ms timer fires: a stalled event loop shows as lag. */
function lagMonitor() {
  let expected = performance.now() + 10;
  let worst = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - expected);
    expected = now + 10;
  }, 10);
  return {
    stop() {
      clearInterval(timer);
      return worst;
    },
  };
}

/**
 * @param {PartReport} report
 * @param {NodeJS.ErrnoException | null | undefined} error
 */
function countError(report, error, allowed = ALLOWED_ERRORS) {
  const code = error?.code ?? 'none';
  report.errors[code] = (report.errors[code] ?? 0) + 1;
  return allowed.has(code);
}

/**
 * Grants and ports in the simulation, to compare before and after a part.
 * @param {SimConnection} sim
 */
function simResources(sim) {
  const status = sim.call('status', {});
  return { grants: status.grants.length, ports: status.ports.length };
}

/**
 * @param {SimConnection} sim
 * @param {{ grants: number; ports: number }} baseline
 */
async function settledResources(sim, baseline) {
  let now = simResources(sim);
  for (let tries = 0; tries < 20 && (now.grants !== baseline.grants || now.ports !== baseline.ports); tries++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    now = simResources(sim);
  }
  return now;
}

/**
 * Connects our side to the hostile peer in a seeded role; returns the channel and the peer's side.
 * @param {Peer} peer
 * @param {() => number} next
 * @param {string} name
 */
async function connectToHostile(peer, next, name) {
  if (next() % 2 === 0) {
    const server = createServer({ domid: HOSTILE, name, simDomid: SELF, readMin: SIZES[next() % 5], writeMin: SIZES[next() % 5] });
    /** @type {Promise<Vchan>} */
    const connected = new Promise((resolve) => server.once('channel', resolve));
    try {
      await step('listen', server.listen());
      const side = await step('peer connectTo', /** @type {Promise<HostileSide>} */ (peer.call('connectTo', { serverDomid: SELF, name })));
      return { channel: await step('our server sees the client', connected), side, server };
    } catch (error) {
      await server.close(); // the failure is reported; what the server holds is not left behind
      throw error;
    }
  }
  const side = await step(
    'peer serve',
    /** @type {Promise<HostileSide>} */ (
      peer.call('serve', { clientDomid: SELF, name, leftMin: SIZES[next() % 5], rightMin: SIZES[next() % 5] })
    ),
  );
  return { channel: await step('connect', connect({ domid: HOSTILE, name, simDomid: SELF, timeout: 2000 })), side, server: null };
}

/**
 * The ring part: our side as server or client, the peer scribbling over the page.
 * @param {PartOptions} options
 */
async function fuzzRing({ seconds, seed, log = () => {} }) {
  const next = random(seed);
  const sim = SimConnection.open();
  const baseline = sim.call('status', {});
  /** @type {PartReport & { scribbles: number; definiteViolations: number; closedByViolation: number; garbagePublished: number; garbageRefused: number }} */
  const report = {
    part: 'ring',
    seed,
    seconds,
    iterations: 0,
    scribbles: 0,
    definiteViolations: 0,
    closedByViolation: 0,
    slowestCloseMs: 0,
    errors: {},
    garbagePublished: 0,
    garbageRefused: 0,
    failures: [],
  };
  const fail = (/** @type {string} */ what) => report.failures.push(`ring iteration ${report.iterations}: ${what}`);
  let peer = await Peer.start(HOSTILE, 'hostile');
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    report.iterations++;
    const name = `fr-${report.iterations}`;
    const mode = next() % 10;
    const sizes = [0, 1024, 4096, 65536, 1 << 20];
    /** @type {VchanServer | null} */
    let server = null;
    try {
      if (mode === 9) {
        // Garbage in XenStore: the client must refuse it, never guess.
        const garbage = { ringRef: GARBAGE[next() % GARBAGE.length], port: GARBAGE[next() % GARBAGE.length] };
        report.garbagePublished++;
        await step('peer serve', peer.call('serve', { clientDomid: SELF, name, leftMin: 4096, rightMin: 4096, garbage }));
        try {
          const channel = await connect({ domid: HOSTILE, name, simDomid: SELF, timeout: 1000 });
          channel.destroy();
          if (!/^[1-9][0-9]*$/.test(garbage.ringRef) || !/^[1-9][0-9]*$/.test(garbage.port))
            fail(`accepted ring-ref ${JSON.stringify(garbage.ringRef)} event-channel ${JSON.stringify(garbage.port)}`);
        } catch (caught) {
          const error = /** @type {NodeJS.ErrnoException} */ (caught);
          if (error.code === 'EPROTO' || error.code === 'EINVAL') report.garbageRefused++;
          else fail(`garbage in XenStore gave ${error.code}: ${error.message}`);
        }
        await step('peer close', peer.call('close'));
        continue;
      }
      let channel;
      let side;
      if (mode < 5) {
        const created = createServer({ domid: HOSTILE, name, simDomid: SELF, readMin: sizes[next() % 5], writeMin: sizes[next() % 5] });
        server = created;
        /** @type {Promise<Vchan>} */
        const connected = new Promise((resolve) => created.once('channel', resolve));
        await step('listen', server.listen());
        side = await step('peer connectTo', /** @type {Promise<HostileSide>} */ (peer.call('connectTo', { serverDomid: SELF, name })));
        channel = await step('our server sees the client', connected);
      } else {
        side = await step(
          'peer serve',
          /** @type {Promise<HostileSide>} */ (
            peer.call('serve', { clientDomid: SELF, name, leftMin: sizes[next() % 5], rightMin: sizes[next() % 5] })
          ),
        );
        channel = await step('connect', connect({ domid: HOSTILE, name, simDomid: SELF, timeout: 2000 }));
      }
      const outcome = drive(channel, next);
      const scribbles = await step(
        'peer scribble',
        /** @type {Promise<unknown[]>} */ (peer.call('scribble', { seed: next(), count: 1 + (next() % 30), gapMs: next() % 3 })),
      );
      report.scribbles += scribbles.length;
      // Half the time, end on a violation no implementation may miss: an impossible live byte.
      let violatedAt = null;
      if (next() % 2 === 0 && !outcome.closedAt) {
        const field = side.side === 'client' ? 'clientLive' : 'serverLive';
        await step('peer scribbleField', peer.call('scribbleField', { field, value: 3 + (next() % 250) }));
        violatedAt = performance.now();
        report.definiteViolations++;
      }
      /** @type {Promise<'timeout'>} */
      const timeout = new Promise((resolve) => setTimeout(resolve, CLOSE_WITHIN_MS, 'timeout'));
      const ended = await Promise.race([outcome.closed, timeout]);
      if (violatedAt !== null) {
        if (ended === 'timeout') fail('no close within 1 s of a definite violation');
        else {
          report.closedByViolation++;
          report.slowestCloseMs = Math.max(report.slowestCloseMs, ended - violatedAt);
        }
      }
      if (outcome.error) {
        const code = outcome.error.code ?? 'none';
        report.errors[code] = (report.errors[code] ?? 0) + 1;
        if (!ALLOWED_ERRORS.has(code)) fail(`unexpected error ${code}: ${outcome.error.message}`);
      }
      channel.destroy();
      await step('peer close', peer.call('close'));
    } catch (caught) {
      const error = /** @type {NodeJS.ErrnoException} */ (caught);
      fail(`${error.code ?? ''} ${error.message}`);
      await peer.stop();
      peer = await Peer.start(HOSTILE, 'hostile');
    } finally {
      await step('server close', server?.close());
    }
    if (report.iterations % 50 === 0) log(`  ${report.iterations} iterations, ${report.failures.length} failures`);
  }
  await peer.stop();
  await new Promise((resolve) => setTimeout(resolve, 100));
  const after = sim.call('status', {});
  sim.close();
  report.resources = {
    start: { grants: baseline.grants.length, ports: baseline.ports.length },
    end: { grants: after.grants.length, ports: after.ports.length },
  };
  if (after.grants.length !== baseline.grants.length || after.ports.length !== baseline.ports.length)
    fail('grants or ports were left behind');
  report.violations = report.definiteViolations + report.garbagePublished;
  report.ok = report.failures.length === 0;
  return report;
}

/**
 * What the hostile-peer parts share: a seeded loop for `seconds`, a hostile peer process that is
 * started again after any failed iteration, and the simulation's grants and ports checked at the
 * end. `iteration` runs one round and throws to report it failed.
 * @template {Record<string, number>} C
 * @param {PartOptions & { part: string }} options
 * @param {C} counters  the part's own counters, with their starting values
 * @param {(round: { next: () => number; report: PartReport & { violations: number } & C; fail: (what: string) => void; peer: Peer }) => Promise<void>} iteration
 */
async function hostilePart({ part, seconds, seed, log = () => {} }, counters, iteration) {
  const next = random(seed);
  const sim = SimConnection.open();
  const baseline = simResources(sim);
  /** @type {PartReport & { violations: number } & C} */
  const report = startReport(part, seed, seconds, counters);
  const fail = (/** @type {string} */ what) => report.failures.push(`${part} iteration ${report.iterations}: ${what}`);
  let peer = await Peer.start(HOSTILE, 'hostile');
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    report.iterations++;
    try {
      await iteration({ next, report, fail, peer });
    } catch (caught) {
      const error = /** @type {NodeJS.ErrnoException} */ (caught);
      fail(`${error.code ?? ''} ${error.message}`);
      await peer.stop();
      peer = await Peer.start(HOSTILE, 'hostile');
    }
    if (report.iterations % 50 === 0) log(`  ${part}: ${report.iterations} iterations, ${report.failures.length} failures`);
  }
  await peer.stop();
  report.resources = { start: baseline, end: await settledResources(sim, baseline) };
  if (JSON.stringify(report.resources.end) !== JSON.stringify(baseline)) fail('grants or ports were left behind');
  report.ok = report.failures.length === 0;
  return report;
}

/**
 * The waiting part: a listening server and a client that never connects properly. The server must
 * not recurse or stall on a flapping cli_live, must stay able to serve a real client afterwards,
 * and must close promptly.
 * @param {PartOptions} options
 */
function fuzzWaiting(options) {
  return hostilePart(
    { ...options, part: 'waiting' },
    { clientLost: 0, servedAfter: 0, worstLagMs: 0 },
    async ({ next, report, fail, peer }) => {
      const name = `fw-${report.iterations}`;
      const server = createServer({
        domid: HOSTILE,
        name,
        simDomid: SELF,
        readMin: SIZES[next() % 5],
        writeMin: SIZES[next() % 5],
        persist: next() % 2 === 0,
      });
      let channels = 0;
      /** @type {NodeJS.ErrnoException[]} */
      const errors = [];
      server.on('error', (error) => errors.push(error));
      server.on('clientLost', () => report.clientLost++);
      /** @type {Promise<void>} */
      const served = new Promise((resolve) =>
        server.on('channel', (channel) => {
          channels++;
          channel.on('error', (error) => errors.push(error));
          channel.destroy();
          resolve();
        }),
      );
      const lag = lagMonitor();
      try {
        await step('listen', server.listen());
        const { pokes } = await step(
          'peer lurk',
          /** @type {Promise<{ pokes: number }>} */ (
            peer.call('lurk', { serverDomid: SELF, name, seed: next(), count: 1 + (next() % 3000), gapMs: next() % 3 })
          ),
        );
        report.violations += pokes;
        // A real client afterwards is still served, unless the lurker already took the one channel.
        if (channels === 0) {
          await step('peer connectTo', peer.call('connectTo', { serverDomid: SELF, name }));
          const outcome = await Promise.race([
            served.then(() => 'served'),
            new Promise((resolve) => setTimeout(resolve, CLOSE_WITHIN_MS, 'timeout')),
          ]);
          if (outcome === 'served') report.servedAfter++;
          else fail('a real client was not served within 1 s after a lurking one');
          await step('peer close', peer.call('close'));
        }
      } finally {
        const started = performance.now();
        await step('server close', server.close());
        report.slowestCloseMs = Math.max(report.slowestCloseMs, performance.now() - started);
        const worst = lag.stop();
        report.worstLagMs = Math.max(report.worstLagMs, worst);
        if (worst > MAX_LAG_MS) fail(`the event loop stalled for ${worst.toFixed(0)} ms`);
        for (const error of errors) if (!countError(report, error)) fail(`unexpected error ${error.code}: ${error.message}`);
      }
    },
  );
}

/**
 * The close part: our side ends the channel while the peer refills the ring as fast as it can.
 * end() must take at most one ring more, close within 1 s, and keep the event loop turning; a
 * consumer that reads nothing must not see its buffer grow past the high-water mark and one ring.
 * @param {PartOptions} options
 */
function fuzzClose(options) {
  return hostilePart(
    { ...options, part: 'close' },
    { floodedBytes: 0, worstLagMs: 0, mostBufferedOverMark: 0 },
    async ({ next, report, fail, peer }) => {
      const name = `fc-${report.iterations}`;
      /** @type {VchanServer | null} */
      let server = null;
      try {
        const connected = await connectToHostile(peer, next, name);
        server = connected.server;
        const { channel, side } = connected;
        // Set by the listener: typed as what it may leave, not as the null it starts as.
        let error = /** @type {NodeJS.ErrnoException | null} */ (null);
        channel.on('error', (caught) => (error ??= caught));
        /** @type {Promise<number>} */
        const closed = new Promise((resolve) => channel.on('close', () => resolve(performance.now())));
        const paused = next() % 2 === 0;
        if (!paused) channel.on('data', () => {});
        const lag = lagMonitor();
        const flood = /** @type {Promise<{ written: number }>} */ (peer.call('flood', { ms: 200 + (next() % 400) }));
        report.violations++;
        await new Promise((resolve) => setTimeout(resolve, next() % 100));
        const endedAt = performance.now();
        channel.end();
        const closedAt = await Promise.race([
          closed,
          /** @type {Promise<null>} */ (new Promise((resolve) => setTimeout(resolve, CLOSE_WITHIN_MS, null))),
        ]);
        if (closedAt === null && !paused) fail('end() did not close the channel within 1 s while the peer flooded');
        if (closedAt !== null) report.slowestCloseMs = Math.max(report.slowestCloseMs, closedAt - endedAt);
        // A paused consumer never reads to the end, so its channel stays open: its buffer is the point.
        const bound = channel.readableHighWaterMark + side.writeSize + 64 * 1024;
        report.mostBufferedOverMark = Math.max(report.mostBufferedOverMark, channel.readableLength - channel.readableHighWaterMark);
        if (channel.readableLength > bound) fail(`${channel.readableLength} bytes buffered, over the mark and one ring (${bound})`);
        report.floodedBytes += (await step('peer flood', flood)).written;
        const worst = lag.stop();
        report.worstLagMs = Math.max(report.worstLagMs, worst);
        if (worst > MAX_LAG_MS) fail(`the event loop stalled for ${worst.toFixed(0)} ms`);
        if (error && !countError(report, error)) fail(`unexpected error ${error.code}: ${error.message}`);
        channel.destroy();
        await step('peer close', peer.call('close'));
      } finally {
        await step('server close', server?.close());
      }
    },
  );
}

/** @type {Record<string, (options: PartOptions) => Promise<PartReport>>} */
const RUNNERS = { ring: fuzzRing, waiting: fuzzWaiting, close: fuzzClose, framing: fuzzFraming, daemon: fuzzDaemon, mux: fuzzMux };

/**
 * Runs the parts one after the other, each for its share of `seconds`, each with its own seed.
 * @param {PartOptions & { parts?: string[] }} options
 */
export async function fuzz({ seconds, seed, parts = Object.keys(PARTS), log = () => {} }) {
  const total = parts.reduce((sum, part) => sum + PARTS[part], 0);
  /** @type {{ seed: number; seconds: number; parts: Record<string, PartReport>; failures: string[]; ok?: boolean }} */
  const report = { seed, seconds, parts: {}, failures: [] };
  for (const [index, part] of parts.entries()) {
    if (!RUNNERS[part]) throw new Error(`unknown fuzz part ${part}: use ${Object.keys(RUNNERS).join(', ')}`);
    const share = Math.max(1, (seconds * PARTS[part]) / total);
    log(`fuzz part ${part}: ${share.toFixed(0)} s`);
    const result = await RUNNERS[part]({ seconds: share, seed: (seed + index * 0x9e3779b9) >>> 0, log });
    report.parts[part] = result;
    report.failures.push(...result.failures);
  }
  report.ok = report.failures.length === 0;
  return report;
}

/** @param {PartReport} part */
function summary(part) {
  const lines = [
    `  ${part.part}: ${part.iterations} iterations, ${part.violations} violations, errors ${JSON.stringify(part.errors)}, slowest close ${(part.slowestCloseMs ?? 0).toFixed(1)} ms`,
    `    resources: start ${JSON.stringify(part.resources?.start)}, end ${JSON.stringify(part.resources?.end)}`,
  ];
  const extra = Object.entries(part).filter(
    ([key]) =>
      !['part', 'seed', 'seconds', 'iterations', 'violations', 'errors', 'slowestCloseMs', 'resources', 'failures', 'ok'].includes(key),
  );
  if (extra.length)
    lines.push(
      `    ${extra.map(([key, value]) => `${key} ${typeof value === 'number' && !Number.isInteger(value) ? value.toFixed(1) : JSON.stringify(value)}`).join(', ')}`,
    );
  for (const failure of part.failures.slice(0, 10)) lines.push(`    FAILURE ${failure}`);
  return lines.join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    args: process.argv.slice(2).filter((arg) => arg !== '--'),
    options: {
      seconds: { type: 'string', default: '10' },
      seed: { type: 'string', default: '1' },
      parts: { type: 'string' },
      json: { type: 'boolean' },
    },
  });
  const parts = values.parts ? values.parts.split(',') : undefined;
  const report = await fuzz({ seconds: Number(values.seconds), seed: Number(values.seed), parts, log: (line) => console.error(line) });
  if (values.json) console.log(JSON.stringify(report, null, 2));
  else {
    console.log(`fuzz: seed ${report.seed}, ${report.seconds} s`);
    for (const part of Object.values(report.parts)) console.log(summary(part));
    console.log(report.ok ? '  ok' : `  ${report.failures.length} FAILURES (reproduce with --seed ${report.seed})`);
  }
  process.exit(report.ok ? 0 : 1);
}
