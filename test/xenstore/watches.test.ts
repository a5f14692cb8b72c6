// XenStore watches: the first event on registration, changes made by other processes, removal,
// relative paths, permissions, and unwatching.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openXenStore, type XenStore } from '@xen-vchan/xenstore';
import { inDomain, startDomain } from './domains.js';
import { drain, nextEvent } from './events.js';

const QUIET_MS = 150;

describe('xenstore watches', () => {
  let xs: XenStore;

  beforeAll(async () => {
    xs = await openXenStore({ domid: 1 });
    await xs.write('data/watched/ready', '');
    await xs.setPermissions('data/watched', [
      { domid: 1, access: 'none' },
      { domid: 2, access: 'read' },
    ]);
  });

  afterAll(() => xs.close());

  it('fires once at registration, with the path and token as given', async () => {
    const watch = await xs.watch('/local/domain/1/data/watched', 'my-token');
    expect(await nextEvent(watch)).toEqual({ path: '/local/domain/1/data/watched', token: 'my-token' });
    expect(await nextEvent(watch, QUIET_MS)).toBeNull();
    await watch.close();
  });

  it("sees another process's writes at and below the path, and removals", async () => {
    const watch = await xs.watch('/local/domain/1/data/watched');
    expect(await drain(watch)).toEqual(['/local/domain/1/data/watched']);
    await inDomain(1, `await xs.write('data/watched/ring-ref', '8'); await xs.write('data/watched/sub/deeper', 'x');`);
    expect(await drain(watch)).toEqual(['/local/domain/1/data/watched/ring-ref', '/local/domain/1/data/watched/sub/deeper']);
    await inDomain(1, `await xs.rm('data/watched/sub');`);
    // Like xenstored: one event for the removed node; its descendants fire only watches set on them.
    expect(await drain(watch)).toEqual(['/local/domain/1/data/watched/sub']);
    await watch.close();
  });

  it("fires a watch on a node's descendants when the node itself is removed", async () => {
    await xs.write('data/doomed/child/grandchild', 'x');
    const watch = await xs.watch('data/doomed/child/grandchild');
    await drain(watch);
    await inDomain(1, `await xs.rm('data/doomed');`);
    expect(await drain(watch)).toEqual(['data/doomed/child/grandchild']);
    await watch.close();
  });

  it('reports relative paths to a watch set with one', async () => {
    const watch = await xs.watch('data/watched');
    expect(await drain(watch)).toEqual(['data/watched']);
    await xs.write('data/watched/relative', '1');
    expect(await drain(watch)).toEqual(['data/watched/relative']);
    await watch.close();
  });

  it('is an async iterator across processes: a peer waits for a node the owner publishes', async () => {
    const peer = startDomain(
      2,
      `
      const watch = await xs.watch('/local/domain/1/data/watched/event-channel');
      emit('watching');
      for await (const event of watch) {
        const value = await xs.read(event.path).catch((e) => e.code);
        emit({ path: event.path, value });
        if (value === '5') break;
      }
      emit('done');
      xs.close();
    `,
    );
    try {
      expect((await peer.lines.next()).value).toBe('watching');
      expect((await peer.lines.next()).value).toEqual({ path: '/local/domain/1/data/watched/event-channel', value: 'ENOENT' });
      await xs.write('data/watched/event-channel', '5');
      expect((await peer.lines.next()).value).toEqual({ path: '/local/domain/1/data/watched/event-channel', value: '5' });
      expect((await peer.lines.next()).value).toBe('done');
    } finally {
      await peer.stop();
    }
  });

  it('tells a watcher only of changes to nodes it may read', async () => {
    const stranger = await openXenStore({ domid: 3 });
    const peer = await openXenStore({ domid: 2 });
    try {
      const blind = await stranger.watch('/local/domain/1/data/watched');
      const sighted = await peer.watch('/local/domain/1/data/watched');
      expect(await drain(blind)).toEqual(['/local/domain/1/data/watched']);
      expect(await drain(sighted)).toEqual(['/local/domain/1/data/watched']);
      await xs.write('data/watched/secret', 'x');
      expect(await drain(sighted)).toEqual(['/local/domain/1/data/watched/secret']);
      expect(await drain(blind)).toEqual([]);
    } finally {
      stranger.close();
      peer.close();
    }
  });

  it('stops after close(), and leaving a for-await loop closes the watch', async () => {
    const watch = await xs.watch('data/watched', 'closing');
    await drain(watch);
    await watch.close();
    expect(await watch.next()).toEqual({ value: undefined, done: true });
    await xs.write('data/watched/after-close', 'x');
    // The token is free again on this handle, and on XenStore's side (no EEXIST).
    const again = await xs.watch('data/watched', 'closing');
    for await (const event of again) {
      expect(event.path).toBe('data/watched');
      break;
    }
    expect(await again.next()).toEqual({ value: undefined, done: true });
  });

  it('refuses a token already used on the handle', async () => {
    const watch = await xs.watch('data/watched', 'taken');
    await expect(xs.watch('data/other', 'taken')).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await watch.close();
  });

  it('coalesces events for a path while they wait unread', async () => {
    const watch = await xs.watch('data/watched/busy');
    for (let i = 0; i < 20; i++) await xs.write('data/watched/busy', String(i));
    expect(await drain(watch)).toEqual(['data/watched/busy']);
    await watch.close();
  });

  it('limits an unprivileged domain to 128 watches (E2BIG)', async () => {
    const outcome = await inDomain(
      8,
      `
      const watches = [];
      for (let i = 0; i < 128; i++) watches.push(await xs.watch('data/w' + i));
      return xs.watch('data/one-too-many').then(() => 'none', (e) => e.code);
    `,
    );
    expect(outcome).toBe('E2BIG');
  });

  it('ends its iteration when the handle is closed', async () => {
    const other = await openXenStore({ domid: 1 });
    const watch = await other.watch('data/watched');
    await drain(watch);
    const waiting = watch.next();
    other.close();
    expect(await waiting).toEqual({ value: undefined, done: true });
    await watch.close();
  });

  it('hears of a new domain on @introduceDomain when privileged', async () => {
    const dom0 = await openXenStore({ domid: 0 });
    try {
      const watch = await dom0.watch('@introduceDomain');
      expect(await drain(watch)).toEqual(['@introduceDomain']);
      await inDomain(23, `return xs.ownDomid();`);
      expect(await drain(watch)).toEqual(['@introduceDomain']);
      await watch.close();
    } finally {
      dom0.close();
    }
  });
});
