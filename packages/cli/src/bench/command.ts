import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { errorCode } from '@xen-vchan/native';
import { createServer, RpcPeer } from '@xen-vchan/vchan';
import { backendOptions, channelOptions, channelOptionsHelp, EXIT, parseDomid, parseSize, UsageError, type Command } from '../command.js';
import { renderChart } from './chart.js';
import { CRingError } from './cring.js';
import { Endpoint } from './endpoint.js';
import { pipelineSizes } from './pipeline.js';
import { renderTable } from './report.js';
import { controlCodec, MAX_CHUNK, MAX_CONTROL_MESSAGE, MAX_RING } from './requests.js';
import type { BenchPlan } from './plan.js';
import { MiB, type BenchResults } from './results.js';
import { runBench } from './run.js';

const DEFAULT_CHUNKS = '64,4KiB,64KiB,1MiB';
const DEFAULT_RINGS = '4KiB,64KiB,1MiB';
const QUICK_CHUNKS = '64,64KiB';
const QUICK_RINGS = '4KiB,1MiB';

const usage = `usage: vchan bench [options]
       vchan bench --serve --domain ID [--name NAME | --path PATH]    (in the other domain)

Throughput and round-trip latency between two processes, side by side: a vchan (@xen-vchan/vchan),
Node over a Unix socket, Node over TCP loopback, and a C shared-memory ring (bench/shm-ring.c in
this package, built from source with cc, or $CC, on first use) as the speed limit of the machine;
without a C compiler the C ring rows are left out, with a note saying so. By default the two
processes play simulated domains 1 and 2. Throughput counts bytes received and verified only.

At the end it prints a table, writes the results as JSON and a chart (an HTML page of SVG that
opens without network), and marks the design targets PASS or MISS. Exit status 0 when every
measurement ran and verified (missed targets included), 1 when one failed.

options:
      --quick          a tiny sweep that takes a few seconds (chunks ${QUICK_CHUNKS}, rings ${QUICK_RINGS}, 0.1 s each)
      --chunks LIST    bytes per write, comma-separated (default ${DEFAULT_CHUNKS})
      --rings LIST     vchan and C ring sizes, powers of two from 4KiB to 1MiB (default ${DEFAULT_RINGS})
      --seconds S      length of each measurement (default 1; RPC takes twice that)
      --repeat N       measure the throughput sweep N times over and keep each cell's median
                       (default 1; a busy machine's numbers wander, and this steadies them)
      --json PATH      results as JSON (default bench-results/bench.json)
      --chart PATH     the chart, a self-contained HTML page (default bench-results/bench.html)
      --no-c-ring      leave out the C ring (no C compiler needed)
      --pipeline SIZE  the file the CLI pipeline rows send (vchan listen < file | vchan connect
                       > /dev/null, against a Unix socket); default 512MiB (--quick: 16MiB); 0
                       leaves those rows out

between real domains (the vchan rows; the sockets and the C ring still run here):
      --domain ID      the domain running \`vchan bench --serve --domain <this domain>\`
      --serve          serve the vchan measurements of \`vchan bench --domain <this domain>\` run
                       in domain --domain ID, until interrupted (or once, with --once); it
                       publishes them under its own /local/domain/<self>/data/vchan/<ID>/ only,
                       and refuses (EPROTO) any request that is not what vchan bench sends
      --once           with --serve: exit after one bench run
${channelOptionsHelp.replace('(default vchan)', '(default bench)')}

Without --domain the backend is the simulation unless --backend xen is given: then both
processes are in this domain and the vchan goes from the domain to itself.
See bench/README.md in this package (@xen-vchan/cli) for how to read the output.`;

function parseList(text: string, what: string, check: (value: number) => string | null): number[] {
  const values = text.split(',').map((part) => parseSize(part.trim(), what));
  if (values.length === 0) throw new UsageError(`${what} needs at least one size`);
  for (const value of values) {
    const problem = check(value);
    if (problem) throw new UsageError(`${what}: ${problem}`);
  }
  return [...new Set(values)].sort((a, b) => a - b);
}

function parseSeconds(text: string): number {
  const seconds = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || !(seconds >= 0.05 && seconds <= 600))
    throw new UsageError(`--seconds must be a number from 0.05 to 600, got ${JSON.stringify(text)}`);
  return seconds;
}

function parseRepeat(text: string): number {
  if (!/^[1-9][0-9]?$/.test(text)) throw new UsageError(`--repeat must be a count from 1 to 99, got ${JSON.stringify(text)}`);
  return Number(text);
}

export const benchCommand: Command = {
  name: 'bench',
  summary: 'throughput and latency between two processes, against Unix sockets, TCP and a C ring',
  usage,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        ...channelOptions,
        name: { type: 'string', short: 'n', default: 'bench' },
        quick: { type: 'boolean' },
        chunks: { type: 'string' },
        rings: { type: 'string' },
        seconds: { type: 'string' },
        repeat: { type: 'string' },
        json: { type: 'string', default: path.join('bench-results', 'bench.json') },
        chart: { type: 'string', default: path.join('bench-results', 'bench.html') },
        'no-c-ring': { type: 'boolean' },
        pipeline: { type: 'string' },
        domain: { type: 'string' },
        serve: { type: 'boolean' },
        once: { type: 'boolean' },
      },
    });
    const backend = backendOptions(values);
    if (values.serve) {
      if (values.domain === undefined)
        throw new UsageError('--serve needs --domain: the domain that runs `vchan bench --domain <this domain>`');
      return serve(parseDomid(values.domain, '--domain'), values.name, values.path, backend, Boolean(values.once));
    }
    if (values.once) throw new UsageError('--once goes with --serve');

    const chunks = parseList(values.chunks ?? (values.quick ? QUICK_CHUNKS : DEFAULT_CHUNKS), '--chunks', (value) =>
      value >= 1 && value <= MAX_CHUNK ? null : `a chunk is 1 byte to 64 MiB, got ${value}`,
    );
    const rings = parseList(values.rings ?? (values.quick ? QUICK_RINGS : DEFAULT_RINGS), '--rings', (value) =>
      value >= 4096 && value <= MAX_RING && (value & (value - 1)) === 0 ? null : `a ring is a power of two from 4KiB to 1MiB, got ${value}`,
    );
    const sizes = pipelineSizes(Boolean(values.quick));
    if (values.pipeline !== undefined) {
      const bytes = values.pipeline === '0' ? 0 : parseSize(values.pipeline, '--pipeline');
      if (bytes !== 0 && (bytes < MiB || bytes > 64 * 1024 * MiB))
        throw new UsageError(`--pipeline: a file of 1 MiB to 64 GiB, or 0, got ${bytes}`);
      sizes.bytes = bytes;
      sizes.verifyBytes = Math.min(sizes.verifyBytes, bytes);
    }
    const seconds = values.seconds !== undefined ? parseSeconds(values.seconds) : values.quick ? 0.1 : 1;
    let mode: BenchPlan['mode'];
    if (values.domain !== undefined) {
      mode = {
        kind: 'remote',
        domid: parseDomid(values.domain, '--domain'),
        name: values.name,
        ...(values.path ? { path: values.path } : {}),
      };
    } else {
      if (values.path) throw new UsageError('--path names the control vchan of --domain; without --domain there is nothing to name');
      mode = backend.backend === 'xen' ? { kind: 'xen-local' } : { kind: 'sim' };
    }
    const plan: BenchPlan = {
      chunks,
      rings,
      seconds,
      cRing: !values['no-c-ring'],
      mode,
      backend: backend.backend,
      ...(backend.simDomid !== undefined ? { simDomid: backend.simDomid } : {}),
      latencySize: 64,
      latencyRing: 65536,
      rpcInFlight: 64,
      repeat: values.repeat !== undefined ? parseRepeat(values.repeat) : 1,
      pipelineBytes: sizes.bytes,
      pipelineVerifyBytes: sizes.verifyBytes,
    };

    let results: BenchResults;
    try {
      results = await runBench(plan, (text) => process.stderr.write(`${text}\n`));
    } catch (error) {
      if (error instanceof CRingError) {
        process.stderr.write(`vchan bench: ${error.message}\n`);
        return EXIT.failure;
      }
      throw error;
    }
    const table = renderTable(results);
    for (const [file, text] of [
      [values.json, `${JSON.stringify(results, null, 2)}\n`],
      [values.chart, renderChart(results)],
    ] as const) {
      mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
      writeFileSync(file, text);
    }
    process.stdout.write(`${table}\n\nwall time ${results.wallSeconds.toFixed(1)} s; JSON ${values.json}; chart ${values.chart}\n`);
    return EXIT.ok;
  },
};

/**
 * The other domain's end: a control vchan whose client asks for vchan measurements. That client
 * is another domain, trusted with nothing: its requests are checked field by field (requests.ts),
 * a bad one gets EPROTO and changes nothing, and a channel that breaks the RPC framing is dropped
 * and the control vchan published again for the next client, unless --once.
 */
async function serve(
  client: number,
  name: string,
  xenstorePath: string | undefined,
  backend: ReturnType<typeof backendOptions>,
  once: boolean,
): Promise<number> {
  const endpoint = new Endpoint({
    client,
    backend: backend.backend,
    ...(backend.simDomid !== undefined ? { simDomid: backend.simDomid } : {}),
  });
  // Only what the bench client calls; each handler passes the request on as it came, to be checked.
  const served = (op: string) => async (request: unknown) => {
    try {
      return await endpoint.handle(op, request);
    } catch (error) {
      // The operator should see what the other domain tried; the client gets the error too.
      if (errorCode(error) === 'EPROTO') process.stderr.write(`vchan bench: ${op} from domain ${client}: ${(error as Error).message}\n`);
      throw error;
    }
  };
  let stopping = false;
  let stop = () => {};
  const stopped = new Promise<void>((resolve) => {
    stop = () => {
      stopping = true;
      resolve();
    };
  });
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    for (let round = 1; !stopping; round++) {
      const server = createServer(
        { domid: client, ...(xenstorePath ? { path: xenstorePath } : { name }), persist: !once, ...backend },
        (channel) => {
          process.stderr.write(`vchan bench: domain ${client} connected\n`);
          const rpc = new RpcPeer(channel, {
            timeout: 0,
            codec: controlCodec,
            maxMessageSize: MAX_CONTROL_MESSAGE,
            handlers: { hello: served('hello'), listen: served('listen'), result: served('result'), close: served('close') },
          });
          rpc.on('close', (error) => {
            void endpoint.closeAll();
            process.stderr.write(`vchan bench: domain ${client} left${error ? ` (${error.message})` : ''}\n`);
          });
        },
      );
      const closed = new Promise<void>((resolve) => server.once('close', resolve));
      await server.listen();
      if (round === 1) {
        process.stderr.write(
          `vchan bench: serving at ${server.path} for domain ${client}; there, run: vchan bench --domain <this domain> ${xenstorePath ? `--path ${xenstorePath}` : `--name ${name}`}\n`,
        );
      }
      await Promise.race([closed, stopped]);
      await endpoint.closeAll();
      await server.close();
      // A persistent server closes by itself only when its channel ended from this side, as
      // RpcPeer ends it on a message it cannot decode: the next client gets a fresh one.
      if (once) break;
    }
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  return EXIT.ok;
}
