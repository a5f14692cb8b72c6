// The simulation's own machinery: its daemon, its state folder, and cleaning up after the dead.
// (What the devices do on the simulation is covered by the conformance suites.)
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SimConnection } from '@xen-vchan/sim';
import { sleep } from '../support/domains.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** Runs a module snippet in a new Node process against the sim folder `directory`. */
function runNode(directory: string, code: string): string {
  return execFileSync(process.execPath, ['--input-type=module', '-e', code], {
    cwd: root,
    env: { ...process.env, XEN_VCHAN_SIM_DIR: directory, XEN_VCHAN_BACKEND: 'sim' },
    encoding: 'utf8',
  });
}

const holdResources = (then: string) => `
  import { openGntalloc } from '@xen-vchan/gntalloc';
  import { openEventChannel } from '@xen-vchan/evtchn';
  import { SimConnection } from '@xen-vchan/sim';
  const g = openGntalloc({ domid: 3 });
  g.share(4, 2);
  openEventChannel({ domid: 3 }).bindUnbound(4);
  console.log(JSON.stringify(SimConnection.open().call('status', {})));
  ${then}
`;

describe('sim daemon', () => {
  let directory: string;

  beforeEach(() => {
    directory = path.join(path.dirname(process.env.XEN_VCHAN_SIM_DIR!), `daemon-${process.pid}-${Math.random().toString(16).slice(2, 8)}`);
  });

  afterEach(() => {
    try {
      runNode(directory, `import { SimConnection } from '@xen-vchan/sim'; SimConnection.open().call('stop', {});`);
    } catch {
      /* already stopped */
    }
    rmSync(directory, { recursive: true, force: true });
  });

  it('keeps its state folder private to the user', async () => {
    // Checked while a process holds pages, a port and a wake-up FIFO, so every kind of file exists.
    const child = spawn(process.execPath, ['--input-type=module', '-e', holdResources('')], {
      cwd: root,
      env: { ...process.env, XEN_VCHAN_SIM_DIR: directory, XEN_VCHAN_BACKEND: 'sim' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise((resolve) => child.stdout!.once('data', resolve));
    try {
      expect(statSync(directory).mode & 0o777).toBe(0o700);
      const entries = readdirSync(directory, { recursive: true, withFileTypes: true });
      expect(entries.map((entry) => entry.name)).toEqual(expect.arrayContaining(['daemon.sock', 'pages', 'ports', 'wake']));
      for (const entry of entries) {
        const mode = statSync(path.join(entry.parentPath, entry.name)).mode;
        expect({ name: entry.name, other: mode & 0o077 }).toEqual({ name: entry.name, other: 0 });
      }
    } finally {
      child.kill('SIGKILL');
      await new Promise((resolve) => child.on('exit', resolve));
    }
  });

  it('reaps a killed process: its grants, ports and files go', async () => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', holdResources('')], {
      cwd: root,
      env: { ...process.env, XEN_VCHAN_SIM_DIR: directory, XEN_VCHAN_BACKEND: 'sim' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const status = await new Promise<{ grants: unknown[]; ports: unknown[] }>((resolve) =>
      child.stdout!.once('data', (line) => resolve(JSON.parse(String(line)))),
    );
    expect(status.grants).toHaveLength(2);
    expect(status.ports).toHaveLength(1);
    expect(readdirSync(path.join(directory, 'pages'))).toHaveLength(1);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('exit', resolve));
    const connection = SimConnection.open(directory);
    let after = connection.call('status', {});
    for (let tries = 0; tries < 20 && after.grants.length > 0; tries++) {
      await sleep(25);
      after = connection.call('status', {});
    }
    expect(after.grants).toEqual([]);
    expect(after.ports).toEqual([]);
    expect(readdirSync(path.join(directory, 'pages'))).toEqual([]);
    expect(readdirSync(path.join(directory, 'wake'))).toEqual([]);
    connection.close();
  });

  it('cleans up after a killed daemon the next time the simulation is used', async () => {
    const first = JSON.parse(
      runNode(directory, holdResources('process.kill(SimConnection.open().call("status", {}).daemonPid, "SIGKILL"); process.exit(0);')),
    );
    expect(first.grants).toHaveLength(2);
    // The daemon died with pages and ports on record; its files are still there.
    await sleep(50);
    expect(readdirSync(path.join(directory, 'pages'))).toHaveLength(1);
    const next = JSON.parse(
      runNode(
        directory,
        `import { SimConnection } from '@xen-vchan/sim'; console.log(JSON.stringify(SimConnection.open().call('status', {})));`,
      ),
    );
    expect(next.daemonPid).not.toBe(first.daemonPid);
    expect(next.grants).toEqual([]);
    expect(readdirSync(path.join(directory, 'pages'))).toEqual([]);
    expect(readdirSync(path.join(directory, 'ports'))).toEqual([]);
  });

  it('starts exactly one daemon when many processes start at once', async () => {
    const script = `import { SimConnection } from '@xen-vchan/sim'; console.log(SimConnection.open().call('status', {}).daemonPid);`;
    const pids = await Promise.all(
      Array.from(
        { length: 6 },
        () =>
          new Promise<string>((resolve, reject) => {
            const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
              cwd: root,
              env: { ...process.env, XEN_VCHAN_SIM_DIR: directory },
              stdio: ['ignore', 'pipe', 'inherit'],
            });
            let out = '';
            child.stdout!.on('data', (chunk) => (out += chunk));
            child.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`exit ${code}`))));
          }),
      ),
    );
    expect(new Set(pids).size).toBe(1);
  });

  it('answers a call on a handle with the reply of its operation, the handle added by the connection', () => {
    const connection = SimConnection.open(directory);
    try {
      const { handle } = connection.call('gntalloc.open', { domid: 3 });
      const shared = connection.callOnHandle('gntalloc.alloc', handle, { domid: 4, count: 2, writable: true });
      expect(shared.refs).toHaveLength(2);
      expect(connection.call('status', {}).grants).toHaveLength(2);
      expect(connection.callOnHandle('gntalloc.release', handle, { allocation: shared.allocation })).toBeNull();
      expect(connection.callOnHandle('close', handle, {})).toBeNull();
      expect(connection.call('status', {}).grants).toEqual([]);
      expect(() => connection.callOnHandle('close', handle, {})).toThrow(expect.objectContaining({ code: 'EBADF' }));
    } finally {
      connection.close();
    }
  });

  it('stops on request and leaves no state behind', () => {
    runNode(directory, holdResources('SimConnection.open().call("stop", {}); process.exit(0);'));
    expect(readdirSync(directory).sort()).toEqual(['daemon.lock', 'daemon.log']);
  });
});
