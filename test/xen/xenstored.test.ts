// The client against the real C xenstored, through its Unix socket and through /dev/xen/xenbus.
// Runs inside the real-Xen harness's dom0 (`bash test/xen/run.sh test/xen/xenstored.test.ts`);
// elsewhere it fails rather than skips. The simulation's XenStore is checked in test/xenstore/.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openXenStore, type Watch, type XenStore } from '@xen-vchan/xenstore';
import { drain } from '../xenstore/events.js';
import { requireDom0 } from './dom0.js';

/** Events come slower under emulation: wait longer before deciding that no more will come. */
const eventsFor = (watch: Watch) => drain(watch, 1000);

describe.each(['socket', 'xenbus'] as const)('real xenstored through %s', (transport) => {
  let xs: XenStore;
  let other: XenStore;
  const base = `/local/domain/0/xen-vchan-test-${transport}`;

  beforeEach(() => requireDom0('test/xen/xenstored.test.ts'));

  beforeAll(async () => {
    if (process.env.XEN_VCHAN_IN_DOM0 !== '1') return; // beforeEach reports it, test by test
    xs = await openXenStore({ transport });
    other = await openXenStore({ transport });
  });

  afterAll(async () => {
    if (!xs) return;
    await xs.rm(base);
    xs.close();
    other.close();
  });

  it('is dom0, and finds its own nodes by relative path', async () => {
    expect(xs.transport).toBe(transport);
    expect(await xs.ownDomid()).toBe(0);
    expect(await xs.read('name')).toBe('Domain-0');
    expect(await xs.getDomainPath(3)).toBe('/local/domain/3');
    // What a vchan asks when @releaseDomain fires: no such domain here (two domains: domains.test.ts).
    expect(await xs.isDomainIntroduced(77)).toBe(false);
  });

  it('writes, reads, lists and removes, with the errors xenstored gives', async () => {
    await xs.write(`${base}/a/b`, 'value');
    expect(await xs.read(`${base}/a/b`)).toBe('value');
    expect(await xs.directory(`${base}/a`)).toEqual(['b']);
    await expect(xs.read(`${base}/missing`)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(xs.write(`${base}/bad//path`, 'x')).rejects.toMatchObject({ code: 'EINVAL' });
    await xs.rm(`${base}/missing`);
    await expect(xs.rm(`${base}/missing/deeper`)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(xs.rm('/')).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('keeps every one of many concurrent requests apart', async () => {
    await Promise.all(Array.from({ length: 200 }, (_, i) => xs.write(`${base}/burst/${i}`, `v${i}`)));
    const values = await Promise.all(Array.from({ length: 200 }, (_, i) => xs.read(`${base}/burst/${i}`)));
    expect(values).toEqual(Array.from({ length: 200 }, (_, i) => `v${i}`));
  });

  it('lists a directory too long for one message, in parts', async () => {
    const names = Array.from({ length: 500 }, (_, i) => `child-${String(i).padStart(5, '0')}`);
    await Promise.all(names.map((name) => xs.write(`${base}/long/${name}`, '')));
    expect(await xs.directory(`${base}/long`)).toEqual(names);
  });

  it('round-trips permissions, and refuses an owner that is no domain', async () => {
    await xs.write(`${base}/perms`, '');
    await xs.setPermissions(`${base}/perms`, [
      { domid: 0, access: 'none' },
      { domid: 7, access: 'read' },
    ]);
    expect(await xs.getPermissions(`${base}/perms`)).toEqual([
      { domid: 0, access: 'none' },
      { domid: 7, access: 'read' },
    ]);
    await expect(xs.setPermissions(`${base}/perms`, [{ domid: 999, access: 'none' }])).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('commits, conflicts, and pins a node at its first access', async () => {
    await xs.write(`${base}/tx/x`, '0');
    const conflicting = await xs.startTransaction();
    await conflicting.read(`${base}/tx/x`);
    await other.write(`${base}/tx/x`, 'other');
    expect(await conflicting.read(`${base}/tx/x`)).toBe('0');
    await conflicting.write(`${base}/tx/x`, 'mine');
    expect(await conflicting.commit()).toBe(false);
    expect(await xs.read(`${base}/tx/x`)).toBe('other');

    let runs = 0;
    await xs.transaction(async (tx) => {
      runs++;
      const value = await tx.read(`${base}/tx/x`);
      if (runs === 1) await other.write(`${base}/tx/x`, 'again');
      await tx.write(`${base}/tx/y`, value);
    });
    expect(runs).toBe(2);
    expect(await xs.read(`${base}/tx/y`)).toBe('again');
  });

  it('watches: first event, changes by another connection, removal, relative paths', async () => {
    const watch = await xs.watch(`${base}/w`);
    expect(await eventsFor(watch)).toEqual([`${base}/w`]);
    await other.write(`${base}/w/x/y`, '1');
    expect(await eventsFor(watch)).toEqual([`${base}/w/x/y`]);
    await other.rm(`${base}/w/x`);
    expect(await eventsFor(watch)).toEqual([`${base}/w/x`]);
    await watch.close();

    const relative = await xs.watch(`xen-vchan-test-${transport}/rel`);
    expect(await eventsFor(relative)).toEqual([`xen-vchan-test-${transport}/rel`]);
    await other.write(`${base}/rel/k`, '1');
    expect(await eventsFor(relative)).toEqual([`xen-vchan-test-${transport}/rel/k`]);
    await relative.close();
  });

  it('reports a watch xenstored refuses', async () => {
    await expect(xs.watch(`${base}/bad//watch`)).rejects.toMatchObject({ code: 'EINVAL' });
    expect(await xs.read('domid')).toBe('0');
  });

  it('checks the payload limit of the transport before sending', async () => {
    const limit = transport === 'xenbus' ? 4096 - 16 : 4096;
    const path = `${base}/big`;
    const header = Buffer.byteLength(`${path}\0`);
    await xs.write(path, 'x'.repeat(limit - header));
    expect((await xs.read(path)).length).toBe(limit - header);
    await expect(xs.write(path, 'x'.repeat(limit - header + 1))).rejects.toMatchObject({ code: 'E2BIG' });
  });

  it('rejects requests in flight when closed', async () => {
    const store = await openXenStore({ transport });
    const pending = store.read('domid');
    store.close();
    await expect(pending).rejects.toMatchObject({ code: 'EBADF' });
  });
});
