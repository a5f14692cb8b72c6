/**
 * One end of the measurements: it listens or connects over a transport and plays a role on the
 * stream. A forked worker process runs this (worker.ts), and so does `vchan bench --serve` in
 * another domain, driven over a control vchan.
 */
import { rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { connect } from '../../connect.js';
import { createServer, type VchanServer } from '../../server.js';
import type { Vchan, VchanStats } from '../../stream.js';
import { Pattern } from './pattern.js';
import * as roles from './roles.js';

export type StreamTransport = 'vchan' | 'unix' | 'tcp';

export type Role =
  | { role: 'send'; chunk: number; seconds: number }
  | { role: 'receive' }
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

export interface ListenRequest {
  transport: StreamTransport;
  /** Names this measurement in the endpoint: result/close use it. */
  key: string;
  role: Role;
  /** vchan: ring size each way (readMin and writeMin). */
  ring?: number;
  /** vchan: the client domain, and the name or XenStore path to publish at. */
  peerDomid?: number;
  name?: string;
  path?: string;
  backend?: 'auto' | 'xen' | 'sim';
  simDomid?: number;
  /** Largest chunk of the run, so the pattern is sized once. */
  maxChunk?: number;
  /** The pattern's seed: the same at both ends of a run. */
  seed?: number;
}

export interface ConnectRequest {
  transport: StreamTransport;
  key: string;
  role: Role;
  address: Address;
  /** vchan: the server's domain. */
  serverDomid?: number;
  backend?: 'auto' | 'xen' | 'sim';
  simDomid?: number;
  maxChunk?: number;
  seed?: number;
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
  private pattern: Pattern | null = null;

  async handle(op: string, args: unknown): Promise<unknown> {
    switch (op) {
      case 'hello':
        return { pid: process.pid, node: process.version };
      case 'listen':
        return this.listen(args as ListenRequest);
      case 'connect':
        return this.connect(args as ConnectRequest);
      case 'result':
        return this.result((args as { key: string }).key);
      case 'close':
        return this.close((args as { key: string }).key);
      default:
        throw new Error(`unknown endpoint operation ${op}`);
    }
  }

  /** Closes every listener still open. */
  async closeAll(): Promise<void> {
    await Promise.all([...this.listening.keys()].map((key) => this.close(key)));
  }

  private patternFor(maxChunk = 0, seed = 1): Pattern {
    const extra = Math.max(PATTERN_MINIMUM, maxChunk);
    if (!this.pattern || this.pattern.extra < extra || this.pattern.seed !== seed) this.pattern = new Pattern(extra, seed);
    return this.pattern;
  }

  private async listen(request: ListenRequest): Promise<Address> {
    if (this.listening.has(request.key)) throw new Error(`a measurement ${request.key} is already listening`);
    const pattern = request.role.role === 'send' ? this.patternFor(request.maxChunk, request.seed) : null;
    let accepted: Promise<Duplex>;
    let address: Address;
    let closeServer: () => Promise<void>;
    if (request.transport === 'vchan') {
      const ring = request.ring ?? 65536;
      const server: VchanServer = createServer({
        domid: request.peerDomid ?? 0,
        ...(request.path ? { path: request.path } : { name: request.name ?? `bench-${request.key}` }),
        readMin: ring,
        writeMin: ring,
        ...(request.backend ? { backend: request.backend } : {}),
        ...(request.simDomid !== undefined ? { simDomid: request.simDomid } : {}),
      });
      accepted = new Promise((resolve, reject) => {
        server.once('channel', resolve);
        server.once('error', reject);
      });
      await server.listen();
      address = request.path ? { path: request.path } : { name: request.name ?? `bench-${request.key}` };
      closeServer = () => server.close();
    } else {
      const server = net.createServer();
      accepted = new Promise((resolve, reject) => {
        server.once('connection', resolve);
        server.once('error', reject);
      });
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
    let stream: Duplex | null = null;
    const outcome = accepted.then((accepted) => {
      stream = accepted;
      return play(accepted, request.transport, request.role, pattern);
    });
    outcome.catch(() => {}); // reported through result()
    this.listening.set(request.key, {
      outcome,
      close: async () => {
        (stream as Duplex | null)?.destroy();
        await closeServer();
      },
    });
    return address;
  }

  private async connect(request: ConnectRequest): Promise<RoleOutcome> {
    const pattern = request.role.role === 'receive' ? this.patternFor(request.maxChunk, request.seed) : null;
    let stream: Duplex;
    if (request.transport === 'vchan') {
      stream = await connect({
        domid: request.serverDomid ?? 0,
        ...(request.address.path ? { path: request.address.path } : { name: request.address.name ?? 'vchan' }),
        timeout: 20_000,
        ...(request.backend ? { backend: request.backend } : {}),
        ...(request.simDomid !== undefined ? { simDomid: request.simDomid } : {}),
      });
    } else {
      const socket =
        request.transport === 'unix' ? net.connect({ path: request.address.path! }) : net.connect({ port: request.address.port!, host: '127.0.0.1' });
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      stream = socket;
    }
    try {
      return await play(stream, request.transport, request.role, pattern);
    } finally {
      stream.destroy();
    }
  }

  private async result(key: string): Promise<RoleOutcome> {
    const listening = this.listening.get(key);
    if (!listening) throw new Error(`no measurement ${key} is listening here`);
    return listening.outcome;
  }

  private async close(key: string): Promise<void> {
    const listening = this.listening.get(key);
    if (!listening) return;
    this.listening.delete(key);
    await listening.close();
  }
}

async function play(stream: Duplex, transport: StreamTransport, role: Role, pattern: Pattern | null): Promise<RoleOutcome> {
  if (transport === 'tcp' && (role.role === 'ping' || role.role === 'pong' || role.role.startsWith('rpc'))) (stream as net.Socket).setNoDelay(true);
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
