// Event-channel handles that nobody closed and nobody references any more are collected, and
// their file descriptors closed. Run with --expose-gc; prints the fd counts as JSON.
import { readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { openEventChannel } from '@xen-vchan/evtchn';

const { gc } = globalThis;
if (!gc) throw new Error('run with --expose-gc');
const openFds = () => readdirSync('/proc/self/fd').length;
const domid = process.env.XEN_VCHAN_BACKEND === 'xen' ? undefined : 1;
const remote = domid === undefined ? 0 : 2;

// Warm up whatever opens once per process (the sim daemon link, the addon).
openEventChannel({ domid }).close();
const before = openFds();
for (let round = 0; round < 50; round++) {
  const handle = openEventChannel({ domid });
  handle.unbind(handle.bindUnbound(remote)); // polling started, then stopped again
}
const leaked = openFds() - before;
for (let round = 0; round < 20 && openFds() - before > 2; round++) {
  gc();
  await sleep(20);
}
console.log(JSON.stringify({ leaked, afterCollection: openFds() - before }));
