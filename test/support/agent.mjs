// A peer process for cross-domain tests: it opens the real public APIs (whatever backend the
// environment selects) and does what the test process asks over IPC. Objects it creates are
// named by small ids so the test can refer to them.
import { openGntalloc } from '@xen-vchan/gntalloc';
import { openGntdev } from '@xen-vchan/gntdev';
import { openEventChannel } from '@xen-vchan/evtchn';
import { serveCommands } from './agent-loop.mjs';

/** @typedef {import('@xen-vchan/gntalloc').Gntalloc} Gntalloc */
/** @typedef {import('@xen-vchan/gntalloc').SharedPages} SharedPages */
/** @typedef {import('@xen-vchan/gntdev').Gntdev} Gntdev */
/** @typedef {import('@xen-vchan/gntdev').GrantMapping} GrantMapping */
/** @typedef {import('@xen-vchan/evtchn').EventChannel} EventChannel */
/** @typedef {Gntalloc | Gntdev | EventChannel} Handle */
/** @typedef {SharedPages | GrantMapping} Pages */

const domid = process.env.XEN_VCHAN_SIM_DOMID === undefined ? undefined : Number(process.env.XEN_VCHAN_SIM_DOMID);
/** @type {Map<number, Handle | Pages>} */
const objects = new Map();
let nextId = 1;
/** @param {Handle | Pages} object */
const keep = (object) => {
  const id = nextId++;
  objects.set(id, object);
  return id;
};
/** @param {number} id */
function object(id) {
  const found = objects.get(id);
  if (found === undefined) throw new Error(`no object ${id}`);
  return found;
}
// The test process names each object by the id the command that made it returned, and passes it
// only to the commands for that kind of object: these say which kind that is (a wrong id fails on
// the method call, as it would untyped).
const gntalloc = (/** @type {number} */ id) => /** @type {Gntalloc} */ (object(id));
const gntdev = (/** @type {number} */ id) => /** @type {Gntdev} */ (object(id));
const evtchn = (/** @type {number} */ id) => /** @type {EventChannel} */ (object(id));
const handle = (/** @type {number} */ id) => /** @type {Handle} */ (object(id));
const pages = (/** @type {number} */ id) => /** @type {Pages} */ (object(id));
/** @type {{ handle: number; port: number }[]} */
const events = []; // [handleId, port] in arrival order
/** @type {(() => void)[]} */
const waiters = [];

/**
 * @param {number} handle
 * @param {number} port
 */
function recordEvent(handle, port) {
  events.push({ handle, port });
  for (const waiter of waiters.splice(0)) waiter();
}

const commands = {
  openGntalloc: () => keep(openGntalloc({ domid })),
  openGntdev: () => keep(openGntdev({ domid })),
  openEvtchn: () => {
    const channel = openEventChannel({ domid });
    const id = keep(channel);
    channel.on('event', (port) => recordEvent(id, port));
    return id;
  },
  /** @param {{ handle: number; domid: number; pages: number; writable?: boolean }} args */
  share: ({ handle, domid: to, pages, writable }) => {
    const shared = gntalloc(handle).share(to, pages, { writable });
    return { id: keep(shared), refs: [...shared.refs] };
  },
  /** @param {{ handle: number; domid: number; refs: number[]; writable?: boolean }} args */
  map: ({ handle, domid: from, refs, writable }) => {
    const mapping = gntdev(handle).map(from, refs, { writable });
    return { id: keep(mapping), length: mapping.buffer.byteLength };
  },
  /** @param {{ id: number; offset?: number; bytes: ArrayLike<number> }} args */
  write: ({ id, offset, bytes }) => {
    new Uint8Array(pages(id).buffer).set(bytes, offset);
  },
  /** @param {{ id: number; offset?: number; length?: number }} args */
  read: ({ id, offset, length }) => new Uint8Array(pages(id).buffer, offset, length).slice(),
  /** @param {{ id: number; options: import('@xen-vchan/gntalloc').UnmapNotifyOptions }} args */
  setUnmapNotify: ({ id, options }) => pages(id).setUnmapNotify(options),
  /** @param {{ id: number }} args */
  release: ({ id }) => pages(id).release(),
  /** @param {{ id: number }} args */
  close: ({ id }) => handle(id).close(),
  /** @param {{ id: number; remoteDomain: number }} args */
  bindUnbound: ({ id, remoteDomain }) => evtchn(id).bindUnbound(remoteDomain),
  /** @param {{ id: number; remoteDomain: number; remotePort: number }} args */
  bindInterdomain: ({ id, remoteDomain, remotePort }) => evtchn(id).bindInterdomain(remoteDomain, remotePort),
  /** @param {{ id: number; port: number }} args */
  unbind: ({ id, port }) => evtchn(id).unbind(port),
  /** @param {{ id: number; port: number; times?: number }} args */
  notify: ({ id, port, times = 1 }) => {
    for (let i = 0; i < times; i++) evtchn(id).notify(port);
  },
  /** @param {{ id: number; port: number }} args */
  unmask: ({ id, port }) => evtchn(id).unmask(port),
  events: () => events.splice(0),
  /** @param {{ id: number; port: number; timeoutMs: number }} args */
  waitEvent: ({ id, port, timeoutMs }) =>
    new Promise((resolve, reject) => {
      const check = () => {
        const index = events.findIndex((event) => event.handle === id && event.port === port);
        if (index >= 0) {
          events.splice(index, 1);
          clearTimeout(timer);
          resolve(true);
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => reject(new Error(`no event on port ${port} within ${timeoutMs} ms`)), timeoutMs);
      if (!check())
        waiters.push(function retry() {
          if (!check()) waiters.push(retry);
        });
    }),
  // Writes to a read-only mapping: on Xen and on the simulation this must fault.
  /** @param {{ id: number }} args */
  writeReadOnly: ({ id }) => {
    new Uint8Array(pages(id).buffer)[0] = 1;
    return 'wrote';
  },
  /** @param {{ code?: number }} args */
  exit: ({ code }) => setImmediate(() => process.exit(code)),
};

serveCommands(commands);
