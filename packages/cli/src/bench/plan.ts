/**
 * What a bench run measures, and in which order: the command line's plan becomes a list of tasks,
 * each one measurement with a label and an expected length for the progress bar. The order is
 * warm-ups, then chunk by chunk every transport side by side, then the target cells again, then
 * round trips and RPC.
 */
import type { Measurements } from './measurements.js';
import type { PipelineBench } from './pipeline.js';
import { formatSize, MiB, pipelineLabel, TARGET_CHUNK, TARGET_RING, transportLabel, type Transport } from './results.js';

export interface BenchPlan {
  chunks: number[];
  rings: number[];
  seconds: number;
  cRing: boolean;
  /** Where the vchan's other end runs. */
  mode: { kind: 'sim' } | { kind: 'xen-local' } | { kind: 'remote'; domid: number; name: string; path?: string };
  backend: 'auto' | 'xen' | 'sim';
  /** This process's simulated domain, when given (remote mode on the simulation). */
  simDomid?: number;
  latencySize: number;
  latencyRing: number;
  rpcInFlight: number;
  /** The CLI pipeline's file size in bytes (0: no pipeline rows), and its verified round's. */
  pipelineBytes: number;
  pipelineVerifyBytes: number;
  /** Throughput measurements are repeated this many times (whole sweeps, one after the other); rows show the median. */
  repeat: number;
}

export interface Task {
  label: string;
  /** Expected seconds, for the progress bar. */
  weight: number;
  /** Runs the measurement; resolves with its one-line summary. */
  run(): Promise<string>;
}

/** How many times at least the cell of the throughput targets is measured. */
const TARGET_REPEAT = 3;
/** What starting a measurement between two Node processes adds to its length, in seconds. */
const NODE_OVERHEAD = 0.15;
/** The same for the C ring, which forks itself. */
const C_OVERHEAD = 0.02;

export function planTasks(plan: BenchPlan, measurements: Measurements, pipeline: PipelineBench | null = null): Task[] {
  return [
    ...warmUps(plan, measurements),
    ...throughputSweep(plan, measurements),
    ...targetCells(plan, measurements),
    ...roundTrips(plan, measurements),
    ...rpcCalls(plan, measurements),
    ...concurrency(plan, measurements),
    ...(pipeline ? pipelineTasks(pipeline) : []),
  ];
}

/** Rounds of each CLI pipeline; the row is the median. */
export const PIPELINE_ROUNDS = 3;
/** What starting two processes of a pipeline costs, in seconds, and a guess at its rate for the progress bar. */
const PIPELINE_OVERHEAD = 0.4;
const PIPELINE_GUESS_MIB_PER_SECOND = 300;

/** A verified round of each transport first, then the measured rounds taking turns. */
function pipelineTasks(pipeline: PipelineBench): Task[] {
  const { transports } = pipeline;
  const weight = (bytes: number) => bytes / MiB / PIPELINE_GUESS_MIB_PER_SECOND + PIPELINE_OVERHEAD;
  const tasks: Task[] = transports.map((transport) => ({
    label: `CLI pipeline ${pipelineLabel(transport)}, ${formatSize(pipeline.verifyBytes)} into a file (verified)`,
    weight: weight(pipeline.verifyBytes),
    run: () => pipeline.verify(transport),
  }));
  for (let round = 1; round <= PIPELINE_ROUNDS; round++) {
    for (const transport of transports) {
      tasks.push({
        label: `CLI pipeline ${pipelineLabel(transport)}, ${formatSize(pipeline.bytes)} into /dev/null (${round}/${PIPELINE_ROUNDS})`,
        weight: weight(pipeline.bytes),
        run: () => pipeline.measure(transport),
      });
    }
  }
  return tasks;
}

/** Stream counts of the concurrency rows: one vchan carrying them against as many Unix sockets. */
export const CONCURRENT_STREAMS = [1, 8, 64] as const;
/** Bulk streams beside the round trips of the busy-latency rows. */
export const BUSY_STREAMS = 8;

/** Short windows: these rows add a few seconds to the run, not a sweep. */
function concurrency(plan: BenchPlan, measurements: Measurements): Task[] {
  const seconds = Math.min(plan.seconds, 0.5);
  const tasks: Task[] = [];
  for (const streams of CONCURRENT_STREAMS) {
    for (const transport of ['vchan', 'unix'] as const) {
      tasks.push({
        label: `${streams} stream${streams > 1 ? 's' : ''} over ${transport === 'vchan' ? 'one vchan' : 'unix sockets'}`,
        weight: seconds + NODE_OVERHEAD,
        run: () => measurements.concurrentThroughput(transport, streams, seconds),
      });
    }
  }
  for (const transport of ['vchan', 'unix'] as const) {
    tasks.push({
      label: `${plan.latencySize}-byte round trips beside ${BUSY_STREAMS} bulk streams over ${transport === 'vchan' ? 'one vchan' : 'unix sockets'}`,
      weight: seconds + NODE_OVERHEAD,
      run: () => measurements.busyLatency(transport, BUSY_STREAMS, seconds),
    });
  }
  return tasks;
}

function warmUps(plan: BenchPlan, measurements: Measurements): Task[] {
  const chunk = Math.min(65536, Math.max(...plan.chunks));
  return (['vchan', 'unix'] as const).map((transport) => ({
    label: `warm-up ${transportLabel(transport)}`,
    weight: Math.min(plan.seconds, 0.3) + NODE_OVERHEAD,
    run: () => measurements.warmUp(transport, chunk),
  }));
}

function throughputSweep(plan: BenchPlan, measurements: Measurements): Task[] {
  const tasks: Task[] = [];
  const streamWeight = plan.seconds + NODE_OVERHEAD;
  for (let round = 1; round <= plan.repeat; round++) {
    const suffix = plan.repeat > 1 ? ` (${round}/${plan.repeat})` : '';
    for (const chunk of plan.chunks) {
      for (const transport of ['unix', 'tcp'] as const) {
        tasks.push({
          label: `${transportLabel(transport)} ${formatSize(chunk)} writes${suffix}`,
          weight: streamWeight,
          run: () => measurements.streamThroughput(transport, chunk, null),
        });
      }
      for (const ring of plan.rings) {
        const where = `${formatSize(chunk)} writes, ${formatSize(ring)} ring${suffix}`;
        tasks.push({ label: `vchan ${where}`, weight: streamWeight, run: () => measurements.streamThroughput('vchan', chunk, ring) });
        tasks.push({
          label: `vchan zero-copy reads ${where}`,
          weight: streamWeight,
          run: () => measurements.streamThroughput('vchan', chunk, ring, 'views'),
        });
        if (!plan.cRing) continue;
        for (const transport of ['c-ring', 'c-ring-spin'] as const) {
          tasks.push({
            label: `${transportLabel(transport)} ${where}`,
            weight: plan.seconds + C_OVERHEAD,
            run: () => measurements.cRingThroughput(transport, chunk, ring),
          });
        }
      }
    }
  }
  return tasks;
}

/**
 * The cells the throughput targets compare are measured at least TARGET_REPEAT times, taking
 * turns, and their rows show the median: one unlucky placement of two processes on the CPUs
 * should not decide a target.
 */
function targetCells(plan: BenchPlan, measurements: Measurements): Task[] {
  const tasks: Task[] = [];
  if (!plan.chunks.includes(TARGET_CHUNK) || !plan.rings.includes(TARGET_RING)) return tasks;
  for (let round = plan.repeat + 1; round <= TARGET_REPEAT; round++) {
    const suffix = ` (target cell, ${round}/${TARGET_REPEAT})`;
    const weight = plan.seconds + NODE_OVERHEAD;
    tasks.push({
      label: `unix socket 64 KiB writes${suffix}`,
      weight,
      run: () => measurements.streamThroughput('unix', TARGET_CHUNK, null),
    });
    tasks.push({
      label: `vchan 64 KiB writes, 1 MiB ring${suffix}`,
      weight,
      run: () => measurements.streamThroughput('vchan', TARGET_CHUNK, TARGET_RING),
    });
    tasks.push({
      label: `vchan zero-copy reads 64 KiB writes, 1 MiB ring${suffix}`,
      weight,
      run: () => measurements.streamThroughput('vchan', TARGET_CHUNK, TARGET_RING, 'views'),
    });
    if (plan.cRing) {
      tasks.push({
        label: `C ring 64 KiB writes, 1 MiB ring${suffix}`,
        weight: plan.seconds + C_OVERHEAD,
        run: () => measurements.cRingThroughput('c-ring', TARGET_CHUNK, TARGET_RING),
      });
    }
  }
  return tasks;
}

function roundTrips(plan: BenchPlan, measurements: Measurements): Task[] {
  const label = (transport: Transport) => `${transportLabel(transport)} ${plan.latencySize}-byte round trips`;
  return [
    ...(['vchan', 'unix', 'tcp'] as const).map((transport) => ({
      label: label(transport),
      weight: plan.seconds + NODE_OVERHEAD,
      run: () => measurements.streamLatency(transport),
    })),
    ...(plan.cRing ? (['c-ring', 'c-ring-spin'] as const) : []).map((transport) => ({
      label: label(transport),
      weight: plan.seconds + C_OVERHEAD,
      run: () => measurements.cRingLatency(transport),
    })),
  ];
}

function rpcCalls(plan: BenchPlan, measurements: Measurements): Task[] {
  return (['vchan', 'unix'] as const).map((transport) => ({
    label: `RPC over ${transportLabel(transport)}`,
    weight: plan.seconds * 2 + NODE_OVERHEAD,
    run: () => measurements.rpc(transport),
  }));
}
