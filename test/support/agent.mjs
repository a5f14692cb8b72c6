// A peer process for cross-domain tests: it opens the real public APIs (whatever backend the
// environment selects) and does what the test process asks over IPC. Objects it creates are
// named by small ids so the test can refer to them.
import { openGntalloc } from '@xen-vchan/gntalloc';
import { openGntdev } from '@xen-vchan/gntdev';
import { openEventChannel } from '@xen-vchan/evtchn';
import { serveCommands } from './agent-loop.mjs';

const domid = process.env.XEN_VCHAN_SIM_DOMID === undefined ? undefined : Number(process.env.XEN_VCHAN_SIM_DOMID);
const objects = new Map();
let nextId = 1;
const keep = (object) => {
  const id = nextId++;
  objects.set(id, object);
  return id;
};
const events = []; // [handleId, port] in arrival order
const waiters = [];

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
  share: ({ handle, domid: to, pages, writable }) => {
    const shared = objects.get(handle).share(to, pages, { writable });
    return { id: keep(shared), refs: [...shared.refs] };
  },
  map: ({ handle, domid: from, refs, writable }) => {
    const mapping = objects.get(handle).map(from, refs, { writable });
    return { id: keep(mapping), length: mapping.buffer.byteLength };
  },
  write: ({ id, offset, bytes }) => {
    new Uint8Array(objects.get(id).buffer).set(bytes, offset);
  },
  read: ({ id, offset, length }) => new Uint8Array(objects.get(id).buffer, offset, length).slice(),
  setUnmapNotify: ({ id, options }) => objects.get(id).setUnmapNotify(options),
  release: ({ id }) => objects.get(id).release(),
  close: ({ id }) => objects.get(id).close(),
  bindUnbound: ({ id, remoteDomain }) => objects.get(id).bindUnbound(remoteDomain),
  bindInterdomain: ({ id, remoteDomain, remotePort }) => objects.get(id).bindInterdomain(remoteDomain, remotePort),
  unbind: ({ id, port }) => objects.get(id).unbind(port),
  notify: ({ id, port, times = 1 }) => {
    for (let i = 0; i < times; i++) objects.get(id).notify(port);
  },
  unmask: ({ id, port }) => objects.get(id).unmask(port),
  events: () => events.splice(0),
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
      if (!check()) waiters.push(function retry() { if (!check()) waiters.push(retry); });
    }),
  // Writes to a read-only mapping: on Xen and on the simulation this must fault.
  writeReadOnly: ({ id }) => {
    new Uint8Array(objects.get(id).buffer)[0] = 1;
    return 'wrote';
  },
  exit: ({ code }) => setImmediate(() => process.exit(code)),
};

serveCommands(commands);
