// gntdev, written against the public API and run on every backend. The granting side is always
// another process, as it would be another domain.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openGntalloc, type Gntalloc } from '@xen-vchan/gntalloc';
import { GrantStatus, openGntdev, type Gntdev } from '@xen-vchan/gntdev';
import { OTHER, PEER, SELF } from '../support/domains.js';
import { Peer } from '../support/peer.mjs';
import { withPeer } from './with-peer.js';

describe('gntdev', () => {
  const ends = withPeer(() => openGntdev({ domid: SELF }), 'openGntalloc');

  const share = (pages: number, options: { writable?: boolean; to?: number } = {}) => {
    const { to = SELF, writable = true } = options;
    return ends.peer.call<{ id: number; refs: number[] }>('share', { handle: ends.peerHandle, domid: to, pages, writable });
  };

  it('maps several refs as one contiguous buffer, in the order given, shared both ways', async () => {
    const { id, refs } = await share(3);
    for (let page = 0; page < 3; page++) await ends.peer.call('write', { id, offset: page * 4096 + 7, bytes: new Uint8Array([page + 10]) });
    const mapping = ends.local.map(PEER, [refs[2]!, refs[0]!, refs[1]!]);
    const bytes = new Uint8Array(mapping.buffer);
    expect(mapping.buffer.byteLength).toBe(3 * 4096);
    expect([bytes[7], bytes[4096 + 7], bytes[8192 + 7]]).toEqual([12, 10, 11]);
    bytes[4096 + 9] = 99; // page 1 of the mapping is the granter's page 0
    expect(await ends.peer.call('read', { id, offset: 9, length: 1 })).toEqual(new Uint8Array([99]));
    mapping.release();
  });

  it('maps a read-only grant only read-only, and a write to it faults', async () => {
    const { id, refs } = await share(1, { writable: false });
    await ends.peer.call('write', { id, offset: 0, bytes: new Uint8Array([5]) });
    expect(() => ends.local.map(PEER, refs)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    const mapping = ends.local.map(PEER, refs, { writable: false });
    expect(new Uint8Array(mapping.buffer)[0]).toBe(5);
    mapping.release();

    // A process that writes to a read-only mapping dies of SIGSEGV, exactly as on Xen.
    const writer = await Peer.start(SELF);
    try {
      const handle = await writer.call<number>('openGntdev');
      const { id: mapped } = await writer.call<{ id: number }>('map', { handle, domid: PEER, refs, writable: false });
      void writer.call('writeReadOnly', { id: mapped }).catch(() => {});
      expect(await writer.exited).toMatchObject({ signal: 'SIGSEGV' });
    } finally {
      await writer.stop();
    }
  });

  it('refuses grants meant for another domain, and refs that do not exist', async () => {
    const { refs } = await share(1, { to: OTHER });
    expect(() => ends.local.map(PEER, refs)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => ends.local.map(PEER, [refs[0]! + 100_000])).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // Nothing was half-mapped: a good grant still maps.
    const good = await share(1);
    ends.local.map(PEER, good.refs).release();
  });

  it('detaches the buffer on release', async () => {
    const { refs } = await share(2);
    const mapping = ends.local.map(PEER, refs);
    const view = new Uint8Array(mapping.buffer);
    mapping.release();
    expect(mapping.buffer.byteLength).toBe(0);
    expect(view.length).toBe(0);
    expect(() => Atomics.load(new Int32Array(mapping.buffer), 0)).toThrow(TypeError);
    mapping.release();
  });

  it('rejects bad arguments with a clear error', () => {
    expect(() => ends.local.map(PEER, [])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => ends.local.map(PEER, [1.5])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
  });

  it('refuses to clear a byte of a read-only mapping', async () => {
    const { refs } = await share(1, { writable: false });
    const mapping = ends.local.map(PEER, refs, { writable: false });
    expect(() => mapping.setUnmapNotify({ offset: 0, clearByte: true })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    mapping.release();
  });
});

describe('gntdev grant copy', () => {
  let granter: Gntalloc;
  let device: Gntdev;

  beforeEach(() => {
    granter = openGntalloc({ domid: SELF });
    device = openGntdev({ domid: SELF });
  });

  afterEach(() => {
    device.close();
    granter.close();
  });

  it('copies between grants and local memory, with a status per segment', () => {
    const writable = granter.share(SELF, 1);
    const readOnly = granter.share(SELF, 1, { writable: false });
    new Uint8Array(writable.buffer).set([1, 2, 3, 4], 100);
    const into = new Uint8Array(4);
    const statuses = device.grantCopy([
      { source: { domid: SELF, ref: writable.refs[0]!, offset: 100 }, dest: into, length: 4 },
      { source: new Uint8Array([9, 8]), dest: { domid: SELF, ref: writable.refs[0]!, offset: 200 }, length: 2 },
      { source: new Uint8Array([7]), dest: { domid: SELF, ref: readOnly.refs[0]!, offset: 0 }, length: 1 },
    ]);
    expect(statuses[0]).toBe(GrantStatus.okay);
    expect(statuses[1]).toBe(GrantStatus.okay);
    expect(statuses[2]).toBeLessThan(0);
    expect(into).toEqual(new Uint8Array([1, 2, 3, 4]));
    expect(new Uint8Array(writable.buffer).subarray(200, 202)).toEqual(new Uint8Array([9, 8]));
    expect(new Uint8Array(readOnly.buffer)[0]).toBe(0);
  });

  it('refuses a segment that crosses a page', () => {
    const shared = granter.share(SELF, 1);
    expect(() =>
      device.grantCopy([{ source: { domid: SELF, ref: shared.refs[0]!, offset: 4000 }, dest: new Uint8Array(200), length: 200 }]),
    ).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
  });
});
