// A listener that throws must not deafen anything else: other ports of the same batch, other
// handles, later addon calls, the stream or server whose listener it was. Each throw becomes one
// uncaught exception, as in any EventEmitter. Prints what it saw as JSON; the test asserts on it.
import { openEventChannel } from '@xen-vchan/evtchn';
import { connect, connectClientLink, createServer, createServerLink, Vchan } from '@xen-vchan/vchan';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const uncaught = [];
process.on('uncaughtException', (error) => uncaught.push(error.message));

const a = openEventChannel({ domid: 1 });
const b = openEventChannel({ domid: 2 });
const first = a.bindUnbound(2);
const second = a.bindUnbound(2);
const firstPeer = b.bindInterdomain(1, first);
const secondPeer = b.bindInterdomain(1, second);
const c = openEventChannel({ domid: 1 });
const d = openEventChannel({ domid: 2 });
const other = c.bindUnbound(2);
const otherPeer = d.bindInterdomain(1, other);

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
await sleep(100);
d.notify(otherPeer);
await sleep(100);
// Handle a still hears events after the throw.
b.notify(secondPeer);
await sleep(100);
seen.afterwards = seen.second;
// An addon call that fails for its own reason reports its own error, not the old exception.
let ownError = null;
try {
  c.unbind(other + 1000);
} catch (error) {
  ownError = error.code;
}
for (const handle of [a, b, c, d]) handle.close();

// A stream's 'data' listener that throws: an uncaught exception, and the stream goes on.
const shared = createServerLink({ clientDomid: 2, leftMin: 4096, rightMin: 4096, devices: { domid: 1 } });
const clientLink = connectClientLink({ serverDomid: 1, ringRef: shared.ringRef, port: shared.port, devices: { domid: 2 } });
const server = new Vchan(shared.link);
const client = new Vchan(clientLink);
const chunks = [];
server.on('data', (chunk) => {
  chunks.push(chunk.toString());
  if (chunks.length === 1) throw new Error('data listener threw');
});
client.write('first');
await sleep(100);
client.write('second');
await sleep(100);
const stream = { chunks, destroyed: server.destroyed };
server.destroy();
client.destroy();

// A server whose 'channel' listener throws still serves that channel, and its next client.
const vchanServer = createServer({ domid: 2, name: 'throws', simDomid: 1, persist: true });
let served = 0;
vchanServer.on('channel', (channel) => {
  served++;
  channel.on('data', () => {});
  if (served === 1) throw new Error('channel listener threw');
});
await vchanServer.listen();
const firstClient = await connect({ domid: 1, name: 'throws', simDomid: 2 });
await sleep(100);
firstClient.destroy();
await sleep(100);
const secondClient = await connect({ domid: 1, name: 'throws', simDomid: 2 });
await sleep(100);
secondClient.destroy();
await vchanServer.close();

console.log(JSON.stringify({ uncaught, seen, ownError, stream, served }));
