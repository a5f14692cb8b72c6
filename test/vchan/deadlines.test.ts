// "Nothing ever hangs": every wait on the peer has a deadline a user can set, each fires with the
// right code and a message that says what to do, an unfired one leaves no timer behind, and the
// defaults keep the old behaviour (no deadline where a socket has none).
import { createHook } from 'node:async_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { XenVchanError } from '@xen-vchan/native';
import { connect, createServer, MessageChannel, Vchan, type VchanOptions, type VchanServer } from '@xen-vchan/vchan';
import { connectClientLink, createServerLink, type VchanLink } from '@xen-vchan/vchan/internal';
import { openXenStore } from '@xen-vchan/xenstore';
import { backend, PEER, PROMPT_MS, SELF, sleep } from '../support/domains.js';

const devices = (domid: number) => (backend === 'sim' ? { domid } : {});
const serverSim = backend === 'sim' ? { simDomid: SELF } : {};
const clientSim = backend === 'sim' ? { simDomid: PEER } : {};
/** Slack on top of a deadline before we call it late; emulated Xen is slow. */
const LATE_MS = PROMPT_MS * 10;
/**
 * How early a timer may seem to fire, as a share of its delay: Node starts a timer from the event
 * loop's cached clock, which can be older than performance.now() at the call (by tens of ms under
 * emulation), so only a coarse lower bound says the right deadline was used.
 */
const EARLY = 0.5;

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A server Vchan with `options` in this process, and the raw client link the test plays the peer with. */
function rawPair(options: VchanOptions = {}, ringSize = 4096): { server: Vchan; peer: VchanLink } {
  const shared = createServerLink({ clientDomid: PEER, leftMin: ringSize, rightMin: ringSize, devices: devices(SELF) });
  const peer = connectClientLink({ serverDomid: SELF, ringRef: shared.ringRef, port: shared.port, devices: devices(PEER) });
  const server = new Vchan(shared.link, options);
  cleanups.push(
    () => server.destroy(),
    () => peer.close(false),
  );
  return { server, peer };
}

/** Two Vchans in this process, over the same pages. */
function vchanPair(): { server: Vchan; client: Vchan } {
  const shared = createServerLink({ clientDomid: PEER, leftMin: 4096, rightMin: 4096, devices: devices(SELF) });
  const clientLink = connectClientLink({ serverDomid: SELF, ringRef: shared.ringRef, port: shared.port, devices: devices(PEER) });
  const server = new Vchan(shared.link);
  const client = new Vchan(clientLink);
  cleanups.push(
    () => server.destroy(),
    () => client.destroy(),
  );
  return { server, client };
}

/** The raw peer takes everything in the ring it reads, and wakes the server. */
function peerRead(peer: VchanLink): Buffer {
  const ready = peer.reader.available();
  const bytes = Buffer.alloc(ready);
  peer.reader.readInto(bytes, ready);
  try {
    peer.events.notify(peer.port); // any event makes the server look
  } catch {
    /* the server has closed, and its end of the port with it */
  }
  return bytes;
}

/** The raw peer writes what fits of `bytes`, and wakes the server. */
function peerWrite(peer: VchanLink, bytes: Uint8Array): number {
  const count = peer.writer.writeFrom(bytes, peer.writer.space());
  peer.events.notify(peer.port);
  return count;
}

async function until(condition: () => boolean, what: string, ms = LATE_MS): Promise<void> {
  const started = performance.now();
  while (!condition()) {
    if (performance.now() - started > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** The error a stream is destroyed with, and when its 'close' came. */
function failure(stream: Vchan): Promise<{ error: (Error & { code?: string }) | null; after: number }> {
  const started = performance.now();
  return new Promise((resolve) => {
    let error: Error | null = null;
    stream.on('error', (caught) => (error = caught));
    stream.on('close', () => resolve({ error, after: performance.now() - started }));
  });
}

/** How long a promise takes to reject, and with what. */
async function rejection(promise: Promise<unknown>): Promise<{ error: Error & { code?: string; cause?: unknown }; after: number }> {
  const started = performance.now();
  try {
    await promise;
  } catch (error) {
    return { error: error as Error & { code?: string }, after: performance.now() - started };
  }
  throw new Error('expected a rejection');
}

/**
 * Timers the library creates and has not yet cleared or fired, ref'd or not (unref'd ones do not
 * show in process.getActiveResourcesInfo()), told apart from vitest's by where they were made.
 */
function libraryTimers(): { live: () => Promise<number>; stop: () => void } {
  const live = new Set<number>();
  const hook = createHook({
    init(id, type) {
      if (type !== 'Timeout') return;
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = 50;
      const stack = new Error().stack ?? '';
      Error.stackTraceLimit = limit;
      // The library's own code, by its built or (source-mapped) source path.
      if (/packages[\\/]vchan[\\/](dist|src)[\\/]/.test(stack)) live.add(id);
    },
    destroy(id) {
      live.delete(id);
    },
  }).enable();
  cleanups.push(() => hook.disable());
  return {
    // Destroy hooks run a moment after the clear.
    live: async () => {
      await sleep(20);
      return live.size;
    },
    stop: () => hook.disable(),
  };
}

const refdTimeouts = () => process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length;

describe('send() and recv() deadlines', () => {
  it('a send that times out waiting for room puts nothing into the ring, and the next message arrives intact', async () => {
    const { server, peer } = rawPair();
    const size = server.writeRingSize;
    const first = Buffer.alloc(size - 100, 0x11);
    await server.send(first);
    const timers = libraryTimers();
    const before = refdTimeouts();
    const { error, after } = await rejection(server.send(Buffer.alloc(200, 0xee), { timeout: 100 }));
    expect(error).toBeInstanceOf(XenVchanError);
    expect(error).toMatchObject({ code: 'ETIMEDOUT' });
    expect(error.message).toMatch(/200-byte message did not go into the ring within 100 ms.*Nothing of it went into the ring/);
    expect(after).toBeGreaterThanOrEqual(100 * EARLY);
    expect(after).toBeLessThan(100 + LATE_MS);
    expect(refdTimeouts()).toBeLessThanOrEqual(before);
    expect(await timers.live()).toBe(0);
    expect(server.destroyed).toBe(false);
    // Only the first message is in the ring, nothing of the one given up.
    expect(peer.reader.available()).toBe(first.length);
    const next = Buffer.alloc(150, 0x77); // more than the 100 bytes left: it waits for the peer too
    const sent = server.send(next);
    expect(peerRead(peer)).toEqual(first);
    await sent;
    await until(() => peer.reader.available() === next.length, 'the next message');
    expect(peerRead(peer)).toEqual(next);
    expect(server.stats().bytesWritten).toBe(first.length + next.length);
  });

  it('an aborted send rejects with an AbortError carrying the reason, whether it waits for room or behind other writes', async () => {
    const { server, peer } = rawPair();
    const size = server.writeRingSize;
    // A plain write fills the ring and leaves 500 bytes waiting: that write is in progress.
    const filler = Buffer.alloc(size + 500, 0x22);
    server.write(filler);
    await until(() => peer.reader.available() === size, 'the ring to fill');
    const controller = new AbortController();
    const reason = new Error('user gave up');
    const queued = server.send(Buffer.alloc(300, 0xee), { signal: controller.signal });
    setTimeout(() => controller.abort(reason), 50);
    const { error, after } = await rejection(queued);
    expect(error).toMatchObject({ code: 'ABORT_ERR', name: 'AbortError', cause: reason });
    expect(error).toBeInstanceOf(XenVchanError);
    expect(error.message).toMatch(/The send of a 300-byte message was aborted\. Nothing of it went into the ring/);
    expect(after).toBeLessThan(50 + LATE_MS);

    // Now the send is the write waiting for room: aborting it lets what follows go at once.
    const received: Buffer[] = [peerRead(peer)];
    await until(() => peer.reader.available() === 500, 'the rest of the filler');
    received.push(peerRead(peer));
    await server.send(Buffer.alloc(size - 10, 0x33)); // leaves 10 bytes of room
    const second = new AbortController();
    const waiting = server.send(Buffer.alloc(20, 0xee), { signal: second.signal });
    const next = Buffer.from('next!');
    const nextSent = server.send(next);
    await sleep(20);
    second.abort();
    expect((await rejection(waiting)).error).toMatchObject({ code: 'ABORT_ERR' });
    await nextSent; // 5 bytes fit the 10 left: it did not wait behind the aborted one
    received.push(peerRead(peer));
    const all = Buffer.concat(received);
    expect(all).toEqual(Buffer.concat([filler, Buffer.alloc(size - 10, 0x33), next]));
    expect(all.includes(0xee)).toBe(false);
  });

  it('a send already aborted is refused at once; one already in the ring stands', async () => {
    const { server, peer } = rawPair();
    const controller = new AbortController();
    controller.abort();
    await expect(server.send(Buffer.from('x'), { signal: controller.signal })).rejects.toMatchObject({
      code: 'ABORT_ERR',
      name: 'AbortError',
    });
    const later = new AbortController();
    await server.send(Buffer.from('kept'), { signal: later.signal, timeout: 5000 });
    later.abort(); // nothing listens any more
    expect(peerRead(peer).toString()).toBe('kept');
    await expect(server.send(Buffer.from('x'), { timeout: -1 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
  });

  it('a recv that times out or is aborted takes nothing: the bytes stay for the next recv', async () => {
    const { server, peer } = rawPair();
    peerWrite(peer, Buffer.from('0123456789'));
    const timers = libraryTimers();
    const before = refdTimeouts();
    const { error, after } = await rejection(server.recv(20, { timeout: 100 }));
    expect(error).toMatchObject({ code: 'ETIMEDOUT' });
    expect(error.message).toMatch(/recv of 20 bytes timed out after 100 ms with 10 of them there.*Nothing was taken/);
    expect(after).toBeGreaterThanOrEqual(100 * EARLY);
    expect(after).toBeLessThan(100 + LATE_MS);
    expect(refdTimeouts()).toBeLessThanOrEqual(before);
    expect(await timers.live()).toBe(0);

    const controller = new AbortController();
    const reason = new Error('enough');
    setTimeout(() => controller.abort(reason), 30);
    await expect(server.recv(20, { signal: controller.signal })).rejects.toMatchObject({
      code: 'ABORT_ERR',
      name: 'AbortError',
      cause: reason,
    });
    peerWrite(peer, Buffer.from('abcdefghij'));
    expect((await server.recv(20, { timeout: 5000 })).toString()).toBe('0123456789abcdefghij');
    expect(await timers.live()).toBe(0);
  });
});

describe('closeTimeout: end() against a peer that stopped reading', () => {
  it('destroys the stream with ETIMEDOUT, saying how much was not sent; the peer still gets what went in', async () => {
    const { server, peer } = rawPair({ closeTimeout: 150 });
    const size = server.writeRingSize;
    server.resume();
    const seen = failure(server);
    server.write(Buffer.alloc(size + 1000, 0x44));
    server.end();
    const { error, after } = await seen;
    expect(error).toMatchObject({ code: 'ETIMEDOUT' });
    expect(error!.message).toMatch(
      /end\(\) could not put everything written into the ring: the peer took nothing from it for 150 ms \(it stopped reading\)\. 1000 bytes were not sent/,
    );
    expect(error!.message).toMatch(/closeTimeout/);
    expect(after).toBeGreaterThanOrEqual(150 * EARLY);
    expect(after).toBeLessThan(225 + LATE_MS);
    expect(peerRead(peer)).toEqual(Buffer.alloc(size, 0x44));
  });

  it('waits for a slow reader that keeps reading, however long the rest takes', async () => {
    const { server, peer } = rawPair({ closeTimeout: 150 });
    const size = server.writeRingSize;
    server.resume();
    const seen = failure(server);
    const data = Buffer.alloc(size * 8, 0x66);
    server.end(data);
    const received: Buffer[] = [];
    // A ring every 60 ms: 8 rings take about 500 ms, over three times the closeTimeout.
    while (Buffer.concat(received).length < data.length) {
      await sleep(60);
      received.push(peerRead(peer));
    }
    expect((await seen).error).toBeNull();
    expect(Buffer.concat(received)).toEqual(data);
  });

  it('by default waits (30 s) for a slow reader, and leaves no timer once closed', async () => {
    const timers = libraryTimers();
    const { server, peer } = rawPair();
    const size = server.writeRingSize;
    server.resume();
    const seen = failure(server);
    server.write(Buffer.alloc(size + 1000, 0x55));
    server.end();
    await sleep(300);
    expect(server.destroyed).toBe(false);
    expect(await timers.live()).toBe(1); // the close deadline, unref'd
    const received = [peerRead(peer)];
    await until(() => peer.reader.available() === 1000, 'the rest');
    received.push(peerRead(peer));
    expect((await seen).error).toBeNull();
    expect(Buffer.concat(received)).toEqual(Buffer.alloc(size + 1000, 0x55));
    expect(await timers.live()).toBe(0);
  });

  it('0 waits for ever', async () => {
    const timers = libraryTimers();
    const { server } = rawPair({ closeTimeout: 0 });
    server.write(Buffer.alloc(server.writeRingSize + 1));
    server.end();
    expect(await timers.live()).toBe(0);
    expect(server.destroyed).toBe(false);
  });
});

describe('stallTimeout', () => {
  it('destroys a stream whose writes wait for room that never comes', async () => {
    const { server } = rawPair({ stallTimeout: 100 });
    const seen = failure(server);
    server.write(Buffer.alloc(server.writeRingSize + 1));
    const { error, after } = await seen;
    expect(error).toMatchObject({ code: 'ETIMEDOUT' });
    expect(error!.message).toMatch(
      /stalled: nothing moved either way for 100 ms while 1 bytes written here waited for room in the ring \(option stallTimeout\)/,
    );
    expect(after).toBeGreaterThanOrEqual(100 * EARLY);
    expect(after).toBeLessThan(150 + LATE_MS);
  });

  it('destroys a stream whose reader waits for data from a peer gone quiet, not while bytes move either way', async () => {
    const { server, peer } = rawPair({ stallTimeout: 300 });
    const seen = failure(server);
    server.resume();
    // A byte now and then keeps it alive...
    for (let round = 0; round < 8; round++) {
      peerWrite(peer, Buffer.from('.'));
      await sleep(40);
    }
    // ...and so do bytes moving the other way only (a one-way transfer's idle direction).
    for (let round = 0; round < 8; round++) {
      server.write(Buffer.from('data'));
      await sleep(40);
      peerRead(peer);
    }
    expect(server.destroyed).toBe(false);
    const quiet = performance.now();
    const { error } = await seen;
    expect(error).toMatchObject({ code: 'ETIMEDOUT' });
    expect(error!.message).toMatch(/while this side waited for data/);
    expect(performance.now() - quiet).toBeGreaterThanOrEqual(300 * EARLY);
    expect(performance.now() - quiet).toBeLessThan(450 + LATE_MS);
  });

  it('is off by default: an idle stream being read is left alone, with no timer running', async () => {
    const timers = libraryTimers();
    const { server } = rawPair();
    server.resume();
    await sleep(300);
    expect(server.destroyed).toBe(false);
    expect(await timers.live()).toBe(0);
  });

  it('its one timer runs only while the stream waits, and goes with the stream', async () => {
    const timers = libraryTimers();
    const { server, peer } = rawPair({ stallTimeout: 10_000 });
    expect(await timers.live()).toBe(0); // not waiting: nothing asked for data, nothing to write
    server.resume();
    await sleep(20);
    expect(await timers.live()).toBe(1);
    for (let round = 0; round < 20; round++) peerWrite(peer, Buffer.from('x'));
    await sleep(20);
    expect(await timers.live()).toBe(1); // one timer, however often the stream waits
    server.destroy();
    expect(await timers.live()).toBe(0);
  });
});

describe('servers and connect', () => {
  let server: VchanServer | null = null;
  afterEach(async () => {
    await server?.close();
    server = null;
  });

  it('acceptTimeout: a server nobody connects to closes, unpublishes itself and emits ETIMEDOUT', async () => {
    server = createServer({ domid: PEER, name: 'accept-deadline', acceptTimeout: 150, ...serverSim });
    const events: string[] = [];
    const failed = new Promise<Error & { code?: string }>((resolve) => server!.on('error', (error) => resolve(error)));
    const closed = new Promise<void>((resolve) => server!.on('close', () => resolve()));
    server.on('error', () => events.push('error'));
    server.on('close', () => events.push('close'));
    const started = performance.now();
    await server.listen();
    const path = server.path!;
    const error = await failed;
    expect(error).toMatchObject({ code: 'ETIMEDOUT' });
    expect(error.message).toMatch(
      /No client connected to the vchan server at .*accept-deadline within 150 ms \(option acceptTimeout\), so the server closed/,
    );
    expect(performance.now() - started).toBeLessThan(150 + LATE_MS);
    await closed;
    expect(events).toEqual(['error', 'close']);
    const xenstore = await openXenStore(backend === 'sim' ? { domid: SELF } : {});
    try {
      await expect(xenstore.read(`${path}/ring-ref`)).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      xenstore.close();
    }
  });

  it('acceptTimeout stops once a client connects; the channel gets the deadline options', async () => {
    const timers = libraryTimers();
    const channels: Vchan[] = [];
    server = createServer({ domid: PEER, name: 'accept-in-time', acceptTimeout: 5000, stallTimeout: 100, ...serverSim }, (channel) =>
      channels.push(channel),
    );
    const errors: Error[] = [];
    server.on('error', (error) => errors.push(error));
    await server.listen();
    const client = await connect({ domid: SELF, name: 'accept-in-time', ...clientSim });
    cleanups.push(() => client.destroy());
    await until(() => channels.length === 1, 'the channel');
    const channel = channels[0]!;
    // The server's channel has stallTimeout 100: reading from a silent client, it stalls.
    const seen = failure(channel);
    channel.resume();
    const { error } = await seen;
    expect(error).toMatchObject({ code: 'ETIMEDOUT' });
    expect(error!.message).toMatch(/waited for data/);
    expect(errors).toEqual([]);
    await server.close();
    client.destroy();
    expect(await timers.live()).toBe(0);
  });

  it('connect() hands its deadline options to the channel', async () => {
    server = createServer({ domid: PEER, name: 'connect-deadlines', ...serverSim });
    await server.listen();
    const client = await connect({ domid: SELF, name: 'connect-deadlines', stallTimeout: 100, closeTimeout: 100, ...clientSim });
    cleanups.push(() => client.destroy());
    const seen = failure(client);
    client.resume();
    expect((await seen).error).toMatchObject({ code: 'ETIMEDOUT' });
  });

  it('a signal closes the server without an error; one aborted before listen() makes it reject', async () => {
    const controller = new AbortController();
    server = createServer({ domid: PEER, name: 'server-signal', signal: controller.signal, ...serverSim });
    const errors: Error[] = [];
    server.on('error', (error) => errors.push(error));
    const closed = new Promise<void>((resolve) => server!.on('close', () => resolve()));
    await server.listen();
    controller.abort();
    await closed;
    expect(errors).toEqual([]);
    expect(server.address()).toBeNull();

    const aborted = new AbortController();
    aborted.abort(new Error('no'));
    const late = createServer({ domid: PEER, name: 'server-signal-2', signal: aborted.signal, ...serverSim });
    await expect(late.listen()).rejects.toMatchObject({ code: 'ABORT_ERR', name: 'AbortError' });
    await late.close();
  });

  it('refuses deadline options that are not times in ms', async () => {
    expect(() => createServer({ domid: PEER, acceptTimeout: -1, ...serverSim })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }),
    );
    expect(() => createServer({ domid: PEER, stallTimeout: Number.NaN, ...serverSim })).toThrow(/stallTimeout/);
    expect(() => createServer({ domid: PEER, closeTimeout: 2 ** 31, ...serverSim })).toThrow(/closeTimeout/);
    await expect(connect({ domid: SELF, closeTimeout: -5, ...clientSim })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(() => createServer({ domid: PEER, peerCheckInterval: -1, ...serverSim })).toThrow(/peerCheckInterval/);
    await expect(connect({ domid: SELF, peerCheckInterval: Number.POSITIVE_INFINITY, ...clientSim })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
    });
  });
});

describe('MessageChannel.send({ signal })', () => {
  it('drops a message still waiting its turn, whole; one already written still arrives', async () => {
    const { server, client } = vchanPair();
    const sender = new MessageChannel(server);
    // The client reads nothing yet: the ring and then the server's buffer fill.
    const first = Buffer.alloc(300_000, 1);
    const second = Buffer.alloc(1000, 2);
    const dropped = Buffer.alloc(1000, 0xee);
    const fourth = Buffer.alloc(1000, 4);
    const firstController = new AbortController();
    const droppedController = new AbortController();
    const sends = [
      sender.send(first, { signal: firstController.signal }),
      sender.send(second),
      sender.send(dropped, { signal: droppedController.signal }),
      sender.send(fourth),
    ];
    await sleep(20);
    expect(sender.unsentBytes).toBe(3 * 1004);
    droppedController.abort();
    const { error } = await rejection(sends[2]!);
    expect(error).toMatchObject({ code: 'ABORT_ERR', name: 'AbortError' });
    expect(error.message).toMatch(/Nothing of it was written/);
    expect(sender.unsentBytes).toBe(2 * 1004);
    firstController.abort();
    expect((await rejection(sends[0]!)).error.message).toMatch(/already written to the stream/);

    const receiver = new MessageChannel(client);
    const received: Buffer[] = [];
    for await (const message of receiver) {
      received.push(message);
      if (received.length === 3) break;
    }
    expect(received).toEqual([first, second, fourth]);
    await Promise.all([sends[1], sends[3]]);
  });
});
