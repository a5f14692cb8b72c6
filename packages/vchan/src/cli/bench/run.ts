/**
 * Runs the sweep: it starts the measurement processes, plays each measurement between two of
 * them (or between one of them and `vchan bench --serve` in another domain), and collects rows.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { XenVchanError } from '@xen-vchan/native';
import { openXenStore } from '@xen-vchan/xenstore';
import { connect } from '../../connect.js';
import { xenstoreOptions } from '../../options.js';
import { EXIT } from '../command.js';
import { RpcPeer } from '../../rpc.js';
import type { VchanStats } from '../../stream.js';
import { buildCRing, cLatency, cThroughput } from './cring.js';
import type { Address, ConnectRequest, ListenRequest, Role, RoleOutcome, StreamTransport } from './endpoint.js';
import { Progress } from './progress.js';
import { controlCodec } from './requests.js';
import {
  addRatios,
  computeTargets,
  formatSize,
  MiB,
  TARGET_CHUNK,
  TARGET_RING,
  transportLabel,
  type BenchResults,
  type LatencyRow,
  type RpcRow,
  type ThroughputRow,
} from './results.js';
import type { LatencyResult, ReceiveResult, RpcResult, SendResult } from './roles.js';

export interface BenchPlan {
  chunks: number[];
  rings: number[];
  seconds: number;
  cRing: boolean;
  cSource: string | null;
  /** Where the vchan's other end runs. */
  mode: { kind: 'sim' } | { kind: 'xen-local' } | { kind: 'remote'; domid: number; name: string; path?: string };
  backend: 'auto' | 'xen' | 'sim';
  /** This process's simulated domain, when given (remote mode on the simulation). */
  simDomid?: number;
  latencySize: number;
  latencyRing: number;
  rpcInFlight: number;
  /** Throughput measurements are repeated this many times (whole sweeps, one after the other); rows show the median. */
  repeat: number;
}

/** A process that plays one end of measurements. */
interface EndpointClient {
  call<T>(op: string, args: unknown): Promise<T>;
  close(): Promise<void>;
}

interface WorkerReply {
  id: number;
  result?: unknown;
  error?: { message: string; code?: string };
}

/** A forked worker.js, driven over IPC. */
class ForkedEndpoint implements EndpointClient {
  private readonly child: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  private exited: Error | null = null;

  constructor(
    readonly label: string,
    env: NodeJS.ProcessEnv,
  ) {
    this.child = fork(new URL('./worker.js', import.meta.url), [], { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (reply: WorkerReply) => {
      const waiter = this.pending.get(reply.id);
      if (!waiter) return;
      this.pending.delete(reply.id);
      if (reply.error) waiter.reject(new XenVchanError(reply.error.code ?? 'ECHILD', reply.error.message));
      else waiter.resolve(reply.result);
    });
    this.child.on('exit', (code, signal) => this.gone(processFailed(`the measurement process ${label} exited (${signal ?? `code ${code}`})`)));
    this.child.on('error', (error) => this.gone(processFailed(`the measurement process ${label} failed: ${error.message}`)));
  }

  private gone(error: Error): void {
    this.exited ??= error;
    for (const waiter of this.pending.values()) waiter.reject(this.exited);
    this.pending.clear();
  }

  call<T>(op: string, args: unknown): Promise<T> {
    if (this.exited) return Promise.reject(this.exited);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.child.send({ id, op, args }, (error) => {
        if (error) this.gone(processFailed(`the measurement process ${this.label} cannot be reached: ${error.message}`));
      });
    });
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    try {
      await this.call('exit', null).catch(() => {});
      await exited;
    } finally {
      clearTimeout(timer);
    }
  }

  kill(): void {
    if (this.exited) return;
    this.child.kill('SIGKILL');
    this.gone(processFailed(`the measurement process ${this.label} was stopped`));
  }
}

/** `vchan bench --serve` in another domain, over a control vchan. */
class RemoteEndpoint implements EndpointClient {
  constructor(private readonly rpc: RpcPeer) {}

  call<T>(op: string, args: unknown): Promise<T> {
    return this.rpc.call<T>(op, args, { timeout: 0 });
  }

  async close(): Promise<void> {
    this.rpc.close();
  }
}

/** A measurement process exited, failed or could not be reached (or failed without a code of its own). */
function processFailed(message: string): XenVchanError {
  return new XenVchanError('ECHILD', message);
}

interface Task {
  label: string;
  /** Expected seconds, for the progress bar. */
  weight: number;
  run(): Promise<string>;
}

function withTimeout<T>(promise: Promise<T>, seconds: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new XenVchanError('ETIMEDOUT', `${what} took more than ${seconds} s; giving up`)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function sumEvents(...stats: (VchanStats | undefined)[]): number {
  return stats.reduce((sum, entry) => sum + (entry?.eventsSent ?? 0), 0);
}

export async function runBench(plan: BenchPlan, log: (text: string) => void): Promise<BenchResults> {
  const startedAt = new Date();
  const started = performance.now();
  const seed = (Math.random() * 0xffffffff) >>> 0 || 1;
  const maxChunk = Math.max(...plan.chunks);

  // Where each end of a vchan runs, and as which domain.
  const simMode = plan.mode.kind === 'sim';
  const backend = simMode ? 'sim' : plan.backend;
  const mode = plan.mode;
  // The vchan server's domain, and its client's (undefined: the remote knows it from its --domain).
  let serverDomid: number;
  let clientDomid: number | undefined;
  if (mode.kind === 'sim') [serverDomid, clientDomid] = [1, 2];
  else if (mode.kind === 'xen-local') serverDomid = clientDomid = await ownDomid(plan.backend);
  else serverDomid = mode.domid;
  // Two simulated domains of our own: a simulation of its own (unless the caller chose one with
  // XEN_VCHAN_SIM_DIR), so nobody else's use of the default one can disturb the measurements,
  // and its daemon goes away soon after the run.
  const privateSim = simMode && !process.env.XEN_VCHAN_SIM_DIR ? mkdtempSync(path.join(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), `xen-vchan-bench-${os.userInfo().uid}-`)) : null;
  const env = (domid: number | undefined): NodeJS.ProcessEnv => ({
    ...process.env,
    ...(privateSim ? { XEN_VCHAN_SIM_DIR: privateSim, XEN_VCHAN_SIM_IDLE_MS: String(PRIVATE_SIM_IDLE_MS) } : {}),
    ...(backend === 'sim' ? { XEN_VCHAN_BACKEND: 'sim' } : {}),
    ...(domid !== undefined ? { XEN_VCHAN_SIM_DOMID: String(domid) } : {}),
  });
  const listenerDomid = simMode ? 1 : plan.simDomid;
  const connectorDomid = simMode ? 2 : plan.simDomid;
  // The C ring first: without a compiler there is no point in starting anything else.
  let cBinary: string | null = null;
  let cCompiler: string | undefined;
  if (plan.cRing) {
    const built = await buildCRing(plan.cSource!);
    cBinary = built.binary;
    cCompiler = `${built.compiler} -O2 (${built.built ? 'built now' : 'cached'}: ${built.binary})`;
  }
  const first = new ForkedEndpoint('A', env(listenerDomid));
  const second = new ForkedEndpoint('B', env(connectorDomid));
  const forked = [first, second];
  let remote: RemoteEndpoint | null = null;
  let description: string;

  const results: BenchResults = {
    tool: 'vchan bench',
    version: 1,
    startedAt: startedAt.toISOString(),
    wallSeconds: 0,
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown',
      node: process.version,
      platform: `${os.platform()} ${os.arch()}`,
      kernel: os.release(),
      hostname: os.hostname(),
    },
    setup: {
      mode: plan.mode.kind,
      backend,
      description: '',
      secondsPerMeasurement: plan.seconds,
      repeat: plan.repeat,
      chunks: plan.chunks,
      rings: plan.rings,
      latencySize: plan.latencySize,
      latencyRing: plan.latencyRing,
      rpcInFlight: plan.rpcInFlight,
      cRing: plan.cRing,
      ...(cCompiler ? { cCompiler } : {}),
    },
    transports: ['vchan', 'unix', 'tcp', ...(plan.cRing ? (['c-ring', 'c-ring-spin'] as const) : [])],
    throughput: [],
    latency: [],
    rpc: [],
    targets: [],
  };

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
  try {
    await Promise.all(forked.map((endpoint) => withTimeout(endpoint.call('hello', {}), 30, 'starting a measurement process')));
    if (plan.mode.kind === 'remote') {
      const control = await connect({
        domid: plan.mode.domid,
        ...(plan.mode.path ? { path: plan.mode.path } : { name: plan.mode.name }),
        timeout: 10_000,
        backend,
        ...(plan.simDomid !== undefined ? { simDomid: plan.simDomid } : {}),
      });
      remote = new RemoteEndpoint(new RpcPeer(control, { timeout: 0, codec: controlCodec }));
      await remote.call('hello', {});
      description = `vchan between this domain and domain ${plan.mode.domid} (vchan bench --serve there, backend ${backend}); sockets and the C ring between two processes here`;
    } else if (simMode) {
      description = 'two processes as simulated domains 1 and 2 (backend sim)';
    } else {
      description = `two processes in this domain (${serverDomid}), vchan to itself (backend ${backend})`;
    }
    results.setup.description = description;

    const vchanListener: EndpointClient = remote ?? first;
    let counter = 0;
    /** Plays one measurement between a listener and a connector; returns both outcomes. */
    const measure = async (transport: StreamTransport, listenRole: Role, connectRole: Role, ring?: number): Promise<[RoleOutcome, RoleOutcome]> => {
      const key = `m${++counter}`;
      const listener = transport === 'vchan' ? vchanListener : first;
      // No name or path for a vchan: the listener publishes under its own vchan area for the
      // client, at a name it picks, and answers with it (a serving domain takes neither from us).
      const listenRequest: ListenRequest = {
        transport,
        key,
        role: listenRole,
        maxChunk,
        seed,
        ...(transport === 'vchan'
          ? {
              ring: ring ?? 65536,
              ...(clientDomid !== undefined ? { peerDomid: clientDomid } : {}),
              backend,
              ...(listenerDomid !== undefined && listener !== remote ? { simDomid: listenerDomid } : {}),
            }
          : {}),
      };
      const address = await listener.call<Address>('listen', listenRequest);
      try {
        const connectRequest: ConnectRequest = {
          transport,
          key,
          role: connectRole,
          address,
          maxChunk,
          seed,
          ...(transport === 'vchan'
            ? { serverDomid, backend, ...(connectorDomid !== undefined ? { simDomid: connectorDomid } : {}) }
            : {}),
        };
        return await withTimeout(
          Promise.all([listener.call<RoleOutcome>('result', { key }), second.call<RoleOutcome>('connect', connectRequest)]),
          plan.seconds * 4 + 60,
          `the ${transportLabel(transport)} measurement`,
        );
      } finally {
        await listener.call('close', { key }).catch(() => {});
      }
    };

    // Every repeat of a cell, in the order first measured; the median one becomes the row.
    const measured = new Map<string, ThroughputRow[]>();
    const throughputRow = (row: Omit<ThroughputRow, 'verified' | 'vsUnix' | 'vsCRing'>): string => {
      const key = `${row.transport} ${row.chunk} ${row.ring}`;
      if (!measured.has(key)) measured.set(key, []);
      measured.get(key)!.push({ ...row, verified: true, vsUnix: null, vsCRing: null });
      return row.mibPerSecond === null ? 'too short to time' : `${row.mibPerSecond.toFixed(0)} MiB/s`;
    };

    const streamThroughput = async (transport: StreamTransport, chunk: number, ring: number | null): Promise<string> => {
      const [sender, receiver] = await measure(transport, { role: 'send', chunk, seconds: plan.seconds }, { role: 'receive' }, ring ?? undefined);
      const sent = sender.result as SendResult;
      const received = receiver.result as ReceiveResult;
      if (received.bytes !== sent.sent) {
        throw new XenVchanError('EBADMSG', `${transportLabel(transport)} ${formatSize(chunk)} writes: the receiver verified ${received.bytes} bytes, the sender sent ${sent.sent}`);
      }
      const mibPerSecond = received.seconds > 0 ? received.measuredBytes / MiB / received.seconds : null;
      return throughputRow({
        transport,
        chunk,
        ring,
        mibPerSecond,
        bytes: received.bytes,
        measuredBytes: received.measuredBytes,
        seconds: received.seconds,
        wakeupsPerMiB: transport === 'vchan' && received.bytes > 0 ? sumEvents(sender.stats, receiver.stats) / (received.bytes / MiB) : null,
        ...(sender.stats ? { senderStats: sender.stats } : {}),
        ...(receiver.stats ? { receiverStats: receiver.stats } : {}),
      });
    };

    const cRingThroughput = async (transport: 'c-ring' | 'c-ring-spin', chunk: number, ring: number): Promise<string> => {
      const measured = await cThroughput(cBinary!, chunk, ring, plan.seconds, transport === 'c-ring-spin');
      if (!measured.verified || measured.bytes !== measured.sent) {
        throw new XenVchanError('EBADMSG', `the C ring verified ${measured.bytes} of the ${measured.sent} bytes it sent`);
      }
      return throughputRow({
        transport,
        chunk,
        ring,
        mibPerSecond: measured.seconds > 0 ? measured.measuredBytes / MiB / measured.seconds : null,
        bytes: measured.bytes,
        measuredBytes: measured.measuredBytes,
        seconds: measured.seconds,
        // The producer's wake-ups are about as many as the consumer's sleeps (one write per sleep).
        wakeupsPerMiB: transport === 'c-ring' && measured.bytes > 0 ? (measured.consumerNotifies + measured.consumerSleeps) / (measured.bytes / MiB) : null,
        consumer: { notifies: measured.consumerNotifies, sleeps: measured.consumerSleeps },
      });
    };

    const latencyRow = (row: Omit<LatencyRow, 'vsUnix'>): string => {
      results.latency.push({ ...row, vsUnix: null });
      return `median ${row.p50Us.toFixed(1)} µs, p99 ${row.p99Us.toFixed(1)} µs`;
    };

    const streamLatency = async (transport: StreamTransport): Promise<string> => {
      const ring = transport === 'vchan' ? plan.latencyRing : undefined;
      const [, pinger] = await measure(transport, { role: 'pong' }, { role: 'ping', size: plan.latencySize, seconds: plan.seconds }, ring);
      const result = pinger.result as LatencyResult;
      return latencyRow({ transport, size: plan.latencySize, ring: ring ?? null, ...result, ...(pinger.stats ? { pingStats: pinger.stats } : {}) });
    };

    const cRingLatency = async (transport: 'c-ring' | 'c-ring-spin'): Promise<string> => {
      const measured = await cLatency(cBinary!, plan.latencySize, plan.latencyRing, plan.seconds, transport === 'c-ring-spin');
      if (!measured.verified) throw new XenVchanError('EBADMSG', 'the C ring echoed a message that differs from what was sent');
      const { roundTrips, p50Us, p99Us, meanUs, minUs } = measured;
      return latencyRow({ transport, size: plan.latencySize, ring: plan.latencyRing, roundTrips, p50Us, p99Us, meanUs, minUs });
    };

    const rpcRun = async (transport: 'vchan' | 'unix'): Promise<string> => {
      const [, caller] = await measure(transport, { role: 'rpc-serve' }, { role: 'rpc-call', seconds: plan.seconds * 2, inFlight: plan.rpcInFlight });
      const result = caller.result as RpcResult;
      const row: RpcRow = { transport, ...result };
      results.rpc.push(row);
      return `${result.sequential.callsPerSecond.toFixed(0)} calls/s one at a time (median ${result.sequential.p50Us.toFixed(0)} µs), ${result.concurrent.callsPerSecond.toFixed(0)} calls/s with ${plan.rpcInFlight} in flight`;
    };

    // The plan: warm-ups, then chunk by chunk, every transport side by side; then latency and RPC.
    const nodeOverhead = 0.15;
    const tasks: Task[] = [];
    const warmChunk = Math.min(65536, maxChunk);
    for (const transport of ['vchan', 'unix'] as const) {
      tasks.push({
        label: `warm-up ${transportLabel(transport)}`,
        weight: Math.min(plan.seconds, 0.3) + nodeOverhead,
        run: async () => {
          await measure(transport, { role: 'send', chunk: warmChunk, seconds: Math.min(plan.seconds, 0.3) }, { role: 'receive' }, 65536);
          return 'done (not counted)';
        },
      });
    }
    for (let round = 1; round <= plan.repeat; round++) {
      const suffix = plan.repeat > 1 ? ` (${round}/${plan.repeat})` : '';
      for (const chunk of plan.chunks) {
        for (const transport of ['unix', 'tcp'] as const) {
          tasks.push({ label: `${transportLabel(transport)} ${formatSize(chunk)} writes${suffix}`, weight: plan.seconds + nodeOverhead, run: () => streamThroughput(transport, chunk, null) });
        }
        for (const ring of plan.rings) {
          const where = `${formatSize(chunk)} writes, ${formatSize(ring)} ring${suffix}`;
          tasks.push({ label: `vchan ${where}`, weight: plan.seconds + nodeOverhead, run: () => streamThroughput('vchan', chunk, ring) });
          if (plan.cRing) {
            for (const transport of ['c-ring', 'c-ring-spin'] as const) {
              tasks.push({ label: `${transportLabel(transport)} ${where}`, weight: plan.seconds + 0.02, run: () => cRingThroughput(transport, chunk, ring) });
            }
          }
        }
      }
    }
    // The cells the throughput targets compare are measured at least TARGET_REPEAT times, taking
    // turns, and their rows show the median: one unlucky placement of two processes on the CPUs
    // should not decide a target.
    if (plan.chunks.includes(TARGET_CHUNK) && plan.rings.includes(TARGET_RING)) {
      for (let round = plan.repeat + 1; round <= TARGET_REPEAT; round++) {
        const suffix = ` (target cell, ${round}/${TARGET_REPEAT})`;
        tasks.push({ label: `unix socket 64 KiB writes${suffix}`, weight: plan.seconds + nodeOverhead, run: () => streamThroughput('unix', TARGET_CHUNK, null) });
        tasks.push({ label: `vchan 64 KiB writes, 1 MiB ring${suffix}`, weight: plan.seconds + nodeOverhead, run: () => streamThroughput('vchan', TARGET_CHUNK, TARGET_RING) });
        if (plan.cRing) {
          tasks.push({ label: `C ring 64 KiB writes, 1 MiB ring${suffix}`, weight: plan.seconds + 0.02, run: () => cRingThroughput('c-ring', TARGET_CHUNK, TARGET_RING) });
        }
      }
    }
    for (const transport of ['vchan', 'unix', 'tcp'] as const) {
      tasks.push({ label: `${transportLabel(transport)} ${plan.latencySize}-byte round trips`, weight: plan.seconds + nodeOverhead, run: () => streamLatency(transport) });
    }
    if (plan.cRing) {
      for (const transport of ['c-ring', 'c-ring-spin'] as const) {
        tasks.push({ label: `${transportLabel(transport)} ${plan.latencySize}-byte round trips`, weight: plan.seconds + 0.02, run: () => cRingLatency(transport) });
      }
    }
    for (const transport of ['vchan', 'unix'] as const) {
      tasks.push({ label: `RPC over ${transportLabel(transport)}`, weight: plan.seconds * 2 + nodeOverhead, run: () => rpcRun(transport) });
    }

    log(`vchan bench: ${description}; ${tasks.length} measurements of ${plan.seconds} s`);
    progress = new Progress(
      tasks.length,
      tasks.reduce((sum, task) => sum + task.weight, 0),
    );
    for (const task of tasks) {
      progress.start(task.label, task.weight);
      const summary = await task.run();
      progress.finish(summary);
    }
    succeeded = true;
    for (const repeats of measured.values()) {
      const sorted = [...repeats].sort((a, b) => (a.mibPerSecond ?? -1) - (b.mibPerSecond ?? -1));
      const median = sorted[Math.floor((sorted.length - 1) / 2)]!;
      results.throughput.push(repeats.length > 1 ? { ...median, samples: repeats.map((row) => row.mibPerSecond) } : median);
    }
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    progress?.stop();
    await remote?.close().catch(() => {});
    await Promise.all(forked.map((endpoint) => endpoint.close().catch(() => endpoint.kill())));
    if (privateSim && succeeded) await removePrivateSim(privateSim);
    else if (privateSim) log(`vchan bench: the simulation's state folder and daemon.log are left in ${privateSim}`);
  }
  addRatios(results);
  results.targets = computeTargets(results);
  results.wallSeconds = (performance.now() - started) / 1000;
  return results;
}

const PRIVATE_SIM_IDLE_MS = 300;
/** How many times at least the cell of the throughput targets is measured. */
const TARGET_REPEAT = 3;

/** Waits for the private simulation's daemon to go idle and remove its state, then removes the rest. */
async function removePrivateSim(directory: string): Promise<void> {
  const socket = path.join(directory, 'daemon.sock'); // see the layout in packages/sim/README.md
  for (let waited = 0; existsSync(socket) && waited < PRIVATE_SIM_IDLE_MS + 3000; waited += 50) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  rmSync(directory, { recursive: true, force: true });
}

async function ownDomid(backend: 'auto' | 'xen' | 'sim'): Promise<number> {
  const xenstore = await openXenStore(xenstoreOptions({ backend }));
  try {
    return await xenstore.ownDomid();
  } finally {
    xenstore.close();
  }
}
