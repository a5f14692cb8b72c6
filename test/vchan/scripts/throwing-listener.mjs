// A listener that throws must not deafen anything else: other ports of the same batch, other
// handles, later addon calls. Prints what it saw as JSON; the test asserts on it.
import { openEventChannel } from '@xen-vchan/evtchn';

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
console.log(JSON.stringify({ uncaught, seen, ownError }));
