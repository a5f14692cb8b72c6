// vchan end to end across processes: the server runs here, the client in a peer process (or the
// other way round), over whatever backend the run selects.
import { afterEach, describe, expect, it } from 'vitest';
import { connect, createServer, type Vchan, type VchanServer } from '@xen-vchan/vchan';
import { chooseOrders } from '@xen-vchan/vchan/internal';
import { openXenStore } from '@xen-vchan/xenstore';
import { backend, OTHER, PEER, PROMPT_MS, SELF, sleep } from '../support/domains.js';
import { Peer } from '../support/peer.mjs';
import { receiveAll, receiveCount, sendSeeded } from '../support/stream-data.mjs';

const simDomid = backend === 'sim' ? SELF : undefined;
let peer: Peer | null = null;
let server: VchanServer | null = null;

afterEach(async () => {
  await server?.close();
  server = null;
  await peer?.stop();
  peer = null;
});

async function startServer(name: string, options: { readMin?: number; writeMin?: number; persist?: boolean } = {}) {
  const channels: Vchan[] = [];
  const waiters: ((channel: Vchan) => void)[] = [];
  server = createServer({ domid: PEER, name, simDomid, ...options }, (channel) => {
    const waiter = waiters.shift();
    if (waiter) waiter(channel);
    else channels.push(channel);
  });
  await server.listen();
  const nextChannel = () => new Promise<Vchan>((resolve) => (channels.length ? resolve(channels.shift()!) : waiters.push(resolve)));
  return { server, nextChannel };
}

async function clientPeer(name: string): Promise<{ peer: Peer; id: number }> {
  peer = await Peer.start(PEER, 'vchan');
  const id = await peer.call<number>('connect', { domid: SELF, name });
  return { peer, id };
}

/** Sizes that make libxenvchan's server pick exactly these orders. */
function sizesFor(left: number, right: number): [number, number] {
  const size = (order: number) => (order === 10 ? 1024 : order === 11 ? 2048 : 2 ** order);
  return [size(left), size(right)];
}

function allOrderPairs(): [number, number][] {
  const big = [12, 13, 14, 15, 16, 17, 18, 19, 20];
  return [
    [10, 11],
    [11, 10],
    ...big.map((order): [number, number] => [11, order]),
    ...big.map((order): [number, number] => [order, 11]),
    ...big.flatMap((left) => big.map((right): [number, number] => [left, right])),
  ];
}

describe('vchan', () => {
  it('moves checksummed data both ways over every ring order pair libxenvchan can produce', async () => {
    peer = await Peer.start(PEER, 'vchan');
    const pairs = allOrderPairs();
    expect(pairs).toHaveLength(101);
    for (const [index, [left, right]] of pairs.entries()) {
      const [readMin, writeMin] = sizesFor(left, right);
      expect(chooseOrders(readMin, writeMin)).toEqual({ left, right });
      const name = `orders-${left}-${right}`;
      const { server: listening, nextChannel } = await startServer(name, { readMin, writeMin });
      expect(listening.address()).toMatchObject({ readOrder: left, writeOrder: right });
      const id = await peer.call<number>('connect', { domid: SELF, name });
      const channel = await nextChannel();
      // Three times each ring, in random chunks: every index wraps at least twice.
      const toClient = 3 * 2 ** right + 17;
      const toServer = 3 * 2 ** left + 5;
      const [sentHere, receivedThere, sentThere, receivedHere] = await Promise.all([
        sendSeeded(channel, { total: toClient, seed: index + 1, maxChunk: 5000 }),
        peer.call<{ bytes: number; sha256: string }>('receiveCount', { id, bytes: toClient }),
        peer.call<string>('send', { id, total: toServer, seed: index + 1000, maxChunk: 7000, end: false }),
        receiveCount(channel, toServer),
      ]);
      expect(receivedThere).toEqual({ bytes: toClient, sha256: sentHere });
      expect(receivedHere).toEqual({ bytes: toServer, sha256: sentThere });
      await server!.close();
      server = null;
    }
  }, 120_000);

  it('applies backpressure: a writer waits for a slow reader and nothing is lost', async () => {
    const { nextChannel } = await startServer('backpressure', { writeMin: 4096 });
    const { peer: client, id } = await clientPeer('backpressure');
    const channel = await nextChannel();
    const total = 256 * 1024;
    let refused = false;
    const sending = sendSeeded(channel, { total, seed: 7, maxChunk: 65536 });
    channel.once('drain', () => (refused = true));
    await sleep(200); // the client is not reading yet: the 4 KiB ring fills and the writer waits
    expect(channel.stats().bytesWritten).toBeLessThanOrEqual(4096);
    const [sha256, received] = await Promise.all([
      sending.then((hash: string) => {
        channel.end();
        return hash;
      }),
      client.call<{ bytes: number; sha256: string }>('receive', { id }),
    ]);
    expect(refused).toBe(true);
    expect(channel.stats().writeStalls).toBeGreaterThan(0);
    expect(received).toEqual({ bytes: total, sha256 });
  });

  it('delivers everything written before a close: the reader drains, then ends', async () => {
    const { nextChannel } = await startServer('drain', { writeMin: 4096 });
    const { peer: client, id } = await clientPeer('drain');
    const channel = await nextChannel();
    const total = 10 * 4096 + 123;
    const receiving = client.call<{ bytes: number; sha256: string }>('receive', { id });
    const sha256 = await sendSeeded(channel, { total, seed: 11, maxChunk: 3000 });
    const closed = new Promise<void>((resolve) => channel.once('close', resolve));
    channel.resume(); // nothing comes this way; like any Readable, it ends once read to its end
    channel.end(); // flushes into the ring and closes at once; the client still drains the ring
    expect(await receiving).toEqual({ bytes: total, sha256 });
    await closed; // no half-close: our side is closed too, and says so
    expect(channel.readableEnded && channel.writableFinished).toBe(true);
  });

  /** SIGKILLs the peer process at the other end of `channel`, which must then close promptly. */
  async function expectClosedPromptlyAfterKill(channel: Vchan, killed: Peer, whoSaw: string): Promise<void> {
    channel.resume();
    const closed = new Promise<number>((resolve) => channel.on('close', () => resolve(performance.now())));
    const killedAt = performance.now();
    await killed.kill('SIGKILL');
    const elapsed = (await closed) - killedAt;
    console.log(`[${backend}] ${whoSaw} after ${elapsed.toFixed(1)} ms`);
    expect(elapsed).toBeLessThan(PROMPT_MS);
  }

  it('closes promptly when the client is killed', async () => {
    const { nextChannel } = await startServer('kill-client');
    const { peer: client } = await clientPeer('kill-client');
    await expectClosedPromptlyAfterKill(await nextChannel(), client, 'server saw the killed client');
  });

  it('closes promptly when the server is killed', async () => {
    peer = await Peer.start(SELF, 'vchan');
    await peer.call('serve', { domid: PEER, name: 'kill-server' });
    const channel = await connect({ domid: SELF, name: 'kill-server', simDomid: backend === 'sim' ? PEER : undefined });
    await expectClosedPromptlyAfterKill(channel, peer, 'client saw the killed server');
  });

  it('serves successive clients when asked to persist', async () => {
    const { nextChannel } = await startServer('persist', { persist: true });
    peer = await Peer.start(PEER, 'vchan');
    for (let round = 0; round < 3; round++) {
      const id = await peer.call<number>('connect', { domid: SELF, name: 'persist' });
      const channel = await nextChannel();
      const [sha256, received] = await Promise.all([
        peer.call<string>('send', { id, total: 50_000, seed: round + 1, maxChunk: 4000 }),
        receiveAll(channel),
      ]);
      expect(received).toEqual({ bytes: 50_000, sha256 });
    }
  });

  it('gives up waiting for a server after the timeout, or when aborted', async () => {
    const simOptions = backend === 'sim' ? { simDomid: PEER } : {};
    const started = performance.now();
    await expect(connect({ domid: SELF, name: 'nobody', timeout: 300, ...simOptions })).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    await expect(connect({ domid: SELF, name: 'nobody', timeout: 10_000, signal: controller.signal, ...simOptions })).rejects.toMatchObject(
      { code: 'ABORT_ERR' },
    );
  });

  it('publishes keys only the client may read, and removes them on close', async () => {
    const { server: listening } = await startServer('keys');
    const path = listening.path!;
    const xenstore = await openXenStore({ ...(backend === 'sim' ? { domid: SELF } : {}) });
    try {
      for (const key of ['ring-ref', 'event-channel']) {
        expect(await xenstore.getPermissions(`${path}/${key}`)).toEqual([
          { domid: SELF, access: 'none' },
          { domid: PEER, access: 'read' },
        ]);
      }
      if (backend === 'sim') {
        const stranger = await openXenStore({ domid: OTHER });
        await expect(stranger.read(`${path}/ring-ref`)).rejects.toMatchObject({ code: 'EACCES' });
        stranger.close();
      }
      await listening.close();
      server = null;
      await expect(xenstore.read(`${path}/ring-ref`)).rejects.toMatchObject({ code: 'ENOENT' });
      await expect(xenstore.read(path)).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      xenstore.close();
    }
  });
});
