// The hostile end of a vchan, for fuzzing: it completes the real handshake (as client or server),
// then scribbles seeded nonsense into the shared control page and pokes the event channel, as a
// broken or malicious domain could. It reports what it wrote, so the fuzzer can tell a definite
// protocol violation from a harmless one.
import { ControlOffset, connectClientLink, createServerLink } from '@xen-vchan/vchan/internal';
import { openEventChannel } from '@xen-vchan/evtchn';
import { openGntdev } from '@xen-vchan/gntdev';
import { openXenStore } from '@xen-vchan/xenstore';
import { random } from '../support/stream-data.mjs';
import { serveCommands } from '../support/agent-loop.mjs';

const simDomid = Number(process.env.XEN_VCHAN_SIM_DOMID ?? 0);
/** @type {import('@xen-vchan/vchan/internal').VchanLink | null} */
let link = null;
/**
 * What this peer published as a server, removed again on close (a domain's XenStore quota is finite).
 * @type {string | null}
 */
let published = null;

// Field offsets of the control page as libxenvchan lays it out (the interop tests prove them against it).
const { grants: _grants, ...OFFSET } = ControlOffset;
/** @typedef {keyof typeof OFFSET} Field */
/** @type {(Field | 'grant')[]} */
const FIELDS = [
  'leftCons',
  'leftProd',
  'rightCons',
  'rightProd',
  'leftOrder',
  'rightOrder',
  'clientLive',
  'serverLive',
  'clientNotify',
  'serverNotify',
  'grant',
];

/** The link the scribbling commands work on: connectTo or serve must have made one. */
function connected() {
  if (!link) throw new Error('no link: connectTo or serve first');
  return link;
}

/**
 * Values that break ring arithmetic in different ways.
 * @param {() => number} next
 * @param {number} current
 * @param {number} size
 */
function nastyIndex(next, current, size) {
  switch (next() % 7) {
    case 0:
      return (current + size + 1 + (next() % 1000)) >>> 0; // more than the ring holds
    case 1:
      return (current - 1 - (next() % 1000)) >>> 0; // runs backwards
    case 2:
      return 0xffffffff;
    case 3:
      return (current + (next() % size)) >>> 0; // plausible
    case 4:
      return next();
    case 5:
      return (current + 0x80000000) >>> 0; // half-way round the u32
    default:
      return current;
  }
}

const commands = {
  /**
   * Be the client of our side's server; then scribble.
   * @param {{ serverDomid: number; name: string }} args
   */
  connectTo: async ({ serverDomid, name }) => {
    const xenstore = await openXenStore({ domid: simDomid });
    const path = `/local/domain/${serverDomid}/data/vchan/${simDomid}/${name}`;
    const ringRef = Number(await xenstore.read(`${path}/ring-ref`));
    const port = Number(await xenstore.read(`${path}/event-channel`));
    xenstore.close();
    link = connectClientLink({ serverDomid, ringRef, port, devices: { domid: simDomid } });
    return { side: 'client', readSize: link.reader.size, writeSize: link.writer.size };
  },
  /**
   * Be a server for our side's client to connect to; publish normally or with garbage.
   * @param {{ clientDomid: number; name: string; leftMin: number; rightMin: number; garbage?: { ringRef?: string; port?: string } }} args
   */
  serve: async ({ clientDomid, name, leftMin, rightMin, garbage }) => {
    const shared = createServerLink({ clientDomid, leftMin, rightMin, devices: { domid: simDomid } });
    link = shared.link;
    const xenstore = await openXenStore({ domid: simDomid });
    const path = `/local/domain/${simDomid}/data/vchan/${clientDomid}/${name}`;
    /** @type {import('@xen-vchan/xenstore').Permission[]} */
    const perms = [
      { domid: simDomid, access: 'none' },
      { domid: clientDomid, access: 'read' },
    ];
    const ringRef = garbage?.ringRef ?? String(shared.ringRef);
    const port = garbage?.port ?? String(shared.port);
    await xenstore.transaction(async (tx) => {
      await tx.write(`${path}/ring-ref`, ringRef);
      await tx.write(`${path}/event-channel`, port);
      await tx.setPermissions(`${path}/ring-ref`, perms);
      await tx.setPermissions(`${path}/event-channel`, perms);
    });
    xenstore.close();
    published = path;
    return { side: 'server', readSize: link.reader.size, writeSize: link.writer.size };
  },
  /**
   * Writes `count` seeded scribbles, one event each; returns what was written.
   * @param {{ seed: number; count: number; gapMs?: number }} args
   */
  scribble: async ({ seed, count, gapMs }) => {
    const next = random(seed);
    const page = connected().control.buffer;
    const words = new Int32Array(page, 0, 6);
    const halves = new Uint16Array(page, 0, 12);
    const bytes = new Uint8Array(page, 0, 24);
    /** @type {{ field: Field | 'grant'; value: number }[]} */
    const log = [];
    for (let i = 0; i < count && link; i++) {
      const field = FIELDS[next() % 11];
      let value;
      if (field === 'grant') {
        value = next();
        new Int32Array(page)[6 + (next() % 8)] = value | 0;
      } else if (field.endsWith('Cons') || field.endsWith('Prod')) {
        const index = OFFSET[field] / 4;
        const size = field.startsWith('left')
          ? link.side === 'client'
            ? link.writer.size
            : link.reader.size
          : link.side === 'client'
            ? link.reader.size
            : link.writer.size;
        value = nastyIndex(next, Atomics.load(words, index) >>> 0, size);
        Atomics.store(words, index, value | 0);
      } else if (field.endsWith('Order')) {
        value = next() % 40;
        Atomics.store(halves, OFFSET[field] / 2, value);
      } else {
        value = next() % 8 === 0 ? next() & 0xff : next() % 4;
        Atomics.store(bytes, OFFSET[field], value);
      }
      log.push({ field, value });
      try {
        link.events.notify(link.port);
      } catch {
        break;
      }
      if (gapMs) await new Promise((resolve) => setTimeout(resolve, next() % (gapMs + 1)));
    }
    return log;
  },
  /**
   * Plays a client that never finishes connecting: maps page 0 and binds the port as a client
   * would, then writes seeded nonsense into cli_live, the notify bytes and the indices, poking the
   * port each time, while the server waits for a real client. Lets go of everything at the end.
   * @param {{ serverDomid: number; name: string; seed: number; count: number; gapMs?: number }} args
   */
  lurk: async ({ serverDomid, name, seed, count, gapMs }) => {
    const next = random(seed);
    const xenstore = await openXenStore({ domid: simDomid });
    const path = `/local/domain/${serverDomid}/data/vchan/${simDomid}/${name}`;
    const ringRef = Number(await xenstore.read(`${path}/ring-ref`));
    const port = Number(await xenstore.read(`${path}/event-channel`));
    xenstore.close();
    const events = openEventChannel({ domid: simDomid });
    const gntdev = openGntdev({ domid: simDomid });
    let pokes = 0;
    try {
      const local = events.bindInterdomain(serverDomid, port);
      const page = gntdev.map(serverDomid, [ringRef]).buffer;
      const bytes = new Uint8Array(page, 0, 24);
      const words = new Int32Array(page, 0, 6);
      for (let i = 0; i < count; i++) {
        const what = next() % 4;
        if (what === 0) Atomics.store(bytes, OFFSET.clientLive, [0, 0, 0, 1, 2, next() & 0xff][next() % 6]);
        else if (what === 1) Atomics.store(bytes, OFFSET[next() % 2 ? 'clientNotify' : 'serverNotify'], next() & 0xff);
        else if (what === 2) Atomics.store(words, next() % 4, next() | 0);
        else Atomics.store(bytes, OFFSET.clientLive, 0); // the flapping a server must not recurse on
        events.notify(local);
        pokes++;
        if (gapMs && next() % 4 === 0) await new Promise((resolve) => setTimeout(resolve, next() % (gapMs + 1)));
      }
    } finally {
      gntdev.close();
      events.close();
    }
    return { pokes };
  },
  /**
   * For `ms`, keeps the ring it writes full and consumes everything in the ring it reads, poking
   * the port all the time: a peer that refills as fast as our side can take, while our side ends.
   * @param {{ ms: number }} args
   */
  flood: async ({ ms }) => {
    const block = Buffer.alloc(1 << 20, 0x6b);
    const until = Date.now() + ms;
    let written = 0;
    try {
      while (link && Date.now() < until) {
        for (let i = 0; i < 64 && link; i++) {
          const free = link.writer.space();
          if (free > 0) written += link.writer.writeFrom(block, free);
          const ready = link.reader.available();
          if (ready > 0) link.reader.readInto(Buffer.allocUnsafe(ready), ready);
          link.events.notify(link.port);
        }
        await new Promise((resolve) => setImmediate(resolve));
      }
    } catch {
      /* our side closed: its port is gone, or it left the page */
    }
    return { written };
  },
  /**
   * Writes one byte field and pokes the event channel.
   * @param {{ field: Field; value: number }} args
   */
  scribbleField: ({ field, value }) => {
    const current = connected();
    new Uint8Array(current.control.buffer)[OFFSET[field]] = value;
    current.events.notify(current.port);
  },
  close: async () => {
    link?.close(false);
    link = null;
    if (published) {
      const xenstore = await openXenStore({ domid: simDomid });
      await xenstore.rm(published).catch(() => {});
      xenstore.close();
      published = null;
    }
  },
};

serveCommands(commands);
