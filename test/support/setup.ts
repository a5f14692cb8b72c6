// Each test file gets its own simulation folder, so its leak check sees only its own leftovers.
import { randomUUID } from 'node:crypto';
import { readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect } from 'vitest';
import { backend } from './domains.js';

if (backend === 'sim') {
  const directory = path.join('/dev/shm', `xen-vchan-test-${os.userInfo().uid}`, randomUUID().slice(0, 8));
  process.env.XEN_VCHAN_SIM_DIR = directory;

  afterAll(async () => {
    const { SimConnection } = await import('@xen-vchan/sim');
    const connection = SimConnection.open(directory);
    // A killed peer's connection may still be in the daemon's queue; give the reaping a moment.
    // A killed peer may hold a handle with no grant or port left, so its handles count too.
    const leftovers = (current: typeof status) =>
      current.grants.length > 0 || current.ports.length > 0 || current.clients.some((client) => client.handles > 0);
    let status = connection.call('status', {});
    for (let tries = 0; tries < 40 && leftovers(status); tries++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      status = connection.call('status', {});
    }
    // Nothing may outlive the tests: every grant, port and handle was released or reaped.
    expect(status.grants).toEqual([]);
    expect(status.ports).toEqual([]);
    expect(status.clients.filter((client) => client.handles > 0)).toEqual([]);
    expect(readdirSync(path.join(directory, 'pages'))).toEqual([]);
    expect(readdirSync(path.join(directory, 'wake'))).toEqual([]);
    connection.call('stop', {});
    connection.close();
    rmSync(directory, { recursive: true, force: true });
  });
}
