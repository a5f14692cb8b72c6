// One end of a vchan for the scripts that run in a domain (stream.mjs, both-ways.mjs,
// survivor.mjs): the client connects; the server serves and prints `LISTENING <path>` once
// published, which the tests wait for.
import { connect, createServer } from '@xen-vchan/vchan';

/** @typedef {import('@xen-vchan/vchan').Vchan} Vchan */

/**
 * @param {'server' | 'client'} role
 * @param {{ peer: number; name: string; ring: number; timeout: number; peerCheckInterval?: number }} options
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
