// Zero-copy writes: Vchan.reserve() hands out free bytes of the write ring in place, and the
// producer index moves only on commit(). Both ends live in this process; the misbehaving "peer" is
// someone writing into the shared control page, as in hostile.test.ts.
import { afterEach, describe, expect, it } from 'vitest';
import type { Vchan, VchanOptions } from '@xen-vchan/vchan';
import { PROMPT_MS, SETTLE_MS, sleep } from '../support/domains.js';
import { destroyLinkPairs, pattern, quietLinkPair } from '../support/link-pair.js';

/** The ring the server writes (right, the client reads it): 4 KiB, so a few KiB already wrap. */
const RING = 4096;
/** The client's word in the control page: the consumer index of the ring the server writes. */
const RIGHT_CONS = 2;

afterEach(destroyLinkPairs);

const pair = (options: VchanOptions = {}) => quietLinkPair(RING, options);

/** Everything `channel` reads until it ends (or `count` bytes). */
async function readAll(channel: Vchan, count = Number.POSITIVE_INFINITY): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of channel) {
    chunks.push(chunk as Buffer);
    total += (chunk as Buffer).length;
    if (total >= count) break;
  }
  return Buffer.concat(chunks);
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + PROMPT_MS * 20;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Fills the server's write ring to the brim through reservations. */
async function fillRing(server: Vchan): Promise<void> {
  let filled = 0;
  while (filled < RING) {
    const space = await server.reserve(RING - filled);
    space.fill(1);
    server.commit(space.length);
    filled += space.length;
  }
}

describe('Vchan.reserve() and commit(): zero-copy writes', () => {
  it('carries every byte intact and in order across many wraps, committing less than reserved at times', async () => {
    const { server, client } = pair();
    const total = 300_000;
    const reading = readAll(client);
    let written = 0;
    let reservations = 0;
    const ringEnds = new Set<number>();
    while (written < total) {
      const wanted = Math.min(1 + ((reservations * 977) % 3001), total - written);
      const space = await server.reserve(wanted);
      expect(space.length).toBeGreaterThan(0);
      expect(space.length).toBeLessThanOrEqual(wanted);
      // A partial commit now and then: the rest of the view goes back unused.
      const count = reservations % 5 === 4 ? Math.ceil(space.length / 2) : space.length;
      space.set(pattern(written, count));
      server.commit(count);
      written += count;
      reservations++;
      ringEnds.add(space.byteOffset + space.length);
    }
    server.end();
    const received = await reading;
    expect(received.length).toBe(total);
    expect(received.equals(pattern(0, total))).toBe(true);
    expect(server.stats().bytesWritten).toBe(total);
    // Views stop at the ring's end: several ended exactly there (one ring, many wraps).
    expect(ringEnds.size).toBeGreaterThan(1);
  });

  it('publishes nothing before commit(): the producer index moves only then', async () => {
    const { server, client } = pair();
    const space = await server.reserve(100);
    space.set(pattern(0, space.length));
    await sleep(SETTLE_MS);
    expect(client.read()).toBeNull();
    expect(server.stats().bytesWritten).toBe(0);
    server.commit(10);
    expect(server.stats().bytesWritten).toBe(10);
    server.end();
    expect((await readAll(client)).equals(pattern(0, 10))).toBe(true);
  });

  it('waits for room while the ring is full (backpressure), and goes on once the peer reads', async () => {
    const { server, client } = pair();
    client.pause();
    await fillRing(server);
    let granted: Uint8Array | null = null;
    const waiting = server.reserve(500).then((space) => (granted = space));
    await sleep(SETTLE_MS);
    expect(granted).toBeNull();
    expect(server.stats().writeStalls).toBeGreaterThan(0);
    expect(client.read(1000)?.length).toBe(1000);
    const space = await waiting;
    expect(space.length).toBeGreaterThan(0);
    expect(space.length).toBeLessThanOrEqual(500);
    space.fill(2);
    server.commit(space.length);
  });

  it('gives up the wait with ABORT_ERR, reserving nothing; what is written next goes in as if it had not been asked', async () => {
    const { server, client } = pair();
    client.pause();
    await fillRing(server);
    const controller = new AbortController();
    const waiting = server.reserve(100, { signal: controller.signal });
    await sleep(SETTLE_MS);
    const reason = new Error('enough');
    controller.abort(reason);
    await expect(waiting).rejects.toMatchObject({ code: 'ABORT_ERR', name: 'AbortError', cause: reason });
    await expect(server.reserve(1, { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ABORT_ERR' });
    server.write('after');
    expect(client.read(RING)?.length).toBe(RING);
    client.resume();
    const rest = await new Promise<Buffer>((resolve) => client.once('data', resolve));
    expect(rest.toString()).toBe('after');
    // The next reservation is granted as usual.
    const space = await server.reserve(3);
    space.set([1, 2, 3]);
    server.commit(3);
  });

  it('rejects with EPIPE when the peer closes while it waits for room, and reserve() after that rejects too', async () => {
    const { server, client } = pair();
    client.pause();
    await fillRing(server);
    const waiting = server.reserve(100);
    await sleep(SETTLE_MS);
    client.destroy();
    await expect(waiting).rejects.toMatchObject({ code: 'EPIPE' });
    await until(() => server.destroyed, 'the server to close');
    await expect(server.reserve(1)).rejects.toMatchObject({ code: 'EPIPE' });
  });

  it('fails commit() with EPIPE once the channel closed under a held reservation', async () => {
    const { server, client } = pair();
    const space = await server.reserve(10);
    client.destroy();
    await until(() => server.destroyed, 'the server to close');
    expect(() => server.commit(space.length)).toThrow(expect.objectContaining({ code: 'EPIPE' }));
  });

  it('takes its turn after what was written before it; writes made while it is held go in after the commit', async () => {
    const { server, client } = pair();
    server.write('first ');
    const held = server.reserve(100);
    server.write('third');
    const space = await held;
    await sleep(SETTLE_MS);
    // 'third' waits behind the reservation.
    expect(server.stats().bytesWritten).toBe('first '.length);
    space.set(Buffer.from('second '));
    server.commit('second '.length);
    server.end();
    expect((await readAll(client)).toString()).toBe('first second third');
  });

  it('orders send() messages and reservations as they were called', async () => {
    const { server, client } = pair();
    const sent = server.send(Buffer.from('one '));
    const held = server.reserve(4);
    const after = server.send(Buffer.from('three'));
    const space = await held;
    space.set(Buffer.from('two '));
    server.commit(4);
    await Promise.all([sent, after]);
    server.end();
    expect((await readAll(client)).toString()).toBe('one two three');
  });

  it('refuses a second reservation while one is held, and a commit past the reservation or without one', async () => {
    const { server, client } = pair();
    const space = await server.reserve(16);
    expect(space.length).toBe(16);
    await expect(server.reserve(1)).rejects.toMatchObject({ code: 'ERR_VCHAN_WRITE_MODE' });
    expect(() => server.commit(17)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => server.commit(-1)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => server.commit(1.5)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    // The reservation stands after a refused commit.
    space.set(pattern(0, 16));
    server.commit(16);
    expect(() => server.commit(1)).toThrow(expect.objectContaining({ code: 'ERR_VCHAN_NO_RESERVATION' }));
    await expect(server.reserve(0)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    // commit(0) drops a reservation, and the stream goes on.
    await server.reserve(5);
    server.commit(0);
    server.end('!');
    const received = await readAll(client);
    expect(received.equals(Buffer.concat([pattern(0, 16), Buffer.from('!')]))).toBe(true);
  });

  it('destroys the channel with EPROTO when the peer moves its consumer index past what was written', async () => {
    const { server, client, page } = pair();
    client.pause();
    const space = await server.reserve(10);
    server.commit(space.length);
    await sleep(SETTLE_MS);
    Atomics.store(new Int32Array(page), RIGHT_CONS, 20); // consumed 20 of the 10 bytes written
    const failed = new Promise<Error>((resolve) => server.once('error', resolve));
    await expect(server.reserve(10)).rejects.toMatchObject({ code: 'EPROTO' });
    expect(await failed).toMatchObject({ code: 'EPROTO' });
  });

  it('waits for end() no longer than the commit: end() after a reservation closes once it is committed', async () => {
    const { server, client } = pair();
    const space = await server.reserve(5);
    server.end();
    await sleep(SETTLE_MS);
    expect(server.writableFinished).toBe(false);
    space.set(Buffer.from('bytes'));
    server.commit(5);
    expect((await readAll(client)).toString()).toBe('bytes');
    await expect(server.reserve(1)).rejects.toMatchObject({ code: 'EPIPE' });
  });
});
