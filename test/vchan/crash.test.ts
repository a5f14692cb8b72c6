// The crash matrix: either side dies (SIGKILL or a normal exit) at each phase. The survivor must
// notice promptly, lose no byte the dead side had put into the ring, and leak nothing.
import { readdirSync } from 'node:fs';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openXenStore } from '@xen-vchan/xenstore';
import { connect, createServer, type Vchan, type VchanServer } from '@xen-vchan/vchan';
import { SimConnection } from '@xen-vchan/sim';
import { backend, PEER, PROMPT_MS, SELF } from '../support/domains.js';
import { Peer } from '../support/peer.mjs';
import { receiveAll } from '../support/stream-data.mjs';

const simDomid = backend === 'sim' ? SELF : undefined;
const deaths = ['SIGKILL', 'exit'] as const;
let peer: Peer | null = null;
let server: VchanServer | null = null;
const openFds = () => readdirSync('/proc/self/fd').length;
let fdsBefore = 0;

beforeAll(async () => {
  // Once per process: the link to the simulation, its tables and caches, so they are in the baseline.
  const warmup = createServer({ domid: PEER, name: 'warmup', simDomid });
  await warmup.listen();
  await warmup.close();
});

beforeEach(() => {
  fdsBefore = openFds();
});

afterEach(async () => {
  await server?.close();
  server = null;
  await peer?.stop();
  peer = null;
  // Nothing of a case may stay open in this process: channels, devices, XenStore connections, FIFOs.
  await new Promise((resolve) => setTimeout(resolve, 20));
  expect(openFds()).toBeLessThanOrEqual(fdsBefore);
});

async function die(how: (typeof deaths)[number]): Promise<number> {
  const at = performance.now();
  if (how === 'SIGKILL') await peer!.kill('SIGKILL');
  else {
    void peer!.call('exit', { code: 0 }).catch(() => {});
    await peer!.exited;
  }
  return at;
}

function simResources() {
  if (backend !== 'sim') return null;
  const status = SimConnection.open().call('status', {});
  return { grants: status.grants.length, ports: status.ports.length };
}

describe.each(deaths)('crash matrix (%s)', (how) => {
  it('client dies mid-stream while sending: the server reads every byte it put into the ring, then ends', async () => {
    const before = simResources();
    server = createServer({ domid: PEER, name: `mid-up-${how}`, simDomid, readMin: 65536 });
    const connected = new Promise<Vchan>((resolve) => server!.once('channel', resolve));
    await server.listen();
    peer = await Peer.start(PEER, 'vchan');
    const id = await peer.call<number>('connect', { domid: SELF, name: `mid-up-${how}` });
    const channel = await connected;
    channel.pause(); // nothing is consumed until the client is dead
    const { sha256, inRing } = await peer.call<{ sha256: string; inRing: number }>('writeIntoRing', { id, total: 60_000, seed: 3 });
    expect(inRing).toBe(60_000);
    const closed = new Promise<number>((resolve) => channel.on('close', () => resolve(performance.now())));
    const diedAt = await die(how);
    expect(await receiveAll(channel)).toEqual({ bytes: 60_000, sha256 });
    expect((await closed) - diedAt).toBeLessThan(PROMPT_MS * 5);
    await server.close();
    server = null;
    expect(simResources()).toEqual(before);
  });

  it('server dies mid-stream while sending: the client reads every byte it put into the ring, then ends', async () => {
    const before = simResources();
    peer = await Peer.start(SELF, 'vchan');
    await peer.call('serve', { domid: PEER, name: `mid-down-${how}`, writeMin: 65536 });
    const channel = await connect({ domid: SELF, name: `mid-down-${how}`, simDomid: backend === 'sim' ? PEER : undefined });
    channel.pause();
    const id = await peer.call<number>('nextChannel');
    const { sha256 } = await peer.call<{ sha256: string }>('writeIntoRing', { id, total: 50_000, seed: 4 });
    const closed = new Promise<number>((resolve) => channel.on('close', () => resolve(performance.now())));
    const diedAt = await die(how);
    expect(await receiveAll(channel)).toEqual({ bytes: 50_000, sha256 });
    const elapsed = (await closed) - diedAt;
    expect(elapsed).toBeLessThan(PROMPT_MS * 5);
    expect(simResources()).toEqual(before);
  });

  it('client dies mid-stream while receiving: the server sees it promptly and its writes fail', async () => {
    server = createServer({ domid: PEER, name: `mid-recv-${how}`, simDomid, writeMin: 4096 });
    const connected = new Promise<Vchan>((resolve) => server!.once('channel', resolve));
    await server.listen();
    peer = await Peer.start(PEER, 'vchan');
    await peer.call<number>('connect', { domid: SELF, name: `mid-recv-${how}` });
    const channel = await connected;
    channel.resume();
    const failed = new Promise<string | undefined>((resolve) =>
      channel.write(Buffer.alloc(100_000), (error) => resolve((error as { code?: string } | null)?.code)),
    );
    const closed = new Promise<number>((resolve) => channel.on('close', () => resolve(performance.now())));
    channel.on('error', () => {});
    const diedAt = await die(how);
    expect(await failed).toMatch(/EPIPE|ERR_STREAM_DESTROYED/);
    expect((await closed) - diedAt).toBeLessThan(PROMPT_MS);
  });

  it('server dies while closing: the client still reads every byte it put into the ring', async () => {
    const before = simResources();
    peer = await Peer.start(SELF, 'vchan');
    await peer.call('serve', { domid: PEER, name: `closing-${how}`, writeMin: 65536 });
    const channel = await connect({ domid: SELF, name: `closing-${how}`, simDomid: backend === 'sim' ? PEER : undefined });
    channel.pause();
    const id = await peer.call<number>('nextChannel');
    const { sha256 } = await peer.call<{ sha256: string }>('writeIntoRing', { id, total: 40_000, seed: 5 });
    void peer.call('endAndDie', { id, how }).catch(() => {});
    await peer.exited;
    expect(await receiveAll(channel)).toEqual({ bytes: 40_000, sha256 });
    expect(simResources()).toEqual(before);
  });

  it('client dies during the handshake: the server notices and goes on waiting for a client', async () => {
    server = createServer({ domid: PEER, name: `handshake-${how}`, simDomid, readMin: 0, writeMin: 0 });
    await server.listen();
    const { ringRef, port } = server.address()!;
    const lost = new Promise<number>((resolve) => server!.once('clientLost', () => resolve(performance.now())));
    // A client that maps the page and binds the port, then dies before saying it is connected.
    peer = await Peer.start(PEER, 'devices');
    const events = await peer.call<number>('openEvtchn');
    const myPort = await peer.call<number>('bindInterdomain', { id: events, remoteDomain: SELF, remotePort: port });
    const mapper = await peer.call<number>('openGntdev');
    const { id: page } = await peer.call<{ id: number }>('map', { handle: mapper, domid: SELF, refs: [ringRef], writable: true });
    await peer.call('setUnmapNotify', { id: page, options: { offset: 20, clearByte: true, port: myPort } });
    const diedAt = await die(how);
    expect((await lost) - diedAt).toBeLessThan(PROMPT_MS * 2);
    // A proper client still gets in.
    const channel = new Promise<Vchan>((resolve) => server!.once('channel', resolve));
    const client = await connect({ domid: SELF, name: `handshake-${how}`, simDomid: backend === 'sim' ? PEER : undefined });
    await channel;
    client.destroy();
  });
});

describe('crash matrix: before connect', () => {
  it('a client that dies before connecting leaves the server waiting, with nothing leaked', async () => {
    server = createServer({ domid: PEER, name: 'early-client', simDomid });
    await server.listen();
    const before = simResources();
    peer = await Peer.start(PEER, 'vchan');
    await peer.kill('SIGKILL');
    expect(simResources()).toEqual(before);
    const channel = new Promise<Vchan>((resolve) => server!.once('channel', resolve));
    const client = await connect({ domid: SELF, name: 'early-client', simDomid: backend === 'sim' ? PEER : undefined });
    await channel;
    client.destroy();
  });

  it('a client that finds a dead server gets a clear error at once, not a hang', async () => {
    peer = await Peer.start(SELF, 'vchan');
    await peer.call('serve', { domid: PEER, name: 'dead-server' });
    await peer.kill('SIGKILL');
    const started = performance.now();
    await expect(
      connect({ domid: SELF, name: 'dead-server', simDomid: backend === 'sim' ? PEER : undefined, timeout: 5000 }),
    ).rejects.toMatchObject({
      code: expect.stringMatching(/EINVAL|ECONNREFUSED/),
    });
    expect(performance.now() - started).toBeLessThan(1000);
    // Its keys stay in XenStore (nobody may remove them but their owner); a new server there takes over.
    const xenstore = await openXenStore(backend === 'sim' ? { domid: SELF } : {});
    expect(await xenstore.read(`/local/domain/${SELF}/data/vchan/${PEER}/dead-server/ring-ref`)).toMatch(/^\d+$/);
    xenstore.close();
    server = createServer({ domid: PEER, name: 'dead-server', simDomid });
    const channel = new Promise<Vchan>((resolve) => server!.once('channel', resolve));
    await server.listen();
    const client = await connect({ domid: SELF, name: 'dead-server', simDomid: backend === 'sim' ? PEER : undefined });
    await channel;
    client.destroy();
  });
});
