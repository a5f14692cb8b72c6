// A peer process for vchan tests: serves or connects through the public vchan API and moves
// seeded data, as the test process asks over IPC.
import { connect, createServer, MessageChannel, RpcPeer } from '@xen-vchan/vchan';
import { receiveAll, receiveCount, sendSeeded } from './stream-data.mjs';
import { serveCommands } from './agent-loop.mjs';

const simDomid = process.env.XEN_VCHAN_SIM_DOMID === undefined ? undefined : Number(process.env.XEN_VCHAN_SIM_DOMID);
const channels = new Map();
const servers = new Map();
let nextId = 1;
const pendingChannels = [];
const channelWaiters = [];

function keepChannel(channel) {
  const id = nextId++;
  channels.set(id, channel);
  channel.on('error', () => {});
  channel.on('close', () => setImmediate(() => channels.delete(id)));
  return id;
}

const commands = {
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
  nextChannel: () => new Promise((resolve) => {
    const ready = pendingChannels.shift();
    if (ready !== undefined) resolve(ready);
    else channelWaiters.push(resolve);
  }),
  connect: async ({ domid, name, timeout }) => keepChannel(await connect({ domid, name, timeout, simDomid })),
  send: ({ id, total, seed, maxChunk, end = true }) =>
    sendSeeded(channels.get(id), { total, seed, maxChunk }).then((sha256) => {
      if (end) channels.get(id).end();
      return sha256;
    }),
  receive: ({ id }) => receiveAll(channels.get(id)),
  receiveCount: ({ id, bytes }) => receiveCount(channels.get(id), bytes),
  end: ({ id }) => new Promise((resolve) => channels.get(id).end(resolve)),
  closeServer: ({ id }) => servers.get(id).close(),
  stats: ({ id }) => channels.get(id).stats(),
  sendWhole: ({ id, bytes }) => channels.get(id).send(bytes),
  // Writes seeded bytes and resolves once all of them are in the ring (not merely queued).
  writeIntoRing: ({ id, total, seed }) =>
    sendSeeded(channels.get(id), { total, seed, maxChunk: 4096 }).then(
      (sha256) => new Promise((resolve) => channels.get(id).write(Buffer.alloc(0), () => resolve({ sha256, inRing: channels.get(id).stats().bytesWritten }))),
    ),
  pause: ({ id }) => channels.get(id).pause(),
  // Starts closing the channel and dies before the close can complete.
  endAndDie: ({ id, how }) => {
    channels.get(id).end();
    if (how === 'SIGKILL') process.kill(process.pid, 'SIGKILL');
    else process.exit(0);
  },
  recvExact: ({ id, size }) => channels.get(id).recv(size),
  // Serves one client: every framed message that arrives is sent straight back.
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
  serveRpc: async ({ domid, name }) => {
    const server = createServer({ domid, name, simDomid }, (channel) => {
      const rpc = new RpcPeer(channel, {
        handlers: {
          echo: (params) => params,
          add: ({ a, b }) => a + b,
          sleep: ({ ms }, { signal }) =>
            new Promise((resolve, reject) => {
              const timer = setTimeout(() => resolve(ms), ms);
              signal.addEventListener('abort', () => (clearTimeout(timer), reject(signal.reason)));
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
  exit: ({ code }) => setImmediate(() => process.exit(code)),
};

serveCommands(commands);
