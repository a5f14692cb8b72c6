// Security review, one test per point: who can map what, who can read the keys, and what a vchan
// does when resources run out.
import { afterEach, describe, expect, it } from 'vitest';
import { openGntalloc } from '@xen-vchan/gntalloc';
import { openGntdev } from '@xen-vchan/gntdev';
import { openXenStore } from '@xen-vchan/xenstore';
import { connect, createServer, type Vchan, type VchanServer } from '@xen-vchan/vchan';
import { backend, OTHER, PEER, SELF } from '../support/domains.js';
import { setGntallocLimit } from '../support/limit.js';

const simDomid = backend === 'sim' ? SELF : undefined;
let server: VchanServer | null = null;
afterEach(async () => {
  await server?.close();
  server = null;
});

/** Reads the grant refs the server wrote into its control page, as the client would. */
function controlGrants(serverRingRef: number, count: number): number[] {
  const gntdev = openGntdev({ domid: PEER });
  try {
    const page = gntdev.map(SELF, [serverRingRef], { writable: false });
    const refs = [...new Uint32Array(page.buffer, 24, count)];
    page.release();
    return refs;
  } finally {
    gntdev.close();
  }
}

describe('vchan security', () => {
  it('shares the ring the server writes read-only: the client cannot map it writable', async () => {
    server = createServer({ domid: PEER, name: 'ro-ring', simDomid, readMin: 4096, writeMin: 4096 });
    await server.listen();
    const { ringRef } = server.address()!;
    const [leftRef, rightRef] = controlGrants(ringRef, 2);
    const gntdev = openGntdev({ domid: PEER });
    try {
      gntdev.map(SELF, [leftRef!]).release(); // the ring the client writes
      expect(() => gntdev.map(SELF, [rightRef!])).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      gntdev.map(SELF, [rightRef!], { writable: false }).release();
    } finally {
      gntdev.close();
    }
  });

  it('lets no other domain map the pages or read the keys', async () => {
    // Served to domain OTHER, so this process's domain (dom0 on Xen) is the stranger.
    server = createServer({ domid: OTHER, name: 'private', simDomid });
    await server.listen();
    const { ringRef, path } = server.address()!;
    const stranger = openGntdev({ domid: PEER });
    try {
      expect(() => stranger.map(SELF, [ringRef], { writable: false })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    } finally {
      stranger.close();
    }
    if (backend === 'sim') {
      // (On Xen the harness has only dom0, which may read everything in XenStore.)
      const xenstore = await openXenStore({ domid: PEER });
      await expect(xenstore.read(`${path}/ring-ref`)).rejects.toMatchObject({ code: 'EACCES' });
      await expect(xenstore.read(`${path}/event-channel`)).rejects.toMatchObject({ code: 'EACCES' });
      xenstore.close();
    }
  });

  it('runs out of grants with a clear ENOSPC, leaks nothing, and works again once pages are free', async () => {
    const gntalloc = openGntalloc({ domid: SELF });
    const restore = setGntallocLimit(gntalloc, 64);
    try {
      const hog = gntalloc.share(PEER, 60);
      server = createServer({ domid: PEER, name: 'exhausted', simDomid, readMin: 1 << 20, writeMin: 4096 });
      const error = await server.listen().then(
        () => null,
        (caught: Error) => caught,
      );
      expect(error).toMatchObject({ code: 'ENOSPC' });
      expect(error!.message).toMatch(/limit/);
      server = null;
      if (backend === 'sim') expect(gntalloc.limit().used).toBe(60); // the half-built server gave its pages back
      hog.release();
      server = createServer({ domid: PEER, name: 'exhausted', simDomid, readMin: 65536, writeMin: 65536 });
      const channel = new Promise<Vchan>((resolve) => server!.once('channel', resolve));
      await server.listen();
      const client = await connect({ domid: SELF, name: 'exhausted', simDomid: backend === 'sim' ? PEER : undefined });
      await channel;
      client.destroy();
    } finally {
      restore();
      gntalloc.close();
    }
  });

  it('opens channels until the grants run out, fails the next one clearly, and recovers', async () => {
    const gntalloc = openGntalloc({ domid: SELF });
    const restore = setGntallocLimit(gntalloc, 12);
    const servers: VchanServer[] = [];
    try {
      let failure: { code?: string; message: string } | null = null;
      while (!failure && servers.length < 20) {
        const next = createServer({ domid: PEER, name: `many-${servers.length}`, simDomid, readMin: 0, writeMin: 0 });
        failure = await next.listen().then(
          () => {
            servers.push(next);
            return null;
          },
          (caught) => caught,
        );
      }
      expect(failure).toMatchObject({ code: 'ENOSPC' });
      expect(failure!.message).toMatch(/limit/);
      expect(servers.length).toBeGreaterThan(0);
      for (const open of servers.splice(0)) await open.close();
      server = createServer({ domid: PEER, name: 'many-again', simDomid, readMin: 0, writeMin: 0 });
      await server.listen();
    } finally {
      for (const open of servers) await open.close();
      restore();
      gntalloc.close();
    }
  });
});
