/**
 * One end of the measurements: it listens or connects over a transport and plays a role on the
 * stream. A forked worker process runs this (worker.ts), and so does `vchan bench --serve` in
 * another domain, driven over a control vchan. Every request is checked first (requests.ts).
 */
import { rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { openSession, type Session } from '@xen-vchan/mux';
import { connect, createServer, type Vchan, type VchanServer, type VchanStats } from '@xen-vchan/vchan';
import { Pattern } from './pattern.js';
import { checkRequest, MAX_LISTENING, protocolError, type Serving } from './requests.js';
import * as roles from './roles.js';

export type StreamTransport = 'vchan' | 'unix' | 'tcp';

export type Role =
  | { role: 'send'; chunk: number; seconds: number }
  | { role: 'receive' }
  /** vchan only: receive through Vchan.views(), checking the bytes where they are in the ring. */
  | { role: 'receive-views' }
  | { role: 'ping'; size: number; seconds: number }
  | { role: 'pong' }
  | { role: 'rpc-serve' }
  | { role: 'rpc-call'; seconds: number; inFlight: number };

/** Where a listener can be reached. */
export interface Address {
  name?: string;
  path?: string;
  port?: number;
}

/** What listening and connecting requests share: which measurement, which role, how. */
interface RoleRequest {
  transport: StreamTransport;
  /** Names this measurement in the endpoint: result/close use it. */
  key: string;
  role: Role;
  backend?: 'auto' | 'xen' | 'sim';
  simDomid?: number;
  /** Largest chunk of the run, so the pattern is sized once. */
  maxChunk?: number;
  /** The pattern's seed: the same at both ends of a run. */
  seed?: number;
  /**
   * Lanes: play the role on `streams` streams at once (send and receive only), and with `busy`
   * (ping and pong only) that many more streams carry bulk data beside it: the pinging side
   * sends 64 KiB writes for its seconds, the ponging side receives. Over a vchan the lanes are
   * yamux streams of one session on one vchan (the vchan's server side is the yamux server);
   * otherwise each lane is a connection of its own, made one after the other. Either field
   * makes the outcome's result a `LanesResult`.
   */
  streams?: number;
  busy?: number;
}

export interface ListenRequest extends RoleRequest {
  /** vchan: ring size each way (readMin and writeMin). */
  ring?: number;
  /**
   * vchan: the client domain. Where the server publishes is not the request's to say: always
   * under its own vchan area for that client, at a name the listener picks (see listen()).
   */
  peerDomid?: number;
}

export interface ConnectRequest extends RoleRequest {
  address: Address;
  /** vchan: the server's domain. */
  serverDomid?: number;
}

/** What a role played on lanes gives: each lane's result, in order, and the wall time they took together. */
export interface LanesResult {
  lanes: unknown[];
  seconds: number;
}

export interface RoleOutcome {
  result: unknown;
  /** vchan only: the channel's counters once the role is done. */
  stats?: VchanStats;
  /** vchan only: the ring sizes this side writes and reads. */
  rings?: { write: number; read: number };
}

interface Listening {
  outcome: Promise<RoleOutcome>;
  close(): Promise<void>;
}

const PATTERN_MINIMUM = 1 << 20;

export class Endpoint {
  private readonly listening = new Map<string, Listening>();
  /** Listeners being set up, counted with the others; `closed` when close() came meanwhile. */
  private readonly opening = new Map<string, { closed: boolean }>();
  private pattern: Pattern | null = null;
  /** Vchans this endpoint published so far: each gets a name of its own (see listen()). */
  private published = 0;

  /**
   * `serving`: the endpoint of `vchan bench --serve`, whose requests come from that other domain:
   * it only listens, over vchans to that domain, on its own backend, whatever a request says.
   */
  constructor(private readonly serving?: Serving) {}

  /** Runs one request; a malformed one is refused with EPROTO before anything is done. */
  async handle(op: unknown, args: unknown): Promise<unknown> {
    const checked = checkRequest(op, args, this.serving);
    switch (checked.op) {
      case 'hello':
        return { pid: process.pid, node: process.version };
      case 'listen':
        return this.listen(checked.request);
      case 'connect':
        return this.connect(checked.request);
      case 'result':
        return this.result(checked.key);
      case 'close':
        return this.close(checked.key);
    }
  }

  /** Closes every listener still open. */
  async closeAll(): Promise<void> {
    for (const opening of this.opening.values()) opening.closed = true;
    await Promise.all([...this.listening.keys()].map((key) => this.close(key)));
  }

  /** The pattern a role sends or checks, if it is one that does; maxChunk is at most MAX_CHUNK (requests.ts). */
  private patternFor(request: { role: Role; maxChunk?: number; seed?: number; busy?: number }): Pattern | null {
    const { role, seed = 1 } = request;
    if (role.role !== 'send' && role.role !== 'receive' && role.role !== 'receive-views' && !request.busy) return null;
    const extra = Math.max(PATTERN_MINIMUM, request.maxChunk ?? 0, role.role === 'send' ? role.chunk : 0);
    if (!this.pattern || this.pattern.extra < extra || this.pattern.seed !== seed) this.pattern = new Pattern(extra, seed);
    return this.pattern;
  }

  private async listen(request: ListenRequest): Promise<Address> {
    if (this.listening.has(request.key) || this.opening.has(request.key))
      throw protocolError(`a measurement ${request.key} is already listening`);
    // Each listener holds pages, a port and XenStore keys until it is closed: a bounded number,
    // counted from before the first await, so that requests sent all at once cannot pass it.
    if (this.listening.size + this.opening.size >= MAX_LISTENING)
      throw protocolError(`${MAX_LISTENING} measurements are listening already; close one first`);
    const opening = { closed: false };
    this.opening.set(request.key, opening);
    try {
      return await this.open(request, opening);
    } finally {
      this.opening.delete(request.key);
    }
  }

  private async open(request: ListenRequest, opening: { closed: boolean }): Promise<Address> {
    const pattern = this.patternFor(request);
    const lanes = laneCount(request);
    let accepted: Promise<Duplex[]>;
    let address: Address;
    let closeServer: () => Promise<void>;
    if (request.transport === 'vchan') {
      const ring = request.ring ?? 65536;
      // Always the conventional /local/domain/<self>/data/vchan/<client>/<name>, and a name of our
      // own: closing the server removes that node recursively, so it must be one we made, not
      // another service's (nor the control vchan's), nor an earlier measurement's still being removed.
      const name = `bench-${process.pid}-${++this.published}`;
      const { backend, simDomid } = this.serving ?? request;
      const server: VchanServer = createServer({
        domid: this.serving?.client ?? request.peerDomid ?? 0,
        name,
        readMin: ring,
        writeMin: ring,
        ...(backend ? { backend } : {}),
        ...(simDomid !== undefined ? { simDomid } : {}),
      });
      accepted = new Promise((resolve, reject) => {
        server.once('channel', (channel: Vchan) => resolve([channel]));
        server.once('error', reject);
      });
      // A listen that fails rejects this too, with nobody waiting on it yet: not a crash.
      accepted.catch(() => {});
      await server.listen();
      address = { name };
      closeServer = () => server.close();
    } else {
      const server = net.createServer();
      // One connection, or one per lane (each made after the one before: they come in order).
      const wanted = lanes ?? 1;
      accepted = new Promise((resolve, reject) => {
        const connections: net.Socket[] = [];
        server.on('connection', (socket: net.Socket) => {
          if (connections.length === wanted) return void socket.destroy();
          connections.push(socket);
          if (connections.length === wanted) resolve(connections);
        });
        server.once('error', reject);
      });
      accepted.catch(() => {});
      if (request.transport === 'unix') {
        const socketPath = path.join(os.tmpdir(), `vchan-bench-${process.pid}-${request.key}.sock`);
        rmSync(socketPath, { force: true });
        await new Promise<void>((resolve, reject) => server.once('error', reject).listen(socketPath, resolve));
        address = { path: socketPath };
      } else {
        await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
        address = { port: (server.address() as net.AddressInfo).port };
      }
      closeServer = () => new Promise<void>((resolve) => server.close(() => resolve()));
    }
    if (opening.closed) {
      // Closed (or its client gone) while it was being set up: nobody will ask for it now.
      await closeServer();
      throw protocolError(`the measurement ${request.key} was closed before it was listening`);
    }
    let streams: Duplex[] = [];
    const outcome = accepted.then((accepted) => {
      streams = accepted;
      return lanes === null
        ? play(accepted[0]!, request.transport, request.role, pattern)
        : playLanes(accepted, request, pattern, 'server');
    });
    outcome.catch(() => {}); // reported through result()
    this.listening.set(request.key, {
      outcome,
      close: async () => {
        for (const stream of streams) stream.destroy();
        await closeServer();
      },
    });
    return address;
  }

  private async connect(request: ConnectRequest): Promise<RoleOutcome> {
    const pattern = this.patternFor(request);
    const lanes = laneCount(request);
    const streams: Duplex[] = [];
    if (request.transport === 'vchan') {
      const stream = await connect({
        domid: request.serverDomid ?? 0,
        name: request.address.name!,
        timeout: 20_000,
        ...(request.backend ? { backend: request.backend } : {}),
        ...(request.simDomid !== undefined ? { simDomid: request.simDomid } : {}),
      });
      streams.push(stream);
    } else {
      try {
        for (let lane = 0; lane < (lanes ?? 1); lane++) {
          const socket =
            request.transport === 'unix'
              ? net.connect({ path: request.address.path! })
              : net.connect({ port: request.address.port!, host: '127.0.0.1' });
          streams.push(socket);
          await new Promise<void>((resolve, reject) => {
            socket.once('connect', resolve);
            socket.once('error', reject);
          });
        }
      } catch (error) {
        for (const stream of streams) stream.destroy();
        throw error;
      }
    }
    try {
      return lanes === null
        ? await play(streams[0]!, request.transport, request.role, pattern)
        : await playLanes(streams, request, pattern, 'client');
    } finally {
      for (const stream of streams) stream.destroy();
    }
  }

  private async result(key: string): Promise<RoleOutcome> {
    const listening = this.listening.get(key);
    if (!listening) throw protocolError(`no measurement ${key} is listening here`);
    return listening.outcome;
  }

  private async close(key: string): Promise<void> {
    const opening = this.opening.get(key);
    if (opening) opening.closed = true;
    const listening = this.listening.get(key);
    if (!listening) return;
    this.listening.delete(key);
    await listening.close();
  }
}

async function play(stream: Duplex, transport: StreamTransport | 'mux', role: Role, pattern: Pattern | null): Promise<RoleOutcome> {
  if (transport === 'tcp' && (role.role === 'ping' || role.role === 'pong' || role.role.startsWith('rpc')))
    (stream as net.Socket).setNoDelay(true);
  const vchan = transport === 'vchan' ? (stream as Vchan) : null;
  const rings = vchan ? { write: vchan.writeRingSize, read: vchan.readRingSize } : undefined;
  let result: unknown;
  switch (role.role) {
    case 'send':
      result = await roles.send(stream, pattern!, role.chunk, role.seconds);
      break;
    case 'receive':
      result = await roles.receive(stream, pattern!);
      break;
    case 'receive-views':
      if (!vchan) throw protocolError(`the role receive-views reads a vchan, not a ${transport} stream`);
      result = await roles.receiveViews(vchan, pattern!);
      break;
    case 'ping':
      result = await roles.ping(stream, role.size, role.seconds);
      break;
    case 'pong':
      result = await roles.pong(stream);
      break;
    case 'rpc-serve':
      result = await roles.rpcServe(stream);
      break;
    case 'rpc-call':
      result = await roles.rpcCall(stream, role.seconds, role.inFlight);
      break;
  }
  return vchan ? { result, stats: vchan.stats(), rings: rings! } : { result };
}

/** How many lanes a request plays on; null for the one stream of a plain measurement. */
function laneCount(request: { streams?: number; busy?: number }): number | null {
  if (request.streams === undefined && request.busy === undefined) return null;
  return (request.streams ?? 1) + (request.busy ?? 0);
}

/** The role of each lane: the request's on its `streams`, then bulk data on its `busy` ones. */
function laneRoles(request: { role: Role; streams?: number; busy?: number }): Role[] {
  const { role } = request;
  const bulk: Role = role.role === 'ping' ? { role: 'send', chunk: 65536, seconds: role.seconds } : { role: 'receive' };
  return [...Array<Role>(request.streams ?? 1).fill(role), ...Array<Role>(request.busy ?? 0).fill(bulk)];
}

/**
 * Plays the request's lanes at once. `connections` are the lanes themselves (sockets), or the one
 * vchan that carries them as the streams of a yamux session, in which `side` (the vchan's) opens
 * them (client) or accepts them in the order they were opened (server). Each lane ends its side
 * once the peer ended its own, so every lane closes; the client then closes the session, which
 * ends the vchan once both sides of every stream have ended, and the server waits for that.
 */
async function playLanes(
  connections: Duplex[],
  request: { transport: StreamTransport; role: Role; streams?: number; busy?: number },
  pattern: Pattern | null,
  side: 'server' | 'client',
): Promise<RoleOutcome> {
  const roles = laneRoles(request);
  const vchan = request.transport === 'vchan' ? (connections[0] as Vchan) : null;
  let session: Session | null = null;
  let sessionClosed: Promise<unknown> = Promise.resolve();
  let lanes: Duplex[];
  if (vchan) {
    session = openSession(vchan, { maxStreamWindow: 1 << 20 });
    session.on('error', () => {}); // each lane fails with it
    const closing = session;
    sessionClosed = new Promise<void>((resolve) => closing.once('close', () => resolve()));
    lanes = [];
    for (let lane = 0; lane < roles.length; lane++) lanes.push(side === 'client' ? session.open() : await session.accept());
  } else lanes = connections;
  for (const lane of lanes) lane.once('end', () => lane.end());
  const started = performance.now();
  try {
    const results = await Promise.all(
      lanes.map(async (lane, index) => {
        const outcome = await play(lane, request.transport === 'vchan' ? 'mux' : request.transport, roles[index]!, pattern);
        lane.resume(); // a role that stopped reading (ping) still reads to the peer's end, so the lane closes
        return outcome;
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const result: LanesResult = { lanes: results.map((outcome) => outcome.result), seconds };
    // What this side wrote may still be on its way: the client closes the session once every
    // stream has ended on both sides, and the server waits for that, so nothing is cut short.
    if (session) await withDeadline(side === 'client' ? session.close() : sessionClosed, 10_000);
    return vchan ? { result, stats: vchan.stats(), rings: { write: vchan.writeRingSize, read: vchan.readRingSize } } : { result };
  } catch (error) {
    session?.destroy();
    throw error;
  }
}

/** `promise`, or nothing after `ms`: a peer that never finishes closing does not hold us. */
function withDeadline(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.then(
      () => {},
      () => {},
    ),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
  ]).finally(() => clearTimeout(timer));
}
