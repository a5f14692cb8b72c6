// Unmap notifications: when the side that shares or maps a page lets go of it, by release, close,
// normal exit or SIGKILL, the registered byte is cleared and the event is sent. This is what
// tells a vchan peer that the other side went away, so it must hold for a killed process too.
import { beforeEach, describe, expect, it } from 'vitest';
import { openEventChannel } from '@xen-vchan/evtchn';
import { openGntalloc, type Gntalloc } from '@xen-vchan/gntalloc';
import { openGntdev, type Gntdev } from '@xen-vchan/gntdev';
import { backend, PEER, PROMPT_MS, SELF } from '../support/domains.js';
import { nextEvent } from '../support/events.js';
import { withPeer } from './with-peer.js';

const LIVE_BYTE = 21;
const ways = ['release', 'close', 'exit', 'SIGKILL'] as const;
type Way = (typeof ways)[number];

describe('unmap notify', () => {
  // The ends of an event channel: the notification's event arrives on localPort.
  const ends = withPeer(() => openEventChannel({ domid: SELF }), 'openEvtchn');
  let localPort: number;
  let peerPort: number;

  beforeEach(async () => {
    localPort = ends.local.bindUnbound(PEER);
    peerPort = await ends.peer.call<number>('bindInterdomain', { id: ends.peerHandle, remoteDomain: SELF, remotePort: localPort });
  });

  /** Makes the peer let go in the given way; returns the time that took to be seen here. */
  async function letGo(way: Way, objectId: number, handleId: number, watch: () => boolean): Promise<number> {
    const heard = nextEvent(ends.local, localPort, PROMPT_MS * 20);
    let byteClearedAtEvent: boolean | undefined;
    ends.local.once('event', () => {
      byteClearedAtEvent = watch();
    });
    const started = performance.now();
    if (way === 'release') await ends.peer.call('release', { id: objectId });
    else if (way === 'close') await ends.peer.call('close', { id: handleId });
    else if (way === 'exit') void ends.peer.call('exit', { code: 0 }).catch(() => {});
    else void ends.peer.kill('SIGKILL');
    await heard;
    const elapsed = performance.now() - started;
    expect(byteClearedAtEvent).toBe(true);
    return elapsed;
  }

  describe.each(ways)('of a granting peer, on %s', (way) => {
    it('clears the byte and sends the event', async () => {
      const granter = await ends.peer.call<number>('openGntalloc');
      const shareRequest = { handle: granter, domid: SELF, pages: 1, writable: true };
      const { id, refs } = await ends.peer.call<{ id: number; refs: number[] }>('share', shareRequest);
      await ends.peer.call('write', { id, offset: LIVE_BYTE, bytes: new Uint8Array([1]) });
      await ends.peer.call('setUnmapNotify', { id, options: { offset: LIVE_BYTE, clearByte: true, port: peerPort } });
      const device: Gntdev = openGntdev({ domid: SELF });
      try {
        const mapping = device.map(PEER, refs);
        const page = new Uint8Array(mapping.buffer);
        expect(page[LIVE_BYTE]).toBe(1);
        const elapsed = await letGo(way, id, granter, () => page[LIVE_BYTE] === 0);
        if (way === 'SIGKILL') {
          console.log(`[${backend}] granter SIGKILL seen after ${elapsed.toFixed(1)} ms`);
          expect(elapsed).toBeLessThan(PROMPT_MS);
        }
        mapping.release();
      } finally {
        device.close();
      }
    });
  });

  describe.each(ways)('of a mapping peer, on %s', (way) => {
    it('clears the byte and sends the event', async () => {
      const granter: Gntalloc = openGntalloc({ domid: SELF });
      try {
        const shared = granter.share(PEER, 2);
        const page = new Uint8Array(shared.buffer);
        const offset = 4096 + LIVE_BYTE; // in the second page, to show the offset is honoured
        page[offset] = 2;
        const mapper = await ends.peer.call<number>('openGntdev');
        const { id } = await ends.peer.call<{ id: number }>('map', { handle: mapper, domid: SELF, refs: shared.refs, writable: true });
        await ends.peer.call('setUnmapNotify', { id, options: { offset, clearByte: true, port: peerPort } });
        const elapsed = await letGo(way, id, mapper, () => page[offset] === 0);
        if (way === 'SIGKILL') {
          console.log(`[${backend}] mapper SIGKILL seen after ${elapsed.toFixed(1)} ms`);
          expect(elapsed).toBeLessThan(PROMPT_MS);
        }
        expect(page[LIVE_BYTE]).toBe(0);
      } finally {
        granter.close();
      }
    });
  });

  it('sends only the event when asked not to clear', async () => {
    const granter = openGntalloc({ domid: SELF });
    try {
      const shared = granter.share(PEER, 1);
      const page = new Uint8Array(shared.buffer);
      page[LIVE_BYTE] = 1;
      const mapper = await ends.peer.call<number>('openGntdev');
      const { id } = await ends.peer.call<{ id: number }>('map', { handle: mapper, domid: SELF, refs: shared.refs, writable: true });
      await ends.peer.call('setUnmapNotify', { id, options: { offset: LIVE_BYTE, clearByte: false, port: peerPort } });
      const heard = nextEvent(ends.local, localPort, PROMPT_MS * 20);
      await ends.peer.call('release', { id });
      await heard;
      expect(page[LIVE_BYTE]).toBe(1);
    } finally {
      granter.close();
    }
  });

  it('refuses a notification on a port that is not bound', async () => {
    const granter = await ends.peer.call<number>('openGntalloc');
    const { id } = await ends.peer.call<{ id: number }>('share', { handle: granter, domid: SELF, pages: 1, writable: true });
    await expect(ends.peer.call('setUnmapNotify', { id, options: { offset: 0, port: peerPort + 100 } })).rejects.toMatchObject({
      code: 'EINVAL',
    });
  });
});
