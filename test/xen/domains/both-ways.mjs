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
import { openEnd, parseEndArgs, writePattern } from './end.mjs';

/** @typedef {import('@xen-vchan/vchan').Vchan} Vchan */

const { role, end, values } = parseEndArgs({
  name: 'both-ways',
  ring: 2 ** 20,
  options: { bytes: { type: 'string' }, seed: { type: 'string', default: '1' } },
  usage: 'both-ways.mjs server|client --peer DOMID --name NAME --bytes N --seed S [--ring BYTES]',
  valid: (values) => values.bytes !== undefined,
});
const total = Number(values.bytes);
const CHUNK = 64 * 1024;

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
    channel.once('end', () =>
      received === total ? resolve(undefined) : reject(new Error(`the peer ended after ${received} of ${total} bytes`)),
    );
  });
  return { bytes: received, sha256: hash.digest('hex') };
}

const channel = await openEnd(role, end);
console.log(`CONNECTED ${role} rings ${channel.readRingSize}/${channel.writeRingSize}`);
const started = performance.now();
const [sent, received] = await Promise.all([writePattern(channel, { total, seed: Number(values.seed), chunk: CHUNK }), receive(channel)]);
const seconds = (performance.now() - started) / 1000;
// We have all the peer's bytes; end() returns once ours are all in the ring, and the peer reads
// them even after our end has closed.
channel.end();
await once(channel, 'finish');
channel.destroy();
console.log(`RESULT ${JSON.stringify({ sent, received, seconds, mibps: (sent.bytes + received.bytes) / 2 ** 20 / seconds })}`);
process.exitCode = sent.bytes === total && received.bytes === total ? 0 : 1;
