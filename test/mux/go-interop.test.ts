// Interop with the reference implementation, HashiCorp's Go yamux as Debian packages it: a Go peer
// (go-peer/peer.go, built by go-peer/build.sh, which installs Go and the sources as root or says
// what to install) over a Unix socket, with Node as yamux client and as server. The peer answers
// commands on streams Node opens and opens streams of its own on command.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type MuxStream, Session } from '@xen-vchan/mux';
import { cleanup, nextEvent, readAll, sha256, socketFolder, writeAll } from './pair.js';

const build = path.join(path.dirname(fileURLToPath(import.meta.url)), 'go-peer', 'build.sh');
let binary = '';
const peers: ChildProcess[] = [];

beforeAll(async () => {
  binary = await new Promise<string>((resolve, reject) =>
    execFile('bash', [build], { timeout: 600_000 }, (error, stdout, stderr) =>
      error ? reject(new Error(`${build} failed:\n${stderr}`)) : resolve(stdout.trim().split('\n').at(-1)!),
    ),
  );
}, 600_000);

afterEach(async () => {
  for (const peer of peers.splice(0)) peer.kill('SIGKILL');
  await cleanup();
});

/** Starts the Go peer in `goRole` against a session of ours in the other role. */
async function withGo(goRole: 'client' | 'server', options: { backlog?: number; acceptBacklog?: number } = {}) {
  const file = path.join(socketFolder(), 'go.sock');
  const listener = net.createServer();
  await new Promise<void>((resolve) => listener.listen(file, resolve));
  const connected = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const peer = spawn(binary, ['-socket', file, '-role', goRole, '-backlog', String(options.backlog ?? 256)], {
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  peers.push(peer);
  let log = '';
  peer.stderr!.on('data', (chunk) => (log += chunk));
  const socket = await connected;
  listener.close();
  const session = new Session(socket, { role: goRole === 'client' ? 'server' : 'client', acceptBacklog: options.acceptBacklog });
  const errors: Error[] = [];
  session.on('error', (error) => errors.push(error));
  /** Sends a command on a new stream and returns the answer line. */
  const command = async (line: string) => {
    const stream = session.open();
    stream.end(`${line}\n`);
    return String(await readAll(stream)).trim();
  };
  return { session, command, errors, goLog: () => log };
}

/** Reads one line from a stream and puts back what followed it. */
async function readLine(stream: MuxStream): Promise<string> {
  let buffered = Buffer.alloc(0);
  for (;;) {
    const chunk = stream.read() as Buffer | null;
    if (chunk) {
      buffered = Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf(10);
      if (end >= 0) {
        if (end + 1 < buffered.length) stream.unshift(buffered.subarray(end + 1));
        return String(buffered.subarray(0, end));
      }
      continue;
    }
    if (stream.readableEnded) throw new Error(`stream ${stream.id} ended before a line`);
    await new Promise((resolve) => {
      stream.once('readable', resolve);
      stream.once('end', resolve);
    });
  }
}

/** Reads exactly n bytes. */
async function readBytes(stream: MuxStream, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let have = 0;
  while (have < n) {
    const chunk = (stream.read(Math.min(n - have, stream.readableLength || 1)) ?? stream.read()) as Buffer | null;
    if (!chunk) {
      if (stream.readableEnded) throw new Error(`stream ${stream.id} ended after ${have} of ${n} bytes`);
      await new Promise((resolve) => {
        stream.once('readable', resolve);
        stream.once('end', resolve);
      });
      continue;
    }
    const take = chunk.subarray(0, n - have);
    if (take.length < chunk.length) stream.unshift(chunk.subarray(take.length));
    chunks.push(take);
    have += take.length;
  }
  return Buffer.concat(chunks);
}

/** Serves the streams the Go peer opens (xchg, half, hello; stall ones are handed to `stalled`). */
function serveGo(session: Session, stalled: (stream: MuxStream, line: string) => void = () => {}) {
  session.on('stream', async (stream) => {
    const line = await readLine(stream);
    const [what, size] = line.split(' ');
    if (what === 'xchg') {
      const mine = randomBytes(Number(size));
      stream.write(mine);
      const theirs = await readBytes(stream, Number(size));
      stream.end(`${sha256(theirs)} ${sha256(mine)}\n`);
      stream.resume();
    } else if (what === 'half') {
      const theirs = await readAll(stream); // their FIN came first; we answer after it
      stream.end(`${sha256(theirs)}\n`);
    } else if (what === 'hello') stream.end('hi\n');
    else if (what === 'stall') stalled(stream, line);
  });
}

for (const goRole of ['server', 'client'] as const) {
  const nodeRole = goRole === 'server' ? 'client' : 'server';
  describe(`Node as yamux ${nodeRole}, Go as ${goRole}`, () => {
    it('many concurrent streams both ways, each intact (sha256); half-close both ways', async () => {
      const { session, command, errors } = await withGo(goRole);
      serveGo(session);
      const ours = Array.from({ length: 32 }, async (_, i) => {
        const data = randomBytes(1 + Math.floor(Math.random() * 600_000));
        const stream = session.open();
        const kind = i % 2 ? 'echo' : 'sha';
        const answer = readAll(stream);
        await writeAll(stream, Buffer.concat([Buffer.from(`${kind}\n`), data]));
        const received = await answer;
        // echo: Go copies until our FIN and then closes; sha: Go answers only after our FIN.
        if (kind === 'echo') expect(sha256(received)).toBe(sha256(data));
        else expect(String(received).trim()).toBe(`${data.length} ${sha256(data)}`);
      });
      const theirs = [command('xchg 24 600000'), command('half 16 400000')];
      await Promise.all(ours);
      expect(await Promise.all(theirs)).toEqual(['ok', 'ok']);
      expect(errors).toEqual([]);
      await session.close();
    });

    it('reset: our RST reaches Go as a connection reset; Go refusing our stream (backlog full) reaches us as ECONNREFUSED', async () => {
      const { session, command, errors } = await withGo(goRole, { backlog: 2 });
      const doomed = session.open();
      doomed.write('wait-reset\n');
      expect(await readLine(doomed)).toBe('waiting');
      doomed.destroy();
      expect(await command('last-reset')).toBe('connection reset');

      expect(await command('hold')).toBe('held');
      // Go's pending accept takes one, its backlog two; the next is refused.
      const held = Array.from({ length: 5 }, () => session.open());
      const refusals = held.map(
        (stream) => new Promise<string>((resolve) => stream.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? ''))),
      );
      for (const stream of held) stream.write('echo\n');
      expect(await Promise.race(refusals)).toBe('ECONNREFUSED');
      const control = session.open(); // may itself be refused while Go holds: then try again after
      control.on('error', () => {});
      for (const stream of held) stream.destroy();
      expect(errors).toEqual([]);
      session.destroy();
    });

    it('window exhaustion both ways: a stalled stream holds exactly one window, others flow, then all arrives', async () => {
      const { session, command, errors } = await withGo(goRole);
      // Ours to Go: Go reads nothing of this stream until released.
      const stalled = session.open();
      const data = randomBytes(1_500_000);
      const answer = readAll(stalled);
      const written = writeAll(stalled, Buffer.concat([Buffer.from('stall\n'), data]));
      await expect.poll(() => stalled.sendWindow).toBe(0);
      const echoed = randomBytes(800_000);
      const echo = session.open();
      const back = readAll(echo);
      await writeAll(echo, Buffer.concat([Buffer.from('echo\n'), echoed]));
      expect(sha256(await back)).toBe(sha256(echoed));
      expect(stalled.sendWindow).toBe(0);
      expect(await command('release')).toBe('ok');
      await written;
      expect(String(await answer).trim()).toBe(`${data.length} ${sha256(data)}`);

      // Go's to us: we read nothing until Go has written all our window allows (its write times out).
      let stalledHere: [MuxStream, string] | null = null;
      serveGo(session, (stream, line) => (stalledHere = [stream, line]));
      expect(await command('stall-write 1000000')).toBe('wrote 262144 i/o deadline reached');
      expect(stalledHere).not.toBe(null);
      const [stream, line] = stalledHere!;
      const [, size, sum] = line.split(' ');
      expect(stream.readableLength).toBe(262144 - line.length - 1);
      expect(sha256(await readAll(stream))).toBe(sum);
      stream.end(); // our side of Go's stream: close() waits for every stream to end both ways
      expect(Number(size)).toBe(1_000_000);
      expect(errors).toEqual([]);
      await session.close();
    });

    it('ping both ways (and Go keepalive pings all along)', async () => {
      const { session, command, errors } = await withGo(goRole);
      expect(await session.ping()).toBeGreaterThan(0);
      expect(await command('ping')).toMatch(/^ok [1-9][0-9]*$/);
      await new Promise((resolve) => setTimeout(resolve, 300)); // Go's keepalive, every 100 ms
      expect(errors).toEqual([]);
      expect(session.closedReason).toBe(null);
      await session.close();
    });

    it('go-away both ways: new streams are refused, open ones go on', async () => {
      const { session, command, errors } = await withGo(goRole);
      const away = nextEvent(session, 'goaway');
      const open = session.open();
      open.write('echo\n');
      expect(await command('goaway')).toBe('ok');
      await away;
      expect(() => session.open()).toThrow(expect.objectContaining({ code: 'ECONNREFUSED' }));
      const back = readAll(open);
      open.end('still here');
      expect(String(await back)).toBe('still here');

      expect(errors).toEqual([]);
      session.destroy();

      // Ours to Go, on a new session: Go may open no more streams; ours still go.
      const other = await withGo(goRole);
      other.session.goAway();
      expect(await other.command('try-open')).toBe('err remote end is not accepting connections');
      expect(await other.command('xchg 1 1000')).toBe('fail remote end is not accepting connections');
      expect(other.errors).toEqual([]);
      await other.session.close();
    });

    it('limits: streams Go opens beyond our accept backlog are refused, Go sees them reset', async () => {
      const { session, command, errors } = await withGo(goRole, { acceptBacklog: 3 });
      const result = command('open-many 8');
      await expect.poll(() => session.stats()).toMatchObject({ backlog: 3, refused: 5 });
      for (let i = 0; i < 3; i++) {
        const stream = await session.accept();
        expect(await readLine(stream)).toBe('hello');
        stream.end('hi\n');
        stream.resume();
      }
      expect(await result).toBe('ok 3 reset 5');
      expect(errors).toEqual([]);
      await session.close();
    });
  });
}
