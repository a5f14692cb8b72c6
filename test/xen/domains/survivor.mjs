// The end that survives when the peer's whole domain is destroyed mid-stream (test/xen/guests.test.ts
// with two real guests, test/sim/peer-death.test.ts on the simulation).
//
//   node survivor.mjs server|client --peer DOMID --name NAME [--ring BYTES] [--timeout MS] [--check-interval MS]
//
// --check-interval is the channel's peerCheckInterval (0: no periodic checks, so an unprivileged
// server can only notice through its client's presence node).
//
// Streams both ways (writes a pattern with backpressure, reads everything) until the channel
// fails. Once it has received 4 MiB it writes `data/survivor/<name>` = "streaming" in its own
// XenStore home, so the test knows when to destroy the peer, and the moment the channel fails it
// writes "failed <code>" there, so the test times the failure on its own clock (guests' clocks can
// be seconds apart from dom0's under emulation). Then it waits for 'close' and counts what the
// process still maps of the devices. Prints, last,
// `RESULT {"code","message","failedAt","received","mappingsWhileOpen","mappingsAfter"}` and then
// leaves by itself: a process that does not exit still holds a handle, a port or a timer.
import { readFileSync } from 'node:fs';
import { errorCode } from '@xen-vchan/native';
import { openXenStore } from '@xen-vchan/xenstore';
import { openEnd, parseEndArgs } from './end.mjs';
import { makePattern, PATTERN_SIZE } from '../../interop/bulk-node.mjs';

/** @typedef {{ code: string | null; message: string; failedAt: number }} Failure */

const { role, end, values } = parseEndArgs({
  name: 'survivor',
  ring: 2 ** 20,
  options: { 'check-interval': { type: 'string' } },
  usage: 'survivor.mjs server|client --peer DOMID --name NAME [--ring BYTES]',
});
const CHUNK = 64 * 1024;
const checks = values['check-interval'] === undefined ? {} : { peerCheckInterval: Number(values['check-interval']) };

/** Mappings of the grant devices (Xen) or of the simulation's page files in this process. */
function deviceMappings() {
  const simPages = process.env.SURVIVOR_SIM_PAGES;
  return readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((line) => line.endsWith('/dev/xen/gntdev') || line.endsWith('/dev/xen/gntalloc') || (simPages && line.includes(simPages)))
    .length;
}

const channel = await openEnd(role, { ...end, ...checks });
console.log(`CONNECTED ${role}`);
// Open before anything happens, so that the failure is reported without a connection's delay.
const xenstore = await openXenStore();
const progressNode = `/local/domain/${await xenstore.ownDomid()}/data/survivor/${values.name}`;
const report = (/** @type {string} */ value) =>
  void xenstore
    .write(progressNode, value)
    .catch((/** @type {Error} */ error) => console.log(`cannot write ${progressNode}: ${error.message}`));
let received = 0;
let announced = false;
// Set by the listeners below: typed as what they may leave, not as the null it starts as.
let failure = /** @type {Failure | null} */ (null);
// Not events.once: that rejects on 'error', which is the outcome we wait for.
const closed = new Promise((resolve) => channel.once('close', resolve));
/**
 * @param {string | null} code
 * @param {string} message
 */
const failed = (code, message) => {
  if (failure) return;
  failure = { code, message, failedAt: Date.now() };
  report(`failed ${code}`);
};
channel.on('error', (error) => failed(errorCode(error) ?? null, error.message));
channel.on('end', () => failed('END', 'the peer ended the stream'));
channel.on('data', (/** @type {Buffer} */ piece) => {
  received += piece.length;
  if (!announced && received >= 4 * 2 ** 20) {
    announced = true;
    report('streaming');
  }
});
const mappingsWhileOpen = deviceMappings();
const pattern = makePattern(7);
let sent = 0;
while (!channel.destroyed && !channel.writableEnded) {
  const at = sent % PATTERN_SIZE;
  sent += CHUNK;
  if (!channel.write(pattern.subarray(at, at + CHUNK))) {
    await Promise.race([new Promise((resolve) => channel.once('drain', resolve)), closed]);
  }
}
await closed;
// The last write goes out before the connection closes.
await xenstore.read(progressNode).catch(() => {});
xenstore.close();
const result = { ...failure, received, sent, mappingsWhileOpen, mappingsAfter: deviceMappings() };
console.log(`RESULT ${JSON.stringify(result)}`);
