import { defineConfig } from 'vitest/config';

// `pnpm test`: everything that runs without Xen, on the simulation. The real-Xen run uses
// test/xen/vitest.xen.config.ts with the same conformance suites. The install test packs and
// installs every package; it runs after the rest (a later groupOrder) so that its compiling
// does not load the machine under the timing-bound tests.
export default defineConfig({
  test: {
    setupFiles: ['test/support/setup.ts'],
    pool: 'forks',
    // The packages run as Node loads them for a user, not through Vite: a backend loaded on first
    // use with require() (lazyModule) must meet the same module instances the tests import.
    server: { deps: { external: [/\/packages\/[^/]+\/dist\//] } },
    testTimeout: 20_000,
    hookTimeout: 20_000,
    env: { XEN_VCHAN_BACKEND: process.env.XEN_VCHAN_BACKEND ?? 'sim' },
    projects: [
      {
        extends: true,
        test: {
          name: 'sim',
          include: ['test/**/*.test.ts', 'packages/*/test/**/*.test.ts'],
          exclude: ['test/xen/**', 'test/install/**', '**/node_modules/**'],
        },
      },
      {
        extends: true,
        test: {
          name: 'install',
          include: ['test/install/**/*.test.ts'],
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
