// gntalloc, written against the public API and run on every backend.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openGntalloc, type Gntalloc } from '@xen-vchan/gntalloc';
import { PEER, SELF } from '../support/domains.js';
import { setGntallocLimit } from '../support/limit.js';
import { Peer } from '../support/peer.mjs';

describe('gntalloc', () => {
  let device: Gntalloc;

  beforeEach(() => {
    device = openGntalloc({ domid: SELF });
  });

  afterEach(() => {
    device.close();
  });

  it('shares zeroed pages, one grant reference per page', () => {
    const shared = device.share(PEER, 3);
    expect(shared.buffer.byteLength).toBe(3 * 4096);
    expect(new Uint8Array(shared.buffer).every((byte) => byte === 0)).toBe(true);
    expect(shared.refs).toHaveLength(3);
    expect(new Set(shared.refs).size).toBe(3);
    expect(shared.domid).toBe(PEER);
    expect(shared.writable).toBe(true);
    expect(device.share(PEER, 1, { writable: false }).writable).toBe(false);
  });

  it('refuses to go over the limit with ENOSPC, naming the limit and how to raise it', () => {
    const restore = setGntallocLimit(device, 8);
    try {
      let error: unknown;
      try {
        device.share(PEER, 9);
      } catch (caught) {
        error = caught;
      }
      expect(error).toMatchObject({ code: 'ENOSPC' });
      expect((error as Error).message).toMatch(/limit .*\b8 pages/);
      expect((error as Error).message).toMatch(/raise it/);
      expect(device.share(PEER, 4).refs).toHaveLength(4);
    } finally {
      restore();
    }
  });

  it('detaches the buffer on release: touching it throws or reads nothing, and the process lives on', () => {
    const shared = device.share(PEER, 1);
    const view = new Uint8Array(shared.buffer);
    const words = new Int32Array(shared.buffer);
    view[0] = 42;
    shared.release();
    expect(shared.released).toBe(true);
    expect(shared.buffer.byteLength).toBe(0);
    expect(view.length).toBe(0);
    expect(view[0]).toBeUndefined();
    expect(() => Atomics.load(words, 0)).toThrow(TypeError);
    expect(() => new Uint8Array(shared.buffer, 0, 1)).toThrow();
    shared.release(); // idempotent
    expect(() => shared.setUnmapNotify({ offset: 0 })).toThrow();
  });

  it('keeps a released page alive for a peer that still maps it', async () => {
    const peer = await Peer.start(PEER);
    try {
      const mapper = await peer.call<number>('openGntdev');
      const shared = device.share(PEER, 1);
      new Uint8Array(shared.buffer).set([1, 2, 3], 100);
      const { id } = await peer.call<{ id: number }>('map', { handle: mapper, domid: SELF, refs: shared.refs, writable: true });
      shared.release();
      expect(await peer.call('read', { id, offset: 100, length: 3 })).toEqual(new Uint8Array([1, 2, 3]));
      await peer.call('release', { id });
    } finally {
      await peer.stop();
    }
  });

  it('stops counting a released page against the limit at once, even while a peer still maps it', async () => {
    const peer = await Peer.start(PEER);
    const restore = setGntallocLimit(device, 4);
    try {
      const mapper = await peer.call<number>('openGntdev');
      const shared = device.share(PEER, 4);
      const { id } = await peer.call<{ id: number }>('map', { handle: mapper, domid: SELF, refs: shared.refs, writable: true });
      shared.release();
      // Linux 6.1 (what the harness runs) frees the slot now; the page itself lives on for the peer.
      const more = device.share(PEER, 4);
      expect(await peer.call('read', { id, offset: 0, length: 1 })).toEqual(new Uint8Array([0]));
      more.release();
      await peer.call('release', { id });
    } finally {
      restore();
      await peer.stop();
    }
  });

  it('rejects bad arguments with a clear error and keeps working', () => {
    expect(() => device.share(PEER, 0)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => device.share(-1, 1)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    const shared = device.share(PEER, 1);
    expect(() => shared.setUnmapNotify({ offset: 4096 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(shared.refs).toHaveLength(1);
  });

  it('releases every share on close, and refuses use after close with EBADF', () => {
    const shared = device.share(PEER, 2);
    device.close();
    expect(shared.released).toBe(true);
    expect(shared.buffer.byteLength).toBe(0);
    expect(() => device.share(PEER, 1)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});
