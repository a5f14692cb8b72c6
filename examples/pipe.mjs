#!/usr/bin/env node
// The main job: two processes play Xen domains 1 and 2 and pipe a generated stream through a
// vchan, domain 1 serving and writing, domain 2 connecting and reading. It prints the throughput
// of bytes received and verified, and whether the checksums of both ends match.
//   node examples/pipe.mjs [--bytes 1GiB] [--chunk 64KiB] [--ring 1MiB]
// Runs on the simulation by default (XEN_VCHAN_BACKEND=xen to run it in a Xen dom0).
import { fork } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { connect, createServer } from '@xen-vchan/vchan';

const onXen = process.env.XEN_VCHAN_BACKEND === 'xen';
const [SERVER, CLIENT] = onXen ? [0, 0] : [1, 2];
const NAME = `pipe-${process.pid}`;

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
 * @param {number} server
 * @param {string} name
 */
async function reader(server, name) {
  if (!process.send) throw new Error('--reader is the half of this example that the writer forks: run it without arguments');
  const channel = await connect({ domid: server, name, simDomid: CLIENT });
  const hash = createHash('sha256');
  let bytes = 0;
  const started = performance.now();
  for await (const chunk of channel) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  process.send({ bytes, sha256: hash.digest('hex'), seconds: (performance.now() - started) / 1000 });
}

/** @param {{ bytes: number; chunk: number; ring: number }} options */
async function writer({ bytes, chunk, ring }) {
  const block = randomBytes(Math.max(chunk, 1 << 20));
  const hash = createHash('sha256');
  const server = createServer({ domid: CLIENT, name: NAME, readMin: 4096, writeMin: ring, simDomid: SERVER });
  /** @type {Promise<import('@xen-vchan/vchan').Vchan>} */
  const connected = new Promise((resolve) => server.once('channel', resolve));
  await server.listen();
  const child = fork(new URL(import.meta.url), ['--reader', String(SERVER), NAME], {
    env: { ...process.env, XEN_VCHAN_SIM_DOMID: String(CLIENT) },
  });
  /** @type {Promise<{ bytes: number; sha256: string; seconds: number }>} */
  const report = new Promise((resolve, reject) => {
    child.once('message', resolve);
    child.once('exit', (code) => reject(new Error(`the reading domain exited with ${code} before reporting`)));
  });
  const channel = await connected;
  console.log(
    `domain ${SERVER} -> domain ${CLIENT}: ${format(bytes)} in ${chunk}-byte writes over a ${format(ring)} ring (backend ${onXen ? 'xen' : 'sim'})`,
  );
  let sent = 0;
  let sequence = 0;
  while (sent < bytes) {
    const size = Math.min(chunk, bytes - sent);
    const offset = (sequence * 4099) % (block.length - size + 1);
    const piece = Buffer.from(block.subarray(offset, offset + size));
    if (size >= 8) piece.writeBigUInt64LE(BigInt(sequence), 0); // reordered or lost pieces change the checksum
    sequence++;
    hash.update(piece);
    sent += size;
    if (!channel.write(piece)) await new Promise((resolve) => channel.once('drain', resolve));
  }
  channel.end();
  const received = await report;
  await server.close();
  const expected = hash.digest('hex');
  const ok = received.bytes === bytes && received.sha256 === expected;
  console.log(
    `received and verified ${format(received.bytes)} in ${received.seconds.toFixed(2)} s: ${(received.bytes / 2 ** 20 / received.seconds).toFixed(0)} MiB/s`,
  );
  console.log(`sha256 sent     ${expected}`);
  console.log(`sha256 received ${received.sha256}`);
  console.log(ok ? 'checksums match' : 'CHECKSUMS DIFFER');
  const stats = channel.stats();
  console.log(`writer: ${stats.eventsSent} events sent, ${stats.eventsReceived} received, ${stats.writeStalls} waits for a full ring`);
  process.exitCode = ok ? 0 : 1;
}

if (process.argv[2] === '--reader') {
  await reader(Number(process.argv[3]), process.argv[4]);
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
