// One end of a checksummed stream between two domains, through the public vchan API; the
// two-domain tests run one in dom0 and one in the guest.
//
//   node stream.mjs server|client --peer DOMID --name NAME (--send BYTES --seed N | --recv BYTES)
//                   [--ring BYTES] [--chunk BYTES] [--timeout MS]
//
// The server serves --peer with both rings of --ring bytes; the client connects to the server in
// domain --peer. The sender writes BYTES of a seeded xorshift pattern in --chunk writes (with
// backpressure) and then ends the stream; the receiver reads until the end. Each prints its
// progress lines and, last, `RESULT {"bytes":..,"sha256":..,"seconds":..,"mibps":..}` over the
// bytes it sent or received. Exit status 0 when the byte count is right.
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { openEnd, parseEndArgs, writePattern } from './end.mjs';

/** @typedef {import('@xen-vchan/vchan').Vchan} Vchan */

const { role, end, values } = parseEndArgs({
  name: 'stream',
  ring: 65536,
  options: {
    send: { type: 'string' },
    recv: { type: 'string' },
    seed: { type: 'string', default: '1' },
    chunk: { type: 'string', default: '65536' },
  },
  usage: 'stream.mjs server|client --peer DOMID --name NAME (--send BYTES --seed N | --recv BYTES) [--ring BYTES] [--chunk BYTES]',
  valid: (values) => (values.send === undefined) !== (values.recv === undefined),
});
const chunk = Number(values.chunk);

/**
 * @param {Vchan} channel
 * @param {number} total
 * @param {number} seed
 */
async function send(channel, total, seed) {
  // Nothing comes the other way, but reading lets a close by the peer end the stream at once.
  channel.resume();
  const sent = await writePattern(channel, { total, seed, chunk });
  // 'finish': every byte is in the ring and our side has closed; the peer drains the ring.
  channel.end();
  await once(channel, 'finish');
  channel.destroy();
  return sent;
}

/** @param {Vchan} channel */
async function receive(channel) {
  const hash = createHash('sha256');
  let received = 0;
  for await (const piece of channel) {
    hash.update(piece);
    received += piece.length;
  }
  return { bytes: received, sha256: hash.digest('hex') };
}

const channel = await openEnd(role, end);
console.log(`CONNECTED ${role} rings ${channel.readRingSize}/${channel.writeRingSize}`);
const started = performance.now();
const result = values.send !== undefined ? await send(channel, Number(values.send), Number(values.seed)) : await receive(channel);
const seconds = (performance.now() - started) / 1000;
console.log(`RESULT ${JSON.stringify({ ...result, seconds, mibps: result.bytes / 2 ** 20 / seconds, stats: channel.stats() })}`);
const expected = Number(values.send ?? values.recv);
process.exitCode = result.bytes === expected ? 0 : 1;
