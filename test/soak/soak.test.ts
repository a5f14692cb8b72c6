// A short soak on every test run: connect-transfer-close cycles leave nothing behind.
import { expect, it } from 'vitest';
import { soak } from './soak.mjs';

it('runs connect-transfer-close cycles without leaking fds, grants, ports or memory', async () => {
  const result = await soak({ cycles: 150, seed: 7 });
  expect(result.end.fds).toBeLessThanOrEqual(result.start.fds);
  expect(result.end.grants).toBe(result.start.grants);
  expect(result.end.ports).toBe(result.start.ports);
  expect(result.end.handles).toBe(result.start.handles);
  expect(result.growth.heapMiB).toBeLessThan(8);
  expect(result.flat).toBe(true);
}, 120_000);
