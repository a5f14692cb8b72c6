// Both ends of a vchan in this one process, built from the handshake's two halves. The tests that
// play a misbehaving peer write into the control page the pair hands back.
import { Vchan, type VchanOptions } from '@xen-vchan/vchan';
import { connectClientLink, createServerLink, type VchanLink } from '@xen-vchan/vchan/internal';
import { backend, PEER, SELF } from './domains.js';

export interface LinkPair {
  server: Vchan;
  client: Vchan;
  /** The shared control page, as the peer could write it. */
  page: ArrayBuffer;
  clientLink: VchanLink;
}

/** The device options for acting as `domid`: the simulation needs it, Xen knows who we are. */
export const devices = (domid: number) => (backend === 'sim' ? { domid } : {});
const opened: Vchan[] = [];

/** A server (SELF) and its client (PEER); `readMin`/`writeMin` are the server's rings. */
export function linkPair({ readMin = 4096, writeMin = 4096, server: serverOptions = {} as VchanOptions } = {}): LinkPair {
  const shared = createServerLink({ clientDomid: PEER, leftMin: readMin, rightMin: writeMin, devices: devices(SELF) });
  const clientLink = connectClientLink({ serverDomid: SELF, ringRef: shared.ringRef, port: shared.port, devices: devices(PEER) });
  const server = new Vchan(shared.link, serverOptions);
  const client = new Vchan(clientLink);
  opened.push(server, client);
  return { server, client, page: shared.link.control.buffer, clientLink };
}

/** For afterEach: destroys every channel linkPair() made. */
export function destroyLinkPairs(): void {
  for (const channel of opened.splice(0)) channel.destroy();
}

/**
 * A pair with `ring`-byte rings both ways whose errors are only looked at where a test asserts
 * them (some tests end a channel with an error on purpose).
 */
export function quietLinkPair(ring: number, serverOptions: VchanOptions = {}): LinkPair {
  const made = linkPair({ readMin: ring, writeMin: ring, server: serverOptions });
  made.server.on('error', () => {});
  made.client.on('error', () => {});
  return made;
}

/** Byte `index` of the test stream: a pattern whose period (251) is prime to every ring size. */
export const patternByte = (index: number) => (index * 7 + (index >>> 8)) % 251;

/** Bytes `from` to `from + length` of the test stream. */
export function pattern(from: number, length: number): Buffer {
  const bytes = Buffer.allocUnsafe(length);
  for (let index = 0; index < length; index++) bytes[index] = patternByte(from + index);
  return bytes;
}
