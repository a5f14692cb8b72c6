// Two real domains: vitest runs in dom0 and starts a PV guest (test/xen/domu.ts) that runs the
// same project; Node in one domain talks to Node in the other through real grants, event
// channels and xenstored. Everything here needs the harness: bash test/xen/run.sh test/xen/domains.test.ts
//
// The guest is destroyed by one of the tests on purpose (xl destroy mid-stream) and started again
// for the tests after it, so the order of the tests in this file matters.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { openGntdev } from '@xen-vchan/gntdev';
import { openEventChannel } from '@xen-vchan/evtchn';
import { connect, createServer, type Vchan } from '@xen-vchan/vchan';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { requireDom0 } from './dom0.js';
import { domainExists, Guest, projectRoot, type JobResult } from './domu.js';
import { onCleanup, xenstoreRemove } from './cleanup.js';
import { readOrNull, until } from './polling.js';
import { echoService } from '../support/echo.mjs';
import { resultOf } from '../support/script-results.js';

const MiB = 2 ** 20;
/** Bytes per stream test; XEN_VCHAN_DOMAINS_MIB makes it smaller for a quick look. */
const STREAM_BYTES = Number(process.env.XEN_VCHAN_DOMAINS_MIB ?? 256) * MiB;
const GUEST = 'vchan-guest';
const inHarness = process.env.XEN_VCHAN_IN_DOM0 === '1';

let guest: Guest;
/** What the summary at the end prints: one line per measurement. */
const report: string[] = [];

interface StreamResult {
  bytes: number;
  sha256: string;
  seconds: number;
  mibps: number;
}

/** A process in dom0, like Guest#spawn: its output tail and status once it ends. */
function spawnHere(
  argv: string[],
  env: Record<string, string> = {},
): { done: Promise<JobResult>; output: () => string; kill: (signal?: NodeJS.Signals) => void } {
  const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk: Buffer) => (output = (output + chunk.toString('utf8')).slice(-20_000));
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const done = new Promise<JobResult>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, output })));
  return { done, output: () => output, kill: (signal = 'SIGKILL') => void child.kill(signal) };
}

function dom0Node(script: string, args: string[]): string[] {
  return [process.execPath, join(projectRoot, script), ...args];
}

/**
 * Waits for `promise`, but at most `ms`: then rejects with what the guest's console and `more`
 * say, so that a hang fails the test with its evidence instead of running into the harness's limit.
 */
async function within<T>(promise: Promise<T>, ms: number, what: string, more: () => string = () => ''): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: no outcome within ${ms} ms\n${more()}\n--- guest console (tail):\n${guest.console().slice(-6000)}`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Our gntalloc and gntdev use, read from the kernel: grants dom0 still shares and maps. */
function dom0GrantUse(): { shared: number; mapped: number } {
  // Every mapping of /dev/xen/gntdev or /dev/xen/gntalloc in our own address space.
  const maps = readFileSync('/proc/self/maps', 'utf8').split('\n');
  return {
    shared: maps.filter((line) => line.endsWith('/dev/xen/gntalloc')).length,
    mapped: maps.filter((line) => line.endsWith('/dev/xen/gntdev')).length,
  };
}

describe('two domains: dom0 and a PV guest', () => {
  beforeAll(async () => {
    if (!inHarness) return;
    guest = await Guest.start({ name: GUEST });
  }, 240_000);
  afterAll(async () => {
    await guest?.destroy();
    if (report.length > 0) console.log(report.map((line) => `xen-domains: ${line}`).join('\n'));
  }, 60_000);
  beforeEach(() => requireDom0('test/xen/domains.test.ts'));

  test('the guest runs node on its own Xen devices, as an unprivileged domain', async () => {
    const job = await guest.run([
      '/usr/bin/node',
      '-e',
      'const fs = require("fs"); console.log(JSON.stringify({ node: process.version, devices: fs.readdirSync("/dev/xen"), caps: fs.readFileSync("/proc/xen/capabilities", "utf8") }))',
    ]);
    const facts = JSON.parse(job.output.trim().split('\n').at(-1)!) as { node: string; devices: string[]; caps: string };
    expect(facts.node).toBe(process.version);
    expect(facts.devices).toEqual(expect.arrayContaining(['evtchn', 'gntalloc', 'gntdev', 'xenbus']));
    expect(facts.caps.trim()).toBe(''); // dom0 says control_d
    expect(guest.domid).toBeGreaterThan(0);
  });

  // Both placements; the server sends, so the data crosses dom0 -> guest in one and guest -> dom0
  // in the other. "One page": both rings a single granted 4 KiB page.
  for (const ring of [4096, MiB]) {
    for (const serverIn of ['dom0', 'guest'] as const) {
      test(`${STREAM_BYTES / MiB} MiB, ${ring === MiB ? '1 MiB' : 'one-page'} rings, server in ${serverIn}, client in ${serverIn === 'dom0' ? 'the guest' : 'dom0'}`, async () => {
        const name = `s${ring === MiB ? 'm' : 'p'}-${serverIn}`;
        const serverArgs = (peer: number) => [
          'server',
          '--peer',
          String(peer),
          '--name',
          name,
          '--ring',
          String(ring),
          '--send',
          String(STREAM_BYTES),
          '--seed',
          '7',
        ];
        const clientArgs = (peer: number) => [
          'client',
          '--peer',
          String(peer),
          '--name',
          name,
          '--recv',
          String(STREAM_BYTES),
          '--timeout',
          '120000',
        ];
        const started = performance.now();
        // The end here and the end in the guest; a failed test must not leave either holding grants.
        const here = spawnHere(
          dom0Node('test/xen/domains/stream.mjs', serverIn === 'dom0' ? serverArgs(guest.domid) : clientArgs(guest.domid)),
        );
        const there = guest.spawn(guest.node('test/xen/domains/stream.mjs', serverIn === 'dom0' ? clientArgs(0) : serverArgs(0)), {
          timeout: 900_000,
        });
        onCleanup(() => here.kill());
        onCleanup(() => there.kill());
        const [serverJob, clientJob] = serverIn === 'dom0' ? [here.done, there.done] : [there.done, here.done];
        const [sent, received] = await within(
          Promise.all([
            serverJob.then((job) => resultOf<StreamResult>(job, `the server in ${serverIn}`)),
            clientJob.then((job) => resultOf<StreamResult>(job, 'the client')),
          ]),
          800_000,
          'the stream',
        );
        expect(sent.bytes).toBe(STREAM_BYTES);
        expect(received.bytes).toBe(STREAM_BYTES);
        expect(received.sha256).toBe(sent.sha256);
        const serverHome = serverIn === 'dom0' ? 0 : guest.domid;
        const clientDomid = serverIn === 'dom0' ? guest.domid : 0;
        expect(await readOrNull(`/local/domain/${serverHome}/data/vchan/${clientDomid}/${name}/ring-ref`)).toBeNull();
        report.push(
          `stream ${String(STREAM_BYTES / MiB).padStart(4)} MiB  rings ${ring === MiB ? '   1M' : '   4K'}  server in ${serverIn.padEnd(5)}  ${received.mibps.toFixed(2).padStart(8)} MiB/s  sha256 ok  (${((performance.now() - started) / 1000).toFixed(1)} s wall)`,
        );
      }, 900_000);
    }
  }

  test('a domain cannot map, bind or read what a vchan offers another domain', async () => {
    const stranger = 77; // no such domain: grants and ports offered to it are refused to everyone else
    // dom0 serves the stranger: the guest tries to take its pages, its port and its keys.
    const server = createServer({ domid: stranger, name: 'not-yours', readMin: 4096, writeMin: 4096 });
    await server.listen();
    onCleanup(() => server.close());
    const address = server.address()!;
    const attempts = [
      { op: 'map', domid: 0, ref: address.ringRef },
      { op: 'bind', domid: 0, port: address.port },
      { op: 'read', path: `${address.path}/ring-ref` },
    ];
    const fromGuest = resultOf<{ op: string; ok: boolean; code: string | null }[]>(
      await guest.spawn(guest.node('test/xen/domains/probe.mjs', [JSON.stringify(attempts)])).done,
      'the probe in the guest',
    );
    expect(fromGuest.map(({ op, ok }) => ({ op, ok }))).toEqual([
      { op: 'map', ok: false },
      { op: 'bind', ok: false },
      { op: 'read', ok: false },
    ]);
    expect(fromGuest[2]!.code).toBe('EACCES'); // xenstored: the keys are n0,r77

    // The guest serves the stranger: dom0, privileged as it is, still may not map its grants or
    // bind its port (Xen checks the grantee and the remote domain, not privilege). dom0 may read
    // the keys: xenstored lets dom0 read everything, which is why we can find the values at all.
    const serving = guest.spawn(
      guest.node('test/xen/domains/stream.mjs', [
        'server',
        '--peer',
        String(stranger),
        '--name',
        'not-yours',
        '--ring',
        '4096',
        '--send',
        '1',
      ]),
    );
    const path = `/local/domain/${guest.domid}/data/vchan/${stranger}/not-yours`;
    onCleanup(async () => {
      await serving.kill();
      xenstoreRemove(path);
    });
    await until('the guest to publish', async () => (await readOrNull(`${path}/event-channel`)) !== null);
    const ringRef = Number(await readOrNull(`${path}/ring-ref`));
    const port = Number(await readOrNull(`${path}/event-channel`));
    const gntdev = openGntdev();
    onCleanup(() => gntdev.close());
    expect(() => gntdev.map(guest.domid, [ringRef], { writable: false })).toThrow(expect.objectContaining({ code: expect.any(String) }));
    const events = openEventChannel();
    onCleanup(() => events.close());
    expect(() => events.bindInterdomain(guest.domid, port)).toThrow(expect.objectContaining({ code: expect.any(String) }));
    report.push(
      `security: guest -> dom0's grant/port/keys for domain ${stranger}: ${fromGuest.map((o) => `${o.op} ${o.code}`).join(', ')}; dom0 -> the guest's grant and port for ${stranger}: refused`,
    );
  }, 120_000);

  test('the RPC example runs across the two domains, the service in either', async () => {
    for (const serviceIn of ['dom0', 'guest'] as const) {
      const name = `kv-${serviceIn}`;
      let service: Promise<JobResult>;
      let caller: Promise<JobResult>;
      let here: ReturnType<typeof spawnHere>;
      const env = { XEN_VCHAN_BACKEND: 'xen' };
      if (serviceIn === 'dom0') {
        here = spawnHere(dom0Node('examples/rpc.mjs', ['service', '--caller', String(guest.domid), '--name', name]), env);
        service = here.done;
        caller = guest.spawn(guest.node('examples/rpc.mjs', ['caller', '--service', '0', '--name', name]), { env }).done;
      } else {
        service = guest.spawn(guest.node('examples/rpc.mjs', ['service', '--caller', '0', '--name', name]), { env }).done;
        here = spawnHere(dom0Node('examples/rpc.mjs', ['caller', '--service', String(guest.domid), '--name', name]), env);
        caller = here.done;
      }
      onCleanup(() => here.kill());
      const [served, called] = await within(
        Promise.all([service, caller]),
        90_000,
        `the RPC example, service in ${serviceIn}`,
        () => `--- dom0 side:\n${here.output()}`,
      );
      expect(served.code, served.output).toBe(0);
      expect(called.code, called.output).toBe(0);
      const callerDomid = serviceIn === 'dom0' ? guest.domid : 0;
      expect(called.output).toContain(`[domain ${callerDomid}] keys: ["colour","size"]`);
      expect(called.output).toContain('get colour: teal');
      expect(called.output).toContain('get missing: RemoteError ENOENT');
      expect(called.output).toContain('slow: ETIMEDOUT');
      const rate = /2000 concurrent calls in \d+ ms \((\d+) calls\/s\)/.exec(called.output);
      expect(rate).not.toBeNull();
      report.push(`rpc: service in ${serviceIn}: 2000 concurrent calls at ${rate![1]} calls/s`);
    }
  }, 240_000);

  test("the vchan command's proxy in the guest works with Xen's vchan-socket-proxy in dom0", async () => {
    // guest socket -> `vchan proxy --role client` -> vchan -> vchan-socket-proxy (the vchan server,
    // in dom0) -> a Unix socket here that echoes -> and all the way back.
    const socketPath = `/tmp/vsp-${process.pid}.sock`;
    const echo = net.createServer((socket) => socket.pipe(socket).on('error', () => {}));
    await new Promise<void>((resolve) => echo.listen(socketPath, resolve));
    onCleanup(() => new Promise((resolve) => echo.close(resolve)));
    const path = `/local/domain/0/data/vchan/${guest.domid}/vsp`;
    const proxy = spawnHere(['vchan-socket-proxy', '--mode=server', String(guest.domid), path, socketPath]);
    // It serves one client after another and never leaves by itself, nor removes its keys.
    onCleanup(() => proxy.kill());
    onCleanup(() => xenstoreRemove(path));
    await until('vchan-socket-proxy to publish', async () => (await readOrNull(`${path}/event-channel`)) !== null, 30_000);
    const job = guest.spawn(
      guest.node('test/xen/domains/proxy-client.mjs', ['--domain', '0', '--path', path, '--bytes', String(256 * 1024)]),
    );
    const outcome = resultOf<{ bytes: number; echoed: number; same: boolean; proxyExit: number }>(
      await within(job.done, 120_000, 'the proxy exchange', proxy.output),
      'vchan proxy in the guest',
    );
    expect(outcome).toEqual({ bytes: 256 * 1024, echoed: 256 * 1024, same: true, proxyExit: 0 });
    report.push(
      `proxy: vchan proxy (guest, client) <-> vchan-socket-proxy (dom0, server): ${outcome.bytes} bytes echoed intact, the proxy exited 0`,
    );
  }, 180_000);

  test('vchan proxy --mux carries 50 concurrent TCP connections between the domains over one vchan, 1 MiB each way with half-close', async () => {
    // guest connections -> `vchan proxy --role client --listen` (guest) -> one vchan, a yamux
    // stream per connection -> `vchan proxy --role server` (dom0) -> an echo service here.
    const { service, port } = await echoService();
    onCleanup(() => new Promise((resolve) => service.close(resolve)));
    const name = `many-${process.pid}`;
    const serving = spawnHere(
      dom0Node('packages/cli/bin/vchan.js', [
        'proxy',
        '--role',
        'server',
        '--domain',
        String(guest.domid),
        '--name',
        name,
        '--tcp',
        String(port),
        '--once',
      ]),
    );
    onCleanup(() => serving.kill());
    onCleanup(() => xenstoreRemove(`/local/domain/0/data/vchan/${guest.domid}/${name}`));
    await until('the serving proxy', () => /serving/.test(serving.output()), 30_000);
    const job = guest.spawn(guest.node('test/xen/domains/proxy-many.mjs', ['--domain', '0', '--name', name, '--connections', '50']));
    const outcome = resultOf<{ connections: number; intact: number; proxyExit: number | string }>(
      await within(job.done, 240_000, 'the 50 proxied connections', serving.output),
      'vchan proxy --mux in the guest',
    );
    expect(outcome).toEqual({ connections: 50, intact: 50, proxyExit: 'SIGTERM' });
    // The vchan closed with the guest's proxy, and the --once side here left cleanly.
    const served = await within(serving.done, 30_000, 'the serving proxy to exit', serving.output);
    expect(served.code, served.output).toBe(0);
    report.push('proxy --mux: 50 concurrent TCP connections, guest -> dom0 echo over one vchan, 1 MiB each way intact');
  }, 300_000);

  test('vchan bench between the domains, with libxenvchan C peers as the reference in the same boot', async () => {
    const rings = [4096, MiB];
    // Our Node vchan: `vchan bench --domain <guest>` here, `vchan bench --serve` in the guest.
    const served = guest.spawn(
      guest.node('packages/cli/bin/vchan.js', ['bench', '--serve', '--once', '--domain', '0', '--name', 'xbench']),
      { timeout: 600_000 },
    );
    await served.started;
    const json = join('/tmp', 'domains-bench.json');
    const benchRun = spawnHere(
      dom0Node('packages/cli/bin/vchan.js', [
        'bench',
        '--domain',
        String(guest.domid),
        '--name',
        'xbench',
        '--chunks',
        '64KiB',
        '--rings',
        '4KiB,1MiB',
        '--seconds',
        '3',
        '--json',
        json,
        '--chart',
        '/tmp/domains-bench.html',
      ]),
      { XEN_VCHAN_BACKEND: 'xen' },
    );
    onCleanup(() => benchRun.kill());
    const bench = await within(benchRun.done, 400_000, 'vchan bench', () => benchRun.output());
    expect(bench.code, bench.output).toBe(0);
    const servedJob = await within(served.done, 30_000, 'vchan bench --serve in the guest');
    expect(servedJob.code, servedJob.output).toBe(0);
    const results = JSON.parse(readFileSync(json, 'utf8')) as {
      throughput: { transport: string; chunk: number; ring: number | null; mibPerSecond: number | null }[];
    };
    console.log(
      bench.output
        .split('\n')
        .filter((line) => !line.includes('\r'))
        .join('\n'),
    );

    // libxenvchan: the same one-way bulk transfer in 64 KiB writes, C server in dom0 (sending),
    // C client in the guest (receiving and checking every byte), over the same ring sizes.
    for (const ring of rings) {
      const node = results.throughput.find((row) => row.transport === 'vchan' && row.ring === ring && row.chunk === 65536)?.mibPerSecond;
      const bytes = ring === MiB ? 64 * MiB : 4 * MiB;
      const name = `cb${ring}`;
      const path = `/local/domain/0/data/vchan/${guest.domid}/${name}`;
      const peer = process.env.XEN_VCHAN_INTEROP_PEER!;
      const sender = spawnHere(
        [peer, '--bulk-send', String(bytes), '--bulk-seed', '3', 'server', String(guest.domid), path, String(ring), String(ring)],
        {
          LD_LIBRARY_PATH: join(process.env.XEN_VCHAN_XEN_ROOT!, 'usr/lib/x86_64-linux-gnu'),
        },
      );
      await until('the C server to listen', () => sender.output().includes('LISTENING'));
      onCleanup(() => sender.kill());
      const receiver = await within(
        guest.spawn(['/usr/local/bin/vchan-peer', '--bulk-recv', String(bytes), '--bulk-seed', '3', 'client', '0', path], {
          timeout: 600_000,
        }).done,
        120_000,
        'the C receiver',
        sender.output,
      );
      const sent = await within(sender.done, 30_000, 'the C sender', sender.output);
      expect(sent.code, sent.output).toBe(0);
      const c = resultOf<{ mibps: number }>(receiver, 'the C receiver in the guest').mibps;
      report.push(
        `bench: rings ${ring === MiB ? '1M' : '4K'}, 64 KiB writes, dom0 -> guest: libxenvchan C ${c.toFixed(2)} MiB/s, Node vchan ${node?.toFixed(2) ?? '?'} MiB/s, Node/C ${node ? (node / c).toFixed(3) : '?'}`,
      );
    }
  }, 900_000);

  for (const serverIn of ['dom0', 'guest'] as const) {
    test(`xl destroy of the guest mid-stream: dom0 (the ${serverIn === 'dom0' ? 'server' : 'client'}) sees the close promptly and keeps nothing`, async () => {
      if (!domainExists(guest.domid)) guest = await Guest.start({ name: GUEST }); // the previous test destroyed it
      const before = dom0GrantUse();
      const name = `destroy-${serverIn}`;
      // dom0's end in this process, so its grants and its XenStore handle are ours to count.
      // The guest's end sends until it is destroyed; its job never reports.
      let channelPromise: Promise<Vchan>;
      if (serverIn === 'dom0') {
        const server = createServer({ domid: guest.domid, name, readMin: MiB, writeMin: MiB });
        onCleanup(() => server.close());
        channelPromise = new Promise((resolve) => server.once('channel', resolve));
        await server.listen();
        guest.spawn(
          guest.node('test/xen/domains/stream.mjs', [
            'client',
            '--peer',
            '0',
            '--name',
            name,
            '--send',
            String(64 * 1024 * MiB),
            '--seed',
            '5',
          ]),
        );
      } else {
        guest.spawn(
          guest.node('test/xen/domains/stream.mjs', [
            'server',
            '--peer',
            '0',
            '--name',
            name,
            '--ring',
            String(MiB),
            '--send',
            String(64 * 1024 * MiB),
            '--seed',
            '5',
          ]),
        );
        channelPromise = connect({ domid: guest.domid, name, timeout: 120_000 });
      }
      const channel = await channelPromise;
      let received = 0;
      channel.on('data', (piece: Buffer) => (received += piece.length));
      const ended = new Promise<{ error: Error | null; at: number }>((resolve) => {
        let error: Error | null = null;
        channel.on('error', (failure) => (error = failure));
        channel.on('close', () => resolve({ error, at: performance.now() }));
      });
      await until('data from the guest', () => received > 8 * MiB, 120_000);
      expect(dom0GrantUse()).not.toEqual(before); // the channel really holds grants

      const destroyedAt = performance.now();
      const domid = guest.domid;
      execFileSync('xl', ['destroy', String(domid)]);
      const outcome = await Promise.race([ended, new Promise<null>((resolve) => setTimeout(resolve, 10_000, null))]);
      expect(outcome, 'no close within 10 s of xl destroy').not.toBeNull();
      const seconds = (outcome!.at - destroyedAt) / 1000;
      expect(outcome!.error).toMatchObject({ code: 'ECONNRESET' });

      // Nothing left: our grants and mappings, the published keys, and the domain itself (a
      // domain whose pages dom0 still maps would linger as a dying domain).
      await until('dom0 to let go of the grants', () => JSON.stringify(dom0GrantUse()) === JSON.stringify(before), 10_000);
      await until(`domain ${domid} to be gone`, () => !domainExists(domid), 30_000);
      if (serverIn === 'dom0') expect(await readOrNull(`/local/domain/0/data/vchan/${domid}/${name}/ring-ref`)).toBeNull();
      expect(await readOrNull(`/local/domain/${domid}/domid`)).toBeNull();
      report.push(
        `destroy: dom0 as ${serverIn === 'dom0' ? 'server' : 'client'} saw ${outcome!.error?.message.split(';')[0]} ${(seconds * 1000).toFixed(0)} ms after xl destroy, ${(received / MiB).toFixed(0)} MiB in; grants, keys and the domain gone`,
      );
      await guest.destroy(); // already gone; this lets go of our XenStore handle
    }, 360_000);
  }
});
