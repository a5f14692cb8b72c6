#!/usr/bin/env node
// Hostile-peer fuzzing, seeded and bounded in time. Each iteration connects our side (server or
// client, through the public API) to a hostile peer process that does the real handshake and then
// writes seeded nonsense into the shared page (indices that jump, wrap, run backwards or exceed the
// ring; orders changed after connect; live and notify bytes of any value; grant refs), poking the
// event channel each time, while our side keeps writing and reading. Some iterations publish
// garbage in XenStore instead. Our side must never crash or hang, must only ever fail with EPROTO
// (or see a clean close), must close within 1 s of a definite violation, and must end with all
// its resources back.
//   node test/fuzz/fuzz.mjs [--seconds 10] [--seed 1]
import { parseArgs } from 'node:util';
import { connect, createServer } from '@xen-vchan/vchan';
import { SimConnection } from '@xen-vchan/sim';
import { Peer } from '../support/peer.mjs';
import { random } from '../support/stream-data.mjs';

const SELF = 1;
const HOSTILE = 2;
const CLOSE_WITHIN_MS = 1000;
const ALLOWED_ERRORS = new Set(['EPROTO', 'EPIPE', 'ECONNRESET']);
const GARBAGE = ['', '-1', '12abc', '99999999999', ' 5', '0x10', '0', '1e3', '007', '4294967296'];

/** Keeps writing and reading until the channel closes; records how it ended. */
function drive(channel, next) {
  const outcome = { error: null, closedAt: null, received: 0 };
  channel.on('data', (chunk) => (outcome.received += chunk.length));
  channel.on('error', (error) => (outcome.error ??= error));
  outcome.closed = new Promise((resolve) => channel.on('close', () => resolve((outcome.closedAt = performance.now()))));
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

export async function fuzz({ seconds, seed, log = () => {} }) {
  const next = random(seed);
  const sim = SimConnection.open();
  const baseline = sim.call('status', {});
  const report = { seed, seconds, iterations: 0, scribbles: 0, definiteViolations: 0, closedByViolation: 0, slowestCloseMs: 0, errors: {}, garbagePublished: 0, garbageRefused: 0, failures: [] };
  const fail = (what) => report.failures.push(`iteration ${report.iterations}: ${what}`);
  let peer = await Peer.start(HOSTILE, 'hostile');
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    report.iterations++;
    const name = `fuzz-${seed}-${report.iterations}`;
    const mode = next() % 10;
    const sizes = [0, 1024, 4096, 65536, 1 << 20];
    let server = null;
    try {
      if (mode === 9) {
        // Garbage in XenStore: the client must refuse it, never guess.
        const garbage = { ringRef: GARBAGE[next() % GARBAGE.length], port: GARBAGE[next() % GARBAGE.length] };
        report.garbagePublished++;
        await peer.call('serve', { clientDomid: SELF, name, leftMin: 4096, rightMin: 4096, garbage });
        try {
          const channel = await connect({ domid: HOSTILE, name, simDomid: SELF, timeout: 1000 });
          channel.destroy();
          if (!/^[1-9][0-9]*$/.test(garbage.ringRef) || !/^[1-9][0-9]*$/.test(garbage.port)) fail(`accepted ring-ref ${JSON.stringify(garbage.ringRef)} event-channel ${JSON.stringify(garbage.port)}`);
        } catch (error) {
          if (error.code === 'EPROTO' || error.code === 'EINVAL') report.garbageRefused++;
          else fail(`garbage in XenStore gave ${error.code}: ${error.message}`);
        }
        await peer.call('close');
        continue;
      }
      let channel;
      let side;
      if (mode < 5) {
        server = createServer({ domid: HOSTILE, name, simDomid: SELF, readMin: sizes[next() % 5], writeMin: sizes[next() % 5] });
        const connected = new Promise((resolve) => server.once('channel', resolve));
        await server.listen();
        side = await peer.call('connectTo', { serverDomid: SELF, name });
        channel = await connected;
      } else {
        side = await peer.call('serve', { clientDomid: SELF, name, leftMin: sizes[next() % 5], rightMin: sizes[next() % 5] });
        channel = await connect({ domid: HOSTILE, name, simDomid: SELF, timeout: 2000 });
      }
      const outcome = drive(channel, next);
      const scribbles = await peer.call('scribble', { seed: next(), count: 1 + (next() % 30), gapMs: next() % 3 });
      report.scribbles += scribbles.length;
      // Half the time, end on a violation no implementation may miss: an impossible live byte.
      let violatedAt = null;
      if (next() % 2 === 0 && !outcome.closedAt) {
        const field = side.side === 'client' ? 'clientLive' : 'serverLive';
        await peer.call('scribbleField', { field, value: 3 + (next() % 250) });
        violatedAt = performance.now();
        report.definiteViolations++;
      }
      const timeout = new Promise((resolve) => setTimeout(resolve, CLOSE_WITHIN_MS, 'timeout'));
      const ended = await Promise.race([outcome.closed, timeout]);
      if (violatedAt !== null) {
        if (ended === 'timeout') fail('no close within 1 s of a definite violation');
        else {
          report.closedByViolation++;
          report.slowestCloseMs = Math.max(report.slowestCloseMs, outcome.closedAt - violatedAt);
        }
      }
      if (outcome.error) {
        const code = outcome.error.code ?? 'none';
        report.errors[code] = (report.errors[code] ?? 0) + 1;
        if (!ALLOWED_ERRORS.has(code)) fail(`unexpected error ${code}: ${outcome.error.message}`);
      }
      channel.destroy();
      await peer.call('close');
    } catch (error) {
      fail(`${error.code ?? ''} ${error.message}`);
      await peer.stop();
      peer = await Peer.start(HOSTILE, 'hostile');
    } finally {
      await server?.close();
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
  if (after.grants.length !== baseline.grants.length || after.ports.length !== baseline.ports.length) fail('grants or ports were left behind');
  report.ok = report.failures.length === 0;
  return report;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ args: process.argv.slice(2).filter((arg) => arg !== '--'), options: { seconds: { type: 'string', default: '10' }, seed: { type: 'string', default: '1' }, json: { type: 'boolean' } } });
  const report = await fuzz({ seconds: Number(values.seconds), seed: Number(values.seed), log: (line) => console.error(line) });
  if (values.json) console.log(JSON.stringify(report, null, 2));
  else {
    console.log(`fuzz: seed ${report.seed}, ${report.seconds} s: ${report.iterations} iterations, ${report.scribbles} scribbles`);
    console.log(`  definite violations ${report.definiteViolations}, closed for them ${report.closedByViolation} (slowest ${report.slowestCloseMs.toFixed(1)} ms)`);
    console.log(`  errors raised: ${JSON.stringify(report.errors)}; XenStore garbage published ${report.garbagePublished}, refused ${report.garbageRefused}`);
    console.log(`  resources: start ${JSON.stringify(report.resources.start)}, end ${JSON.stringify(report.resources.end)}`);
    for (const failure of report.failures.slice(0, 20)) console.log(`  FAILURE ${failure}`);
    console.log(report.ok ? '  ok' : `  ${report.failures.length} FAILURES (reproduce with --seed ${report.seed})`);
  }
  process.exit(report.ok ? 0 : 1);
}
