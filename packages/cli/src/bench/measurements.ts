/**
 * Drives the measurements: each one is played between a listening end and a connecting end
 * (endpoint.ts, reached through endpoint-clients.ts), or by the C ring on its own, and its
 * outcome is checked and turned into a row. Each method returns the one-line summary the
 * progress shows.
 */
import { XenVchanError } from '@xen-vchan/native';
import type { VchanStats } from '@xen-vchan/vchan';
import { cLatency, cThroughput } from './cring.js';
import type { Address, ConnectRequest, LanesResult, ListenRequest, Role, RoleOutcome, StreamTransport } from './endpoint.js';
import type { EndpointClient } from './endpoint-clients.js';
import { formatSize, MiB, transportLabel, type LatencyRow, type MeasuredThroughput, type RowCollector, type Transport } from './results.js';
import type { LatencyResult, ReceiveResult, RpcResult, SendResult } from './roles.js';
import type { BenchPlan } from './plan.js';

/** Where each end of a vchan runs, and as which domain. */
export interface Placement {
  backend: 'auto' | 'xen' | 'sim';
  /** The vchan server's domain. */
  serverDomid: number;
  /** Its client's; undefined when the serving domain knows it (from its own --domain). */
  clientDomid?: number;
  /** The simulated domains the listening and the connecting process play, when given. */
  listenerDomid?: number;
  connectorDomid?: number;
}

export interface MeasurementEnds {
  /** The forked process that listens for everything but a remote vchan. */
  first: EndpointClient;
  /** The forked process that connects. */
  second: EndpointClient;
  /** `vchan bench --serve` in another domain: the vchan listener, when the run is remote. */
  remote: EndpointClient | null;
}

export class Measurements {
  /** The pattern's seed: the same at both ends of every measurement of the run. */
  private readonly seed = (Math.random() * 0xffffffff) >>> 0 || 1;
  private readonly maxChunk: number;
  private counter = 0;

  constructor(
    private readonly plan: BenchPlan,
    private readonly placement: Placement,
    private readonly ends: MeasurementEnds,
    /** The built C ring; null when the run leaves it out. */
    private readonly cBinary: string | null,
    private readonly rows: RowCollector,
  ) {
    this.maxChunk = Math.max(...plan.chunks);
  }

  /** A short measurement whose numbers are not kept: the first ones of a process are slow. */
  async warmUp(transport: 'vchan' | 'unix', chunk: number): Promise<string> {
    const seconds = Math.min(this.plan.seconds, 0.3);
    await this.measure(transport, { role: 'send', chunk, seconds }, { role: 'receive' }, 65536);
    return 'done (not counted)';
  }

  /** `reads: 'views'` (vchan only) receives through Vchan.views(), as the row 'vchan-views'. */
  async streamThroughput(
    transport: StreamTransport,
    chunk: number,
    ring: number | null,
    reads: 'copy' | 'views' = 'copy',
  ): Promise<string> {
    const [sender, receiver] = await this.measure(
      transport,
      { role: 'send', chunk, seconds: this.plan.seconds },
      { role: reads === 'views' ? 'receive-views' : 'receive' },
      ring ?? undefined,
    );
    const row: Transport = reads === 'views' ? 'vchan-views' : transport;
    const sent = sender.result as SendResult;
    const received = receiver.result as ReceiveResult;
    if (received.bytes !== sent.sent) {
      throw new XenVchanError(
        'EBADMSG',
        `${transportLabel(row)} ${formatSize(chunk)} writes: the receiver verified ${received.bytes} bytes, the sender sent ${sent.sent}`,
      );
    }
    return this.throughputRow({
      ...counted(row, chunk, ring, received),
      wakeupsPerMiB: transport === 'vchan' && received.bytes > 0 ? sumEvents(sender.stats, receiver.stats) / (received.bytes / MiB) : null,
      ...(sender.stats ? { senderStats: sender.stats } : {}),
      ...(receiver.stats ? { receiverStats: receiver.stats } : {}),
    });
  }

  async cRingThroughput(transport: 'c-ring' | 'c-ring-spin', chunk: number, ring: number): Promise<string> {
    const measured = await cThroughput(this.cBinary!, chunk, ring, this.plan.seconds, transport === 'c-ring-spin');
    if (!measured.verified || measured.bytes !== measured.sent) {
      throw new XenVchanError('EBADMSG', `the C ring verified ${measured.bytes} of the ${measured.sent} bytes it sent`);
    }
    return this.throughputRow({
      ...counted(transport, chunk, ring, measured),
      // The producer's wake-ups are about as many as the consumer's sleeps (one write per sleep).
      wakeupsPerMiB:
        transport === 'c-ring' && measured.bytes > 0
          ? (measured.consumerNotifies + measured.consumerSleeps) / (measured.bytes / MiB)
          : null,
      consumer: { notifies: measured.consumerNotifies, sleeps: measured.consumerSleeps },
    });
  }

  async streamLatency(transport: StreamTransport): Promise<string> {
    const { latencySize, latencyRing, seconds } = this.plan;
    const ring = transport === 'vchan' ? latencyRing : undefined;
    const [, pinger] = await this.measure(transport, { role: 'pong' }, { role: 'ping', size: latencySize, seconds }, ring);
    const result = pinger.result as LatencyResult;
    return this.latencyRow({
      transport,
      size: latencySize,
      ring: ring ?? null,
      ...result,
      ...(pinger.stats ? { pingStats: pinger.stats } : {}),
    });
  }

  async cRingLatency(transport: 'c-ring' | 'c-ring-spin'): Promise<string> {
    const { latencySize, latencyRing, seconds } = this.plan;
    const measured = await cLatency(this.cBinary!, latencySize, latencyRing, seconds, transport === 'c-ring-spin');
    if (!measured.verified) throw new XenVchanError('EBADMSG', 'the C ring echoed a message that differs from what was sent');
    const { roundTrips, p50Us, p99Us, meanUs, minUs } = measured;
    return this.latencyRow({ transport, size: latencySize, ring: latencyRing, roundTrips, p50Us, p99Us, meanUs, minUs });
  }

  async rpc(transport: 'vchan' | 'unix'): Promise<string> {
    const { seconds, rpcInFlight } = this.plan;
    const [, caller] = await this.measure(
      transport,
      { role: 'rpc-serve' },
      { role: 'rpc-call', seconds: seconds * 2, inFlight: rpcInFlight },
    );
    const result = caller.result as RpcResult;
    this.rows.addRpc({ transport, ...result });
    return `${result.sequential.callsPerSecond.toFixed(0)} calls/s one at a time (median ${result.sequential.p50Us.toFixed(0)} µs), ${result.concurrent.callsPerSecond.toFixed(0)} calls/s with ${rpcInFlight} in flight`;
  }

  /**
   * `streams` streams at once, 64 KiB writes on each for `seconds`: yamux streams over one vchan
   * (1 MiB rings) or as many Unix-socket connections. Every stream's bytes are verified.
   */
  async concurrentThroughput(transport: 'vchan' | 'unix', streams: number, seconds: number): Promise<string> {
    const [sender, receiver] = await this.measure(
      transport,
      { role: 'send', chunk: 65536, seconds },
      { role: 'receive' },
      transport === 'vchan' ? MiB : undefined,
      { streams },
    );
    const sent = (sender.result as LanesResult).lanes as SendResult[];
    const { lanes, seconds: wall } = receiver.result as LanesResult;
    const received = lanes as ReceiveResult[];
    const what = `${streams} streams over ${transport === 'vchan' ? 'one vchan' : 'Unix sockets'}`;
    if (received.length !== streams || sent.length !== streams)
      throw new XenVchanError('EBADMSG', `${what}: ${received.length} streams came back`);
    received.forEach((lane, index) => {
      if (lane.bytes !== sent[index]!.sent)
        throw new XenVchanError('EBADMSG', `${what}: stream ${index} verified ${lane.bytes} bytes of the ${sent[index]!.sent} sent`);
    });
    const bytes = received.reduce((sum, lane) => sum + lane.bytes, 0);
    const shares = received.map((lane) => (bytes > 0 ? lane.bytes / bytes : 0));
    const mibPerSecond = wall > 0 ? bytes / MiB / wall : null;
    this.rows.addConcurrency({
      transport,
      streams,
      mibPerSecond,
      bytes,
      seconds: wall,
      leastShare: Math.min(...shares),
      mostShare: Math.max(...shares),
    });
    return mibPerSecond === null ? 'too short to time' : `${mibPerSecond.toFixed(0)} MiB/s together`;
  }

  /** Round trips of the latency size on one stream while `bulk` others carry 64 KiB writes. */
  async busyLatency(transport: 'vchan' | 'unix', bulk: number, seconds: number): Promise<string> {
    const { latencySize } = this.plan;
    const [ponger, pinger] = await this.measure(
      transport,
      { role: 'pong' },
      { role: 'ping', size: latencySize, seconds },
      transport === 'vchan' ? MiB : undefined,
      { busy: bulk },
    );
    const [latency, ...sent] = (pinger.result as LanesResult).lanes as [LatencyResult, ...SendResult[]];
    const [, ...received] = (ponger.result as LanesResult).lanes as [unknown, ...ReceiveResult[]];
    received.forEach((lane, index) => {
      if (lane.bytes !== sent[index]!.sent)
        throw new XenVchanError(
          'EBADMSG',
          `bulk stream ${index} beside the round trips verified ${lane.bytes} of ${sent[index]!.sent} bytes`,
        );
    });
    const bulkBytes = received.reduce((sum, lane) => sum + lane.bytes, 0);
    const wall = (ponger.result as LanesResult).seconds;
    this.rows.addBusyLatency({
      transport,
      size: latencySize,
      bulkStreams: bulk,
      ...latency,
      bulkMiBPerSecond: wall > 0 ? bulkBytes / MiB / wall : null,
    });
    return `median ${latency.p50Us.toFixed(1)} µs, p99 ${latency.p99Us.toFixed(1)} µs beside ${bulk} bulk streams`;
  }

  private throughputRow(row: MeasuredThroughput): string {
    this.rows.addThroughput(row);
    return row.mibPerSecond === null ? 'too short to time' : `${row.mibPerSecond.toFixed(0)} MiB/s`;
  }

  private latencyRow(row: Omit<LatencyRow, 'vsUnix'>): string {
    this.rows.addLatency(row);
    return `median ${row.p50Us.toFixed(1)} µs, p99 ${row.p99Us.toFixed(1)} µs`;
  }

  /** Plays one measurement between a listener and a connector; returns both outcomes. */
  private async measure(
    transport: StreamTransport,
    listenRole: Role,
    connectRole: Role,
    ring?: number,
    lanes: { streams?: number; busy?: number } = {},
  ): Promise<[RoleOutcome, RoleOutcome]> {
    const { first, second, remote } = this.ends;
    const { backend, serverDomid, clientDomid, listenerDomid, connectorDomid } = this.placement;
    const { maxChunk, seed } = this;
    const key = `m${++this.counter}`;
    const listener = transport === 'vchan' ? (remote ?? first) : first;
    // No name or path for a vchan: the listener publishes under its own vchan area for the
    // client, at a name it picks, and answers with it (a serving domain takes neither from us).
    const listenRequest: ListenRequest = {
      transport,
      key,
      role: listenRole,
      maxChunk,
      seed,
      ...lanes,
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
        ...lanes,
        ...(transport === 'vchan' ? { serverDomid, backend, ...(connectorDomid !== undefined ? { simDomid: connectorDomid } : {}) } : {}),
      };
      return await withTimeout(
        Promise.all([listener.call<RoleOutcome>('result', { key }), second.call<RoleOutcome>('connect', connectRequest)]),
        this.plan.seconds * 4 + 60,
        `the ${transportLabel(transport)} measurement`,
      );
    } finally {
      await listener.call('close', { key }).catch(() => {});
    }
  }
}

/** A throughput row's own fields, from what the receiving end verified and timed. */
function counted(
  transport: Transport,
  chunk: number,
  ring: number | null,
  received: { bytes: number; measuredBytes: number; seconds: number },
) {
  const { bytes, measuredBytes, seconds } = received;
  return { transport, chunk, ring, mibPerSecond: seconds > 0 ? measuredBytes / MiB / seconds : null, bytes, measuredBytes, seconds };
}

export function withTimeout<T>(promise: Promise<T>, seconds: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new XenVchanError('ETIMEDOUT', `${what} took more than ${seconds} s; giving up`)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function sumEvents(...stats: (VchanStats | undefined)[]): number {
  return stats.reduce((sum, entry) => sum + (entry?.eventsSent ?? 0), 0);
}
