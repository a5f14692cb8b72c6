// A listener that throws must not deafen anything else: other ports of the same batch, other
// handles, later addon calls, the stream or server whose listener it was. Each throw becomes one
// uncaught exception, as in any EventEmitter. Prints what it saw as JSON; the test asserts on it.
import { openEventChannel } from '@xen-vchan/evtchn';
import { connect, createServer, Vchan } from '@xen-vchan/vchan';
import { connectClientLink, createServerLink } from '@xen-vchan/vchan/internal';

const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));
// On the simulation this process plays domains 1 and 2; under the Xen harness it is dom0, which
// may offer ports to itself and bind them.
const xen = process.env.XEN_VCHAN_BACKEND === 'xen';
const [ONE, TWO] = xen ? [0, 0] : [1, 2];
const as = (/** @type {number} */ domid) => (xen ? {} : { domid });
const simAs = (/** @type {number} */ domid) => (xen ? {} : { simDomid: domid });
/** Time for events to arrive: emulated Xen is much slower. */
const SETTLE_MS = xen ? 1000 : 100;
/** @type {string[]} */
const uncaught = [];
process.on('uncaughtException', (error) => uncaught.push(error.message));

const a = openEventChannel(as(ONE));
const b = openEventChannel(as(TWO));
const first = a.bindUnbound(TWO);
const second = a.bindUnbound(TWO);
const firstPeer = b.bindInterdomain(ONE, first);
const secondPeer = b.bindInterdomain(ONE, second);
const c = openEventChannel(as(ONE));
const d = openEventChannel(as(TWO));
const other = c.bindUnbound(TWO);
const otherPeer = d.bindInterdomain(ONE, other);

const seen = { second: 0, other: 0, afterwards: 0 };
a.on('event', (port) => {
  a.unmask(port);
  if (port === first) throw new Error('listener threw');
  seen.second++;
});
c.on('event', (port) => {
  c.unmask(port);
  seen.other++;
});

// Both ports of handle a become pending before a reads: one batch, the first listener throws.
b.notify(firstPeer);
b.notify(secondPeer);
await sleep(SETTLE_MS);
d.notify(otherPeer);
await sleep(SETTLE_MS);
// Handle a still hears events after the throw.
b.notify(secondPeer);
await sleep(SETTLE_MS);
seen.afterwards = seen.second;
// An addon call that fails for its own reason reports its own error, not the old exception.
/** @type {string | null | undefined} */
let ownError = null;
try {
  c.unbind(other + 1000);
} catch (error) {
  ownError = /** @type {NodeJS.ErrnoException} */ (error).code;
}
for (const handle of [a, b, c, d]) handle.close();

// A stream's 'data' listener that throws: an uncaught exception, and the stream goes on.
const shared = createServerLink({ clientDomid: TWO, leftMin: 4096, rightMin: 4096, devices: as(ONE) });
const clientLink = connectClientLink({ serverDomid: ONE, ringRef: shared.ringRef, port: shared.port, devices: as(TWO) });
const server = new Vchan(shared.link);
const client = new Vchan(clientLink);
/** @type {string[]} */
const chunks = [];
server.on('data', (/** @type {Buffer} */ chunk) => {
  chunks.push(chunk.toString());
  if (chunks.length === 1) throw new Error('data listener threw');
});
client.write('first');
await sleep(SETTLE_MS);
client.write('second');
await sleep(SETTLE_MS);
const stream = { chunks, destroyed: server.destroyed };
server.destroy();
client.destroy();

// A server whose 'channel' listener throws still serves that channel, and its next client.
const vchanServer = createServer({ domid: TWO, name: 'throws', ...simAs(ONE), persist: true });
let served = 0;
vchanServer.on('channel', (channel) => {
  served++;
  channel.on('data', () => {});
  if (served === 1) throw new Error('channel listener threw');
});
await vchanServer.listen();
const firstClient = await connect({ domid: ONE, name: 'throws', ...simAs(TWO) });
await sleep(SETTLE_MS);
firstClient.destroy();
await sleep(SETTLE_MS);
const secondClient = await connect({ domid: ONE, name: 'throws', ...simAs(TWO) });
await sleep(SETTLE_MS);
secondClient.destroy();
await vchanServer.close();

console.log(JSON.stringify({ uncaught, seen, ownError, stream, served }));
