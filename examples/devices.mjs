#!/usr/bin/env node
// Two processes play two Xen domains: domain 1 shares a page with domain 2 and they talk through
// it, waking each other with an event channel. Then domain 2 is killed with SIGKILL, and domain 1
// learns it from the unmap notification: the "alive" byte cleared and an event sent.
// Runs on the simulation (no Xen needed); on a Xen host set XEN_VCHAN_BACKEND=xen and run it in dom0.
import { fork } from 'node:child_process';
import { openEventChannel } from '@xen-vchan/evtchn';
import { openGntalloc } from '@xen-vchan/gntalloc';
import { openGntdev } from '@xen-vchan/gntdev';

const MESSAGE = 0; // bytes 0..255: a text message
const ALIVE = 256; // domain 2 keeps this byte at 1 while it has the page mapped
const onXen = process.env.XEN_VCHAN_BACKEND === 'xen';
const [FIRST, SECOND] = onXen ? [0, 0] : [1, 2];

/** @typedef {import('@xen-vchan/evtchn').EventChannel} EventChannel */

/**
 * @param {Uint8Array} page
 * @param {string} text
 */
const writeText = (page, text) => {
  page.fill(0, MESSAGE, MESSAGE + 256);
  new TextEncoder().encodeInto(text, page.subarray(MESSAGE, MESSAGE + 255));
};
const readText = (/** @type {Uint8Array} */ page) => new TextDecoder().decode(page.subarray(MESSAGE, page.indexOf(0, MESSAGE)));
const log = (/** @type {number} */ domain, /** @type {string} */ text) => console.log(`[domain ${domain}] ${text}`);
/**
 * @param {EventChannel} channel
 * @param {number} port
 * @returns {Promise<void>}
 */
const nextEvent = (channel, port) =>
  new Promise((resolve) =>
    channel.on('event', function onEvent(got) {
      if (got !== port) return;
      channel.off('event', onEvent);
      channel.unmask(port);
      resolve();
    }),
  );

async function firstDomain() {
  const events = openEventChannel({ domid: FIRST });
  const gntalloc = openGntalloc({ domid: FIRST });
  log(FIRST, `backend: ${events.backend}`);
  const port = events.bindUnbound(SECOND);
  const shared = gntalloc.share(SECOND, 1);
  const page = new Uint8Array(shared.buffer);
  writeText(page, 'hello from domain 1');
  log(FIRST, `shared 1 page with domain ${SECOND} as grant ref ${shared.refs[0]}, event port ${port} offered`);

  // What XenStore carries in real use (the ring-ref and the event channel) goes on the command line.
  const child = fork(new URL(import.meta.url), ['second', String(shared.refs[0]), String(port)], {
    env: { ...process.env, XEN_VCHAN_SIM_DOMID: String(SECOND) },
  });
  await nextEvent(events, port);
  log(FIRST, `event: domain 2 wrote "${readText(page)}", alive byte = ${page[ALIVE]}`);

  const started = performance.now();
  const gone = nextEvent(events, port);
  child.kill('SIGKILL');
  log(FIRST, 'killed domain 2 with SIGKILL');
  await gone;
  const ms = (performance.now() - started).toFixed(1);
  log(FIRST, `event after ${ms} ms: alive byte = ${page[ALIVE]} (cleared by the unmap notification)`);
  const ok = page[ALIVE] === 0;
  gntalloc.close();
  events.close();
  console.log(ok ? 'demo ok' : 'demo FAILED: the alive byte was not cleared');
  process.exitCode = ok ? 0 : 1;
}

/**
 * @param {number} ref
 * @param {number} remotePort
 */
async function secondDomain(ref, remotePort) {
  const events = openEventChannel({ domid: SECOND });
  const gntdev = openGntdev({ domid: SECOND });
  const port = events.bindInterdomain(FIRST, remotePort);
  const mapping = gntdev.map(FIRST, [ref]);
  const page = new Uint8Array(mapping.buffer);
  log(SECOND, `mapped grant ${ref} of domain ${FIRST}, bound event port ${port}; it says "${readText(page)}"`);
  page[ALIVE] = 1;
  mapping.setUnmapNotify({ offset: ALIVE, clearByte: true, port });
  writeText(page, 'hello back from domain 2');
  events.notify(port);
  log(SECOND, 'replied and notified; now waiting to be killed');
  setInterval(() => {}, 1000);
}

if (process.argv[2] === 'second') await secondDomain(Number(process.argv[3]), Number(process.argv[4]));
else await firstDomain();
