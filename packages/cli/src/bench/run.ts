/**
 * Runs a bench: it places the two ends (which domains, which simulation), starts the measurement
 * processes, runs the plan's tasks (plan.ts) through Measurements (measurements.ts) with a
 * progress bar, stops everything again, and assembles the results (results.ts).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { connect, RpcPeer } from '@xen-vchan/vchan';
import { openXenStore, XENSTORED_SOCKET, type TransportChoice } from '@xen-vchan/xenstore';
import { EXIT } from '../command.js';
import { buildCRing, CRingError } from './cring.js';
import { ForkedEndpoint, RemoteEndpoint } from './endpoint-clients.js';
import { Measurements, withTimeout, type Placement } from './measurements.js';
import { findSocat, PipelineBench } from './pipeline.js';
import { planTasks, type BenchPlan, type Task } from './plan.js';
import { Progress } from './progress.js';
import { controlCodec } from './requests.js';
import { assembleResults, RowCollector, type BenchResults } from './results.js';

export async function runBench(asked: BenchPlan, log: (text: string) => void): Promise<BenchResults> {
  const startedAt = new Date();
  const started = performance.now();
  // The C ring first, before anything needs stopping again: a build that fails ends the run.
  const { cRing, leftOut } = await prepareCRing(asked, log);
  const plan: BenchPlan = { ...asked, cRing: cRing !== null };
  const placement = await place(plan);
  const privateSim = plan.mode.kind === 'sim' && !process.env.XEN_VCHAN_SIM_DIR ? makePrivateSim() : null;
  const first = new ForkedEndpoint('A', endpointEnv(privateSim, placement.backend, placement.listenerDomid));
  const second = new ForkedEndpoint('B', endpointEnv(privateSim, placement.backend, placement.connectorDomid));
  const forked = [first, second];
  let remote: RemoteEndpoint | null = null;
  let progress: Progress | null = null;
  let succeeded = false;
  // Interrupted: the measurement processes go (they are in our process group anyway) and so does
  // the private simulation, once its daemon has seen them go.
  const interrupted = () => {
    progress?.stop();
    log('vchan bench: interrupted');
    for (const endpoint of forked) endpoint.kill();
    const exit = () => process.exit(EXIT.failure);
    if (privateSim) void removePrivateSim(privateSim).finally(exit);
    else exit();
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const rows = new RowCollector();
  const { pipeline, pipelineLeftOut } = preparePipeline(plan, placement, privateSim, rows, log);
  let description: string;
  try {
    await Promise.all(forked.map((endpoint) => withTimeout(endpoint.call('hello', {}), 30, 'starting a measurement process')));
    if (plan.mode.kind === 'remote') {
      remote = await connectRemote(plan, plan.mode, placement.backend);
      await remote.call('hello', {});
    }
    description = describe(plan, placement);
    const measurements = new Measurements(plan, placement, { first, second, remote }, cRing?.binary ?? null, rows);
    const tasks = planTasks(plan, measurements, pipeline);
    log(`vchan bench: ${description}; ${tasks.length} measurements of ${plan.seconds} s`);
    progress = new Progress(
      tasks.length,
      tasks.reduce((sum, task) => sum + task.weight, 0),
    );
    await runTasks(tasks, progress);
    succeeded = true;
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    progress?.stop();
    await remote?.close().catch(() => {});
    await Promise.all(forked.map((endpoint) => endpoint.close().catch(() => endpoint.kill())));
    pipeline?.close();
    if (privateSim && succeeded) await removePrivateSim(privateSim);
    else if (privateSim) log(`vchan bench: the simulation's state folder and daemon.log are left in ${privateSim}`);
  }
  const about = aboutTheRun(plan, placement, description, cRing, leftOut, startedAt);
  if (pipeline) {
    about.setup.pipelineBytes = pipeline.bytes;
    about.setup.pipelineVerifyBytes = pipeline.verifyBytes;
  }
  if (pipelineLeftOut.length > 0) about.setup.pipelineLeftOut = pipelineLeftOut;
  const results = assembleResults(about, rows);
  results.wallSeconds = (performance.now() - started) / 1000;
  return results;
}

type BuiltCRing = Awaited<ReturnType<typeof buildCRing>>;

/**
 * The CLI pipeline rows, unless the plan has none: `vchan listen` and `vchan connect` as the two
 * domains the measurement processes play (this domain to itself on Xen). A remote run leaves them
 * out (both commands would have to run here), and so does a machine without socat its row, each
 * with a note.
 */
function preparePipeline(
  plan: BenchPlan,
  placement: Placement,
  privateSim: string | null,
  rows: RowCollector,
  log: (text: string) => void,
): { pipeline: PipelineBench | null; pipelineLeftOut: string[] } {
  if (plan.pipelineBytes === 0) return { pipeline: null, pipelineLeftOut: [] };
  if (plan.mode.kind === 'remote') {
    const note =
      'the CLI pipeline rows are left out with --domain: both of its processes run in this domain (run the bench without --domain for them)';
    log(`vchan bench: ${note}`);
    return { pipeline: null, pipelineLeftOut: [note] };
  }
  const sim = placement.backend === 'sim';
  const listenerDomid = sim ? (placement.listenerDomid ?? placement.serverDomid) : placement.serverDomid;
  const connectorDomid = sim ? (placement.connectorDomid ?? placement.clientDomid!) : placement.serverDomid;
  const socat = findSocat();
  const pipelineLeftOut: string[] = [];
  if (!socat) {
    const note = 'socat was not found on PATH, so its CLI pipeline row is left out (install socat to measure it)';
    log(`vchan bench: ${note}`);
    pipelineLeftOut.push(note);
  }
  const env = { ...endpointEnv(privateSim, placement.backend, undefined) };
  const pipeline = new PipelineBench(
    { env, listenerDomid, connectorDomid, sim },
    plan.pipelineBytes,
    plan.pipelineVerifyBytes,
    socat,
    rows,
  );
  return { pipeline, pipelineLeftOut };
}

/**
 * Builds the C ring if the plan has it. A machine without a C compiler (a minimal guest, an app's
 * container) still gets every other row: the C ring is only the yardstick, so it is left out with
 * a note in the log, the table, the chart and the JSON rather than failing the run.
 */
async function prepareCRing(plan: BenchPlan, log: (text: string) => void): Promise<{ cRing: BuiltCRing | null; leftOut?: string }> {
  if (!plan.cRing) return { cRing: null };
  try {
    return { cRing: await buildCRing() };
  } catch (error) {
    if (!(error instanceof CRingError) || error.code !== 'ENOENT') throw error;
    log(`vchan bench: ${error.message}`);
    return { cRing: null, leftOut: error.message };
  }
}

/** What the results say about the run besides its rows. */
function aboutTheRun(
  plan: BenchPlan,
  placement: Placement,
  description: string,
  cRing: BuiltCRing | null,
  cRingLeftOut: string | undefined,
  startedAt: Date,
): Omit<BenchResults, 'throughput' | 'latency' | 'rpc' | 'targets'> {
  return {
    tool: 'vchan bench',
    version: 1,
    startedAt: startedAt.toISOString(),
    wallSeconds: 0,
    machine: machine(),
    setup: {
      mode: plan.mode.kind,
      backend: placement.backend,
      description,
      secondsPerMeasurement: plan.seconds,
      repeat: plan.repeat,
      chunks: plan.chunks,
      rings: plan.rings,
      latencySize: plan.latencySize,
      latencyRing: plan.latencyRing,
      rpcInFlight: plan.rpcInFlight,
      cRing: plan.cRing,
      ...(cRing ? { cCompiler: `${cRing.compiler} -O2 (${cRing.built ? 'built now' : 'cached'}: ${cRing.binary})` } : {}),
      ...(cRingLeftOut ? { cRingLeftOut } : {}),
    },
    transports: ['vchan', 'vchan-views', 'unix', 'tcp', ...(plan.cRing ? (['c-ring', 'c-ring-spin'] as const) : [])],
  };
}

async function runTasks(tasks: Task[], progress: Progress): Promise<void> {
  for (const task of tasks) {
    progress.start(task.label, task.weight);
    const summary = await task.run();
    progress.finish(summary);
  }
}

/** Where each end of a vchan runs, and as which domain. */
async function place(plan: BenchPlan): Promise<Placement> {
  const { mode } = plan;
  switch (mode.kind) {
    // Two simulated domains of our own.
    case 'sim':
      return { backend: 'sim', serverDomid: 1, clientDomid: 2, listenerDomid: 1, connectorDomid: 2 };
    case 'xen-local': {
      const self = await ownDomid(plan.backend);
      return { backend: plan.backend, serverDomid: self, clientDomid: self, ...simDomids(plan) };
    }
    // The serving domain knows its client from its own --domain.
    case 'remote':
      return { backend: plan.backend, serverDomid: mode.domid, ...simDomids(plan) };
  }
}

function simDomids(plan: BenchPlan): Pick<Placement, 'listenerDomid' | 'connectorDomid'> {
  return plan.simDomid === undefined ? {} : { listenerDomid: plan.simDomid, connectorDomid: plan.simDomid };
}

function describe(plan: BenchPlan, { backend, serverDomid }: Placement): string {
  switch (plan.mode.kind) {
    case 'remote':
      return `vchan between this domain and domain ${plan.mode.domid} (vchan bench --serve there, backend ${backend}); sockets and the C ring between two processes here`;
    case 'sim':
      return 'two processes as simulated domains 1 and 2 (backend sim)';
    case 'xen-local':
      return `two processes in this domain (${serverDomid}), vchan to itself (backend ${backend})`;
  }
}

/** The control vchan to `vchan bench --serve` in the other domain. */
async function connectRemote(
  plan: BenchPlan,
  mode: Extract<BenchPlan['mode'], { kind: 'remote' }>,
  backend: Placement['backend'],
): Promise<RemoteEndpoint> {
  const control = await connect({
    domid: mode.domid,
    ...(mode.path ? { path: mode.path } : { name: mode.name }),
    timeout: 10_000,
    backend,
    ...(plan.simDomid !== undefined ? { simDomid: plan.simDomid } : {}),
  });
  return new RemoteEndpoint(new RpcPeer(control, { timeout: 0, codec: controlCodec }));
}

function machine(): BenchResults['machine'] {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    kernel: os.release(),
    hostname: os.hostname(),
  };
}

const PRIVATE_SIM_IDLE_MS = 300;

/**
 * A simulation of the run's own (unless the caller chose one with XEN_VCHAN_SIM_DIR), so nobody
 * else's use of the default one can disturb the measurements; its daemon goes away soon after.
 */
function makePrivateSim(): string {
  return mkdtempSync(path.join(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), `xen-vchan-bench-${os.userInfo().uid}-`));
}

/** The environment of a measurement process playing simulated domain `domid` (when given). */
function endpointEnv(privateSim: string | null, backend: Placement['backend'], domid: number | undefined): NodeJS.ProcessEnv {
  return {
    ...process.env,
    ...(privateSim ? { XEN_VCHAN_SIM_DIR: privateSim, XEN_VCHAN_SIM_IDLE_MS: String(PRIVATE_SIM_IDLE_MS) } : {}),
    ...(backend === 'sim' ? { XEN_VCHAN_BACKEND: 'sim' } : {}),
    ...(domid !== undefined ? { XEN_VCHAN_SIM_DOMID: String(domid) } : {}),
  };
}

/** Waits for the private simulation's daemon to go idle and remove its state, then removes the rest. */
async function removePrivateSim(directory: string): Promise<void> {
  const socket = path.join(directory, 'daemon.sock'); // see the layout in packages/sim/README.md
  for (let waited = 0; existsSync(socket) && waited < PRIVATE_SIM_IDLE_MS + 3000; waited += 50) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  rmSync(directory, { recursive: true, force: true });
}

/**
 * This domain's id, from the XenStore a channel of `backend` talks to: with 'xen' that is
 * xenstored's socket in dom0 and /dev/xen/xenbus elsewhere, whatever XEN_VCHAN_BACKEND says, as
 * createServer() and connect() pick it.
 */
async function ownDomid(backend: 'auto' | 'xen' | 'sim'): Promise<number> {
  const transport: TransportChoice =
    backend === 'xen'
      ? existsSync(process.env.XENSTORED_PATH ?? XENSTORED_SOCKET)
        ? 'socket'
        : 'xenbus'
      : backend === 'sim'
        ? 'sim'
        : 'auto';
  const xenstore = await openXenStore({ transport });
  try {
    return await xenstore.ownDomid();
  } finally {
    xenstore.close();
  }
}
