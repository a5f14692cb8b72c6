// A peer process for vchan tests: serves or connects through the public vchan API and moves
// seeded data, as the test process asks over IPC.
import { connect, createServer, MessageChannel, RpcPeer } from '@xen-vchan/vchan';
import { receiveAll, receiveCount, sendSeeded } from './stream-data.mjs';
import { serveCommands } from './agent-loop.mjs';

/** @typedef {import('@xen-vchan/vchan').Vchan} Vchan */
/** @typedef {import('@xen-vchan/vchan').VchanServer} VchanServer */

const simDomid = process.env.XEN_VCHAN_SIM_DOMID === undefined ? undefined : Number(process.env.XEN_VCHAN_SIM_DOMID);
/** @type {Map<number, Vchan>} */
const channels = new Map();
/** @type {Map<number, VchanServer>} */
const servers = new Map();
let nextId = 1;
/** @type {number[]} */
const pendingChannels = [];
/** @type {((id: number) => void)[]} */
const channelWaiters = [];

/** @param {number} id */
function channel(id) {
  const found = channels.get(id);
  if (!found) throw new Error(`no channel ${id}`);
  return found;
}

/** @param {number} id */
function server(id) {
  const found = servers.get(id);
  if (!found) throw new Error(`no server ${id}`);
  return found;
}

/** @param {Vchan} channel */
function keepChannel(channel) {
  const id = nextId++;
  channels.set(id, channel);
  channel.on('error', () => {});
  channel.on('close', () => setImmediate(() => channels.delete(id)));
  return id;
}

const commands = {
  /** @param {{ domid: number; name: string; readMin?: number; writeMin?: number; persist?: boolean }} args */
  serve: async ({ domid, name, readMin, writeMin, persist }) => {
    const server = createServer({ domid, name, readMin, writeMin, persist, simDomid }, (channel) => {
      const id = keepChannel(channel);
      const waiter = channelWaiters.shift();
      if (waiter) waiter(id);
      else pendingChannels.push(id);
    });
    await server.listen();
    const id = nextId++;
    servers.set(id, server);
    return { id, address: server.address() };
  },
  nextChannel: () =>
    new Promise((/** @type {(id: number) => void} */ resolve) => {
      const ready = pendingChannels.shift();
      if (ready !== undefined) resolve(ready);
      else channelWaiters.push(resolve);
    }),
  /** @param {{ domid: number; name: string; timeout?: number }} args */
  connect: async ({ domid, name, timeout }) => keepChannel(await connect({ domid, name, timeout, simDomid })),
  /** @param {{ id: number; total: number; seed: number; maxChunk: number; end?: boolean }} args */
  send: ({ id, total, seed, maxChunk, end = true }) =>
    sendSeeded(channel(id), { total, seed, maxChunk }).then((sha256) => {
      if (end) channel(id).end();
      return sha256;
    }),
  /** @param {{ id: number }} args */
  receive: ({ id }) => receiveAll(channel(id)),
  /** @param {{ id: number; bytes: number }} args */
  receiveCount: ({ id, bytes }) => receiveCount(channel(id), bytes),
  /** @param {{ id: number }} args */
  end: ({ id }) => new Promise((resolve) => channel(id).end(resolve)),
  /** @param {{ id: number }} args */
  closeServer: ({ id }) => server(id).close(),
  /** @param {{ id: number }} args */
  stats: ({ id }) => channel(id).stats(),
  /** @param {{ id: number; bytes: Uint8Array }} args */
  sendWhole: ({ id, bytes }) => channel(id).send(bytes),
  // Writes seeded bytes and resolves once all of them are in the ring (not merely queued).
  /** @param {{ id: number; total: number; seed: number }} args */
  writeIntoRing: ({ id, total, seed }) =>
    sendSeeded(channel(id), { total, seed, maxChunk: 4096 }).then(
      (sha256) =>
        new Promise((resolve) => channel(id).write(Buffer.alloc(0), () => resolve({ sha256, inRing: channel(id).stats().bytesWritten }))),
    ),
  /** @param {{ id: number }} args */
  pause: ({ id }) => channel(id).pause(),
  // Starts closing the channel and dies before the close can complete.
  /** @param {{ id: number; how: 'SIGKILL' | 'exit' }} args */
  endAndDie: ({ id, how }) => {
    channel(id).end();
    if (how === 'SIGKILL') process.kill(process.pid, 'SIGKILL');
    else process.exit(0);
  },
  /** @param {{ id: number; size: number }} args */
  recvExact: ({ id, size }) => channel(id).recv(size),
  // Serves one client: every framed message that arrives is sent straight back.
  /** @param {{ domid: number; name: string; readMin?: number; writeMin?: number; maxMessageSize?: number }} args */
  echoMessages: async ({ domid, name, readMin, writeMin, maxMessageSize }) => {
    const server = createServer({ domid, name, readMin, writeMin, simDomid }, async (channel) => {
      const messages = new MessageChannel(channel, { maxMessageSize });
      try {
        for await (const message of messages) await messages.send(message);
      } catch {
        /* the test decides how the channel ends */
      }
    });
    await server.listen();
    servers.set(nextId, server);
    return nextId++;
  },
  // Serves RPC: a few methods to exercise calls, errors, cancellation.
  /** @param {{ domid: number; name: string }} args */
  serveRpc: async ({ domid, name }) => {
    const server = createServer({ domid, name, simDomid }, (channel) => {
      const rpc = new RpcPeer(channel, {
        handlers: {
          echo: (params) => params,
          add: ({ a, b }) => a + b,
          sleep: ({ ms }, { signal }) =>
            new Promise((resolve, reject) => {
              const timer = setTimeout(() => resolve(ms), ms);
              signal.addEventListener('abort', () => {
                clearTimeout(timer);
                reject(signal.reason);
              });
            }),
          fail: ({ code, message }) => {
            throw Object.assign(new Error(message), { code });
          },
          whoami: () => ({ pid: process.pid }),
        },
      });
      rpc.on('close', () => {});
    });
    await server.listen();
    servers.set(nextId, server);
    return nextId++;
  },
  /** @param {{ code?: number }} args */
  exit: ({ code }) => setImmediate(() => process.exit(code)),
};

serveCommands(commands);
