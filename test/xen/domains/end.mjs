// One end of a vchan for the scripts that run in a domain (stream.mjs, both-ways.mjs,
// survivor.mjs): the command line they share, opening the end (the client connects; the server
// serves and prints `LISTENING <path>` once published, which the tests wait for), and writing
// the seeded pattern into it.
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { connect, createServer } from '@xen-vchan/vchan';
import { makePattern, PATTERN_SIZE } from '../../interop/bulk-node.mjs';
import { writeHashed } from '../../support/stream-data.mjs';

/** @typedef {import('@xen-vchan/vchan').Vchan} Vchan */
/** @typedef {{ peer: number; name: string; ring: number; timeout: number; peerCheckInterval?: number }} EndOptions */

/** @typedef {Record<string, string | undefined>} ArgValues */

/**
 * Parses `server|client --peer DOMID [--name NAME] [--ring BYTES] [--timeout MS]` and the
 * script's own string `options`. Prints `usage` and exits with status 2 when the role or --peer
 * is missing or `valid` refuses the values.
 * @param {{ name: string; ring: number; options: Record<string, { type: 'string'; default?: string }>; usage: string; valid?: (values: ArgValues) => boolean }} script
 *   `name` and `ring`: the defaults of --name and --ring.
 * @returns {{ role: 'server' | 'client'; end: EndOptions; values: ArgValues }}
 */
export function parseEndArgs({ name, ring, options, usage, valid = () => true }) {
  /** @type {{ positionals: string[]; values: ArgValues }} */
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      peer: { type: 'string' },
      name: { type: 'string', default: name },
      ring: { type: 'string', default: String(ring) },
      timeout: { type: 'string', default: '120000' },
      ...options,
    },
  });
  const role = positionals[0];
  if ((role !== 'server' && role !== 'client') || values.peer === undefined || !valid(values)) {
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
  /** @type {EndOptions} */
  const end = { peer: Number(values.peer), name: values.name ?? '', ring: Number(values.ring), timeout: Number(values.timeout) };
  return { role, end, values };
}

/**
 * @param {'server' | 'client'} role
 * @param {EndOptions} options
 *   `ring`: both rings' size (server); `timeout`: how long the client waits for the server (ms).
 * @returns {Promise<Vchan>}
 */
export async function openEnd(role, { peer, name, ring, timeout, peerCheckInterval }) {
  const checks = peerCheckInterval === undefined ? {} : { peerCheckInterval };
  if (role === 'client') return connect({ domid: peer, name, timeout, ...checks });
  const server = createServer({ domid: peer, name, readMin: ring, writeMin: ring, ...checks });
  /** @type {Promise<Vchan>} */
  const accepted = new Promise((resolve, reject) => server.once('channel', resolve).once('error', reject));
  await server.listen();
  console.log(`LISTENING ${server.path}`);
  return accepted;
}

/**
 * Writes `total` bytes of the pattern of `seed` in writes of up to `chunk` bytes, waiting for
 * 'drain' whenever the channel asks to; does not end the channel.
 * @param {Vchan} channel
 * @param {{ total: number; seed: number; chunk: number }} what
 * @returns {Promise<{ bytes: number; sha256: string }>} what it wrote
 */
export function writePattern(channel, { total, seed, chunk }) {
  // events.once: an 'error' fails the write, but a close without one leaves it waiting (for the
  // caller's timeout or kill), as it always has: the peer-death experiment times how long a
  // survivor's stream.mjs keeps the destroyed peer's pages mapped.
  return writeHashed(channel, patternPieces(seed, total, chunk), (stream) => once(stream, 'drain'));
}

/**
 * `total` bytes of the pattern of `seed`, in pieces of up to `chunk` bytes.
 * @param {number} seed
 * @param {number} total
 * @param {number} chunk
 * @returns {Generator<Buffer>}
 */
function* patternPieces(seed, total, chunk) {
  // The pattern twice over: any window of up to PATTERN_SIZE bytes is contiguous.
  const pattern = makePattern(seed);
  for (let at = 0; at < total; ) {
    const piece = pattern.subarray(at % PATTERN_SIZE, (at % PATTERN_SIZE) + Math.min(chunk, total - at));
    at += piece.length;
    yield piece;
  }
}
