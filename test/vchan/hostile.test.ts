// A hostile or broken peer controls the shared page. Whatever it writes there, this side must
// turn the nonsense into an EPROTO error and a clean close, never a crash, a hang or an access
// outside the rings. Here the "peer" is simply someone writing into the shared control page.
import { afterEach, describe, expect, it } from 'vitest';
import type { Vchan } from '@xen-vchan/vchan';
import { connectClientLink, createServerLink } from '@xen-vchan/vchan/internal';
import { PEER, PROMPT_MS, SELF } from '../support/domains.js';
import { destroyLinkPairs, devices, linkPair } from '../support/link-pair.js';

const LEFT_PROD = 1;
const LEFT_CONS = 0;

afterEach(destroyLinkPairs);

const pair = (readMin = 4096, writeMin = 4096) => linkPair({ readMin, writeMin });

function failure(channel: Vchan): Promise<{ error: Error & { code?: string }; closedAfter: number }> {
  const started = performance.now();
  return new Promise((resolve) => {
    let error: Error | undefined;
    channel.on('error', (caught) => (error = caught));
    channel.on('close', () => resolve({ error: error!, closedAfter: performance.now() - started }));
  });
}

describe('vchan against a hostile peer', () => {
  it('closes with EPROTO when the peer claims more data than the ring holds', async () => {
    const { server, page, clientLink } = pair();
    const seen = failure(server);
    server.resume();
    Atomics.store(new Int32Array(page), LEFT_PROD, 5000); // the client's producer index, 5000 > 4096
    clientLink.events.notify(clientLink.port); // any event makes the server look
    const { error, closedAfter } = await seen;
    expect(error).toMatchObject({ code: 'EPROTO' });
    expect(error.message).toMatch(/5000 bytes are in a 4096-byte ring/);
    expect(closedAfter).toBeLessThan(PROMPT_MS * 10);
  });

  it('closes with EPROTO when the peer moves its consumer index past what was written', async () => {
    const { server, client, page } = pair();
    client.pause();
    const seen = failure(server);
    server.write(Buffer.alloc(10));
    await new Promise((resolve) => setTimeout(resolve, 20));
    Atomics.store(new Int32Array(page), 2 /* right.cons */, 20); // consumed 20 of the 10 bytes written
    server.write(Buffer.alloc(10));
    const { error } = await seen;
    expect(error).toMatchObject({ code: 'EPROTO' });
  });

  it('closes with EPROTO on a live byte that is not 0, 1 or 2', async () => {
    const { server, client, page } = pair();
    const seen = failure(client);
    client.resume();
    new Uint8Array(page)[21] = 7; // srv_live
    server.write('wake up');
    const { error } = await seen;
    expect(error).toMatchObject({ code: 'EPROTO' });
    expect(error.message).toMatch(/live byte is 7/);
  });

  it('refuses a control page with impossible ring orders at connect', () => {
    const shared = createServerLink({ clientDomid: PEER, leftMin: 4096, rightMin: 4096, devices: devices(SELF) });
    try {
      new Uint16Array(shared.link.control.buffer)[8] = 25; // left_order
      expect(() => connectClientLink({ serverDomid: SELF, ringRef: shared.ringRef, port: shared.port, devices: devices(PEER) })).toThrow(
        expect.objectContaining({ code: 'EPROTO' }),
      );
      new Uint16Array(shared.link.control.buffer)[8] = 10;
      new Uint16Array(shared.link.control.buffer)[9] = 10;
      expect(() => connectClientLink({ serverDomid: SELF, ringRef: shared.ringRef, port: shared.port, devices: devices(PEER) })).toThrow(
        expect.objectContaining({ code: 'EPROTO' }),
      );
    } finally {
      shared.link.close(false);
    }
  });

  it('keeps using its own copy of its index when the peer overwrites it', async () => {
    const { server, client, page } = pair();
    const received: Buffer[] = [];
    server.on('data', (chunk: Buffer) => received.push(chunk));
    client.write('abc');
    await new Promise((resolve) => setTimeout(resolve, 50));
    Atomics.store(new Int32Array(page), LEFT_CONS, 1); // our consumer index, rewound by the "peer"
    client.write('def');
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(Buffer.concat(received).toString()).toBe('abcdef');
  });
});
