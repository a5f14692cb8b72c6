// Sessions over a vchan: openSession takes each end's role from the vchan's side, and RpcPeer
// runs over one stream while others carry bulk data.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { type MuxStream, openSession, type Session } from '@xen-vchan/mux';
import { connect, createServer, RpcPeer, type Vchan, type VchanServer } from '@xen-vchan/vchan';
import { afterEach, describe, expect, it } from 'vitest';
import { backend, PEER, SELF } from '../support/domains.js';

const simDomid = (domid: number) => (backend === 'sim' ? domid : undefined);
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Both ends of one vchan in this process: the server plays SELF, the client PEER. */
async function vchanPair(name: string): Promise<{ server: VchanServer; serverEnd: Vchan; clientEnd: Vchan }> {
  const server = createServer({ domid: PEER, name, simDomid: simDomid(SELF), readMin: 65536, writeMin: 65536 });
  const accepted = new Promise<Vchan>((resolve) => server.once('channel', resolve));
  await server.listen();
  const clientEnd = await connect({ domid: SELF, name, simDomid: simDomid(PEER), timeout: 10_000 });
  const serverEnd = await accepted;
  cleanups.push(async () => {
    serverEnd.destroy();
    clientEnd.destroy();
    await server.close();
  });
  return { server, serverEnd, clientEnd };
}

const closeSessions = (...sessions: Session[]) => cleanups.push(() => Promise.all(sessions.map((session) => session.close())));

describe('sessions over a vchan', () => {
  it("openSession takes the role from the vchan's side, and needs one for a plain duplex", async () => {
    const { serverEnd, clientEnd } = await vchanPair('mux-roles');
    const server = openSession(serverEnd);
    const client = openSession(clientEnd);
    closeSessions(client, server);
    expect([server.role, client.role]).toEqual(['server', 'client']);
    server.on('stream', (stream: MuxStream) => stream.pipe(stream));
    const stream = client.open();
    stream.end('hello');
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(Buffer.concat(chunks).toString()).toBe('hello');
    expect(() => openSession(new net.Socket())).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(openSession(new net.Socket(), { role: 'client' }).role).toBe('client');
  });

  it('RpcPeer runs over one stream while other streams carry bulk data', async () => {
    const { serverEnd, clientEnd } = await vchanPair('mux-rpc');
    const server = openSession(serverEnd);
    const client = openSession(clientEnd);
    closeSessions(client, server);
    // The server: stream 1 is the RPC service, every other stream echoes.
    const served: RpcPeer[] = [];
    server.on('stream', (stream: MuxStream) => {
      if (stream.id === 1) served.push(new RpcPeer(stream, { handlers: { add: ({ a, b }: { a: number; b: number }) => a + b } }));
      else stream.pipe(stream);
    });
    const rpc = new RpcPeer(client.open());
    let rpcDone = false;

    // Four bulk streams: each writes until the calls are done (and at least 1 MiB), then ends,
    // and reads its echo back to the end.
    const bulk = Array.from({ length: 4 }, async () => {
      const stream = client.open();
      const sent = createHash('sha256');
      const received = createHash('sha256');
      let written = 0;
      let echoed = 0;
      const reading = (async () => {
        for await (const chunk of stream.iterator({ destroyOnReturn: false })) {
          received.update(chunk);
          echoed += chunk.length;
        }
      })();
      while (!rpcDone || written < 1024 * 1024) {
        const chunk = randomBytes(16 * 1024);
        sent.update(chunk);
        written += chunk.length;
        if (!stream.write(chunk)) await once(stream, 'drain');
      }
      stream.end();
      await reading;
      return { written, echoed, same: sent.digest('hex') === received.digest('hex') };
    });

    // The calls, sequential and concurrent, while every bulk stream is open and moving.
    for (let i = 0; i < 50; i++) expect(await rpc.call('add', { a: i, b: 1 })).toBe(i + 1);
    const together = await Promise.all(Array.from({ length: 50 }, (_, i) => rpc.call('add', { a: i, b: i })));
    expect(together).toEqual(Array.from({ length: 50 }, (_, i) => 2 * i));
    rpcDone = true;

    for (const outcome of await Promise.all(bulk)) {
      expect(outcome.same).toBe(true);
      expect(outcome.echoed).toBe(outcome.written);
      expect(outcome.written).toBeGreaterThanOrEqual(1024 * 1024);
    }
    rpc.close();
    for (const peer of served) peer.close();
  });
});
