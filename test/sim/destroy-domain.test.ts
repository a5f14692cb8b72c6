// Destroying a simulated domain as `xl destroy` (or a crash) ends a Xen guest: its processes die
// with no kernel left to run their unmap notifications, so survivors see only what Xen shows them.
// A child process plays domain 1; this process plays its peer, domain 2, and dom0 (the
// toolstack's view: @releaseDomain, IS_DOMAIN_INTRODUCED).
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openEventChannel, type EventChannel } from '@xen-vchan/evtchn';
import { openGntalloc, type Gntalloc, type SharedPages } from '@xen-vchan/gntalloc';
import { GrantStatus, openGntdev, type Gntdev, type GrantMapping } from '@xen-vchan/gntdev';
import { errorCode } from '@xen-vchan/native';
import { destroySimDomain, SimConnection } from '@xen-vchan/sim';
import { openXenStore, type Watch, type XenStore } from '@xen-vchan/xenstore';
import { PROMPT_MS, SETTLE_MS, sleep } from '../support/domains.js';
import { countEvents, nextEvent } from '../support/events.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const DEAD = 1;
const SURVIVOR = 2;
/** Where domain 1's page carries its live byte, cleared by the unmap notification when it runs. */
const LIVE_BYTE = 21;
/** A folder dom0 lets domain 1 write in: what domain 1 creates there is its own, outside its home. */
const SHARED_FOLDER = '/destroy-test';

/** Domain 1's process: shares a page with an unmap notification, offers a port, maps a page of 2, writes XenStore nodes. */
const deadDomainScript = `
  import { openEventChannel } from '@xen-vchan/evtchn';
  import { openGntalloc } from '@xen-vchan/gntalloc';
  import { openGntdev } from '@xen-vchan/gntdev';
  import { openXenStore } from '@xen-vchan/xenstore';
  const events = openEventChannel();
  const port = events.bindUnbound(${SURVIVOR});
  const shared = openGntalloc().share(${SURVIVOR}, 1);
  const page = new Uint8Array(shared.buffer);
  page.set([0xd0, 0xd1, 0xd2]);
  page[${LIVE_BYTE}] = 1;
  shared.setUnmapNotify({ offset: ${LIVE_BYTE}, clearByte: true, port });
  const mapping = openGntdev().map(${SURVIVOR}, [Number(process.env.SURVIVOR_REF)]);
  const xenstore = await openXenStore();
  await xenstore.write('data/secret', 'from 1');
  await xenstore.setPermissions('data/secret', [{ domid: ${DEAD}, access: 'none' }, { domid: ${SURVIVOR}, access: 'read' }]);
  await xenstore.write('${SHARED_FOLDER}/from-1', 'mine');
  globalThis.held = { events, shared, mapping, xenstore };
  process.stdout.write(JSON.stringify({ ref: shared.refs[0], port, seen: new Uint8Array(mapping.buffer)[0] }) + '\\n');
  process.stdin.on('data', () => {
    events.notify(port);
    process.stdout.write('notified\\n');
  });
`;

/** Another process of domain 1 that uses only XenStore: the daemon knows it by its connection. */
const xenstoreOnlyScript = `
  import { openXenStore } from '@xen-vchan/xenstore';
  globalThis.held = await openXenStore();
  await globalThis.held.read('domid');
  process.stdout.write('ready\\n');
  process.stdin.resume();
`;

/** A process acting as domain 1 again, after the destruction: an ordinary new domain. */
const newDomainScript = `
  import { openEventChannel } from '@xen-vchan/evtchn';
  import { openGntalloc } from '@xen-vchan/gntalloc';
  import { openXenStore } from '@xen-vchan/xenstore';
  const events = openEventChannel();
  const port = events.bindUnbound(${SURVIVOR});
  const shared = openGntalloc().share(${SURVIVOR}, 1);
  new Uint8Array(shared.buffer)[${LIVE_BYTE}] = 1;
  shared.setUnmapNotify({ offset: ${LIVE_BYTE}, clearByte: true, port });
  const xenstore = await openXenStore();
  await xenstore.write('data/again', 'yes');
  globalThis.held = { events, shared, xenstore };
  process.stdout.write(JSON.stringify({ ref: shared.refs[0], port }) + '\\n');
  process.stdin.resume();
`;

interface DomainProcess {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The next line the process writes. */
  line(): Promise<string>;
}

function startDomain(domid: number, script: string, env: Record<string, string> = {}): DomainProcess {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    cwd: root,
    env: { ...process.env, ...env, XEN_VCHAN_BACKEND: 'sim', XEN_VCHAN_SIM_DOMID: String(domid) },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const line = async () => {
    const next = await Promise.race([lines.next(), exited.then((how) => ({ done: true as const, value: how }))]);
    if (next.done) throw new Error(`domain ${domid}'s process exited before it answered`);
    return next.value as string;
  };
  return { child, exited, line };
}

const codeOf = (action: () => unknown) => {
  try {
    action();
    return 'no error';
  } catch (error) {
    return errorCode(error);
  }
};

const status = () => SimConnection.open().call('status', {});

/**
 * EVTCHNOP_bind_interdomain from domain 2, as the simulated hypervisor answers it; returns the
 * error code. Straight to the daemon: the evtchn API refuses port 0 itself, before asking.
 */
function bindCode(remoteDomain: number, remotePort: number): string | undefined {
  const sim = SimConnection.open();
  const { handle } = sim.call('evtchn.open', { domid: SURVIVOR });
  try {
    return codeOf(() => sim.call('evtchn.bindInterdomain', { handle, remoteDomain, remotePort }));
  } finally {
    sim.call('close', { handle });
  }
}

async function nextWatchEvent(watch: Watch): Promise<string> {
  const timeout = sleep(PROMPT_MS * 10).then(() => 'timeout');
  const event = watch.next().then((result) => (result.done ? 'ended' : result.value.path));
  return Promise.race([event, timeout]);
}

describe('destroying a simulated domain', () => {
  let dom0: XenStore;
  let survivorStore: XenStore;
  let events: EventChannel;
  let gntalloc: Gntalloc;
  let gntdev: Gntdev;
  let survivorPage: SharedPages;

  beforeAll(async () => {
    dom0 = await openXenStore({ domid: 0 });
    survivorStore = await openXenStore({ domid: SURVIVOR });
    events = openEventChannel({ domid: SURVIVOR });
    gntalloc = openGntalloc({ domid: SURVIVOR });
    gntdev = openGntdev({ domid: SURVIVOR });
    survivorPage = gntalloc.share(DEAD, 1);
    new Uint8Array(survivorPage.buffer)[0] = 0x5a;
    await dom0.write(SHARED_FOLDER, '');
    await dom0.setPermissions(SHARED_FOLDER, [
      { domid: 0, access: 'none' },
      { domid: DEAD, access: 'write' },
    ]);
  });

  afterAll(() => {
    survivorPage.release();
    gntdev.close();
    gntalloc.close();
    events.close();
    survivorStore.close();
    dom0.close();
  });

  it("refuses domain 0 and the caller's own domain", async () => {
    expect(codeOf(() => destroySimDomain(0))).toBe('EPERM');
    const own = openEventChannel({ domid: 5 });
    try {
      expect(codeOf(() => destroySimDomain(5))).toBe('EDEADLK');
    } finally {
      own.close();
    }
    // Acting as a domain through XenStore alone counts too: the daemon knows the connection's process.
    const ownStore = await openXenStore({ domid: 6 });
    try {
      expect(codeOf(() => destroySimDomain(6))).toBe('EDEADLK');
    } finally {
      ownStore.close();
    }
    expect(codeOf(() => destroySimDomain(-1))).toBe('ERR_INVALID_ARG_VALUE');
    // The daemon checks the field itself, whoever calls.
    for (const domid of ['1', 32752, 1.5, null]) {
      expect(codeOf(() => SimConnection.open().call('domain.destroy', { domid } as never))).toBe('EINVAL');
    }
  });

  it('kills its processes, runs none of their unmap notifications, and leaves survivors what Xen leaves them', async () => {
    const dead = startDomain(DEAD, deadDomainScript, { SURVIVOR_REF: String(survivorPage.refs[0]) });
    const info = JSON.parse(await dead.line()) as { ref: number; port: number; seen: number };
    expect(info.seen).toBe(0x5a);
    const xenstoreOnly = startDomain(DEAD, xenstoreOnlyScript);
    expect(await xenstoreOnly.line()).toBe('ready');

    const mapping: GrantMapping = gntdev.map(DEAD, [info.ref]);
    const page = new Uint8Array(mapping.buffer);
    expect(page[LIVE_BYTE]).toBe(1);
    // Xen marks a binder's new port pending; then the channel carries domain 1's notify.
    const port = events.bindInterdomain(DEAD, info.port);
    await nextEvent(events, port, PROMPT_MS * 20);
    events.unmask(port);
    const notified = nextEvent(events, port, PROMPT_MS * 20);
    dead.child.stdin!.write('notify\n');
    await notified;
    expect(await dead.line()).toBe('notified');
    events.unmask(port);

    const secretWatch = await survivorStore.watch(`/local/domain/${DEAD}/data/secret`);
    expect(await nextWatchEvent(secretWatch)).toBe(`/local/domain/${DEAD}/data/secret`); // the first, on registration
    const releaseWatch = await dom0.watch('@releaseDomain');
    expect(await nextWatchEvent(releaseWatch)).toBe('@releaseDomain');
    const elsewhereWatch = await dom0.watch(`${SHARED_FOLDER}/from-1`);
    expect(await nextWatchEvent(elsewhereWatch)).toBe(`${SHARED_FOLDER}/from-1`);
    expect(await dom0.isDomainIntroduced(DEAD)).toBe(true);
    expect(status().grants.filter((grant) => grant.domid === SURVIVOR)).toMatchObject([{ mappedBy: 1 }]);

    const eventsAfter = countEvents(events, port);
    const destroyed = destroySimDomain(DEAD);
    expect(destroyed).toEqual({
      domid: DEAD,
      killed: [dead.child.pid, xenstoreOnly.child.pid],
      handlesClosed: 3,
      portsClosed: 1,
      grantsStillMapped: 1,
      // /local/domain/1, its domid, data and data/secret; then SHARED_FOLDER/from-1
      xenstoreNodesRemoved: 5,
      xenstoreConnectionsClosed: 2,
    });
    expect(await dead.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(await xenstoreOnly.exited).toEqual({ code: null, signal: 'SIGKILL' });

    // No unmap notification: the live byte stays, no event comes. What domain 1 mapped of ours is let go.
    await sleep(SETTLE_MS);
    expect(eventsAfter.count).toBe(0);
    expect(page[LIVE_BYTE]).toBe(1);
    expect([...page.subarray(0, 3)]).toEqual([0xd0, 0xd1, 0xd2]);
    expect(status().grants.filter((grant) => grant.domid === SURVIVOR)).toMatchObject([{ mappedBy: 0 }]);

    // Its pages we map stay ours (a zombie domain), but Xen refuses to copy them or map them anew.
    const scratch = new Uint8Array(1);
    expect(gntdev.grantCopy([{ source: { domid: DEAD, ref: info.ref, offset: 0 }, dest: scratch, length: 1 }])).toEqual([
      GrantStatus.badDomain,
    ]);
    expect(gntdev.grantCopy([{ source: scratch, dest: { domid: DEAD, ref: info.ref, offset: 0 }, length: 1 }])).toEqual([
      GrantStatus.badDomain,
    ]);
    expect(codeOf(() => gntdev.map(DEAD, [info.ref]))).toBe('EINVAL');

    // Our end of the channel is unbound now; a notify on it is dropped without an error.
    expect(status().ports).toContainEqual(expect.objectContaining({ domid: SURVIVOR, port, state: 'unbound', remoteDomain: DEAD }));
    expect(() => events.notify(port)).not.toThrow();
    await sleep(SETTLE_MS);
    expect(eventsAfter.count).toBe(0);
    eventsAfter.stop();

    // While we map its page, Xen still finds the zombie domain: it has no port to offer (EINVAL).
    expect(status().domains).toContainEqual(expect.objectContaining({ domid: DEAD, state: 'zombie', grants: 0, ports: 0 }));
    expect(codeOf(() => events.bindInterdomain(DEAD, info.port))).toBe('EINVAL');
    expect(bindCode(DEAD, 0)).toBe('EINVAL');

    // XenStore: its home and everything it owned went, with the watches firing; dom0 heard of it.
    expect(await nextWatchEvent(secretWatch)).toBe(`/local/domain/${DEAD}/data/secret`);
    expect(await nextWatchEvent(elsewhereWatch)).toBe(`${SHARED_FOLDER}/from-1`);
    expect(await nextWatchEvent(releaseWatch)).toBe('@releaseDomain');
    await expect(dom0.read(`/local/domain/${DEAD}`)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(dom0.read(`${SHARED_FOLDER}/from-1`)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await dom0.read(SHARED_FOLDER)).toBe('');
    expect(await dom0.isDomainIntroduced(DEAD)).toBe(false);
    expect(await dom0.isDomainIntroduced(SURVIVOR)).toBe(true);
    await expect(survivorStore.isDomainIntroduced(DEAD)).rejects.toMatchObject({ code: 'EACCES' });
    await Promise.all([secretWatch.close(), releaseWatch.close(), elsewhereWatch.close()]);

    // Once we unmap, the zombie goes: binding to it is ESRCH (Xen looks the domain up first).
    mapping.release();
    expect(status().domains).toContainEqual(expect.objectContaining({ domid: DEAD, state: 'gone' }));
    expect(status().grants.filter((grant) => grant.domid === DEAD)).toEqual([]);
    expect(codeOf(() => events.bindInterdomain(DEAD, info.port))).toBe('ESRCH');
    expect(bindCode(DEAD, 0)).toBe('ESRCH');
    expect(gntdev.grantCopy([{ source: { domid: DEAD, ref: info.ref, offset: 0 }, dest: scratch, length: 1 }])).toEqual([
      GrantStatus.badDomain,
    ]);

    // A live domain's port 0 is reserved (EINVAL), and a refused bind changes nothing.
    const portsBefore = status().ports;
    expect(bindCode(SURVIVOR, 0)).toBe('EINVAL');
    expect(status().ports).toEqual(portsBefore);

    // Nothing of domain 1 is left once we let go.
    events.unbind(port);
    survivorPage.release();
    const left = status();
    expect(left.ports).toEqual([]);
    expect(left.grants).toEqual([]);
    expect(readdirSync(path.join(process.env.XEN_VCHAN_SIM_DIR!, 'pages'))).toEqual([]);
  });

  it('makes the domain new and live again once a process acts as it', async () => {
    const introduced = await dom0.watch('@introduceDomain');
    expect(await nextWatchEvent(introduced)).toBe('@introduceDomain');
    const again = startDomain(DEAD, newDomainScript);
    try {
      const info = JSON.parse(await again.line()) as { ref: number; port: number };
      expect(await nextWatchEvent(introduced)).toBe('@introduceDomain');
      expect(await dom0.isDomainIntroduced(DEAD)).toBe(true);
      expect(await dom0.read(`/local/domain/${DEAD}/data/again`)).toBe('yes');
      expect(status().domains).toContainEqual(expect.objectContaining({ domid: DEAD, state: 'live' }));
      expect(bindCode(DEAD, 0)).toBe('EINVAL');

      // An ordinary domain again: its grants map, its ports bind, and its process's death is seen.
      const mapping = gntdev.map(DEAD, [info.ref]);
      const page = new Uint8Array(mapping.buffer);
      const port = events.bindInterdomain(DEAD, info.port);
      await nextEvent(events, port, PROMPT_MS * 20);
      events.unmask(port);
      const notified = nextEvent(events, port, PROMPT_MS * 20);
      again.child.kill('SIGKILL');
      await notified;
      expect(page[LIVE_BYTE]).toBe(0);
      mapping.release();
      events.unbind(port);
    } finally {
      again.child.kill('SIGKILL');
      await again.exited;
      await introduced.close();
    }
  });
});
