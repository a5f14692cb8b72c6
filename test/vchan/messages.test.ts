// Messages over a vchan, across processes: libxenvchan's send/recv, framed messages larger than
// the ring, and request/response RPC.
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { connect, createServer, MessageChannel, RpcPeer, type Vchan, type VchanServer } from '@xen-vchan/vchan';
import { backend, PEER, PROMPT_MS, SELF } from '../support/domains.js';
import { Peer } from '../support/peer.mjs';

const simDomid = backend === 'sim' ? SELF : undefined;
let peer: Peer | null = null;
let server: VchanServer | null = null;
const open: Vchan[] = [];

afterEach(async () => {
  for (const channel of open.splice(0)) channel.destroy();
  await server?.close();
  server = null;
  await peer?.stop();
  peer = null;
});

/** Serves here; the peer connects. Returns our channel and the peer's channel id. */
async function servedPair(name: string, sizes: { readMin?: number; writeMin?: number } = {}) {
  server = createServer({ domid: PEER, name, simDomid, ...sizes });
  const channel = new Promise<Vchan>((resolve) => server!.once('channel', resolve));
  await server.listen();
  peer = await Peer.start(PEER, 'vchan');
  const id = await peer.call<number>('connect', { domid: SELF, name });
  const here = await channel;
  open.push(here);
  return { here, id, peer };
}

/** The peer serves `command`; we connect. */
async function connectTo(command: string, name: string, args: Record<string, unknown> = {}) {
  peer = await Peer.start(SELF, 'vchan');
  await peer.call(command, { domid: PEER, name, ...args });
  const channel = await connect({ domid: SELF, name, simDomid: backend === 'sim' ? PEER : undefined });
  open.push(channel);
  return channel;
}

describe('send and recv (libxenvchan semantics)', () => {
  it('sends whole messages and receives exactly the size asked for', async () => {
    const { here, id, peer } = await servedPair('sendrecv', { readMin: 4096, writeMin: 4096 });
    const messages = [randomBytes(1), randomBytes(4096), randomBytes(100), randomBytes(3000)];
    const received = (async () => {
      const out: Uint8Array[] = [];
      for (const message of messages) out.push(await peer.call<Uint8Array>('recvExact', { id, size: message.length }));
      return out;
    })();
    for (const message of messages) await here.send(message);
    expect((await received).map((bytes) => Buffer.from(bytes))).toEqual(messages);

    const back = randomBytes(2048);
    await peer.call('sendWhole', { id, bytes: back });
    expect(await here.recv(2048)).toEqual(back);
  });

  it('refuses a message larger than the ring instead of waiting forever', async () => {
    const { here } = await servedPair('toolarge', { readMin: 4096, writeMin: 4096 });
    await expect(here.send(Buffer.alloc(4097))).rejects.toMatchObject({ code: 'EMSGSIZE' });
    await expect(here.recv(4097)).rejects.toMatchObject({ code: 'EMSGSIZE' });
    await here.send(Buffer.alloc(4096)); // the channel is still fine
  });
});

describe('framed messages', () => {
  it('carries messages from 0 bytes to 16 MiB intact and in order through a 4 KiB ring', async () => {
    const channel = await connectTo('echoMessages', 'frames', { readMin: 4096, writeMin: 4096, maxMessageSize: 32 << 20 });
    expect(channel.readRingSize).toBe(4096);
    const messages = new MessageChannel(channel, { maxMessageSize: 32 << 20 });
    const sizes = [0, 1, 4095, 4096, 4097, 65536, 1 << 20, 16 << 20, 0, 7];
    const payloads = sizes.map((size) => randomBytes(size));
    const echoed = (async () => {
      const got: Buffer[] = [];
      for await (const message of messages) {
        got.push(message);
        if (got.length === payloads.length) break;
      }
      return got;
    })();
    for (const payload of payloads) await messages.send(payload);
    const got = await echoed;
    expect(got.map((message) => message.length)).toEqual(sizes);
    for (const [index, message] of got.entries()) expect(message.equals(payloads[index]!)).toBe(true);
  }, 60_000);

  it('refuses an oversized message on send, and closes on an oversized one received', async () => {
    const channel = await connectTo('echoMessages', 'oversized', { maxMessageSize: 1 << 20 });
    const small = new MessageChannel(channel, { maxMessageSize: 1000 });
    await expect(small.send(Buffer.alloc(1001))).rejects.toMatchObject({ code: 'EMSGSIZE' });
    // The echo server accepts 2000 bytes and sends them back: over our limit of 1000.
    const header = Buffer.alloc(4);
    header.writeUInt32LE(2000, 0);
    channel.write(Buffer.concat([header, Buffer.alloc(2000)]));
    const iterator = small[Symbol.asyncIterator]();
    await expect(iterator.next()).rejects.toMatchObject({ code: 'EMSGSIZE' });
  });
});

describe('RPC', () => {
  async function rpcClient(name: string): Promise<RpcPeer> {
    return new RpcPeer(await connectTo('serveRpc', name));
  }

  it('runs many interleaved calls at once, each answered to its caller', async () => {
    const rpc = await rpcClient('concurrent');
    const calls = Array.from({ length: 200 }, (_, index) =>
      index % 3 === 0 ? rpc.call('sleep', { ms: 200 - index }) : rpc.call('add', { a: index, b: 1000 }),
    );
    const results = await Promise.all(calls);
    for (const [index, result] of results.entries()) expect(result).toBe(index % 3 === 0 ? 200 - index : index + 1000);
    expect(await rpc.call('echo', { nested: [1, 'two', { three: null }] })).toEqual({ nested: [1, 'two', { three: null }] });
  });

  it('fails a call after its timeout, and the channel goes on', async () => {
    const rpc = await rpcClient('timeout');
    await expect(rpc.call('sleep', { ms: 5000 }, { timeout: 100 })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    expect(await rpc.call('add', { a: 1, b: 2 })).toBe(3);
  });

  it('fails a call when its signal aborts', async () => {
    const rpc = await rpcClient('abort');
    const controller = new AbortController();
    const call = rpc.call('sleep', { ms: 5000 }, { signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(call).rejects.toMatchObject({ code: 'ABORT_ERR' });
    expect(await rpc.call('add', { a: 2, b: 2 })).toBe(4);
  });

  it('brings a thrown error back with its code and message', async () => {
    const rpc = await rpcClient('throws');
    await expect(rpc.call('fail', { code: 'EBUSY', message: 'the disk is busy' })).rejects.toMatchObject({
      name: 'RemoteError',
      code: 'EBUSY',
      message: 'the disk is busy',
    });
    await expect(rpc.call('nosuch')).rejects.toMatchObject({ code: 'ERR_RPC_NO_METHOD' });
  });

  it('fails pending calls promptly when the serving process is killed', async () => {
    const rpc = await rpcClient('killed');
    const pending = [rpc.call('sleep', { ms: 10_000 }), rpc.call('sleep', { ms: 10_000 })];
    const settled = pending.map((call) =>
      call.then(
        () => performance.now(),
        () => performance.now(),
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
    const killedAt = performance.now();
    await peer!.kill('SIGKILL');
    for (const call of pending) await expect(call).rejects.toMatchObject({ code: 'ECONNRESET' });
    const elapsed = Math.max(...(await Promise.all(settled))) - killedAt;
    console.log(`[${backend}] pending RPC calls failed ${elapsed.toFixed(1)} ms after the kill`);
    expect(elapsed).toBeLessThan(PROMPT_MS);
  });
});
