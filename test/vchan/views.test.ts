// Zero-copy reads: Vchan.views() hands out the read ring's bytes in place, and the consumer index
// moves only when a view is released. Both ends live in this process; the "peer" that misbehaves
// is someone writing into the shared control page, as in hostile.test.ts.
import { afterEach, describe, expect, it } from 'vitest';
import type { Vchan, VchanOptions, VchanView } from '@xen-vchan/vchan';
import { PROMPT_MS, SETTLE_MS, sleep } from '../support/domains.js';
import { destroyLinkPairs, pattern, patternByte, quietLinkPair } from '../support/link-pair.js';

const LEFT_PROD = 1;
/** The ring the server reads (left, the client writes it): 4 KiB, so a few KiB already wrap. */
const RING = 4096;

afterEach(destroyLinkPairs);

const pair = (options: VchanOptions = {}) => quietLinkPair(RING, options);

/** Writes `total` pattern bytes in chunks of `chunk`, waiting for the stream's backpressure. */
async function writePattern(channel: Vchan, total: number, chunk: number): Promise<void> {
  for (let offset = 0; offset < total; offset += chunk) {
    if (!channel.write(pattern(offset, Math.min(chunk, total - offset)))) await new Promise((resolve) => channel.once('drain', resolve));
  }
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + PROMPT_MS * 20;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

function ringEndOf(view: VchanView): number {
  return view.bytes.byteOffset + view.bytes.length;
}

describe('Vchan.views(): zero-copy reads', () => {
  it('hands over every byte intact and in order, across many wraps, then ends when the peer closes', async () => {
    const { server, client } = pair();
    const total = 300_000;
    const writing = writePattern(client, total, 3001).then(() => client.end());
    let seen = 0;
    let views = 0;
    const ends = new Set<number>();
    for await (const view of server.views()) {
      const bytes = view.bytes;
      expect(bytes.length).toBeGreaterThan(0);
      expect(bytes.length).toBeLessThanOrEqual(RING);
      for (let index = 0; index < bytes.length; index++) {
        if (bytes[index] !== patternByte(seen + index)) throw new Error(`byte ${seen + index} is ${bytes[index]}`);
      }
      seen += bytes.length;
      views++;
      ends.add(ringEndOf(view));
    }
    await writing;
    expect(seen).toBe(total);
    expect(server.stats().bytesRead).toBe(total);
    // A view never crosses the ring's end: several stopped exactly there.
    expect(views).toBeGreaterThan(total / RING);
    expect(ends.size).toBeGreaterThan(1);
    await until(() => server.destroyed, 'the server to close after the peer did');
    expect(server.errored).toBeNull();
  });

  it('holds the writer back while a view is held: the index moves only on release', async () => {
    const { server, client } = pair();
    const total = RING * 4;
    const writing = writePattern(client, total, 1000);
    const loop = server.views();
    const first = (await loop.next()).value as VchanView;
    const firstLength = first.bytes.length;
    await sleep(SETTLE_MS);
    // Nothing was consumed: the writer filled the ring and waits.
    expect(server.stats().bytesRead).toBe(0);
    expect(client.stats().bytesWritten).toBe(RING);
    expect(client.stats().writeStalls).toBeGreaterThan(0);
    first.release();
    expect(server.stats().bytesRead).toBe(firstLength);
    let seen = firstLength;
    for await (const view of { [Symbol.asyncIterator]: () => loop }) {
      const bytes = view.bytes;
      for (let index = 0; index < bytes.length; index++) {
        if (bytes[index] !== patternByte(seen + index)) throw new Error(`byte ${seen + index} is ${bytes[index]}`);
      }
      seen += bytes.length;
      if (seen === total) break;
    }
    await writing;
    expect(seen).toBe(total);
  });

  it('gives up a wait with ABORT_ERR when its signal aborts, and a later loop goes on where it left off', async () => {
    const { server, client } = pair();
    client.write(pattern(0, 100));
    const controller = new AbortController();
    const seen: number[] = [];
    const looping = (async () => {
      for await (const view of server.views({ signal: controller.signal })) seen.push(...view.bytes);
    })();
    await until(() => seen.length === 100, 'the first bytes');
    const reason = new Error('enough');
    controller.abort(reason);
    await expect(looping).rejects.toMatchObject({ code: 'ABORT_ERR', name: 'AbortError', cause: reason });
    client.write(pattern(100, 100));
    for await (const view of server.views()) {
      seen.push(...view.bytes);
      if (seen.length === 200) break;
    }
    expect(Buffer.from(seen)).toEqual(pattern(0, 200));
    // An aborted signal refuses at once.
    await expect(server.views({ signal: AbortSignal.abort() }).next()).rejects.toMatchObject({ code: 'ABORT_ERR' });
  });

  it('views what the peer wrote before it closed, then ends', async () => {
    const { server, client } = pair();
    client.end(pattern(0, 5000));
    let seen = 0;
    for await (const view of server.views()) seen += view.bytes.length;
    expect(seen).toBe(5000);
  });

  it('ends the loop with EPROTO when the peer breaks the protocol mid-iteration', async () => {
    const { server, client, page, clientLink } = pair();
    client.write(pattern(0, 10));
    const failing = (async () => {
      for await (const view of server.views()) expect(view.bytes.length).toBeGreaterThan(0);
    })();
    await until(() => server.stats().bytesRead === 10, 'the first bytes');
    Atomics.store(new Int32Array(page), LEFT_PROD, 10 + 5000); // claims 5000 bytes in a 4096-byte ring
    clientLink.events.notify(clientLink.port); // any event makes the server look
    await expect(failing).rejects.toMatchObject({ code: 'EPROTO' });
    expect(server.destroyed).toBe(true);
  });

  it('ends a waiting loop with ERR_STREAM_PREMATURE_CLOSE when the channel is destroyed without an error', async () => {
    const { server } = pair();
    const waiting = server.views().next();
    await sleep(10);
    server.destroy();
    await expect(waiting).rejects.toMatchObject({ code: 'ERR_STREAM_PREMATURE_CLOSE' });
  });

  it('ends a waiting loop when this side ends the channel', async () => {
    const { server, client } = pair();
    client.write(pattern(0, 50));
    let seen = 0;
    const looping = (async () => {
      for await (const view of server.views()) seen += view.bytes.length;
    })();
    await until(() => seen === 50, 'the bytes');
    server.end();
    await looping;
    await until(() => server.destroyed, 'the close');
    expect(server.errored).toBeNull();
  });

  it('counts a loop waiting on a quiet peer as a stalled reader (stallTimeout)', async () => {
    const { server } = pair({ stallTimeout: PROMPT_MS });
    const started = performance.now();
    await expect(server.views().next()).rejects.toMatchObject({ code: 'ETIMEDOUT' });
    expect(performance.now() - started).toBeGreaterThanOrEqual(PROMPT_MS * 0.9);
  });

  it('keeps its own consumer index while a view is held, whatever the peer writes there', async () => {
    const { server, client, page } = pair();
    client.write(pattern(0, 1000));
    const loop = server.views();
    const first = (await loop.next()).value as VchanView;
    expect(first.bytes.length).toBe(1000);
    Atomics.store(new Int32Array(page), 0 /* left.cons, our word */, 3000); // the "peer" rewrites it
    first.release();
    client.write(pattern(1000, 500));
    const next = (await loop.next()).value as VchanView;
    expect(Buffer.from(next.bytes)).toEqual(pattern(1000, 500));
    await loop.return();
  });

  it('cannot be mixed with reading the stream', async () => {
    const streamRead = pair();
    streamRead.server.on('data', () => {});
    await sleep(10);
    expect(() => streamRead.server.views()).toThrow(expect.objectContaining({ code: 'ERR_VCHAN_READ_MODE' }));

    const { server } = pair();
    const loop = server.views();
    expect(() => server.views()).toThrow(expect.objectContaining({ code: 'ERR_VCHAN_READ_MODE' }));
    const errors: Error[] = [];
    server.on('error', (error) => errors.push(error));
    const waiting = loop.next();
    server.on('data', () => {});
    await expect(waiting).rejects.toMatchObject({ code: 'ERR_VCHAN_READ_MODE' });
    expect(errors[0]).toMatchObject({ code: 'ERR_VCHAN_READ_MODE' });
  });

  it('releases a view once however often release() is called, and a released view cannot be read', async () => {
    const { server, client } = pair();
    client.write(pattern(0, 300));
    const loop = server.views();
    const first = (await loop.next()).value as VchanView;
    const kept = first.bytes;
    expect(first.bytes.length).toBe(300);
    first.release();
    first.release();
    expect(first.released).toBe(true);
    expect(server.stats().bytesRead).toBe(300);
    expect(() => first.bytes).toThrow(expect.objectContaining({ code: 'ERR_VCHAN_VIEW_RELEASED' }));
    // The array taken before the release still points into the ring, where the peer writes next;
    // reading it is harmless to the channel, and what follows arrives intact.
    client.write(pattern(300, 300));
    await sleep(10);
    expect(kept.length).toBe(300);
    const next = (await loop.next()).value as VchanView; // releases nothing more: first was released
    expect(Buffer.from(next.bytes)).toEqual(pattern(300, 300));
    expect(server.stats().bytesRead).toBe(300);
    await loop.return();
    expect(next.released).toBe(true);
    expect(server.stats().bytesRead).toBe(600);
    // Once the channel is closed its rings are unmapped: a kept array is then empty, never stale memory.
    server.destroy();
    await until(() => server.closed, 'the close');
    expect(kept.length).toBe(0);
    next.release(); // after the close: nothing to move, nothing thrown
  });
});
