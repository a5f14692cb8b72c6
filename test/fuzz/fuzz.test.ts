// A short hostile-peer fuzz on every test run; `pnpm fuzz -- --seconds 600` is the long one.
import { expect, it } from 'vitest';
// @ts-expect-error plain JS script shared with `pnpm fuzz`
import { fuzz } from './fuzz.mjs';

it('survives a hostile peer: only EPROTO, prompt closes, nothing left behind', async () => {
  const report = await fuzz({ seconds: 4, seed: 20261125 });
  expect(report.failures).toEqual([]);
  expect(report.iterations).toBeGreaterThan(5);
  expect(Object.keys(report.errors).every((code) => ['EPROTO', 'EPIPE', 'ECONNRESET'].includes(code))).toBe(true);
  expect(report.slowestCloseMs).toBeLessThan(1000);
  expect(report.resources.end).toEqual(report.resources.start);
}, 60_000);
