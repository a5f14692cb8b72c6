/**
 * The chart: one self-contained HTML page of inline SVG (no scripts, no network), with the
 * targets on top, throughput bars per ring size across chunk sizes, round trips and RPC, and the
 * printed table at the bottom.
 */
import { renderTable, targetMark } from './report.js';
import { formatSize, TRANSPORTS, type BenchResults, type Transport } from './results.js';

interface Bar {
  series: Transport;
  value: number | null;
  text: string;
}

interface Group {
  label: string;
  bars: Bar[];
}

const escapeHtml = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const color = (id: Transport) => TRANSPORTS.find((transport) => transport.id === id)?.color ?? '#999';
const label = (id: Transport) => TRANSPORTS.find((transport) => transport.id === id)?.label ?? id;

function compact(value: number): string {
  if (value === 0) return '0';
  if (value >= 1000 && value % 1000 === 0) return `${value / 1000}k`;
  if (Number.isInteger(value) && value < 1000) return String(value);
  if (value >= 10000) return `${(value / 1000).toFixed(0)}k`;
  if (value >= 1000) return `${(value / 1000).toFixed(1)}k`;
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

/** A grouped bar chart; log scale for values spanning decades. */
function barChart(title: string, unit: string, groups: Group[], series: Transport[], log: boolean): string {
  const width = 860;
  const height = 330;
  const margin = { left: 70, right: 16, top: 56, bottom: 44 };
  const plotWidth = width - margin.left - margin.right;
  const plotHeight = height - margin.top - margin.bottom;
  const values = groups
    .flatMap((group) => group.bars.map((bar) => bar.value))
    .filter((value): value is number => value !== null && value > 0);
  if (values.length === 0) return '';
  let low: number;
  let high: number;
  if (log) {
    low = 10 ** Math.floor(Math.log10(Math.min(...values)));
    high = 10 ** Math.ceil(Math.log10(Math.max(...values)));
    if (high === low) high = low * 10;
  } else {
    low = 0;
    const top = Math.max(...values);
    const step = 10 ** Math.floor(Math.log10(top));
    high = Math.ceil(top / step) * step;
  }
  const y = (value: number) =>
    margin.top +
    plotHeight -
    (log ? (Math.log10(value) - Math.log10(low)) / (Math.log10(high) - Math.log10(low)) : (value - low) / (high - low)) * plotHeight;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="${escapeHtml(title)}">`,
  );
  parts.push(`<text x="${margin.left}" y="20" class="title">${escapeHtml(title)}</text>`);
  // Legend.
  let legendX = margin.left;
  for (const id of series) {
    parts.push(
      `<rect x="${legendX}" y="32" width="12" height="12" fill="${color(id)}"/><text x="${legendX + 16}" y="42" class="legend">${escapeHtml(label(id))}</text>`,
    );
    legendX += 28 + label(id).length * 7;
  }
  // Grid and axis.
  const ticks: number[] = [];
  if (log) {
    for (let tick = low; tick <= high * 1.0001; tick *= 10) ticks.push(tick);
  } else {
    const step = (high - low) / 5;
    for (let i = 0; i <= 5; i++) ticks.push(low + step * i);
  }
  for (const tick of ticks) {
    const ty = y(tick).toFixed(1);
    parts.push(`<line x1="${margin.left}" x2="${width - margin.right}" y1="${ty}" y2="${ty}" class="grid"/>`);
    parts.push(`<text x="${margin.left - 6}" y="${ty}" class="tick" text-anchor="end" dominant-baseline="middle">${compact(tick)}</text>`);
    if (log) {
      for (const minor of [2, 5]) {
        if (tick * minor < high) {
          const my = y(tick * minor).toFixed(1);
          parts.push(`<line x1="${margin.left}" x2="${width - margin.right}" y1="${my}" y2="${my}" class="minor"/>`);
        }
      }
    }
  }
  parts.push(
    `<text x="16" y="${margin.top + plotHeight / 2}" class="unit" transform="rotate(-90 16 ${margin.top + plotHeight / 2})" text-anchor="middle">${escapeHtml(unit)}${log ? ' (log)' : ''}</text>`,
  );
  // Bars.
  const groupWidth = plotWidth / groups.length;
  const barWidth = Math.min(48, (groupWidth * 0.82) / series.length);
  groups.forEach((group, index) => {
    const groupLeft = margin.left + index * groupWidth + (groupWidth - barWidth * series.length) / 2;
    parts.push(
      `<text x="${(margin.left + index * groupWidth + groupWidth / 2).toFixed(1)}" y="${height - margin.bottom + 18}" class="group" text-anchor="middle">${escapeHtml(group.label)}</text>`,
    );
    series.forEach((id, position) => {
      const bar = group.bars.find((candidate) => candidate.series === id);
      if (!bar || bar.value === null || bar.value <= 0) return;
      const x = groupLeft + position * barWidth;
      const top = Math.min(y(bar.value), margin.top + plotHeight - 1);
      const barHeight = margin.top + plotHeight - top;
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${top.toFixed(1)}" width="${(barWidth - 2).toFixed(1)}" height="${barHeight.toFixed(1)}" fill="${color(id)}"><title>${escapeHtml(`${label(id)}, ${group.label}: ${bar.text}`)}</title></rect>`,
      );
      parts.push(
        `<text x="${(x + (barWidth - 2) / 2).toFixed(1)}" y="${(top - 3).toFixed(1)}" class="value" text-anchor="middle">${compact(bar.value)}</text>`,
      );
    });
  });
  parts.push(
    `<line x1="${margin.left}" x2="${width - margin.right}" y1="${margin.top + plotHeight}" y2="${margin.top + plotHeight}" class="axis"/>`,
  );
  parts.push('</svg>');
  return parts.join('\n');
}

export function renderChart(results: BenchResults): string {
  const sections: string[] = [];
  const present = (ids: Transport[]) => ids.filter((id) => results.transports.includes(id));

  const throughputSeries = present(['vchan', 'vchan-views', 'c-ring', 'c-ring-spin', 'unix', 'tcp']);
  for (const ring of results.setup.rings) {
    const groups: Group[] = results.setup.chunks.map((chunk) => ({
      label: `${formatSize(chunk)} writes`,
      bars: throughputSeries.map((series) => {
        const row = results.throughput.find(
          (candidate) =>
            candidate.transport === series &&
            candidate.chunk === chunk &&
            candidate.ring === (series === 'unix' || series === 'tcp' ? null : ring),
        );
        return {
          series,
          value: row?.mibPerSecond ?? null,
          text: row?.mibPerSecond != null ? `${row.mibPerSecond.toFixed(0)} MiB/s` : 'not measured',
        };
      }),
    }));
    sections.push(
      barChart(
        `Throughput over ${formatSize(ring)} rings (sockets have no ring: the same bars in every chart)`,
        'MiB/s received',
        groups,
        throughputSeries,
        true,
      ),
    );
  }

  const latencySeries = present(['vchan', 'c-ring', 'c-ring-spin', 'unix', 'tcp']);
  const latencyGroups: Group[] = (['p50Us', 'p99Us'] as const).map((key) => ({
    label: key === 'p50Us' ? 'median' : '99th percentile',
    bars: latencySeries.map((series) => {
      const row = results.latency.find((candidate) => candidate.transport === series);
      return { series, value: row ? row[key] : null, text: row ? `${row[key].toFixed(2)} µs` : 'not measured' };
    }),
  }));
  sections.push(
    barChart(`Round trip of a ${results.setup.latencySize}-byte message (lower is better)`, 'µs', latencyGroups, latencySeries, true),
  );

  const rpcSeries = present(['vchan', 'unix']);
  if (results.rpc.length > 0) {
    const rpcGroups: Group[] = (['sequential', 'concurrent'] as const).map((key) => ({
      label: key === 'sequential' ? 'one call at a time' : `${results.setup.rpcInFlight} calls in flight`,
      bars: rpcSeries.map((series) => {
        const row = results.rpc.find((candidate) => candidate.transport === series);
        return {
          series,
          value: row ? row[key].callsPerSecond : null,
          text: row ? `${row[key].callsPerSecond.toFixed(0)} calls/s, median ${row[key].p50Us.toFixed(0)} µs` : 'not measured',
        };
      }),
    }));
    sections.push(barChart('RPC (RpcPeer, JSON codec) calls per second', 'calls/s', rpcGroups, rpcSeries, false));
  }

  const targets = results.targets
    .map(
      (target) =>
        `<li><span class="mark ${target.pass === null ? 'na' : target.pass ? 'pass' : 'miss'}">${targetMark(target).trim()}</span> ${escapeHtml(target.description)}: <b>${target.ratio === null ? '-' : `${target.ratio.toFixed(2)}x`}</b> (goal ${escapeHtml(target.goal)}; ${escapeHtml(target.detail)})</li>`,
    )
    .join('\n');

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>vchan bench ${escapeHtml(results.startedAt)}</title>
<style>
  body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 900px; color: #111; padding: 0 12px; }
  h1 { font-size: 20px; margin-bottom: 4px; }
  .meta { color: #555; margin: 2px 0; }
  ul.targets { list-style: none; padding: 0; }
  .mark { display: inline-block; width: 44px; text-align: center; border-radius: 4px; color: #fff; font-weight: 600; font-size: 12px; }
  .pass { background: #16a34a; } .miss { background: #dc2626; } .na { background: #9ca3af; }
  svg { display: block; margin: 18px 0; max-width: 100%; height: auto; }
  svg .title { font-weight: 600; font-size: 14px; }
  svg .legend, svg .group { font-size: 12px; }
  svg .tick, svg .unit { font-size: 11px; fill: #555; }
  svg .value { font-size: 9px; fill: #333; }
  svg .grid { stroke: #ccc; stroke-width: 1; }
  svg .minor { stroke: #eee; stroke-width: 1; }
  svg .axis { stroke: #333; stroke-width: 1; }
  pre { background: #f6f8fa; padding: 12px; overflow-x: auto; font-size: 12px; }
</style>
</head>
<body>
<h1>vchan bench</h1>
<p class="meta">${escapeHtml(results.setup.description)}</p>
<p class="meta">${escapeHtml(`${results.machine.cpus} CPUs (${results.machine.cpuModel}), ${results.machine.platform} ${results.machine.kernel}, Node ${results.machine.node}`)}</p>
<p class="meta">${escapeHtml(`${results.startedAt}; ${results.setup.secondsPerMeasurement} s per measurement${results.setup.repeat > 1 ? `, throughput the median of ${results.setup.repeat}` : ''}; wall time ${results.wallSeconds.toFixed(1)} s`)}</p>
${results.setup.cRingLeftOut ? `<p class="meta">C ring left out: ${escapeHtml(results.setup.cRingLeftOut)}</p>\n` : ''}<p>Throughput counts bytes received and checked against what was sent, on the receiver's clock. Hover over a bar for its value.</p>
<h2>Targets</h2>
<ul class="targets">
${targets}
</ul>
${sections.join('\n')}
<h2>Table</h2>
<pre>${escapeHtml(renderTable(results))}</pre>
</body>
</html>
`;
}
