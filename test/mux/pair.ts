// Two connected Unix sockets, sessions over them, and a raw end that speaks frames by hand.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  encodeHeader,
  type FrameType,
  HEADER_SIZE,
  type Header,
  decodeHeader,
  type MuxStream,
  Session,
  type SessionEvents,
  type SessionOptions,
} from '@xen-vchan/mux';

const folders: string[] = [];
const sockets: net.Socket[] = [];
const servers: net.Server[] = [];

/** A temporary folder for sockets, removed by cleanup(). */
export function socketFolder(): string {
  const folder = mkdtempSync(path.join(os.tmpdir(), 'xen-vchan-mux-'));
  folders.push(folder);
  return folder;
}

/** Two ends of one Unix socket connection. */
export async function socketPair(): Promise<[net.Socket, net.Socket]> {
  const file = path.join(socketFolder(), 's');
  const server = net.createServer();
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(file, resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const dialled = net.connect(file);
  await new Promise((resolve) => dialled.once('connect', resolve));
  const other = await accepted;
  sockets.push(dialled, other);
  return [dialled, other];
}

/** A client and a server session over one socket pair. */
export async function sessionPair(clientOptions: Partial<SessionOptions> = {}, serverOptions: Partial<SessionOptions> = {}) {
  const [a, b] = await socketPair();
  const client = new Session(a, { ...clientOptions, role: 'client' });
  const server = new Session(b, { ...serverOptions, role: 'server' });
  return { client, server, clientSocket: a, serverSocket: b };
}

export async function cleanup(): Promise<void> {
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const server of servers.splice(0)) server.close();
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
}

export function sha256(data: Buffer | Buffer[]): string {
  const hash = createHash('sha256');
  for (const piece of Array.isArray(data) ? data : [data]) hash.update(piece);
  return hash.digest('hex');
}

/** Everything a stream delivers until its end; its writable side stays usable (a plain for-await destroys the stream at the end). */
export async function readAll(stream: MuxStream | net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream.iterator({ destroyOnReturn: false })) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Writes `data` in pieces of random sizes, then ends. */
export async function writeAll(stream: MuxStream, data: Buffer): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const size = Math.min(data.length - offset, 1 + Math.floor(Math.random() * 100_000));
    if (!stream.write(data.subarray(offset, offset + size))) await new Promise((resolve) => stream.once('drain', resolve));
    offset += size;
  }
  await new Promise<void>((resolve, reject) => stream.end((error?: Error | null) => (error ? reject(error) : resolve())));
}

export function randomData(max: number): Buffer {
  return randomBytes(1 + Math.floor(Math.random() * max));
}

/** A frame as bytes, for a raw peer. */
export function frame(type: FrameType | number, flags: number, streamId: number, length: number, body?: Buffer): Buffer {
  const header = encodeHeader(type as FrameType, flags, streamId, length);
  if (type > 3) header[1] = type;
  return body ? Buffer.concat([header, body]) : header;
}

/** Collects the frames a raw socket receives (headers, and Data bodies skipped). */
export function frameLog(socket: net.Socket): { headers: Header[]; ended: Promise<void> } {
  const headers: Header[] = [];
  let pending = Buffer.alloc(0);
  let skip = 0;
  socket.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    for (;;) {
      if (skip > 0) {
        const take = Math.min(skip, pending.length);
        skip -= take;
        pending = pending.subarray(take);
        if (skip > 0) return;
      }
      if (pending.length < HEADER_SIZE) return;
      const header = decodeHeader(pending);
      headers.push(header);
      pending = pending.subarray(HEADER_SIZE);
      if (header.type === 0) skip = header.length;
    }
  });
  const ended = new Promise<void>((resolve) => {
    socket.once('close', () => resolve());
    socket.once('end', () => resolve());
  });
  socket.on('error', () => {});
  return { headers, ended };
}

/** The next `name` event of a session, with its arguments (events.once rejects on 'error' and wants Node's EventEmitter). */
export function nextEvent<K extends keyof SessionEvents>(session: Session, name: K): Promise<SessionEvents[K]> {
  return new Promise((resolve) => session.once(name, ((...args: SessionEvents[K]) => resolve(args)) as never));
}
