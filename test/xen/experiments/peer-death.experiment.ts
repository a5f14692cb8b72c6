// Experiment (not a test, not in CI): what an UNPRIVILEGED guest can see when the domain of its
// vchan peer is destroyed. Two PV guests A and B; A serves a stream to B (domains/stream.mjs, 1 MiB
// rings); a probe process (peer-death-probe.mjs) in the survivor polls every 20 ms and prints each
// change of its signals; dom0 times `xl destroy` and how long Xen still lists the domain.
// See docs/peer-death-research.md ("Measured") for the plan behind it and the results.
//
// Run (15-20 minutes under TCG, five guest boots; prints `peer-death:` lines and writes every
// probe line to bench-results/peer-death.json):
//   XEN_VCHAN_EXPERIMENTS=1 XEN_VCHAN_XEN_TIMEOUT=3600 bash test/xen/run.sh test/xen/experiments/peer-death.experiment.ts
// Knobs (run.sh passes them into dom0):
//   XEN_VCHAN_PD_MEM=448           MiB per guest (QEMU has 3072 MiB and dom0 2048M: two guests of
//                                  768 MiB do not fit)
//   XEN_VCHAN_PD_REPS=2            destroy measurements per role
//   XEN_VCHAN_PD_KERNEL_ARGS=...   extra guest kernel options, e.g. xen_privcmd.unrestricted=1
//                                  (then privcmd-status also polls EVTCHNOP_status during destroys)
//
// Guests: A1 and B1 first (facts, then probes beside an undisturbed stream and the cost of each
// probe); then for rep r: A is destroyed (B survives as the client), a new A is started, B is
// destroyed (A survives as the server), a new B is started. The probe files are not in the guest
// image (domu/image.sh packs only test/xen/domains and friends), so they are pushed through the
// guest's job agent, base64 in pieces. Guest clocks are seconds off dom0's under TCG, so each
// survivor's offset is measured (XenStore ping round trips) and its times corrected.
// The measurements in the memo were taken with the library before its own liveness monitor
// (commit 9c53897): since then the survivor's stream.mjs may end by itself after a destroy, which
// also ends the zombie earlier than the 12 s this file waits before killing it.
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openXenStore, type XenStore } from '@xen-vchan/xenstore';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { requireDom0 } from '../dom0.js';
import { Guest, projectRoot, type JobResult } from '../domu.js';

const run = promisify(execFile);
const MEMORY = Number(process.env.XEN_VCHAN_PD_MEM ?? 448);
const REPS = Number(process.env.XEN_VCHAN_PD_REPS ?? 2);
const KERNEL_ARGS = process.env.XEN_VCHAN_PD_KERNEL_ARGS ?? '';
const RING = 1048576;
const PROBE = 'test/xen/experiments/peer-death-probe.mjs';
const experimentsDir = join(projectRoot, 'test/xen/experiments');
const PRIVCMD = join(experimentsDir, 'privcmd-status');
const inHarness = process.env.XEN_VCHAN_IN_DOM0 === '1';

const report: string[] = [];
const results: Record<string, unknown> = {};
let dom0Store: XenStore;
let bundle: string; // base64 of a .tar.gz with the probe and privcmd-status
const guests = new Map<string, Guest>();

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
function say(line: string): void {
  report.push(line);
  console.log(`peer-death: ${line}`);
}

interface ProbeLine {
  tag: string;
  t: number;
  sig: string;
  v: unknown;
  [more: string]: unknown;
}

/** The PDPROBE / PDPRIV lines with `tag` that the guest's jobs printed on its console. */
function linesOf(guest: Guest, tag: string, kind = 'PDPROBE'): ProbeLine[] {
  const found: ProbeLine[] = [];
  for (const line of guest.console().split(/\r?\n/)) {
    const at = line.indexOf(`${kind} {`);
    if (at < 0) continue;
    try {
      const parsed = JSON.parse(line.slice(at + kind.length + 1)) as ProbeLine;
      if (parsed.tag === tag) found.push(parsed);
    } catch {
      // a line cut by the console: skip
    }
  }
  return found;
}

async function until<T>(what: string, check: () => T | null | undefined | false, timeout = 120_000): Promise<T> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(100);
  }
}

async function readOrNull(path: string): Promise<string | null> {
  return dom0Store.read(path).catch(() => null);
}

async function listed(domid: number): Promise<boolean> {
  const { stdout } = await run('xl', ['list']);
  return stdout
    .split('\n')
    .slice(1)
    .some((line) => line.trim().split(/\s+/)[1] === String(domid));
}

async function start(name: string): Promise<Guest> {
  const started = Date.now();
  const guest = await Guest.start({ name, memoryMiB: MEMORY, kernelArgs: KERNEL_ARGS || undefined, bootTimeout: 240_000 });
  guests.set(name, guest);
  // Push the probe and privcmd-status in pieces small enough for one XenStore write each.
  await guest.run(['/bin/sh', '-c', `mkdir -p ${experimentsDir} && rm -f /tmp/pd.tgz.b64`]);
  for (let at = 0; at < bundle.length; at += 2800) {
    await guest.run(['/bin/sh', '-c', `echo ${bundle.slice(at, at + 2800)} >> /tmp/pd.tgz.b64`]);
  }
  await guest.run(['/bin/sh', '-c', `base64 -d /tmp/pd.tgz.b64 | tar -xzf - -C ${experimentsDir}`]);
  say(`started ${name} (domain ${guest.domid}, ${MEMORY} MiB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return guest;
}

/**
 * Bounds on (guest clock - dom0 clock) from three XenStore round trips through the probe: dom0
 * writes a ping, the probe answers with its Date.now(), dom0 polls for the answer every 5 ms.
 */
async function clockOffset(guest: Guest, pings = 6): Promise<{ low: number; high: number }> {
  pollPongs(guest);
  let best = { low: -Infinity, high: Infinity };
  const base = `/local/domain/${guest.domid}/data/pdclock`;
  for (let n = 0; n < pings; n++) {
    const ping = `${Date.now()}-${n}`;
    const sent = Date.now();
    await dom0Store.write(`${base}/ping`, ping);
    const pong = await until(`clock pong from ${guest.name}`, () => pongs.get(`${base}/${ping}`), 5000).catch(() => null);
    if (!pong) continue; // lost (or very late): the next ping has a new value
    const received = pong.received;
    const low = pong.at - received;
    const high = pong.at - sent;
    if (high - low < best.high - best.low) best = { low, high };
  }
  clearInterval(pongTimer);
  if (best.high === Infinity) throw new Error(`no clock pong from ${guest.name}`);
  return best;
}
// Filled by pollPongs: `${base}/${ping}` -> the guest's time and when dom0 saw it.
const pongs = new Map<string, { at: number; received: number }>();
let pongTimer: NodeJS.Timeout | undefined;
function pollPongs(guest: Guest): void {
  clearInterval(pongTimer);
  const base = `/local/domain/${guest.domid}/data/pdclock`;
  pongTimer = setInterval(() => {
    void readOrNull(`${base}/pong`).then((value) => {
      if (!value) return;
      const [ping, at] = value.split(' ');
      const key = `${base}/${ping}`;
      if (!pongs.has(key)) pongs.set(key, { at: Number(at), received: Date.now() });
    });
  }, 5);
}

function consoleSince(guest: Guest, mark: number): string {
  return guest.console().slice(mark);
}

/** The narrower of two offset bounds (the clocks drift little within a run). */
function narrower(a: { low: number; high: number }, b: { low: number; high: number }) {
  return a.high - a.low <= b.high - b.low ? a : b;
}

/**
 * Looks at `xl list` every 20 ms until `domid` has left it or `deadline` passes, calling
 * `whileListed` after each look that still finds it. `gone` is when it was first missing (null if
 * it never was), `lastListed` the last look that found it (`lastListed` as given if none did).
 */
async function watchListing(
  domid: number,
  deadline: number,
  lastListed: number,
  whileListed?: () => Promise<void>,
): Promise<{ gone: number | null; lastListed: number }> {
  while (Date.now() < deadline) {
    const checkedAt = Date.now();
    if (!(await listed(domid))) return { gone: checkedAt, lastListed };
    lastListed = checkedAt;
    await whileListed?.();
    await sleep(20);
  }
  return { gone: null, lastListed };
}

/** What one destroy measurement found. */
interface DestroyResult {
  role: 'client' | 'server';
  rep: number;
  victim: number;
  survivor: number;
  before: number;
  after: number;
  gone: number | null;
  lastListed: number;
  killedStreamAt: number | null;
  listing: string;
  clock: { low: number; high: number };
  clockBefore: { low: number; high: number };
  clockAfter: { low: number; high: number };
  lines: ProbeLine[];
  privcmd: ProbeLine[];
}

/** stream.mjs as the server of `name` for domain `peer`, sending `bytes` of seed 1 over RING-sized rings. */
function streamServerArgs(peer: number, name: string, bytes: number): string[] {
  return ['server', '--peer', String(peer), '--name', name, '--ring', String(RING), '--send', String(bytes), '--seed', '1'];
}

async function destroyRun(role: 'client' | 'server', server: Guest, client: Guest, rep: number): Promise<DestroyResult> {
  const name = `pd${role[0]}${rep}`;
  const tag = `${role}${rep}`;
  const [victim, survivor] = role === 'client' ? [server, client] : [client, server];
  const serverMark = server.console().length;
  const clientMark = client.console().length;
  const serverJob = server.spawn(server.node('test/xen/domains/stream.mjs', streamServerArgs(client.domid, name, 2 ** 40)), {
    timeout: 3_600_000,
  });
  await until(`${server.name} to publish`, () => consoleSince(server, serverMark).includes('LISTENING'));
  // The probe first (it only needs the published ring-ref), so the clock is measured while quiet.
  const probeArgs = [
    '--role',
    role,
    '--peer',
    String(victim.domid),
    '--tag',
    tag,
    '--interval',
    '20',
    ...(role === 'client' ? ['--name', name] : []),
  ];
  const probe = survivor.spawn(survivor.node(PROBE, probeArgs), { timeout: 3_600_000 });
  await until(`the probe in ${survivor.name}`, () => linesOf(survivor, tag).some((line) => line.sig === 'ready'));
  const clockBefore = await clockOffset(survivor);
  const clientJob = client.spawn(
    client.node('test/xen/domains/stream.mjs', ['client', '--peer', String(server.domid), '--name', name, '--recv', String(2 ** 40)]),
    { timeout: 3_600_000 },
  );
  await until(`${client.name} to connect`, () => consoleSince(client, clientMark).includes('CONNECTED client'));
  const survivorStream = role === 'client' ? clientJob : serverJob;
  // privcmd-status follows the ports that are interdomain with the victim when it starts.
  const privcmd = KERNEL_ARGS.includes('unrestricted')
    ? survivor.spawn([PRIVCMD, 'watch', String(victim.domid), '20', tag], { timeout: 3_600_000 })
    : null;
  await sleep(3000); // the stream flows

  await dom0Store.write(`/local/domain/${survivor.domid}/data/pdclock/mark`, `destroy ${victim.domid}`);
  const before = Date.now();
  await run('xl', ['destroy', String(victim.domid)]);
  const after = Date.now();
  let listing = '';
  let killedStreamAt: number | null = null;
  let { gone, lastListed } = await watchListing(victim.domid, after + 12_000, after, async () => {
    if (!listing)
      listing = (await run('xl', ['list'])).stdout.split('\n').find((line) => line.trim().split(/\s+/)[1] === String(victim.domid)) ?? '';
  });
  if (gone === null) {
    // A zombie: the survivor's stream still maps its pages. Let that process go and time the end.
    killedStreamAt = Date.now();
    await survivorStream.kill('SIGKILL');
    ({ gone, lastListed } = await watchListing(victim.domid, Date.now() + 60_000, lastListed));
  }
  await sleep(3000); // the probes see the end state
  await survivorStream.kill('SIGKILL');
  await sleep(1000);
  const clockAfter = await clockOffset(survivor);
  await probe.kill('SIGTERM');
  await privcmd?.kill('SIGTERM');
  await Promise.race([probe.done, sleep(10_000)]);
  await sleep(1000); // the console log catches up
  const victimGuest = [...guests.entries()].find(([, guest]) => guest === victim);
  if (victimGuest) guests.delete(victimGuest[0]);
  await victim.destroy().catch(() => {});
  return {
    role,
    rep,
    victim: victim.domid,
    survivor: survivor.domid,
    before,
    after,
    gone,
    lastListed,
    killedStreamAt,
    listing: listing.trim().replace(/\s+/g, ' '),
    clock: narrower(clockBefore, clockAfter),
    clockBefore,
    clockAfter,
    lines: linesOf(survivor, tag),
    privcmd: privcmd ? linesOf(survivor, tag, 'PDPRIV') : [],
  };
}

/**
 * One summary line per signal: its value before the destroy and each change after. Times are
 * "+X±E ms": from dom0's Date.now() just before `xl destroy` to the guest's Date.now() at the
 * change, corrected by the measured clock offset (E is half the offset's uncertainty), and "mark
 * +Y": from the moment the survivor saw dom0's mark (written just before the destroy; same clock).
 */
function summarise(result: DestroyResult): string[] {
  const out: string[] = [];
  const dom0 = (t: number) => `+${t - result.before} ms`;
  const offset = (result.clock.low + result.clock.high) / 2;
  const error = Math.round((result.clock.high - result.clock.low) / 2);
  const mark = result.lines.find((line) => line.sig === 'mark');
  const markAt = typeof mark?.at === 'number' ? mark.at : null;
  const guest = (t: number) => `+${Math.round(t - offset - result.before)}±${error} ms${markAt === null ? '' : ` (mark +${t - markAt})`}`;
  const head = `${result.role} survivor rep ${result.rep} (domain ${result.survivor}; destroyed ${result.victim})`;
  out.push(
    `${head}: xl destroy took ${result.after - result.before} ms; still listed at ${dom0(result.lastListed)}, gone by ${result.gone === null ? 'never' : dom0(result.gone)}` +
      (result.killedStreamAt !== null
        ? ` (survivor's stream killed at ${dom0(result.killedStreamAt)}, gone ${result.gone === null ? 'never' : `${result.gone - result.killedStreamAt} ms later`})`
        : '') +
      `; listed as: ${result.listing || '-'}; guest - dom0 clock ${Math.round(offset)}±${error} ms (before [${result.clockBefore.low}, ${result.clockBefore.high}], after [${result.clockAfter.low}, ${result.clockAfter.high}]); mark seen at ${markAt === null ? '?' : `+${Math.round(markAt - offset - result.before)} ms`}`,
  );
  for (const sig of ['grantCopy', 'bind0', 'bindMax']) {
    const lines = result.lines.filter((line) => line.sig === sig);
    if (lines.length === 0) continue;
    const initial = lines.filter((line) => line.t < (markAt ?? result.before)).at(-1);
    const changes = lines.filter((line) => line.t >= (markAt ?? result.before));
    out.push(
      `${head}: ${sig} ${JSON.stringify(initial?.v)} -> ${changes.length === 0 ? 'no change' : changes.map((line) => `${JSON.stringify(line.v)} at ${guest(line.t)}`).join(', ')}`,
    );
  }
  for (const path of new Set(result.lines.filter((line) => line.sig === 'watch').map((line) => String(line.watch)))) {
    const events = result.lines.filter((line) => line.sig === 'watch' && line.watch === path);
    const described = events.map(
      (line) =>
        `#${String(line.n)} ${markAt !== null && line.t < markAt ? 'before' : `at ${guest(line.t)}`}${line.v === path ? '' : ` on ${String(line.v)}`}${line.read !== undefined ? ` (read: ${String(line.read)})` : ''}`,
    );
    out.push(`${head}: watch ${path}: ${events.length} events: ${described.join('; ')}`);
  }
  if (result.privcmd.length > 0) {
    out.push(
      `${head}: privcmd EVTCHNOP_status: ${result.privcmd.map((line) => `${markAt !== null && line.t < markAt ? 'before' : `at ${guest(line.t)}`} self ${JSON.stringify(line.self)} peer ${JSON.stringify(line.peer)}`).join('; ')}`,
    );
  }
  return out;
}

describe('peer death, seen from an unprivileged guest', () => {
  beforeAll(async () => {
    if (!inHarness) return;
    dom0Store = await openXenStore({ transport: 'socket' });
    // privcmd-status: built here with the host's gcc (dom0's /usr is the host's), then bundled.
    const build = '/tmp/peer-death-bundle';
    mkdirSync(build, { recursive: true });
    execFileSync('gcc', [
      '-std=gnu11',
      '-O2',
      '-Wall',
      '-Wextra',
      '-Werror',
      '-s',
      '-o',
      join(build, 'privcmd-status'),
      join(experimentsDir, 'privcmd-status.c'),
    ]);
    writeFileSync(join(build, 'peer-death-probe.mjs'), readFileSync(join(projectRoot, PROBE)));
    execFileSync('tar', ['-czf', `${build}.tgz`, '-C', build, 'privcmd-status', 'peer-death-probe.mjs']);
    bundle = readFileSync(`${build}.tgz`).toString('base64');
    say(
      `bundle (probe + privcmd-status) ${readFileSync(`${build}.tgz`).length} bytes gzip'd; guests ${MEMORY} MiB, kernel args "${KERNEL_ARGS}", ${REPS} reps per role`,
    );
  }, 120_000);
  afterAll(async () => {
    clearInterval(pongTimer);
    for (const guest of guests.values()) await guest.destroy().catch(() => {});
    dom0Store?.close();
    if (Object.keys(results).length > 0) {
      mkdirSync(join(projectRoot, 'bench-results'), { recursive: true });
      writeFileSync(join(projectRoot, 'bench-results/peer-death.json'), JSON.stringify({ report, results }, null, 1));
    }
    console.log(report.map((line) => `peer-death: ${line}`).join('\n'));
  }, 120_000);
  beforeEach(() => requireDom0('test/xen/experiments/peer-death.experiment.ts'));

  test('two guests start; what each kernel offers', async () => {
    const info = (await run('xl', ['info'])).stdout;
    const free = (key: string) => /(\d+)/.exec(info.split('\n').find((line) => line.startsWith(key)) ?? '')?.[1];
    say(`before the guests: xl info total_memory ${free('total_memory')} MiB, free_memory ${free('free_memory')} MiB`);
    await run('bash', [join(projectRoot, 'test/xen/domu/image.sh'), '/tmp/pd-size.cpio']);
    const image = statSync('/tmp/pd-size.cpio').size;
    rmSync('/tmp/pd-size.cpio');
    say(`guest initramfs (image.sh output): ${(image / 2 ** 20).toFixed(1)} MiB`);
    const a = await start('pd-a');
    const b = await start('pd-b');
    say(`with both guests: xl info free_memory ${/free_memory\s*:\s*(\d+)/.exec((await run('xl', ['info'])).stdout)?.[1]} MiB`);
    for (const [guest, peer] of [
      [a, b],
      [b, a],
    ] as const) {
      const job = await guest.run([
        '/bin/sh',
        '-c',
        `echo "uname -r: $(uname -r)"; echo "uname -v: $(uname -v)"; echo "cmdline: $(cat /proc/cmdline)"; echo "/dev/xen: $(ls /dev/xen | tr '\\n' ' ')"; ` +
          `echo "modules: $(cut -d' ' -f1 /proc/modules | grep -E 'xen|privcmd' | tr '\\n' ' ')"; dmesg | grep -i privcmd | sed 's/^/dmesg: /'; ` +
          `free -m | sed -n 2p | sed 's/^/free -m: /'; ${PRIVCMD} once ${peer.domid}; echo "privcmd-status exit $?"`,
      ]);
      for (const line of job.output.trim().split('\n')) say(`${guest.name} (domain ${guest.domid}): ${line}`);
      results[`facts-${guest.name}`] = job.output;
    }
  }, 900_000);

  test('the cost of each probe, and failed binds leave the evtchn handle usable', async () => {
    const a = guests.get('pd-a')!;
    const b = guests.get('pd-b')!;
    // A offers B a port and a page (B maps it, so the grant is pinned as a vchan client's is); both
    // time their probes against statSync; then B binds the offered port on the handle whose binds
    // just failed 2000 times and notifies it, and A must hear it.
    const probeA = a.spawn(
      a.node(PROBE, ['--role', 'server', '--peer', String(b.domid), '--tag', 'bench-a', '--offer', '--bench', '2000']),
      { timeout: 1_800_000 },
    );
    const probeB = b.spawn(
      b.node(PROBE, ['--role', 'client', '--peer', String(a.domid), '--tag', 'bench-b', '--take-offer', '--bench', '2000']),
      { timeout: 1_800_000 },
    );
    await until(
      'both benches',
      () => linesOf(a, 'bench-a').some((line) => line.sig === 'bench') && linesOf(b, 'bench-b').some((line) => line.sig === 'realBind'),
      600_000,
    );
    await until('the offered port to be notified', () => linesOf(a, 'bench-a').some((line) => line.sig === 'offerEvent'), 60_000).catch(
      () => false,
    );
    await probeA.kill('SIGTERM');
    await probeB.kill('SIGTERM');
    await sleep(1000);
    const linesA = linesOf(a, 'bench-a');
    const linesB = linesOf(b, 'bench-b');
    results.bench = { linesA, linesB };
    for (const [who, lines] of [
      ['A (server)', linesA],
      ['B (client)', linesB],
    ] as const) {
      const bench = lines.find((line) => line.sig === 'bench')!;
      const us = bench.v as Record<string, number>;
      const ratio = bench.ratioToStat as Record<string, number>;
      say(
        `cost in ${who}, ${String(bench.calls)} calls each, interleaved in 5 rounds, no stream: ` +
          Object.keys(us)
            .map((name) => `${name} ${us[name]!.toFixed(1)} µs (x${ratio[name]!.toFixed(2)} stat)`)
            .join(', ') +
          `; answers ${JSON.stringify(bench.answers)}`,
      );
      const other = lines
        .filter((line) => ['offered', 'tookOffer', 'offerEvent', 'realBind', 'evtchnError'].includes(line.sig))
        .map(
          (line) =>
            `${line.sig} ${JSON.stringify(line.v)}${line.local !== undefined ? ` (local ${String(line.local)}, remote ${String(line.remote)})` : ''}`,
        );
      say(`after the bench in ${who}: ${other.join(', ')}`);
    }
    expect(linesB.find((line) => line.sig === 'realBind')?.v).toBe('ok');
    expect(linesA.some((line) => line.sig === 'offerEvent')).toBe(true);
  }, 900_000);

  test('probes polling beside a live stream leave it intact', async () => {
    const a = guests.get('pd-a')!;
    const b = guests.get('pd-b')!;
    const bytes = 256 * 2 ** 20;
    const aMark = a.console().length;
    const bMark = b.console().length;
    const server = a.spawn(a.node('test/xen/domains/stream.mjs', streamServerArgs(b.domid, 'live', bytes)), { timeout: 1_800_000 });
    await until('A to publish', () => consoleSince(a, aMark).includes('LISTENING'));
    const probeA = a.spawn(a.node(PROBE, ['--role', 'server', '--peer', String(b.domid), '--tag', 'live-a']), { timeout: 1_800_000 });
    const probeB = b.spawn(b.node(PROBE, ['--role', 'client', '--peer', String(a.domid), '--name', 'live', '--tag', 'live-b']), {
      timeout: 1_800_000,
    });
    await until(
      'both probes',
      () => linesOf(a, 'live-a').some((line) => line.sig === 'ready') && linesOf(b, 'live-b').some((line) => line.sig === 'ready'),
      300_000,
    );
    const client = b.spawn(
      b.node('test/xen/domains/stream.mjs', ['client', '--peer', String(a.domid), '--name', 'live', '--recv', String(bytes)]),
      { timeout: 1_800_000 },
    );
    await until('B to connect', () => consoleSince(b, bMark).includes('CONNECTED client'));
    const streamStarted = Date.now();
    const [sent, received] = await Promise.all([server.done, client.done]);
    const streamEnded = Date.now();
    await sleep(1000);
    await probeA.kill('SIGTERM');
    await probeB.kill('SIGTERM');
    await sleep(1000);
    const resultOf = (job: JobResult) =>
      JSON.parse(
        job.output
          .split('\n')
          .reverse()
          .find((line) => line.startsWith('RESULT '))!
          .slice(7),
      ) as { bytes: number; sha256: string; mibps: number };
    expect(sent.code, sent.output).toBe(0);
    expect(received.code, received.output).toBe(0);
    const s = resultOf(sent);
    const r = resultOf(received);
    say(
      `live stream A -> B, ${bytes / 2 ** 20} MiB, 1 MiB rings, both probes polling every 20 ms: sent ${s.bytes}, received ${r.bytes}, sha256 ${s.sha256 === r.sha256 ? 'equal' : 'DIFFERENT'}, ${r.mibps.toFixed(1)} MiB/s, ${((streamEnded - streamStarted) / 1000).toFixed(1)} s`,
    );
    const linesA = linesOf(a, 'live-a');
    const linesB = linesOf(b, 'live-b');
    results.live = { linesA, linesB, streamStarted, streamEnded, sent: s, received: r };
    for (const [who, lines] of [
      ['A (server)', linesA],
      ['B (client)', linesB],
    ] as const) {
      const changes = lines
        .filter((line) => ['grantCopy', 'bind0', 'bindMax'].includes(line.sig))
        .map((line) => `${line.sig}=${JSON.stringify(line.v)}`); // in order; guest clocks are not dom0's, so no times
      const watches = lines
        .filter((line) => line.sig === 'watch')
        .map((line) => `${String(line.watch)} #${String(line.n)}${line.read ? ` (${String(line.read)})` : ''}`);
      say(`probes in ${who} beside the live stream: ${changes.join(', ')}; watch events ${watches.join(', ')}`);
    }
    expect(r.bytes).toBe(bytes);
    expect(r.sha256).toBe(s.sha256);
  }, 900_000);

  // The role is the survivor's: A serves, B is its client.
  const destroys = [
    { role: 'client', title: 'xl destroy A while it serves B; B (client) survives' },
    { role: 'server', title: 'xl destroy B while A serves it; A (server) survives' },
  ] as const;
  for (let rep = 1; rep <= REPS; rep++) {
    for (const { role, title } of destroys) {
      test(`rep ${rep}: ${title}`, async () => {
        const a = guests.get('pd-a') ?? (await start('pd-a'));
        const b = guests.get('pd-b') ?? (await start('pd-b'));
        const result = await destroyRun(role, a, b, rep);
        results[`${role}${rep}`] = result;
        for (const line of summarise(result)) say(line);
      }, 900_000);
    }
  }
});
