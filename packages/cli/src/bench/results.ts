/** What a bench run produces: the rows of its tables, the targets, and how they are computed. */
import type { VchanStats } from '@xen-vchan/vchan';

export type Transport = 'vchan' | 'vchan-views' | 'unix' | 'tcp' | 'c-ring' | 'c-ring-spin';

export const TRANSPORTS: readonly { id: Transport; label: string; description: string; color: string }[] = [
  { id: 'vchan', label: 'vchan', description: 'Node: a Vchan Duplex (this library)', color: '#1f6feb' },
  {
    id: 'vchan-views',
    label: 'vchan zero-copy',
    description: 'Node: a Vchan read through views(), the receiver checking the bytes in the ring (this library)',
    color: '#0ea5e9',
  },
  { id: 'unix', label: 'unix socket', description: 'Node: net.Socket over a Unix domain socket', color: '#d97706' },
  { id: 'tcp', label: 'tcp loopback', description: 'Node: net.Socket over TCP on 127.0.0.1', color: '#9333ea' },
  { id: 'c-ring', label: 'C ring', description: 'C: shared-memory ring, sleeping on an eventfd (bench/shm-ring.c)', color: '#16a34a' },
  { id: 'c-ring-spin', label: 'C ring (spin)', description: 'C: the same ring, both sides spinning', color: '#6b7280' },
];

export function transportLabel(id: Transport): string {
  return TRANSPORTS.find((transport) => transport.id === id)?.label ?? id;
}

export interface ThroughputRow {
  transport: Transport;
  /** Bytes per write(). */
  chunk: number;
  /** Ring size each way; null for sockets. */
  ring: number | null;
  /** Bytes received and verified per second, over the receiver's clock, in MiB/s. */
  mibPerSecond: number | null;
  /** Bytes received and verified (equal to the bytes the sender sent). */
  bytes: number;
  /** Bytes after the first piece, over `seconds`. */
  measuredBytes: number;
  /** Receiver's clock, first piece to last. */
  seconds: number;
  verified: true;
  /** mibPerSecond over Node-over-a-Unix-socket's at the same chunk. */
  vsUnix: number | null;
  /** mibPerSecond over the C ring's (eventfd) at the same chunk and ring (sockets: the largest ring). */
  vsCRing: number | null;
  /** Wake-ups (events or eventfd writes) per MiB, both directions; null where not counted. */
  wakeupsPerMiB: number | null;
  /** vchan only: each side's counters. */
  senderStats?: VchanStats;
  receiverStats?: VchanStats;
  /** With --repeat: MiB/s of every repeat, in order (the row is the median one). */
  samples?: (number | null)[];
  /** C ring only: what the consumer did. */
  consumer?: { notifies: number; sleeps: number };
}

export interface LatencyRow {
  transport: Transport;
  /** Message size in bytes. */
  size: number;
  ring: number | null;
  roundTrips: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
  minUs: number;
  /** p50 over Node-over-a-Unix-socket's. */
  vsUnix: number | null;
  pingStats?: VchanStats;
}

export interface RpcRow {
  transport: Transport;
  sequential: { calls: number; seconds: number; callsPerSecond: number; p50Us: number; p99Us: number };
  concurrent: { inFlight: number; calls: number; seconds: number; callsPerSecond: number; p50Us: number; p99Us: number };
}

/**
 * Aggregate throughput of `streams` streams at once, each sending 64 KiB writes: over one vchan
 * (transport 'vchan': yamux streams of one session, @xen-vchan/mux) or over as many Unix-socket
 * connections ('unix').
 */
export interface ConcurrencyRow {
  transport: 'vchan' | 'unix';
  streams: number;
  /** All streams' bytes received and verified, over the receiver's wall clock for them all. */
  mibPerSecond: number | null;
  bytes: number;
  seconds: number;
  /** The slowest and fastest stream's share of the bytes (1 / streams when fair). */
  leastShare: number;
  mostShare: number;
  /** mibPerSecond over the Unix sockets' with as many streams. */
  vsUnix: number | null;
}

/** Round trips of `size` bytes on an idle stream while `bulkStreams` others carry 64 KiB writes. */
export interface BusyLatencyRow {
  transport: 'vchan' | 'unix';
  size: number;
  bulkStreams: number;
  roundTrips: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
  minUs: number;
  /** What the bulk streams moved together meanwhile, in MiB/s. */
  bulkMiBPerSecond: number | null;
}

/** The CLI pipeline rows: a file from one process to another through a transport, into /dev/null. */
export type PipelineTransport = 'vchan' | 'unix' | 'socat';

export function pipelineLabel(transport: PipelineTransport): string {
  return { vchan: 'vchan listen | vchan connect', unix: 'node | unix socket | node', socat: 'socat | unix socket | socat' }[transport];
}

export interface PipelineRow {
  transport: PipelineTransport;
  /** The file's size. */
  bytes: number;
  /** bytes over the wall time from the first spawn until both processes exited, in MiB/s (the median round). */
  mibPerSecond: number;
  /** That round's wall time. */
  seconds: number;
  /** MiB/s of every round, in order. */
  samples: number[];
  /** A round into a file was compared with the input (size and SHA-256) before the measured ones. */
  verified: true;
  /** mibPerSecond over the Node-over-a-Unix-socket pipeline's. */
  vsUnix: number | null;
}

export interface Target {
  id: string;
  description: string;
  /** The measured ratio, or null when the run did not measure both sides. */
  ratio: number | null;
  goal: string;
  pass: boolean | null;
  detail: string;
}

export interface BenchResults {
  tool: 'vchan bench';
  version: 1;
  startedAt: string;
  wallSeconds: number;
  machine: { cpus: number; cpuModel: string; node: string; platform: string; kernel: string; hostname: string };
  setup: {
    mode: 'sim' | 'xen-local' | 'remote';
    backend: string;
    description: string;
    secondsPerMeasurement: number;
    repeat: number;
    chunks: number[];
    rings: number[];
    latencySize: number;
    latencyRing: number;
    rpcInFlight: number;
    cRing: boolean;
    cCompiler?: string;
    /** Why the C ring rows are missing although the command line asked for them (no C compiler). */
    cRingLeftOut?: string;
    /** The CLI pipeline's file size (0: not measured) and the verified round's. */
    pipelineBytes?: number;
    pipelineVerifyBytes?: number;
    /** Pipeline rows left out, and why (socat not installed, a remote run). */
    pipelineLeftOut?: string[];
  };
  transports: Transport[];
  throughput: ThroughputRow[];
  latency: LatencyRow[];
  rpc: RpcRow[];
  /** Many streams over one vchan against as many Unix sockets (absent in results from before them). */
  concurrency?: ConcurrencyRow[];
  busyLatency?: BusyLatencyRow[];
  /** The CLI pipeline (absent in results from before it). */
  pipeline?: PipelineRow[];
  targets: Target[];
}

export const MiB = 1 << 20;

export function formatSize(bytes: number): string {
  if (bytes >= MiB && bytes % MiB === 0) return `${bytes / MiB} MiB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} B`;
}

/** A throughput row as measured: verified, before the ratios are known. */
export type MeasuredThroughput = Omit<ThroughputRow, 'verified' | 'vsUnix' | 'vsCRing'>;

/** The rows as the measurements come in. A throughput cell measured more than once becomes its median row. */
export class RowCollector {
  /** Every repeat of a throughput cell, in the order the cells were first measured. */
  private readonly cells = new Map<string, ThroughputRow[]>();
  readonly latency: LatencyRow[] = [];
  readonly rpc: RpcRow[] = [];
  readonly concurrency: ConcurrencyRow[] = [];
  readonly busyLatency: BusyLatencyRow[] = [];
  /** Every round of each pipeline transport. */
  private readonly pipelineRounds = new Map<PipelineTransport, { bytes: number; seconds: number }[]>();

  addThroughput(row: MeasuredThroughput): void {
    const key = `${row.transport} ${row.chunk} ${row.ring}`;
    if (!this.cells.has(key)) this.cells.set(key, []);
    this.cells.get(key)!.push({ ...row, verified: true, vsUnix: null, vsCRing: null });
  }

  addLatency(row: Omit<LatencyRow, 'vsUnix'>): void {
    this.latency.push({ ...row, vsUnix: null });
  }

  addRpc(row: RpcRow): void {
    this.rpc.push(row);
  }

  addConcurrency(row: Omit<ConcurrencyRow, 'vsUnix'>): void {
    this.concurrency.push({ ...row, vsUnix: null });
  }

  addBusyLatency(row: BusyLatencyRow): void {
    this.busyLatency.push(row);
  }

  addPipeline(round: { transport: PipelineTransport; bytes: number; seconds: number }): void {
    if (!this.pipelineRounds.has(round.transport)) this.pipelineRounds.set(round.transport, []);
    this.pipelineRounds.get(round.transport)!.push(round);
  }

  /** One row per pipeline transport: the median round. */
  pipeline(): PipelineRow[] {
    return [...this.pipelineRounds.entries()].map(([transport, rounds]) => {
      const rate = (round: { bytes: number; seconds: number }) => round.bytes / MiB / round.seconds;
      const median = [...rounds].sort((a, b) => rate(a) - rate(b))[Math.floor((rounds.length - 1) / 2)]!;
      return {
        transport,
        bytes: median.bytes,
        mibPerSecond: rate(median),
        seconds: median.seconds,
        samples: rounds.map(rate),
        verified: true,
        vsUnix: null,
      };
    });
  }

  /** One row per cell: the median repeat, carrying every repeat's MiB/s when there were several. */
  throughput(): ThroughputRow[] {
    return [...this.cells.values()].map((repeats) => {
      const sorted = [...repeats].sort((a, b) => (a.mibPerSecond ?? -1) - (b.mibPerSecond ?? -1));
      const median = sorted[Math.floor((sorted.length - 1) / 2)]!;
      return repeats.length > 1 ? { ...median, samples: repeats.map((row) => row.mibPerSecond) } : median;
    });
  }
}

/** The run's results: its description and the collected rows, with the ratios and the targets filled in. */
export function assembleResults(run: Omit<BenchResults, 'throughput' | 'latency' | 'rpc' | 'targets'>, rows: RowCollector): BenchResults {
  const results: BenchResults = {
    ...run,
    throughput: rows.throughput(),
    latency: rows.latency,
    rpc: rows.rpc,
    concurrency: rows.concurrency,
    busyLatency: rows.busyLatency,
    pipeline: rows.pipeline(),
    targets: [],
  };
  addRatios(results);
  results.targets = computeTargets(results);
  return results;
}

/** Fills vsUnix / vsCRing once every row is in. */
export function addRatios(results: Pick<BenchResults, 'throughput' | 'latency' | 'setup' | 'concurrency' | 'pipeline'>): void {
  const find = (transport: Transport, chunk: number, ring: number | null) =>
    results.throughput.find((row) => row.transport === transport && row.chunk === chunk && row.ring === ring && row.mibPerSecond !== null);
  const largestRing = Math.max(...results.setup.rings);
  for (const row of results.throughput) {
    const unix = find('unix', row.chunk, null);
    const cRing = find('c-ring', row.chunk, row.ring ?? largestRing);
    row.vsUnix = unix && row.mibPerSecond !== null ? row.mibPerSecond / unix.mibPerSecond! : null;
    row.vsCRing = cRing && row.mibPerSecond !== null ? row.mibPerSecond / cRing.mibPerSecond! : null;
  }
  for (const row of results.concurrency ?? []) {
    const unix = results.concurrency!.find(
      (other) => other.transport === 'unix' && other.streams === row.streams && other.mibPerSecond !== null,
    );
    row.vsUnix = unix && row.mibPerSecond !== null ? row.mibPerSecond / unix.mibPerSecond! : null;
  }
  const unixPipeline = results.pipeline?.find((row) => row.transport === 'unix');
  for (const row of results.pipeline ?? []) row.vsUnix = unixPipeline ? row.mibPerSecond / unixPipeline.mibPerSecond : null;
  const unixLatency = results.latency.find((row) => row.transport === 'unix');
  for (const row of results.latency) row.vsUnix = unixLatency ? row.p50Us / unixLatency.p50Us : null;
}

/** The cell the throughput targets compare: 64 KiB writes, over 1 MiB rings for vchan and the C ring. */
export const TARGET_CHUNK = 65536;
export const TARGET_RING = MiB;

/** One design target: `ours` over `theirs`, and whether the ratio meets the goal. */
function target(
  id: string,
  description: string,
  ours: number | null,
  theirs: number | null,
  goal: { text: string; met: (ratio: number) => boolean },
  show: (value: number | null) => string,
): Target {
  const ratio = ours !== null && theirs !== null ? ours / theirs : null;
  return {
    id,
    description,
    ratio,
    goal: goal.text,
    pass: ratio === null ? null : goal.met(ratio),
    detail: `${show(ours)} vs ${show(theirs)}`,
  };
}

/** The design's targets, from this run's rows alone. */
export function computeTargets(results: Pick<BenchResults, 'throughput' | 'latency' | 'pipeline'>): Target[] {
  const throughput = (transport: Transport, ring: number | null) =>
    results.throughput.find((row) => row.transport === transport && row.chunk === TARGET_CHUNK && row.ring === ring)?.mibPerSecond ?? null;
  const roundTrip = (transport: Transport) => results.latency.find((row) => row.transport === transport)?.p50Us ?? null;
  const mib = (value: number | null) => (value === null ? 'not measured' : `${value.toFixed(0)} MiB/s`);
  const us = (value: number | null) => (value === null ? 'not measured' : `${value.toFixed(1)} µs`);
  const pipeline = (transport: PipelineTransport) => results.pipeline?.find((row) => row.transport === transport)?.mibPerSecond ?? null;
  const vchan = throughput('vchan', TARGET_RING);
  const zeroCopy = throughput('vchan-views', TARGET_RING);
  return [
    target(
      'throughput-vs-unix',
      'vchan, 64 KiB writes over 1 MiB rings, vs Node over a Unix socket',
      vchan,
      throughput('unix', null),
      { text: '>= 3x', met: (ratio) => ratio >= 3 },
      mib,
    ),
    target(
      'throughput-vs-c-ring',
      'vchan, 64 KiB writes over 1 MiB rings, vs the C ring',
      vchan,
      throughput('c-ring', TARGET_RING),
      { text: '>= 0.6x', met: (ratio) => ratio >= 0.6 },
      mib,
    ),
    target(
      'zero-copy-vs-unix',
      'vchan zero-copy reads, 64 KiB writes over 1 MiB rings, vs Node over a Unix socket',
      zeroCopy,
      throughput('unix', null),
      { text: '>= 3x', met: (ratio) => ratio >= 3 },
      mib,
    ),
    target(
      'zero-copy-vs-c-ring',
      'vchan zero-copy reads, 64 KiB writes over 1 MiB rings, vs the C ring',
      zeroCopy,
      throughput('c-ring', TARGET_RING),
      { text: '>= 0.9x', met: (ratio) => ratio >= 0.9 },
      mib,
    ),
    target(
      'round-trip-vs-unix',
      'vchan, 64-byte round trip (median), vs Node over a Unix socket',
      roundTrip('vchan'),
      roundTrip('unix'),
      { text: '<= 0.5x', met: (ratio) => ratio <= 0.5 },
      us,
    ),
    target(
      'cli-pipeline-vs-unix',
      'CLI pipeline (vchan listen < file | vchan connect > /dev/null) vs the same pipeline through a Unix socket (Node)',
      pipeline('vchan'),
      pipeline('unix'),
      { text: '>= 2x', met: (ratio) => ratio >= 2 },
      mib,
    ),
  ];
}
