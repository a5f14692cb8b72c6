#!/usr/bin/env node
// The main job: two processes play Xen domains 1 and 2 and pipe a generated stream through a
// vchan, domain 1 serving and writing, domain 2 connecting and reading. It prints the transport's
// throughput and whether every byte arrived intact and in order.
//   node examples/pipe.mjs [--bytes 1GiB] [--chunk 64KiB] [--ring 1MiB]
// Runs on the simulation by default (XEN_VCHAN_BACKEND=xen to run it in a Xen dom0).
//
// The check must cost less than the transport, or the figure printed would be the check's speed:
// hashing both ends with sha256 took a third of the reader's time and capped the demo at about a
// tenth of what the ring moves. So the writer sends a repeating pseudo-random pattern, derived
// from a seed both ends know, and the reader compares each chunk with it in place (a memcmp).
// The pattern's period is not a multiple of any write or ring size, so a lost, repeated or
// reordered piece shifts what follows and fails the compare.
import { fork } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { parseArgs } from 'node:util';
import { connect, createServer } from '@xen-vchan/vchan';

const onXen = process.env.XEN_VCHAN_BACKEND === 'xen';
const [SERVER, CLIENT] = onXen ? [0, 0] : [1, 2];
const NAME = `pipe-${process.pid}`;
/** 1 MiB plus a prime: the pattern's period. */
const PERIOD = 2 ** 20 + 4099;

/** @param {string} text */
function parseSize(text) {
  const match = /^(\d+(?:\.\d+)?)\s*(|B|KiB|MiB|GiB|K|M|G)$/i.exec(text);
  if (!match) throw new Error(`not a size: ${text} (try 1GiB, 64KiB, 4096)`);
  /** @type {Record<string, number>} */
  const units = { '': 1, b: 1, kib: 1024, k: 1024, mib: 2 ** 20, m: 2 ** 20, gib: 2 ** 30, g: 2 ** 30 };
  const unit = units[match[2].toLowerCase()];
  return Math.round(Number(match[1]) * unit);
}

const format = (/** @type {number} */ bytes) =>
  bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/**
 * One period of the pattern followed by `extra` bytes of its start, so that any `extra`-byte
 * piece of the stream is one slice of it. xorshift32: cheap, and the same on both ends.
 * @param {number} seed
 * @param {number} extra
 */
function makePattern(seed, extra) {
  const words = new Uint32Array(Math.ceil((PERIOD + extra) / 4));
  let state = seed >>> 0 || 1;
  for (let index = 0; index < words.length; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    words[index] = state;
  }
  const pattern = Buffer.from(words.buffer, 0, PERIOD + extra);
  pattern.copy(pattern, PERIOD, 0, extra);
  return pattern;
}

/**
 * @param {number} server
 * @param {string} name
 * @param {number} seed
 */
async function reader(server, name, seed) {
  if (!process.send) throw new Error('--reader is the half of this example that the writer forks: run it without arguments');
  const pattern = makePattern(seed, 0);
  const channel = await connect({ domid: server, name, simDomid: CLIENT });
  let bytes = 0;
  /** @type {number | null} */
  let firstMismatch = null;
  const started = performance.now();
  for await (const chunk of channel) {
    // Compare in place, slice by slice up to the pattern's wrap; no copy, no allocation.
    for (let done = 0; firstMismatch === null && done < chunk.length; ) {
      const at = (bytes + done) % PERIOD;
      const length = Math.min(chunk.length - done, PERIOD - at);
      if (pattern.compare(chunk, done, done + length, at, at + length) !== 0) firstMismatch = bytes + done;
      done += length;
    }
    bytes += chunk.length;
  }
  process.send({ bytes, firstMismatch, seconds: (performance.now() - started) / 1000 });
}

/** @param {{ bytes: number; chunk: number; ring: number }} options */
async function writer({ bytes, chunk, ring }) {
  const seed = randomInt(1, 2 ** 32 - 1);
  const pattern = makePattern(seed, chunk);
  const server = createServer({ domid: CLIENT, name: NAME, readMin: 4096, writeMin: ring, simDomid: SERVER });
  /** @type {Promise<import('@xen-vchan/vchan').Vchan>} */
  const connected = new Promise((resolve) => server.once('channel', resolve));
  await server.listen();
  const child = fork(new URL(import.meta.url), ['--reader', String(SERVER), NAME, String(seed)], {
    env: { ...process.env, XEN_VCHAN_SIM_DOMID: String(CLIENT) },
  });
  /** @type {Promise<{ bytes: number; firstMismatch: number | null; seconds: number }>} */
  const report = new Promise((resolve, reject) => {
    child.once('message', resolve);
    child.once('exit', (code) => reject(new Error(`the reading domain exited with ${code} before reporting`)));
  });
  const channel = await connected;
  console.log(
    `domain ${SERVER} -> domain ${CLIENT}: ${format(bytes)} in ${chunk}-byte writes over a ${format(ring)} ring (backend ${onXen ? 'xen' : 'sim'})`,
  );
  for (let sent = 0; sent < bytes; ) {
    const size = Math.min(chunk, bytes - sent);
    const at = sent % PERIOD;
    sent += size;
    // The pattern is never modified, so the channel may hold on to the slice until it is copied.
    if (!channel.write(pattern.subarray(at, at + size))) await new Promise((resolve) => channel.once('drain', resolve));
  }
  channel.end();
  const received = await report;
  await server.close();
  const ok = received.bytes === bytes && received.firstMismatch === null;
  console.log(
    `transport: ${format(received.bytes)} in ${received.seconds.toFixed(2)} s, ${(received.bytes / 2 ** 20 / received.seconds).toFixed(0)} MiB/s`,
  );
  if (ok) console.log(`check: all ${format(bytes)} arrived intact and in order (compared in place with the pattern, seed ${seed})`);
  else if (received.firstMismatch !== null)
    console.log(`check: FAILED, the piece received at offset ${received.firstMismatch} differs from what was sent (seed ${seed})`);
  else console.log(`check: FAILED, ${received.bytes} bytes arrived of ${bytes} sent`);
  const stats = channel.stats();
  console.log(`writer: ${stats.eventsSent} events sent, ${stats.eventsReceived} received, ${stats.writeStalls} waits for a full ring`);
  process.exitCode = ok ? 0 : 1;
}

if (process.argv[2] === '--reader') {
  await reader(Number(process.argv[3]), process.argv[4], Number(process.argv[5]));
} else {
  const { values } = parseArgs({
    options: {
      bytes: { type: 'string', default: '1GiB' },
      chunk: { type: 'string', default: '64KiB' },
      ring: { type: 'string', default: '1MiB' },
    },
  });
  await writer({ bytes: parseSize(values.bytes), chunk: parseSize(values.chunk), ring: parseSize(values.ring) });
}
