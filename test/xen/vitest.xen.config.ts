// Vitest config for the suites that run inside a real Xen dom0 (see test/xen/run.sh).
// Everything there runs under QEMU's TCG emulation, roughly ten times slower than the host, so
// timeouts are generous and files run one after another in a single forked worker.
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
// The same per-file setup as the host run (it adapts itself to the backend).
const sharedSetup = 'test/support/setup.ts';

export default defineConfig({
  root: projectRoot,
  // dom0's /tmp is a tmpfs; keep Vite's cache off the 9p-shared project tree.
  cacheDir: join(tmpdir(), 'xen-vchan-vitest'),
  test: {
    // The device conformance suites and the vchan suite (both written against the public API,
    // backend-agnostic), then the harness's own tests (smoke, interop with libxenvchan).
    // XEN_VCHAN_EXPERIMENTS=1 adds the experiments (test/xen/experiments/*.experiment.ts), which
    // measure rather than test and are not part of CI; run one with its file name as the filter.
    include: [
      'test/conformance/**/*.test.ts',
      'test/vchan/**/*.test.ts',
      'test/xen/**/*.test.ts',
      ...(process.env.XEN_VCHAN_EXPERIMENTS === '1' ? ['test/xen/experiments/**/*.experiment.ts'] : []),
    ],
    setupFiles: existsSync(join(projectRoot, sharedSetup)) ? [sharedSetup] : [],
    env: { XEN_VCHAN_BACKEND: process.env.XEN_VCHAN_BACKEND ?? 'xen' },
    reporters: ['verbose'],
    pool: 'forks',
    // The packages run as Node loads them for a user, not through Vite: a backend loaded on first
    // use with require() (lazyModule) must meet the same module instances the tests import.
    server: { deps: { external: [/\/packages\/[^/]+\/dist\//] } },
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
    watch: false,
  },
});
