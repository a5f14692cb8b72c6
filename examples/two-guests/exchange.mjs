// What both halves of the two-guests example do once connected: each side sends EXCHANGE_BYTES of
// random bytes followed by their sha256, while it receives the same from the other side, and then
// checks what arrived against the digest that came with it.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { finished } from 'node:stream/promises';

/** @typedef {import('@xen-vchan/vchan').Vchan} Vchan */
/** @typedef {{ sent: string; received: string; claimed: string; bytes: number; intact: boolean }} Outcome */

export const EXCHANGE_BYTES = 4 * 2 ** 20;
const DIGEST_BYTES = 32;
const WRITE_BYTES = 64 * 1024;

const sha256 = (/** @type {Uint8Array} */ bytes) => createHash('sha256').update(bytes).digest();

/**
 * Writes the payload and its digest, waiting for 'drain' whenever the stream's buffer is full,
 * so a slow reader on the other side holds this side back instead of filling its memory.
 * @param {Vchan} channel
 * @param {Buffer} payload
 */
async function send(channel, payload) {
  for (let offset = 0; offset < payload.length; offset += WRITE_BYTES) {
    if (!channel.write(payload.subarray(offset, offset + WRITE_BYTES))) await once(channel, 'drain');
  }
  if (!channel.write(sha256(payload))) await once(channel, 'drain');
}

/**
 * Resolves with the first `expected` bytes the peer sends; counts anything beyond in `extra`.
 * @param {Vchan} channel
 * @param {number} expected
 * @returns {Promise<{ bytes: Buffer; extra: () => number }>}
 */
function receive(channel, expected) {
  const bytes = Buffer.alloc(expected);
  let filled = 0;
  let extra = 0;
  return new Promise((resolve, reject) => {
    channel.on('data', (/** @type {Buffer} */ chunk) => {
      const fits = Math.min(chunk.length, expected - filled);
      chunk.copy(bytes, filled, 0, fits);
      filled += fits;
      extra += chunk.length - fits;
      if (filled === expected) resolve({ bytes, extra: () => extra });
    });
    channel.once('end', () => reject(new Error(`the peer closed after sending ${filled} of ${expected} bytes`)));
    channel.once('error', reject);
  });
}

/**
 * @param {Vchan} channel
 * @returns {Promise<Outcome>}
 */
export async function exchange(channel) {
  const payload = randomBytes(EXCHANGE_BYTES);
  const [incoming] = await Promise.all([receive(channel, EXCHANGE_BYTES + DIGEST_BYTES), send(channel, payload)]);
  // Both directions are complete here: this side has everything the peer sent, and the peer has
  // taken everything this side wrote (its digest came last). A vchan closes both ways at once, so
  // either side may end first; end() still flushes into the ring whatever the stream holds.
  channel.end();
  await finished(channel);
  const received = incoming.bytes.subarray(0, EXCHANGE_BYTES);
  const claimed = incoming.bytes.subarray(EXCHANGE_BYTES);
  return {
    sent: sha256(payload).toString('hex'),
    received: sha256(received).toString('hex'),
    claimed: claimed.toString('hex'),
    bytes: received.length,
    intact: sha256(received).equals(claimed) && incoming.extra() === 0,
  };
}

/**
 * Prints the outcome and sets the exit status: 0 when what arrived matches its digest.
 * @param {string} who
 * @param {number} peer
 * @param {Outcome} outcome
 */
export function report(who, peer, outcome) {
  console.log(`${who}: sent     ${outcome.bytes} bytes, sha256 ${outcome.sent}`);
  console.log(`${who}: received ${outcome.bytes} bytes, sha256 ${outcome.received}`);
  if (outcome.intact) {
    console.log(`${who}: OK, what domain ${peer} sent arrived intact`);
  } else {
    console.log(`${who}: FAILED, domain ${peer} said its bytes had sha256 ${outcome.claimed}`);
    process.exitCode = 1;
  }
}
