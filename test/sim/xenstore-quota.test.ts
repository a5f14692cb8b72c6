// Exhaustion on the simulation's XenStore: real xenstored exempts dom0 (where the harness runs)
// from the node quota, so this runs here only; the gntalloc limit is covered on every backend in
// test/vchan/security.test.ts.
import { afterEach, describe, expect, it } from 'vitest';
import { openXenStore } from '@xen-vchan/xenstore';
import { createServer, type VchanServer } from '@xen-vchan/vchan';

const SELF = 1;
const PEER = 2;
let server: VchanServer | null = null;
afterEach(async () => {
  await server?.close();
  server = null;
});

describe('vchan on a full XenStore', () => {
  it('reports a full XenStore quota clearly and recovers when nodes are removed', async () => {
    const xenstore = await openXenStore({ domid: SELF });
    const filler = `/local/domain/${SELF}/data/filler`;
    try {
      let error: { code?: string } | null = null;
      for (let index = 0; index < 1100 && !error; index++) {
        await xenstore.write(`${filler}/n${index}`, 'x').catch((caught) => (error = caught));
      }
      expect(error).toMatchObject({ code: expect.stringMatching(/E2BIG|EDQUOT|ENOSPC/) });
      server = createServer({ domid: PEER, name: 'quota', simDomid: SELF });
      const failed = await server.listen().then(
        () => null,
        (caught: { code?: string; message: string }) => caught,
      );
      expect(failed?.code).toMatch(/E2BIG|EDQUOT|ENOSPC/);
      server = null;
      await xenstore.rm(filler);
      server = createServer({ domid: PEER, name: 'quota', simDomid: SELF });
      await server.listen();
    } finally {
      await xenstore.rm(filler).catch(() => {});
      xenstore.close();
    }
  });

  it('reports too many open transactions clearly and recovers when they end', async () => {
    const xenstore = await openXenStore({ domid: SELF });
    const open = [];
    try {
      for (;;) {
        const started = await xenstore.startTransaction().catch((error: { code?: string }) => error);
        if (!('commit' in started)) {
          expect(started).toMatchObject({ code: 'ENOSPC' });
          break;
        }
        open.push(started);
      }
      expect(open).toHaveLength(10);
      server = createServer({ domid: PEER, name: 'transactions', simDomid: SELF });
      const failed = await server.listen().then(
        () => null,
        (caught: { code?: string; message: string }) => caught,
      );
      expect(failed?.code).toBe('ENOSPC');
      expect(failed?.message).toMatch(/transaction/i);
      server = null;
      for (const transaction of open.splice(0)) await transaction.abort();
      server = createServer({ domid: PEER, name: 'transactions', simDomid: SELF });
      await server.listen();
    } finally {
      for (const transaction of open) await transaction.abort().catch(() => {});
      xenstore.close();
    }
  });
});
