// A short hostile-peer fuzz of every part on every test run; `pnpm fuzz -- --seconds 600` is the long one.
import { expect, it } from 'vitest';
import { fuzz } from './fuzz.mjs';

interface PartReport {
  iterations: number;
  errors: Record<string, number>;
  slowestCloseMs: number;
  failures: string[];
  resources: { start: unknown; end: unknown };
}

it('survives a hostile peer in every part: allowed errors only, prompt closes, nothing left behind', async () => {
  const report = await fuzz({ seconds: 12, seed: 20261125 });
  expect(report.failures).toEqual([]);
  const parts = report.parts as Record<string, PartReport>;
  expect(Object.keys(parts)).toEqual(['ring', 'waiting', 'close', 'framing', 'daemon', 'mux']);
  for (const [name, part] of Object.entries(parts)) {
    expect(part.iterations, name).toBeGreaterThan(1);
    expect(part.slowestCloseMs, name).toBeLessThan(1000);
  }
  // Grants and ports back to where they were (the framing part checks its own streams and handles,
  // where timers and closing handles come and go, and reports leftovers as failures).
  for (const name of ['ring', 'waiting', 'close', 'daemon']) expect(parts[name]!.resources.end, name).toEqual(parts[name]!.resources.start);
  // The vchan parts may only ever fail a channel with these; the framing, daemon and mux parts
  // check their own lists of codes and report anything else as a failure.
  for (const name of ['ring', 'waiting', 'close']) {
    expect(
      Object.keys(parts[name]!.errors).every((code) => ['EPROTO', 'EPIPE', 'ECONNRESET'].includes(code)),
      name,
    ).toBe(true);
  }
}, 90_000);
