// The simulation is a test double and a default for machines without Xen: a process on the xen
// backend must not load it, neither @xen-vchan/sim's JavaScript nor its addon, and so never
// needs it built. Each case runs a fresh process (test/support/loaded-modules.mjs) that imports
// the whole public API and opens every device and XenStore, then reports what it holds.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { SimConnection } from '@xen-vchan/sim';
import { backend } from '../support/domains.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const script = fileURLToPath(new URL('../support/loaded-modules.mjs', import.meta.url));
const run = promisify(execFile);

interface LoadedModules {
  outcomes: Record<string, string>;
  backends: Record<string, string>;
  scripts: string[];
  addons: string[];
}

/** Runs the script with `env` over this process's environment; an undefined value removes the variable. */
async function loadedModules(env: Record<string, string | undefined>): Promise<LoadedModules> {
  const merged: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete merged[name];
  const { stdout } = await run(process.execPath, [script], { cwd: root, env: merged });
  return JSON.parse(stdout) as LoadedModules;
}

/** A simulation folder of the test's own, stopped and removed afterwards on either backend. */
async function withSimDirectory(body: (directory: string) => Promise<void>): Promise<void> {
  const directory = path.join('/dev/shm', `xen-vchan-test-${os.userInfo().uid}`, randomUUID().slice(0, 8));
  try {
    await body(directory);
  } finally {
    // No folder: nothing started a daemon there (auto chose Xen).
    if (existsSync(directory)) {
      const sim = SimConnection.open(directory);
      sim.call('stop', {});
      sim.close();
    }
    rmSync(directory, { recursive: true, force: true });
  }
}

const fromSim = (report: LoadedModules) => report.scripts.filter((file) => file.startsWith('sim/'));

describe('loading the simulation', () => {
  it('loads nothing of @xen-vchan/sim with backend xen, while every device opens or fails as Xen says', async () => {
    const report = await loadedModules({ XEN_VCHAN_BACKEND: 'xen' });
    // Outside Xen there is no /dev/xen: each open fails as it always did, naming the device.
    const expected = backend === 'xen' ? 'opened' : 'ENOENT';
    expect(report.outcomes).toEqual({ gntalloc: expected, gntdev: expected, evtchn: expected, xenstore: expected });
    expect(fromSim(report)).toEqual([]);
    expect(report.scripts).not.toContain('gntalloc/sim.js');
    expect(report.scripts).not.toContain('xenstore/transports/sim.js');
    expect(report.addons).not.toContain('xen_vchan_sim.node');
    // The report does see what was loaded: the Xen addons and the packages' own modules.
    expect(report.addons).toEqual(expect.arrayContaining(['xen_gntalloc.node', 'xen_gntdev.node', 'xen_evtchn.node']));
    expect(report.scripts).toEqual(expect.arrayContaining(['vchan/index.js', 'xenstore/index.js', 'native/xenstore/wire.js']));
  });

  it('loads the simulation, JavaScript and addon, once the sim backend is chosen', async () => {
    await withSimDirectory(async (directory) => {
      const report = await loadedModules({ XEN_VCHAN_BACKEND: 'sim', XEN_VCHAN_SIM_DIR: directory });
      expect(report.outcomes).toEqual({ gntalloc: 'opened', gntdev: 'opened', evtchn: 'opened', xenstore: 'opened' });
      expect(fromSim(report)).toEqual(expect.arrayContaining(['sim/index.js', 'sim/addon.js']));
      expect(report.scripts).toEqual(
        expect.arrayContaining(['gntalloc/sim.js', 'gntdev/sim.js', 'evtchn/sim.js', 'xenstore/transports/sim.js']),
      );
      expect(report.addons).toContain('xen_vchan_sim.node');
    });
  });

  it('takes one backend for every device of a process by default (auto: Xen exactly when /dev/xen exists)', async () => {
    // Deciding per device once paired a simulated gntalloc with the real XenStore in a guest that
    // lacked one module; the guest side of that is in test/xen/two-guests.test.ts.
    await withSimDirectory(async (directory) => {
      const report = await loadedModules({ XEN_VCHAN_BACKEND: undefined, XEN_VCHAN_SIM_DIR: directory });
      expect(report.outcomes).toEqual({ gntalloc: 'opened', gntdev: 'opened', evtchn: 'opened', xenstore: 'opened' });
      const devices = existsSync('/dev/xen') ? 'xen' : 'sim';
      expect(devices).toBe(backend);
      expect(report.backends).toEqual({
        gntalloc: devices,
        gntdev: devices,
        evtchn: devices,
        xenstore: devices === 'sim' ? 'sim' : expect.stringMatching(/^(socket|xenbus)$/),
      });
      expect(fromSim(report).length > 0).toBe(devices === 'sim');
    });
  });

  it('says which Node to use when this one cannot require() an ES module', async () => {
    const code = `
      import { openGntalloc } from '@xen-vchan/gntalloc';
      try { openGntalloc({ backend: 'sim' }); } catch (error) { console.log(JSON.stringify({ code: error.code, message: error.message })); }`;
    const { stdout } = await run(process.execPath, ['--no-experimental-require-module', '--input-type=module', '-e', code], { cwd: root });
    const error = JSON.parse(stdout) as { code: string; message: string };
    expect(error.code).toBe('ERR_REQUIRE_ESM');
    expect(error.message).toMatch(/simulated gntalloc .*Node 20\.19 or later/);
  });
});
