// Tries what one domain should not be able to do with another's vchan, and reports how each
// attempt ended. Used by the two-domain security test, in the guest and in dom0.
//
//   node probe.mjs '[{"op":"map","domid":0,"ref":8}, {"op":"read","path":"/local/..."},
//                    {"op":"bind","domid":0,"port":5}]'
//
// Prints `RESULT [{ op, ok, code, message }...]`, one entry per attempt, in order.
import { openEventChannel } from '@xen-vchan/evtchn';
import { openGntdev } from '@xen-vchan/gntdev';
import { openXenStore } from '@xen-vchan/xenstore';

/**
 * One attempt, as the test passes it.
 * @typedef {{ op: 'map'; domid: number; ref: number }
 *   | { op: 'read'; path: string }
 *   | { op: 'bind'; domid: number; port: number }} Attempt
 */

/** @type {Attempt[]} */
const attempts = JSON.parse(process.argv[2] ?? '[]');
const outcomes = [];
for (const attempt of attempts) {
  try {
    if (attempt.op === 'map') {
      const gntdev = openGntdev();
      try {
        const mapping = gntdev.map(attempt.domid, [attempt.ref], { writable: false });
        outcomes.push({ ...attempt, ok: true, firstByte: new Uint8Array(mapping.buffer)[0] });
        mapping.release();
      } finally {
        gntdev.close();
      }
    } else if (attempt.op === 'read') {
      const xenstore = await openXenStore();
      try {
        outcomes.push({ ...attempt, ok: true, value: await xenstore.read(attempt.path) });
      } finally {
        xenstore.close();
      }
    } else if (attempt.op === 'bind') {
      const events = openEventChannel();
      try {
        outcomes.push({ ...attempt, ok: true, localPort: events.bindInterdomain(attempt.domid, attempt.port) });
      } finally {
        events.close();
      }
    } else {
      throw new Error(`unknown op ${/** @type {{ op: unknown }} */ (attempt).op}`);
    }
  } catch (error) {
    const { code, message } = /** @type {NodeJS.ErrnoException} */ (error);
    outcomes.push({ ...attempt, ok: false, code: code ?? null, message });
  }
}
console.log(`RESULT ${JSON.stringify(outcomes)}`);
