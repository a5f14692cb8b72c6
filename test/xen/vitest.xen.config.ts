// Vitest config for the suites that run inside a real Xen dom0 (see test/xen/run.sh).
// Everything there runs under QEMU's TCG emulation, roughly ten times slower than the host, so
// timeouts are generous and files run one after another in a single forked worker.
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export default defineConfig({
  root: projectRoot,
  // dom0's /tmp is a tmpfs; keep Vite's cache off the 9p-shared project tree.
  cacheDir: join(tmpdir(), 'xen-vchan-vitest'),
  test: {
    include: ['test/conformance/**/*.test.ts', 'test/xen/**/*.test.ts'],
    reporters: ['verbose'],
    pool: 'forks',
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
    watch: false,
  },
});
