// A sender racing the close of a port can set its PENDING bit after the close cleared it. When
// the port number is handed out again, that stale bit must not swallow the new peer's events
// (the fuzzer found servers that never heard their client this way, after a peer flooded a port
// while it closed).
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openEventChannel } from '@xen-vchan/evtchn';
import { PortTable } from '@xen-vchan/sim';

describe('simulated event channels', () => {
  it('a reused port starts with no stale pending event', async () => {
    const server = openEventChannel({ domid: 1 });
    const client = openEventChannel({ domid: 2 });
    const first = server.bindUnbound(2);
    const table = PortTable.map(path.join(process.env.XEN_VCHAN_SIM_DIR!, 'ports', '1'));
    try {
      server.unbind(first);
      table.markPending(first); // the late sender
      const reused = server.bindUnbound(2);
      expect(reused).toBe(first);
      const heard = new Promise<number>((resolve) => server.once('event', resolve));
      const clientPort = client.bindInterdomain(1, reused);
      client.notify(clientPort);
      const outcome = await Promise.race([heard, new Promise((resolve) => setTimeout(resolve, 1000, 'nothing heard'))]);
      expect(outcome).toBe(reused);
    } finally {
      client.close();
      server.close();
      table.unmap();
    }
  });
});
