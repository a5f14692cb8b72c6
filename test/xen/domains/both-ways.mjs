// One end of a checksummed stream that runs both ways at once, through the public vchan API: the
// two-guest tests (test/xen/guests.test.ts) run one end in each guest.
//
//   node both-ways.mjs server|client --peer DOMID --name NAME --bytes N --seed S [--ring BYTES] [--timeout MS]
//
// Each end writes N bytes of a seeded xorshift pattern (with backpressure) while it reads N bytes
// from the other, and ends the stream only once both are done (a vchan has no half-close: the
// first end() would cut off the other direction). Prints, last,
// `RESULT {"sent":{"bytes","sha256"},"received":{"bytes","sha256"},"seconds","mibps"}`, where
// mibps counts both directions. Exit status 0 when both counts are right.
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { openEnd } from './open-end.mjs';
import { makePattern, PATTERN_SIZE } from '../../interop/bulk-node.mjs';

/** @typedef {import('@xen-vchan/vchan').Vchan} Vchan */

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    peer: { type: 'string' },
    name: { type: 'string', default: 'both-ways' },
    bytes: { type: 'string' },
    seed: { type: 'string', default: '1' },
    ring: { type: 'string', default: String(2 ** 20) },
    timeout: { type: 'string', default: '120000' },
  },
});
const role = positionals[0];
if ((role !== 'server' && role !== 'client') || values.peer === undefined || values.bytes === undefined) {
  console.error('usage: both-ways.mjs server|client --peer DOMID --name NAME --bytes N --seed S [--ring BYTES]');
  process.exit(2);
}
const peer = Number(values.peer);
const total = Number(values.bytes);
const ring = Number(values.ring);
const CHUNK = 64 * 1024;

/** @param {Vchan} channel */
async function send(channel) {
  const pattern = makePattern(Number(values.seed));
  const hash = createHash('sha256');
  let sent = 0;
  while (sent < total) {
    const at = sent % PATTERN_SIZE;
    const piece = pattern.subarray(at, at + Math.min(CHUNK, total - sent));
    hash.update(piece);
    sent += piece.length;
    if (!channel.write(piece)) await once(channel, 'drain');
  }
  return { bytes: sent, sha256: hash.digest('hex') };
}

/** @param {Vchan} channel */
async function receive(channel) {
  const hash = createHash('sha256');
  let received = 0;
  await new Promise((resolve, reject) => {
    const onData = (/** @type {Buffer} */ piece) => {
      const wanted = piece.subarray(0, total - received);
      hash.update(wanted);
      received += wanted.length;
      if (received === total) {
        channel.off('data', onData);
        channel.pause();
        resolve(undefined);
      }
    };
    channel.on('data', onData);
    channel.once('error', reject);
    channel.once('end', () => (received === total ? resolve(undefined) : reject(new Error(`the peer ended after ${received} of ${total} bytes`))));
  });
  return { bytes: received, sha256: hash.digest('hex') };
}

const channel = await openEnd(role, { peer, name: values.name ?? '', ring, timeout: Number(values.timeout) });
console.log(`CONNECTED ${role} rings ${channel.readRingSize}/${channel.writeRingSize}`);
const started = performance.now();
const [sent, received] = await Promise.all([send(channel), receive(channel)]);
const seconds = (performance.now() - started) / 1000;
// We have all the peer's bytes; end() returns once ours are all in the ring, and the peer reads
// them even after our end has closed.
channel.end();
await once(channel, 'finish');
channel.destroy();
console.log(`RESULT ${JSON.stringify({ sent, received, seconds, mibps: (sent.bytes + received.bytes) / 2 ** 20 / seconds })}`);
process.exitCode = sent.bytes === total && received.bytes === total ? 0 : 1;
