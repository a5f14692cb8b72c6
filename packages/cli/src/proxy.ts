import { on } from 'node:events';
import net from 'node:net';
import { finished } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { type MuxStream, openSession, type Session } from '@xen-vchan/mux';
import { errorCode } from '@xen-vchan/native';
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

/**
 * Joins one mux stream to one socket connection, each direction with its own half-close: the
 * socket's end (FIN) ends the stream after what it sent, and the peer's end of the stream ends
 * the socket after what the stream delivered; the other direction flows until its own end.
 * Resolves when both directions have ended, or at once when either side fails: a stream reset
 * by the peer (or refused) resets the socket, and a socket that fails or closes without ending
 * resets the stream (RST), so only this connection is lost.
 */
async function joinStream(stream: MuxStream, socket: net.Socket): Promise<void> {
  stream.on('error', () => {});
  socket.on('error', () => {});
  socket.pipe(stream);
  stream.pipe(socket);
  try {
    await Promise.all([finished(stream), finished(socket)]);
  } catch {
    resetSocket(socket);
    stream.destroy(); // RST, unless the peer reset it first
    return;
  }
  socket.destroy();
  stream.destroy();
}

/** Ends a connection so that its client sees a failure: RST for TCP; a Unix socket just closes. */
function resetSocket(socket: net.Socket): void {
  if (socket.destroyed) return;
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}

/** What a session failure means to a user of the proxy. */
function describeSessionError(error: Error): string {
  if (errorCode(error) === 'EPROTO')
    return `${error.message} The other end does not speak yamux as --mux expects: if it is Xen's vchan-socket-proxy, or a vchan proxy run with --no-mux, run this side with --no-mux too.`;
  return error.message;
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
  summary: 'join a vchan to a Unix socket or a TCP port (--no-mux: as vchan-socket-proxy)',
  usage: `usage: vchan proxy --role server|client --domain ID (--unix PATH | --tcp [HOST:]PORT) [--listen] [--mux | --no-mux] [options]

Joins a vchan to a Unix socket or a TCP port. With --mux (the default) one vchan carries every
socket connection at once, each as its own yamux stream with its own half-close; both ends must
run \`vchan proxy --mux\` (or speak yamux: the vchan's server side is the yamux server). With
--no-mux each socket connection gets a vchan of its own, one at a time, like Xen's
vchan-socket-proxy: use --no-mux when the other end is vchan-socket-proxy, which knows nothing
of yamux.

      --role R         our vchan role: server (serve domain ID) or client (connect to domain ID)
  -d, --domain ID      the other domain
      --unix PATH      the socket side is a Unix socket ...
      --tcp [H:]PORT   ... or a TCP port (host default 127.0.0.1)
  -l, --listen         listen on the socket side: each connection that comes in is carried to the
                       other end (--mux: as a new stream; --no-mux: over a new vchan). Without it,
                       connect to the socket for each stream (--mux) or once the vchan is up.
      --mux            many connections over one vchan, as yamux streams (default)
      --no-mux         one connection per vchan: what Xen's vchan-socket-proxy speaks
      --once           handle one connection, then exit (--mux without --listen: one vchan,
                       until the other end closes it). Default: keep serving; a client-role
                       proxy exits when its vchan closes.
${channelOptionsHelp}

A stream the far side cannot connect (its socket refuses) is reset alone: that one connection
closes (RST for TCP) and the others go on.

examples:
  vchan proxy --role server -d 2 -n ssh --tcp 22              # in domain 1: domain 2 reaches our sshd
  vchan proxy --role client -d 1 -n ssh --tcp 2222 --listen    # in domain 2: ssh -p 2222 localhost
  vchan proxy --no-mux --role client -d 0 --path P --unix S -l # to vchan-socket-proxy in dom0`,
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
        mux: { type: 'boolean' },
        'no-mux': { type: 'boolean' },
        once: { type: 'boolean' },
      },
    });
    if (values.role !== 'server' && values.role !== 'client') throw new UsageError('--role must be server or client');
    const role: 'server' | 'client' = values.role;
    if (values.mux && values['no-mux']) throw new UsageError('give --mux or --no-mux, not both');
    const domid = parseDomid(values.domain, '--domain');
    const endpoint = parseEndpoint(values);
    const channelOf = { domid, name: values.name, ...(values.path ? { path: values.path } : {}), ...backendOptions(values) };

    /** One vchan, in our role. */
    const openChannel = async (): Promise<Vchan> => {
      if (role === 'client') return connect({ ...channelOf, timeout: 10_000 });
      const server = createServer(channelOf);
      const channel = new Promise<Vchan>((resolve) => server.once('channel', resolve));
      await server.listen();
      process.stderr.write(`vchan proxy: serving domain ${domid} at ${server.path}\n`);
      const connected = await channel;
      connected.once('close', () => void server.close());
      return connected;
    };
    const options = { endpoint, openChannel, once: values.once === true, role };
    if (values['no-mux']) return values.listen ? listenOnePerVchan(options) : connectOnePerVchan(options);
    return values.listen ? listenMuxed(options) : connectMuxed(options);
  },
};

interface ProxyOptions {
  endpoint: Endpoint;
  openChannel: () => Promise<Vchan>;
  once: boolean;
  role: 'server' | 'client';
}

async function listenOn(endpoint: Endpoint): Promise<net.Server> {
  const listener = net.createServer({ pauseOnConnect: true, allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(endpoint as net.ListenOptions, resolve);
  });
  process.stderr.write(`vchan proxy: listening on ${describe(endpoint)}\n`);
  return listener;
}

/** --no-mux --listen: each connection that comes in gets a vchan of its own, one at a time. */
async function listenOnePerVchan({ endpoint, openChannel, once }: ProxyOptions): Promise<number> {
  const listener = await listenOn(endpoint);
  for await (const [socket] of on(listener, 'connection') as AsyncIterable<[net.Socket]>) {
    try {
      await join(await openChannel(), socket);
    } catch (error) {
      socket.destroy();
      process.stderr.write(`vchan proxy: ${(error as Error).message}\n`);
    }
    if (once) break;
  }
  listener.close();
  return EXIT.ok;
}

/** --no-mux: connect to the socket once a vchan is up; a server serves the next one after it. */
async function connectOnePerVchan({ endpoint, openChannel, once, role }: ProxyOptions): Promise<number> {
  for (;;) {
    const channel = await openChannel();
    const socket = await connectSocket(endpoint);
    await join(channel, socket);
    if (once || role === 'client') return EXIT.ok;
  }
}

/** A session over a fresh vchan; its failure is reported here, and ends only that session. */
async function openMuxSession(openChannel: () => Promise<Vchan>): Promise<Session> {
  const session = openSession(await openChannel());
  session.on('error', (error: Error) => process.stderr.write(`vchan proxy: ${describeSessionError(error)}\n`));
  return session;
}

const sessionClosed = (session: Session) => new Promise<void>((resolve) => session.once('close', () => resolve()));

/**
 * --mux --listen: every connection that comes in is a new stream of the one session. Connections
 * that arrive while there is no session (before the vchan is up, or between two as a server) wait
 * for the next one. With --once the first connection is the only one, and the session closes
 * after it.
 */
async function listenMuxed({ endpoint, openChannel, once, role }: ProxyOptions): Promise<number> {
  const listener = await listenOn(endpoint);
  let session: Session | null = null;
  const waiting: net.Socket[] = [];
  const carried = new Set<Promise<void>>();
  const carry = (socket: net.Socket) => {
    if (!session) return void waiting.push(socket);
    let stream: MuxStream;
    try {
      stream = session.open();
    } catch (error) {
      resetSocket(socket);
      process.stderr.write(`vchan proxy: ${(error as Error).message}\n`);
      return;
    }
    const joined = joinStream(stream, socket).finally(() => carried.delete(joined));
    carried.add(joined);
    socket.resume();
  };
  let firstConnection: () => void = () => {};
  const connected = new Promise<void>((resolve) => (firstConnection = resolve));
  listener.on('connection', (socket: net.Socket) => {
    if (once) listener.close();
    firstConnection();
    carry(socket);
  });
  for (;;) {
    let current: Session;
    try {
      current = await openMuxSession(openChannel);
    } catch (error) {
      listener.close();
      for (const socket of waiting.splice(0)) resetSocket(socket);
      throw error;
    }
    session = current;
    const closed = sessionClosed(current);
    for (const socket of waiting.splice(0)) carry(socket);
    if (once) {
      // The one connection: wait for it to arrive and finish, then close the session.
      await Promise.race([connected, closed]);
      await Promise.race([Promise.all(carried), closed]);
      if (!current.closedReason) await current.close().catch(() => {});
    }
    await closed;
    session = null;
    if (once || role === 'client') break;
  }
  listener.close();
  for (const socket of waiting.splice(0)) resetSocket(socket);
  return EXIT.ok;
}

/**
 * --mux without --listen: each stream the other end opens gets a socket connection of its own.
 * One that cannot be made (the target refuses) resets that stream only. A server serves the next
 * vchan after one closes, unless --once.
 */
async function connectMuxed({ endpoint, openChannel, once, role }: ProxyOptions): Promise<number> {
  for (;;) {
    const session = await openMuxSession(openChannel);
    const closed = sessionClosed(session);
    session.on('stream', (stream: MuxStream) => {
      stream.pause();
      connectSocket(endpoint).then(
        (socket) => joinStream(stream, socket),
        (error: Error) => {
          stream.destroy(); // RST: the other end's connection closes, and only it
          process.stderr.write(`vchan proxy: stream ${stream.id}: ${describe(endpoint)}: ${error.message}\n`);
        },
      );
    });
    await closed;
    if (once || role === 'client') return EXIT.ok;
  }
}
