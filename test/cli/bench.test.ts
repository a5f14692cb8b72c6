// `vchan bench`, run as the real binary: a quick sweep must measure every transport, verify what
// it counts, and write the JSON and the chart. No timing is asserted here: the targets are for
// `pnpm bench` to report, never for unit tests to enforce.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = path.join(root, 'packages/cli/bin/vchan.js');
const scratch = mkdtempSync(path.join(os.tmpdir(), 'vchan-bench-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const env = () => ({ ...process.env, XEN_VCHAN_BACKEND: 'sim' });

const vchan = (args: string[], timeout = 25_000, extraEnv: NodeJS.ProcessEnv = {}) =>
  promisify(execFile)(process.execPath, [bin, ...args], { timeout, env: { ...env(), ...extraEnv }, cwd: scratch }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );

interface Results {
  setup: { mode: string; chunks: number[]; rings: number[] };
  transports: string[];
  throughput: { transport: string; chunk: number; ring: number | null; mibPerSecond: number | null; bytes: number; verified: boolean }[];
  latency: { transport: string; roundTrips: number; p50Us: number; p99Us: number }[];
  rpc: { transport: string; sequential: { calls: number }; concurrent: { calls: number } }[];
  concurrency: { transport: string; streams: number; bytes: number; mibPerSecond: number | null }[];
  busyLatency: { transport: string; bulkStreams: number; roundTrips: number; p50Us: number }[];
  pipeline: { transport: string; bytes: number; mibPerSecond: number; samples: number[]; verified: boolean }[];
  targets: { id: string; pass: boolean | null; ratio: number | null }[];
}

const ALL = ['vchan', 'vchan-views', 'unix', 'tcp', 'c-ring', 'c-ring-spin'];

describe('vchan bench', () => {
  it('runs a quick sweep of every transport and writes the table, the JSON and the chart', { timeout: 30_000 }, async () => {
    const json = path.join(scratch, 'out', 'bench.json');
    const chart = path.join(scratch, 'out', 'bench.html');
    const { code, stdout, stderr } = await vchan(['bench', '--quick', '--json', json, '--chart', chart]);
    expect(stderr).not.toMatch(/vchan bench: .*(failed|error)/i);
    expect(code).toBe(0);

    const results = JSON.parse(readFileSync(json, 'utf8')) as Results;
    expect(results.setup.mode).toBe('sim');
    expect(results.transports.sort()).toEqual([...ALL].sort());
    // Every transport at every chunk (and every ring, for the rings), all of it verified.
    for (const transport of ALL) {
      for (const chunk of results.setup.chunks) {
        const rings = transport === 'unix' || transport === 'tcp' ? [null] : results.setup.rings;
        for (const ring of rings) {
          const row = results.throughput.find(
            (candidate) => candidate.transport === transport && candidate.chunk === chunk && candidate.ring === ring,
          );
          expect(row, `${transport} ${chunk} ${ring}`).toBeDefined();
          expect(row!.verified).toBe(true);
          expect(row!.bytes).toBeGreaterThan(0);
        }
      }
      if (transport === 'vchan-views') continue; // a way of reading, for throughput only
      const latency = results.latency.find((row) => row.transport === transport);
      expect(latency, `${transport} latency`).toBeDefined();
      expect(latency!.roundTrips).toBeGreaterThan(0);
      expect(latency!.p99Us).toBeGreaterThanOrEqual(latency!.p50Us);
    }
    expect(results.rpc.map((row) => row.transport).sort()).toEqual(['unix', 'vchan']);
    for (const row of results.rpc) expect(row.sequential.calls).toBeGreaterThan(0);
    // Many streams over one vchan (yamux) against as many Unix sockets, each stream verified.
    expect(results.concurrency.map((row) => `${row.transport} ${row.streams}`)).toEqual(
      [1, 8, 64].flatMap((streams) => [`vchan ${streams}`, `unix ${streams}`]),
    );
    for (const row of results.concurrency) expect(row.bytes).toBeGreaterThan(0);
    expect(results.busyLatency.map((row) => `${row.transport} ${row.bulkStreams}`)).toEqual(['vchan 8', 'unix 8']);
    for (const row of results.busyLatency) expect(row.roundTrips).toBeGreaterThan(0);
    // The targets are computed and shown, whatever they say on this machine.
    expect(results.targets.map((target) => target.id)).toEqual([
      'throughput-vs-unix',
      'throughput-vs-c-ring',
      'zero-copy-vs-unix',
      'zero-copy-vs-c-ring',
      'round-trip-vs-unix',
      'cli-pipeline-vs-unix',
    ]);
    for (const target of results.targets) expect(target.ratio).toBeGreaterThan(0);
    // The CLI pipeline: vchan listen | vchan connect and the Node scripts over a Unix socket (socat
    // too where it is installed), each verified through a file first, then three rounds.
    const pipelines = results.pipeline.map((row) => row.transport);
    expect(pipelines.slice(0, 2)).toEqual(['vchan', 'unix']);
    for (const row of results.pipeline) {
      expect(row.verified).toBe(true);
      expect(row.bytes).toBe(16 << 20);
      expect(row.samples).toHaveLength(3);
    }
    if (!pipelines.includes('socat')) expect(stdout).toMatch(/left out: socat was not found/);

    expect(existsSync(chart)).toBe(true);
    expect(statSync(chart).size).toBeGreaterThan(0);
    const html = readFileSync(chart, 'utf8');
    expect(html).toMatch(/<svg/);
    expect(html).not.toMatch(/<script/); // readable without network or scripts

    expect(stdout).toMatch(/Throughput/);
    expect(stdout).toMatch(/Round trip/);
    expect(stdout).toMatch(/RPC/);
    expect(stdout).toMatch(/Concurrency/);
    expect(stdout).toMatch(/beside bulk streams/);
    expect(stdout).toMatch(/CLI pipeline/);
    expect(stdout).toMatch(/(PASS|MISS) +vchan, 64 KiB writes/);
    expect(stdout).toMatch(/wall time/);
  });

  it('measures the vchan against `vchan bench --serve` in the other domain', { timeout: 30_000 }, async () => {
    const name = `bench-serve-${process.pid}`;
    const serving = spawn(process.execPath, [bin, 'bench', '--serve', '--once', '--domain', '2', '--sim-domid', '1', '--name', name], {
      env: env(),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const served = new Promise<number>((resolve) => serving.once('exit', (code) => resolve(code ?? 1)));
    try {
      // Waits for the server's publication itself (connect's XenStore watch).
      const json = path.join(scratch, 'remote.json');
      const { code, stderr } = await vchan([
        'bench',
        '--domain',
        '1',
        '--sim-domid',
        '2',
        '--name',
        name,
        '--chunks',
        '64KiB',
        '--rings',
        '64KiB',
        '--seconds',
        '0.1',
        '--no-c-ring',
        '--json',
        json,
        '--chart',
        path.join(scratch, 'remote.html'),
      ]);
      expect(stderr).not.toMatch(/vchan bench: .*(failed|error)/i);
      expect(code).toBe(0);
      const results = JSON.parse(readFileSync(json, 'utf8')) as Results;
      expect(results.setup.mode).toBe('remote');
      expect(results.transports.sort()).toEqual(['tcp', 'unix', 'vchan', 'vchan-views']);
      expect(results.throughput.find((row) => row.transport === 'vchan')?.bytes).toBeGreaterThan(0);
      // Both of the CLI pipeline's processes would run here: left out, saying so.
      expect(results.pipeline).toEqual([]);
      expect((results.setup as { pipelineLeftOut?: string[] }).pipelineLeftOut?.[0]).toMatch(/left out with --domain/);
      expect(results.throughput.find((row) => row.transport === 'vchan-views')?.bytes).toBeGreaterThan(0);
      expect(await served).toBe(0);
    } finally {
      serving.kill();
    }
  });

  it('leaves the C ring out with a note, and measures everything else, when there is no C compiler', { timeout: 30_000 }, async () => {
    const json = path.join(scratch, 'no-cc', 'bench.json');
    const chart = path.join(scratch, 'no-cc', 'bench.html');
    // A compiler name found nowhere: a binary cached by an earlier run is keyed by the compiler's
    // name too, so this one has to be built, and cannot be.
    const { code, stdout, stderr } = await vchan(
      ['bench', '--quick', '--chunks', '64KiB', '--rings', '1MiB', '--pipeline', '0', '--json', json, '--chart', chart],
      25_000,
      { CC: 'xen-vchan-test-no-such-cc' },
    );
    expect(code, stderr).toBe(0);
    const note = /no C compiler \("xen-vchan-test-no-such-cc" was not found\), so the C ring rows are left out/;
    expect(stderr).toMatch(note);
    expect(stdout).toMatch(/C ring: left out: no C compiler/);
    expect(stdout).not.toMatch(/^C ring(?!:)/m); // no row of it
    expect(readFileSync(chart, 'utf8')).toMatch(/C ring left out: no C compiler/);

    const results = JSON.parse(readFileSync(json, 'utf8')) as Results & { setup: { cRing: boolean; cRingLeftOut?: string } };
    expect(results.setup.cRing).toBe(false);
    expect(results.setup.cRingLeftOut).toMatch(note);
    expect(results.transports.sort()).toEqual(['tcp', 'unix', 'vchan', 'vchan-views']);
    for (const transport of ['vchan', 'unix', 'tcp']) {
      const row = results.throughput.find((candidate) => candidate.transport === transport);
      expect(row?.verified, transport).toBe(true);
      expect(results.latency.find((candidate) => candidate.transport === transport)?.roundTrips, transport).toBeGreaterThan(0);
    }
    expect(results.throughput.find((candidate) => candidate.transport === 'vchan-views')?.verified).toBe(true);
    expect(results.throughput.filter((row) => row.transport.startsWith('c-ring'))).toEqual([]);
    expect(results.targets.find((target) => target.id === 'throughput-vs-c-ring')?.pass).toBeNull();
  });

  it('exits 2 on a bad command line', async () => {
    const cases = [
      ['--chunks', '12x'],
      ['--rings', '3000'],
      ['--rings', '2MiB'],
      ['--seconds', 'soon'],
      ['--repeat', '0'],
      ['--pipeline', '12x'],
      ['--pipeline', '1KiB'],
      ['--frobnicate'],
      ['--once'],
      ['--serve'],
    ];
    const outcomes = await Promise.all(cases.map((args) => vchan(['bench', ...args])));
    outcomes.forEach(({ code, stderr }, index) => {
      expect(code, cases[index]!.join(' ')).toBe(2);
      expect(stderr).toMatch(/--help/);
    });
  });
});
