// Two unprivileged guests, dom0 out of the data path: vitest runs in dom0 and starts two PV guests
// (test/xen/domu.ts); Node in one guest talks to Node in the other through real grants, event
// channels and xenstored. Then one guest is destroyed mid-stream (`xl destroy`: no kernel is left
// to run its unmap notification) and the other, which Xen tells nothing, must notice by itself.
// Everything here needs the harness: bash test/xen/run.sh test/xen/guests.test.ts
//
// The tests run in order: the first destroy takes guest A, the second starts it again.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { openXenStore } from '@xen-vchan/xenstore';
import { inDom0, requireDom0 } from './dom0.js';
import { domainExists, Guest, waitUntilGone } from './domu.js';
import { until, xenstoreHas } from './polling.js';
import { resultOf, type BothWays, type Survived } from '../support/script-results.js';

const MiB = 2 ** 20;
/** Bytes each way in the both-ways stream. */
const BOTH_WAYS_BYTES = 16 * MiB;
/** Memory per guest: two must fit beside dom0 in the harness's QEMU (see run-in-dom0.sh). */
const GUEST_MIB = Number(process.env.XEN_VCHAN_GUEST_MIB ?? 448);
/**
 * What the survivor may take at most to notice, from when the toolstack starts taking the peer's
 * domain apart (the removal of its XenStore home); the time from the start of the `xl destroy` command is reported too.
 */
const NOTICE_WITHIN_MS = 2000;

let a: Guest | undefined;
let b: Guest | undefined;
const report: string[] = [];

/** both-ways.mjs as `role` of `name` with domain `peer`: BOTH_WAYS_BYTES each way, ours from `seed`. */
function bothWaysArgs(role: 'server' | 'client', peer: number, name: string, seed: number): string[] {
  return [role, '--peer', String(peer), '--name', name, '--bytes', String(BOTH_WAYS_BYTES), '--seed', String(seed)];
}

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const consoles = [a, b]
        .map((guest) => (guest ? `--- console of ${guest.name} (tail):\n${guest.console().slice(-3000)}` : ''))
        .join('\n');
      reject(new Error(`${what}: no outcome within ${ms} ms\n${consoles}`));
    }, ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Resolves with dom0's Date.now() when `path` first satisfies `holds` (its value, or null once it
 * does not exist), seen through a dom0 watch. Times are taken on dom0's clock alone: under TCG a
 * guest's clock can be seconds apart from dom0's.
 */
async function momentWhen(path: string, holds: (value: string | null) => boolean): Promise<{ at: Promise<number>; close: () => void }> {
  const xenstore = await openXenStore();
  const watch = await xenstore.watch(path);
  const at = (async () => {
    for await (const _event of watch) {
      const value = await xenstore.read(path).catch(() => null);
      if (holds(value)) return Date.now();
    }
    throw new Error(`the watch on ${path} ended first`);
  })();
  at.catch(() => {});
  return {
    at,
    close: () =>
      void watch
        .close()
        .catch(() => {})
        .finally(() => xenstore.close()),
  };
}

/**
 * `victim` runs a sender at full speed to or from `survivor`; once the survivor has 4 MiB, dom0
 * destroys the victim's domain. Returns what the survivor saw and when.
 */
async function destroyMidStream(survivor: Guest, victim: Guest, survivorRole: 'server' | 'client', name: string) {
  const survivorArgs = [survivorRole, '--peer', String(victim.domid), '--name', name];
  const victimArgs =
    survivorRole === 'server'
      ? ['client', '--peer', String(survivor.domid), '--name', name, '--send', String(1 << 30), '--seed', '5', '--timeout', '120000']
      : ['server', '--peer', String(survivor.domid), '--name', name, '--ring', String(MiB), '--send', String(1 << 30), '--seed', '5'];
  const surviving = survivor.spawn(survivor.node('test/xen/domains/survivor.mjs', survivorArgs), { timeout: 300_000 });
  await surviving.started;
  victim.spawn(victim.node('test/xen/domains/stream.mjs', victimArgs), { timeout: 300_000 });
  await until('the stream to run', () => xenstoreHas(`/local/domain/${survivor.domid}/data/survivor/${name}`), 120_000);

  // The victim's home going is libxl's first visible act of `xl destroy`, just before it asks Xen to
  // kill the domain; before it, the xl process starts and takes the devices down, which under TCG
  // takes a second or more that no survivor could see.
  const home = await momentWhen(`/local/domain/${victim.domid}`, (value) => value === null);
  const failure = await momentWhen(
    `/local/domain/${survivor.domid}/data/survivor/${name}`,
    (value) => value?.startsWith('failed') ?? false,
  );
  const destroyedAt = Date.now();
  // Not execFileSync: dom0's watch on the home must be heard while xl runs.
  await promisify(execFile)('xl', ['destroy', String(victim.domid)]);
  const destroyReturned = Date.now();
  const outcome = resultOf<Survived>(
    await within(surviving.done, 30_000, `the ${survivorRole} surviving the destroy`),
    `the survivor (${survivorRole})`,
  );
  const homeRemovedAt = await within(home.at, 10_000, `the removal of domain ${victim.domid}'s home`).finally(home.close);
  const failedAt = await within(failure.at, 10_000, `the survivor's report of its failure`).finally(failure.close);
  // The survivor let go of the dead domain's pages, so Xen can finish destroying it.
  await waitUntilGone(victim.domid, 30_000);
  const goneAt = Date.now();
  await victim.destroy(); // gone already; this lets go of dom0's XenStore handle for it
  return {
    outcome,
    /** From the moment the toolstack started taking the domain apart (its home removed), on dom0's clock. */
    noticedMs: failedAt - homeRemovedAt,
    /** From the start of the `xl destroy` command, its own start-up under TCG included. */
    sinceCommandMs: failedAt - destroyedAt,
    homeRemovedMs: homeRemovedAt - destroyedAt,
    destroyMs: destroyReturned - destroyedAt,
    goneMs: goneAt - destroyedAt,
  };
}

describe('two unprivileged guests', () => {
  beforeAll(async () => {
    if (!inDom0) return; // beforeEach fails each test with the reason
    [a, b] = await Promise.all([
      Guest.start({ name: 'vchan-a', memoryMiB: GUEST_MIB }),
      Guest.start({ name: 'vchan-b', memoryMiB: GUEST_MIB }),
    ]);
  }, 360_000);
  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
    if (report.length > 0) console.log(report.map((line) => `xen-guests: ${line}`).join('\n'));
  }, 120_000);
  beforeEach(() => requireDom0('test/xen/guests.test.ts'));

  test('a checksummed stream runs both ways at once between the guests over 1 MiB rings', async () => {
    const started = performance.now();
    const name = 'both-ways';
    const server = a!.spawn(a!.node('test/xen/domains/both-ways.mjs', bothWaysArgs('server', b!.domid, name, 11)));
    await server.started;
    const client = b!.spawn(b!.node('test/xen/domains/both-ways.mjs', bothWaysArgs('client', a!.domid, name, 12)));
    const [fromA, fromB] = await within(
      Promise.all([
        server.done.then((job) => resultOf<BothWays>(job, 'the server in A')),
        client.done.then((job) => resultOf<BothWays>(job, 'the client in B')),
      ]),
      300_000,
      'the both-ways stream',
    );
    expect(fromA.sent.bytes).toBe(BOTH_WAYS_BYTES);
    expect(fromB.received).toEqual(fromA.sent);
    expect(fromA.received).toEqual(fromB.sent);
    expect(fromA.sent.sha256).not.toBe(fromB.sent.sha256); // two different patterns, really both ways
    // Each guest's own domain home: the server removed its keys when it closed.
    expect(await xenstoreHas(`/local/domain/${a!.domid}/data/vchan/${b!.domid}/${name}/ring-ref`)).toBe(false);
    report.push(
      `both ways: ${BOTH_WAYS_BYTES / MiB} MiB each way, 1 MiB rings, guest ${a!.domid} <-> guest ${b!.domid}: ${fromA.mibps.toFixed(2)} MiB/s (both directions), sha256 ok (${((performance.now() - started) / 1000).toFixed(1)} s wall)`,
    );
  }, 360_000);

  test('xl destroy of the server guest: the client guest fails with ECONNRESET within 2 s and keeps nothing', async () => {
    const { outcome, noticedMs, sinceCommandMs, homeRemovedMs, destroyMs, goneMs } = await destroyMidStream(
      b!,
      a!,
      'client',
      'kill-server',
    );
    a = undefined;
    expect(outcome.code).toBe('ECONNRESET');
    expect(outcome.mappingsWhileOpen).toBeGreaterThan(0);
    expect(outcome.mappingsAfter).toBe(0);
    expect(noticedMs).toBeLessThan(NOTICE_WITHIN_MS);
    report.push(
      `destroy the server's guest: the client noticed ${noticedMs} ms after the toolstack removed the domain's home (${sinceCommandMs} ms after xl destroy started, which removed the home at ${homeRemovedMs} ms, returned at ${destroyMs} ms; domain gone at ${goneMs} ms), ${(outcome.received / MiB).toFixed(0)} MiB in, mappings ${outcome.mappingsWhileOpen} -> ${outcome.mappingsAfter}`,
    );
  }, 360_000);

  test('xl destroy of the client guest: the server guest fails with ECONNRESET within 2 s and keeps nothing', async () => {
    a = await Guest.start({ name: 'vchan-a', memoryMiB: GUEST_MIB });
    const { outcome, noticedMs, sinceCommandMs, homeRemovedMs, destroyMs, goneMs } = await destroyMidStream(b!, a, 'server', 'kill-client');
    const victim = a.domid;
    a = undefined;
    expect(outcome.code).toBe('ECONNRESET');
    expect(outcome.mappingsWhileOpen).toBeGreaterThan(0);
    expect(outcome.mappingsAfter).toBe(0);
    expect(noticedMs).toBeLessThan(NOTICE_WITHIN_MS);
    // The server removed what it had published for the dead client.
    expect(await xenstoreHas(`/local/domain/${b!.domid}/data/vchan/${victim}/kill-client/ring-ref`)).toBe(false);
    expect(domainExists(victim)).toBe(false);
    report.push(
      `destroy the client's guest: the server noticed ${noticedMs} ms after the toolstack removed the domain's home (${sinceCommandMs} ms after xl destroy started, which removed the home at ${homeRemovedMs} ms, returned at ${destroyMs} ms; domain gone at ${goneMs} ms), ${(outcome.received / MiB).toFixed(0)} MiB in, mappings ${outcome.mappingsWhileOpen} -> ${outcome.mappingsAfter}`,
    );
  }, 480_000);
});
