// The peer's whole domain is destroyed mid-stream, on the simulation: the same scripts and the same
// checks as the two-guest tests under real Xen (test/xen/guests.test.ts), with destroySimDomain in
// place of `xl destroy`. Each end is its own process acting as its domain, as a guest would be.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { destroySimDomain, simFiles, SimConnection } from '@xen-vchan/sim';
import { openXenStore } from '@xen-vchan/xenstore';
import { connect, createServer, presencePath, type Vchan } from '@xen-vchan/vchan';
import type { XenVchanError } from '@xen-vchan/native';
import { resultOf, type BothWays, type ScriptEnd, type Survived } from '../support/script-results.js';

const root = path.resolve(import.meta.dirname, '../..');
const NOTICE_WITHIN_MS = 2000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const children: { kill: () => void }[] = [];

/** Runs a test/xen/domains script as domain `domid`; `done` resolves when it exits. */
function runAs(domid: number, script: string, args: string[]): { done: Promise<ScriptEnd> } {
  const child = spawn(process.execPath, [path.join(root, 'test/xen/domains', script), ...args], {
    env: { ...process.env, XEN_VCHAN_SIM_DOMID: String(domid), SURVIVOR_SIM_PAGES: simFiles(process.env.XEN_VCHAN_SIM_DIR!).pages },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  children.push({ kill: () => child.kill('SIGKILL') });
  return { done: new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, output }))) };
}

async function until(what: string, check: () => Promise<boolean>, timeout: number): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

afterEach(() => {
  for (const child of children.splice(0)) child.kill();
});

describe('two unprivileged domains (simulation)', () => {
  it('a checksummed stream runs both ways at once over 1 MiB rings', { timeout: 60_000 }, async () => {
    const bytes = String(16 * 2 ** 20);
    const server = runAs(1, 'both-ways.mjs', ['server', '--peer', '2', '--name', 'both-ways', '--bytes', bytes, '--seed', '11']);
    const client = runAs(2, 'both-ways.mjs', ['client', '--peer', '1', '--name', 'both-ways', '--bytes', bytes, '--seed', '12']);
    const [fromServer, fromClient] = await Promise.all([
      server.done.then((ended) => resultOf<BothWays>(ended, 'the server')),
      client.done.then((ended) => resultOf<BothWays>(ended, 'the client')),
    ]);
    expect(fromServer.sent.bytes).toBe(16 * 2 ** 20);
    expect(fromClient.received).toEqual(fromServer.sent);
    expect(fromServer.received).toEqual(fromClient.sent);
    expect(fromServer.sent.sha256).not.toBe(fromClient.sent.sha256);
    // The client removed its presence node when it closed.
    const xenstore = await openXenStore({ domid: 0 });
    try {
      await expect(xenstore.read(presencePath(2, 1, '/local/domain/1/data/vchan/2/both-ways'))).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      xenstore.close();
    }
  });
});

describe('the peer domain is destroyed mid-stream (simulation)', () => {
  const cases = [
    // Unprivileged survivors: the grant-copy check (client); the presence node alone (server, its
    // checks off), and the checks alone (a client that wrote no presence node, as libxenvchan's).
    { survivorRole: 'client', survivor: 2, announced: true, checks: true },
    { survivorRole: 'server', survivor: 2, announced: true, checks: false },
    { survivorRole: 'server', survivor: 2, announced: false, checks: true },
    // dom0 survivors: xenstored's @releaseDomain (dom0 does not check).
    { survivorRole: 'client', survivor: 0, announced: true, checks: true },
    { survivorRole: 'server', survivor: 0, announced: true, checks: true },
  ] as const;
  for (const { survivorRole, survivor, announced, checks } of cases) {
    const victimRole = survivorRole === 'client' ? 'server' : 'client';
    const who = survivor === 0 ? 'dom0' : 'an unprivileged domain';
    const how = !announced ? ' (a client without a presence node)' : checks ? '' : ' (no checks: the presence node alone)';
    const title = `${who} as the ${survivorRole} fails with ECONNRESET within 2 s when the ${victimRole}'s domain is destroyed, and keeps nothing${how}`;
    it(title, { timeout: 60_000 }, async () => {
      const victim = 1;
      const name = `death-${survivorRole}-${survivor}${announced ? '' : '-silent'}${checks ? '' : '-unchecked'}`;
      const xenstore = await openXenStore({ domid: 0 });
      if (!announced) {
        // dom0 takes the place where the client would announce itself; its write is refused. (The
        // domain's home must exist first, made as a toolstack would: by the domain's first connection.)
        const asVictim = await openXenStore({ domid: victim });
        await asVictim.ownDomid();
        asVictim.close();
        await xenstore.write(`/local/domain/${victim}/data/vchan-client`, '');
        await xenstore.setPermissions(`/local/domain/${victim}/data/vchan-client`, [{ domid: 0, access: 'none' }]);
      }
      const surviving = runAs(survivor, 'survivor.mjs', [
        survivorRole,
        '--peer',
        String(victim),
        '--name',
        name,
        ...(checks ? [] : ['--check-interval', '0']),
      ]);
      const victimArgs =
        victimRole === 'server'
          ? ['server', '--peer', String(survivor), '--name', name, '--ring', String(2 ** 20), '--send', String(2 ** 40), '--seed', '5']
          : ['client', '--peer', String(survivor), '--name', name, '--send', String(2 ** 40), '--seed', '5', '--timeout', '30000'];
      const victimRun = runAs(victim, 'stream.mjs', victimArgs);
      try {
        await until(
          'the stream to run',
          () =>
            xenstore.read(`/local/domain/${survivor}/data/survivor/${name}`).then(
              () => true,
              () => false,
            ),
          30_000,
        ).catch(async (error) => {
          for (const child of children) child.kill();
          const [v, s] = await Promise.all([victimRun.done, surviving.done]);
          throw new Error(`${(error as Error).message}\n--- ${victimRole}:\n${v.output}\n--- ${survivorRole}:\n${s.output}`);
        });
        const destroyedAt = Date.now();
        const destroyed = destroySimDomain(victim);
        expect(destroyed).toBeTruthy();
        const killed = await victimRun.done;
        expect(killed.signal).toBe('SIGKILL');
        const outcome = resultOf<Survived>(await surviving.done, `the surviving ${survivorRole}`);
        expect(outcome.code, outcome.message).toBe('ECONNRESET');
        expect(outcome.failedAt - destroyedAt).toBeLessThan(NOTICE_WITHIN_MS);
        expect(outcome.mappingsWhileOpen).toBeGreaterThan(0);
        expect(outcome.mappingsAfter).toBe(0);
        // The survivor exited by itself (resultOf checked status 0) and the daemon holds nothing of
        // either domain: the survivor released its grants and ports, the dead domain's went with it.
        const connection = SimConnection.open(process.env.XEN_VCHAN_SIM_DIR);
        try {
          const status = connection.call('status', {});
          expect(status.grants).toEqual([]);
          expect(status.ports).toEqual([]);
        } finally {
          connection.close();
        }
        if (!announced) {
          // The victim's home went with it, dom0's node included: nothing announced, nothing left.
          await expect(xenstore.read(`/local/domain/${victim}/data/vchan-client`)).rejects.toMatchObject({ code: 'ENOENT' });
        }
        await xenstore.rm(`/local/domain/${survivor}/data/survivor`).catch(() => {});
        console.log(
          `sim: ${who} as the ${survivorRole}${how} noticed its peer's domain destroyed after ${outcome.failedAt - destroyedAt} ms`,
        );
      } finally {
        xenstore.close();
      }
    });
  }
});

describe('what a dead or failed client leaves the server (simulation)', () => {
  it('a second connect that fails leaves the connected client alone', { timeout: 30_000 }, async () => {
    // Both clients in domain 2, unprivileged: the first one's presence node is what the server
    // watches, and the failed attempt must not take it away.
    const server = createServer({ domid: 2, name: 'taken', backend: 'sim', simDomid: 1 });
    const accepted = new Promise<Vchan>((resolve) => server.once('channel', resolve));
    await server.listen();
    const first = await connect({ domid: 1, name: 'taken', backend: 'sim', simDomid: 2 });
    const served = await accepted;
    try {
      await expect(connect({ domid: 1, name: 'taken', backend: 'sim', simDomid: 2, timeout: 0 })).rejects.toMatchObject({
        code: 'ECONNREFUSED',
      });
      await sleep(1200); // more than two check intervals
      expect(served.destroyed).toBe(false);
      const arrived = new Promise<Buffer>((resolve) => served.once('data', resolve));
      first.write('still here');
      expect((await arrived).toString()).toBe('still here');
    } finally {
      first.destroy();
      served.destroy();
      await server.close();
    }
  });

  it('a persistent server whose client domain died waits for the next client instead of taking the dead one again', {
    timeout: 60_000,
  }, async () => {
    const server = createServer({ domid: 1, name: 'persist', backend: 'sim', simDomid: 2, persist: true, readMin: 4096, writeMin: 4096 });
    const channels: Vchan[] = [];
    const failures: string[] = [];
    server.on('channel', (channel) => {
      channels.push(channel);
      channel.on('error', (error: XenVchanError) => failures.push(error.code));
      channel.resume();
    });
    await server.listen();
    try {
      const victimArgs = ['client', '--peer', '2', '--name', 'persist', '--send', String(2 ** 40), '--seed', '5', '--timeout', '30000'];
      runAs(1, 'stream.mjs', victimArgs);
      await until('the first client', async () => channels.length === 1, 30_000);
      destroySimDomain(1);
      await until('the first channel to fail', async () => failures.length === 1, 5_000);
      expect(failures).toEqual(['ECONNRESET']);
      await sleep(1500);
      expect(channels).toHaveLength(1); // not the dead client again, and again
      // Domain 1 comes back as a new domain; the server serves it on the same pages.
      const next = runAs(1, 'stream.mjs', ['client', '--peer', '2', '--name', 'persist', '--recv', '0', '--timeout', '30000']);
      await until('the next client', async () => channels.length === 2, 30_000);
      channels[1]!.end();
      expect((await next.done).code).toBe(0);
    } finally {
      await server.close();
    }
  });
});

describe('a hostile client and its presence node (simulation)', () => {
  it('rewriting its node costs the server nothing; removing it while connected ends only its own channel', {
    timeout: 60_000,
  }, async () => {
    // Two servers in domain 1: one for the hostile client (domain 2), one for a bystander (domain 3).
    const servers = [2, 3].map((client) => createServer({ domid: client, name: `presence-${client}`, backend: 'sim', simDomid: 1 }));
    const accepted = servers.map((server) => new Promise<Vchan>((resolve) => server.once('channel', resolve)));
    for (const server of servers) await server.listen();
    const clients = await Promise.all(
      [2, 3].map((domid) => connect({ domid: 1, name: `presence-${domid}`, backend: 'sim', simDomid: domid })),
    );
    const served = await Promise.all(accepted);
    const failures: (string | null)[] = [null, null];
    for (const [index, channel] of served.entries()) {
      channel.on('error', (error: XenVchanError) => {
        failures[index] = error.code;
      });
    }
    for (const channel of clients) channel.on('error', () => {});
    // The hostile client's own XenStore connection: its node is its own to change.
    const hostile = await openXenStore({ domid: 2 });
    const node = presencePath(2, 1, servers[0]!.path!);
    try {
      await until(
        'the presence node',
        () =>
          hostile.read(node).then(
            () => true,
            () => false,
          ),
        5_000,
      );
      // How late a 20 ms timer fires while the server follows the flood: the event loop keeps turning.
      let worstLag = 0;
      let last = performance.now();
      const lagTimer = setInterval(() => {
        const now = performance.now();
        worstLag = Math.max(worstLag, now - last - 20);
        last = now;
      }, 20);
      try {
        const big = 'x'.repeat(4000);
        for (let i = 0; i < 2000; i++) await hostile.write(node, i % 2 ? big : String(i));
      } finally {
        clearInterval(lagTimer);
      }
      await sleep(300);
      expect(failures).toEqual([null, null]); // a node that changes is still there
      expect(worstLag).toBeLessThan(500);
      const echoed = new Promise<Buffer>((resolve) => served[0]!.once('data', resolve));
      clients[0]!.write('after the flood');
      expect((await echoed).toString()).toBe('after the flood');

      await hostile.rm(node); // gone while its live byte says connected: taken as its domain dying
      await until('the hostile channel to fail', async () => failures[0] !== null, 5_000);
      expect(failures[0]).toBe('ECONNRESET');
      await sleep(600); // more than one check interval: the bystander is untouched
      expect(failures[1]).toBeNull();
      expect(served[1]!.destroyed).toBe(false);
    } finally {
      hostile.close();
      for (const channel of [...clients, ...served]) channel.destroy();
      for (const server of servers) await server.close();
    }
  });
});
