// recv() is all or nothing even at the end of a channel: a short remainder is not a message.
import { describe, expect, it } from 'vitest';
import { Vchan } from '@xen-vchan/vchan';
import { connectClientLink, createServerLink } from '@xen-vchan/vchan/internal';
import { backend, PEER, SELF } from '../support/domains.js';

const devices = (domid: number) => (backend === 'sim' ? { domid } : {});

describe('send and recv at the end of a channel', () => {
  it('rejects a recv the closed channel cannot fill, and a send on a closed channel', async () => {
    const shared = createServerLink({ clientDomid: PEER, leftMin: 4096, rightMin: 4096, devices: devices(SELF) });
    const server = new Vchan(shared.link);
    const client = new Vchan(connectClientLink({ serverDomid: SELF, ringRef: shared.ringRef, port: shared.port, devices: devices(PEER) }));
    await server.send(Buffer.from('0123456789'));
    server.end();
    expect((await client.recv(4)).toString()).toBe('0123');
    await expect(client.recv(20)).rejects.toMatchObject({ code: 'ECONNRESET' });
    await expect(server.send(Buffer.from('late'))).rejects.toMatchObject({ code: 'EPIPE' });
    client.destroy();
  });
});
