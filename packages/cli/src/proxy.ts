import { on } from 'node:events';
import net from 'node:net';
import { finished } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { connect, createServer, type Vchan } from '@xen-vchan/vchan';
import { backendOptions, channelOptions, channelOptionsHelp, EXIT, parseDomid, UsageError, type Command } from './command.js';

type Endpoint = { path: string } | { host: string; port: number };

function parseEndpoint(values: { unix?: string; tcp?: string }): Endpoint {
  if (values.unix && values.tcp) throw new UsageError('give --unix or --tcp, not both');
  if (values.unix) return { path: values.unix };
  if (values.tcp) {
    const match = /^(?:(.*):)?(\d+)$/.exec(values.tcp);
    const port = Number(match?.[2]);
    if (!match || port < 1 || port > 65535) throw new UsageError(`--tcp takes [HOST:]PORT, got ${values.tcp}`);
    return { host: match[1] || '127.0.0.1', port };
  }
  throw new UsageError('say where the socket side is: --unix PATH or --tcp [HOST:]PORT');
}

const describe = (endpoint: Endpoint) => ('path' in endpoint ? endpoint.path : `${endpoint.host}:${endpoint.port}`);

/**
 * Copies both ways until what the vchan delivers is all written to the socket; then both close.
 * A vchan has no half-close, so the socket's end ends the vchan (after flushing into the ring),
 * which ends its readable side after what the peer had already put in the ring; a vchan closed by
 * the peer likewise ends its readable side. Either way the socket is ended only once those bytes
 * are written to it, so a slow socket reader still gets everything. (Sockets are half-open for
 * this: a socket that ended itself on the other end's FIN could not take the vchan's last bytes;
 * and `pipeline` is not used, since it destroys both streams when either finishes first.)
 */
async function join(channel: Vchan, socket: net.Socket): Promise<void> {
  socket.on('error', () => {});
  channel.on('error', () => {});
  socket.pipe(channel);
  channel.pipe(socket);
  // A socket that fails or closes without an end still ends the vchan, after what it had sent.
  socket.once('close', () => {
    if (!channel.writableEnded) channel.end();
  });
  await finished(channel).catch(() => {});
  if (channel.readableEnded) await finished(socket, { readable: false }).catch(() => {});
  socket.destroy();
  channel.destroy();
}

function connectSocket(endpoint: Endpoint): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ ...endpoint, allowHalfOpen: true } as net.NetConnectOpts);
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

export const proxyCommand: Command = {
  name: 'proxy',
  summary: 'join a vchan to a Unix socket or a TCP port (works with vchan-socket-proxy)',
  usage: `usage: vchan proxy --role server|client --domain ID (--unix PATH | --tcp [HOST:]PORT) [--listen] [options]

Joins vchans to a Unix socket or a TCP port, one socket connection to one vchan, like Xen's
vchan-socket-proxy (which may run on the other side).

      --role R         our vchan role: server (serve domain ID) or client (connect to domain ID)
  -d, --domain ID      the other domain
      --unix PATH      the socket side is a Unix socket ...
      --tcp [H:]PORT   ... or a TCP port (host default 127.0.0.1)
  -l, --listen         listen on the socket side: each connection that comes in gets its own
                       vchan. Without it, connect to the socket once the vchan is up.
      --once           handle one connection, then exit (default: keep serving)
${channelOptionsHelp}

examples:
  vchan proxy --role server -d 2 -n ssh --tcp 22              # in domain 1: domain 2 reaches our sshd
  vchan proxy --role client -d 1 -n ssh --tcp 2222 --listen    # in domain 2: ssh -p 2222 localhost`,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        ...channelOptions,
        role: { type: 'string' },
        domain: { type: 'string', short: 'd' },
        unix: { type: 'string' },
        tcp: { type: 'string' },
        listen: { type: 'boolean', short: 'l' },
        once: { type: 'boolean' },
      },
    });
    if (values.role !== 'server' && values.role !== 'client') throw new UsageError('--role must be server or client');
    const domid = parseDomid(values.domain, '--domain');
    const endpoint = parseEndpoint(values);
    const channelOf = { domid, name: values.name, ...(values.path ? { path: values.path } : {}), ...backendOptions(values) };

    /** One vchan for one socket connection, in our role. */
    const openChannel = async (): Promise<Vchan> => {
      if (values.role === 'client') return connect({ ...channelOf, timeout: 10_000 });
      const server = createServer(channelOf);
      const channel = new Promise<Vchan>((resolve) => server.once('channel', resolve));
      await server.listen();
      process.stderr.write(`vchan proxy: serving domain ${domid} at ${server.path}\n`);
      const connected = await channel;
      connected.once('close', () => void server.close());
      return connected;
    };

    if (values.listen) {
      const listener = net.createServer({ pauseOnConnect: true, allowHalfOpen: true });
      await new Promise<void>((resolve, reject) => {
        listener.once('error', reject);
        listener.listen(endpoint as net.ListenOptions, resolve);
      });
      process.stderr.write(`vchan proxy: listening on ${describe(endpoint)}\n`);
      for await (const [socket] of on(listener, 'connection') as AsyncIterable<[net.Socket]>) {
        try {
          await join(await openChannel(), socket);
        } catch (error) {
          socket.destroy();
          process.stderr.write(`vchan proxy: ${(error as Error).message}\n`);
        }
        if (values.once) break;
      }
      listener.close();
      return EXIT.ok;
    }
    for (;;) {
      const channel = await openChannel();
      const socket = await connectSocket(endpoint);
      await join(channel, socket);
      if (values.once || values.role === 'client') return EXIT.ok;
    }
  },
};
