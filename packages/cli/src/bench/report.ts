/** The table `vchan bench` prints at the end. */
import { formatSize, pipelineLabel, transportLabel, type BenchResults, type Target, type Transport } from './results.js';

const ORDER: Transport[] = ['vchan', 'vchan-views', 'c-ring', 'c-ring-spin', 'unix', 'tcp'];

function table(header: string[], rows: string[][], rightAligned: (column: number) => boolean): string {
  const widths = header.map((cell, column) => Math.max(cell.length, ...rows.map((row) => (row[column] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (rightAligned(column) ? cell.padStart(widths[column]!) : cell.padEnd(widths[column]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map((row) => (row.length === 0 ? '' : line(row)))].join('\n');
}

/** A section whose rows compare one vchan's yamux streams with as many Unix sockets; nothing when there are no rows. */
function muxSection<Row extends { transport: string }>(
  out: string[],
  title: string,
  header: string[],
  rows: readonly Row[],
  cells: (row: Row) => string[],
): void {
  if (rows.length === 0) return;
  out.push(title);
  const label = (row: Row) => (row.transport === 'vchan' ? 'vchan (mux)' : 'unix sockets');
  out.push(
    table(
      header,
      rows.map((row) => [label(row), ...cells(row)]),
      (column) => column >= 1,
    ),
  );
  out.push('');
}

const ratio = (value: number | null) => (value === null ? '-' : `${value.toFixed(2)}x`);
const number = (value: number | null | undefined, digits = 0) =>
  value === null || value === undefined || !Number.isFinite(value) ? '-' : value.toFixed(digits);
const micro = (value: number) => (value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0));

export function targetMark(target: Target): string {
  return target.pass === null ? 'n/a ' : target.pass ? 'PASS' : 'MISS';
}

export function renderTable(results: BenchResults): string {
  const out: string[] = [];
  const { machine, setup } = results;
  out.push(`vchan bench: ${setup.description}`);
  out.push(
    `machine: ${machine.cpus} CPUs (${machine.cpuModel}), ${machine.platform} ${machine.kernel}, Node ${machine.node}; ${setup.secondsPerMeasurement} s per measurement${setup.repeat > 1 ? `, throughput the median of ${setup.repeat}` : ''}`,
  );
  if (setup.cCompiler) out.push(`C ring: ${setup.cCompiler}`);
  if (setup.cRingLeftOut) out.push(`C ring: left out: ${setup.cRingLeftOut}`);
  out.push('');

  out.push("Throughput: MiB/s of bytes received and verified, on the receiver's clock");
  out.push('  vs unix: over Node on a Unix socket, same chunk; vs C ring: over the C ring (eventfd), same chunk and ring');
  out.push('  wake-ups/MiB: events (vchan) or eventfd writes and sleeps (C ring) per MiB, both sides');
  const repeated = results.throughput.filter((row) => (row.samples?.length ?? 0) > 1);
  if (repeated.length > 0 && setup.repeat < Math.max(...repeated.map((row) => row.samples!.length))) {
    out.push('  *: measured several times, taking turns with the others; the median is shown (all of them in the JSON)');
  }
  const rows: string[][] = [];
  for (const chunk of setup.chunks) {
    const group = results.throughput
      .filter((row) => row.chunk === chunk)
      .sort((a, b) => (a.ring ?? Infinity) - (b.ring ?? Infinity) || ORDER.indexOf(a.transport) - ORDER.indexOf(b.transport));
    if (group.length === 0) continue;
    if (rows.length > 0) rows.push([]);
    for (const row of group) {
      rows.push([
        `${transportLabel(row.transport)}${(row.samples?.length ?? 0) > setup.repeat ? ' *' : ''}`,
        formatSize(row.chunk),
        row.ring === null ? '-' : formatSize(row.ring),
        number(row.mibPerSecond),
        row.transport === 'unix' ? '' : ratio(row.vsUnix),
        row.transport === 'c-ring' ? '' : ratio(row.vsCRing),
        number(row.wakeupsPerMiB, row.wakeupsPerMiB !== null && row.wakeupsPerMiB < 10 ? 2 : 0),
      ]);
    }
  }
  out.push(table(['transport', 'chunk', 'ring', 'MiB/s', 'vs unix', 'vs C ring', 'wake-ups/MiB'], rows, (column) => column >= 3));
  out.push('');

  out.push(`Round trip of a ${setup.latencySize}-byte message, one in flight (µs)`);
  out.push(
    table(
      ['transport', 'ring', 'median', 'p99', 'mean', 'round trips', 'vs unix'],
      [...results.latency]
        .sort((a, b) => ORDER.indexOf(a.transport) - ORDER.indexOf(b.transport))
        .map((row) => [
          transportLabel(row.transport),
          row.ring === null ? '-' : formatSize(row.ring),
          micro(row.p50Us),
          micro(row.p99Us),
          micro(row.meanUs),
          String(row.roundTrips),
          row.transport === 'unix' ? '' : ratio(row.vsUnix),
        ]),
      (column) => column >= 2,
    ),
  );
  out.push('');

  if (results.rpc.length > 0) {
    out.push(`RPC: RpcPeer calls of echo({ n, text }) with the JSON codec; one at a time, then ${setup.rpcInFlight} in flight`);
    out.push(
      table(
        [
          'transport',
          'calls/s',
          'median µs',
          'p99 µs',
          `calls/s (${setup.rpcInFlight})`,
          `median µs (${setup.rpcInFlight})`,
          `p99 µs (${setup.rpcInFlight})`,
        ],
        results.rpc.map((row) => [
          transportLabel(row.transport),
          number(row.sequential.callsPerSecond),
          micro(row.sequential.p50Us),
          micro(row.sequential.p99Us),
          number(row.concurrent.callsPerSecond),
          micro(row.concurrent.p50Us),
          micro(row.concurrent.p99Us),
        ]),
        (column) => column >= 1,
      ),
    );
    const [vchan, unix] = [results.rpc.find((row) => row.transport === 'vchan'), results.rpc.find((row) => row.transport === 'unix')];
    if (vchan && unix) {
      out.push(
        `  vchan vs unix: ${ratio(vchan.sequential.callsPerSecond / unix.sequential.callsPerSecond)} calls/s one at a time, ${ratio(vchan.concurrent.callsPerSecond / unix.concurrent.callsPerSecond)} with ${setup.rpcInFlight} in flight`,
      );
    }
    out.push('');
  }

  muxSection(
    out,
    'Concurrency: streams at once, 64 KiB writes each; one vchan (1 MiB rings) carrying yamux streams vs as many Unix sockets',
    ['transport', 'streams', 'MiB/s together', 'vs unix', 'least share', 'most share'],
    results.concurrency ?? [],
    (row) => [
      String(row.streams),
      number(row.mibPerSecond),
      row.transport === 'vchan' ? ratio(row.vsUnix) : '',
      `${(row.leastShare * 100).toFixed(1)}%`,
      `${(row.mostShare * 100).toFixed(1)}%`,
    ],
  );
  const busy = results.busyLatency ?? [];
  muxSection(
    out,
    `Round trips on an idle stream beside bulk streams (${busy[0]?.size}-byte messages)`,
    ['transport', 'bulk streams', 'median µs', 'p99 µs', 'round trips', 'bulk MiB/s'],
    busy,
    (row) => [String(row.bulkStreams), micro(row.p50Us), micro(row.p99Us), String(row.roundTrips), number(row.bulkMiBPerSecond)],
  );

  const pipeline = results.pipeline ?? [];
  if (pipeline.length > 0 || setup.pipelineLeftOut) {
    out.push(
      `CLI pipeline: a ${formatSize(setup.pipelineBytes ?? 0)} file from one process's stdin to the other's stdout (/dev/null); MiB/s = bytes / wall time from the first spawn until both exited (median of ${pipeline[0]?.samples.length ?? 0})`,
    );
    if (setup.pipelineVerifyBytes)
      out.push(`  each first sent ${formatSize(setup.pipelineVerifyBytes)} into a file, compared with the input (size and SHA-256)`);
    for (const note of setup.pipelineLeftOut ?? []) out.push(`  left out: ${note}`);
    if (pipeline.length > 0) {
      out.push(
        table(
          ['pipeline', 'MiB/s', 'seconds', 'vs unix', 'rounds (MiB/s)'],
          pipeline.map((row) => [
            pipelineLabel(row.transport),
            number(row.mibPerSecond),
            row.seconds.toFixed(2),
            row.transport === 'unix' ? '' : ratio(row.vsUnix),
            row.samples.map((sample) => sample.toFixed(0)).join(' '),
          ]),
          (column) => column >= 1 && column <= 3,
        ),
      );
    }
    out.push('');
  }

  out.push('Targets (this run only)');
  for (const target of results.targets) {
    out.push(`  ${targetMark(target)}  ${target.description}: ${ratio(target.ratio)} (goal ${target.goal}; ${target.detail})`);
  }
  const focus = results.throughput.find((row) => row.transport === 'vchan' && row.chunk === 65536 && row.ring === 1 << 20);
  if (focus?.senderStats && focus.receiverStats) {
    const s = focus.senderStats;
    const r = focus.receiverStats;
    out.push(
      `  vchan 64 KiB / 1 MiB counters: sender ${s.eventsSent} events sent, ${s.eventsReceived} received, ${s.writeStalls} waits on a full ring; receiver ${r.eventsSent} sent, ${r.eventsReceived} received, ${r.readStalls} waits on an empty ring`,
    );
  }
  return out.join('\n');
}
