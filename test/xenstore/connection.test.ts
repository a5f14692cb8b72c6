// The client's connection handling: many requests in flight, replies out of order, watch events
// between replies, lost and closed connections, limits; and the simulated daemon's framing rules.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { encodeXsMessage, splitXsStrings, XsMessageReader, XsType, xsStrings, type XsMessage } from '@xen-vchan/native';
import { SimConnection, simFiles } from '@xen-vchan/sim';
import { openXenStore, type XenStore } from '@xen-vchan/xenstore';
import { inDomain } from './domains.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** A stand-in for xenstored on a Unix socket; `onMessage` decides what it answers. */
class FakeXenstored {
  readonly path: string;
  private readonly server: net.Server;
  private readonly folder = mkdtempSync(path.join(os.tmpdir(), 'fake-xenstored-'));

  constructor(onMessage: (socket: net.Socket, message: XsMessage) => void) {
    this.path = path.join(this.folder, 'socket');
    this.server = net.createServer((socket) => {
      const reader = new XsMessageReader();
      socket.on('data', (chunk) => {
        for (const message of reader.push(chunk)) onMessage(socket, message);
      });
      socket.on('error', () => {});
    });
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(this.path, resolve));
  }

  close(): void {
    this.server.close();
    rmSync(this.folder, { recursive: true, force: true });
  }
}

const reply = (socket: net.Socket, request: XsMessage, payload: Buffer, type = request.type) =>
  socket.write(encodeXsMessage(type, request.reqId, request.txId, payload));

describe('xenstore connection', () => {
  let xs: XenStore;

  beforeAll(async () => {
    xs = await openXenStore({ domid: 1 });
  });

  afterAll(() => xs.close());

  describe('against a stand-in xenstored socket', () => {
    let fake: FakeXenstored | null = null;

    afterEach(() => {
      fake?.close();
      fake = null;
    });

    it('matches replies sent out of order, and takes watch events that come before their reply', async () => {
      const held: [net.Socket, XsMessage][] = [];
      fake = new FakeXenstored((socket, message) => {
        if (message.type === XsType.WATCH) {
          const [watched, token] = splitXsStrings(message.payload);
          socket.write(encodeXsMessage(XsType.WATCH_EVENT, 0, 0, xsStrings(watched!, token!)));
          reply(socket, message, xsStrings('OK'));
          return;
        }
        // Answer reads only once three are waiting, newest first.
        held.push([socket, message]);
        if (held.length === 3) {
          for (const [s, m] of held.reverse()) reply(s, m, Buffer.from(`value of ${splitXsStrings(m.payload)[0]}`));
        }
      });
      await fake.listen();
      const store = await openXenStore({ transport: 'socket', socketPath: fake.path });
      try {
        expect(store.transport).toBe('socket');
        expect(store.domid).toBeNull();
        const watch = await store.watch('/a', 'tok');
        expect(await watch.next()).toEqual({ value: { path: '/a', token: 'tok' }, done: false });
        const values = await Promise.all(['/x', '/y', '/z'].map((p) => store.read(p)));
        expect(values).toEqual(['value of /x', 'value of /y', 'value of /z']);
      } finally {
        store.close();
      }
    });

    it('rejects everything in flight with ECONNRESET when the connection is lost, and ends watches with it', async () => {
      let requests = 0;
      fake = new FakeXenstored((socket, message) => {
        if (message.type === XsType.WATCH) {
          reply(socket, message, xsStrings('OK'));
          return;
        }
        if (++requests === 2) socket.destroy();
      });
      await fake.listen();
      const store = await openXenStore({ transport: 'socket', socketPath: fake.path });
      const watch = await store.watch('/w');
      const waiting = watch.next();
      const calls = [store.read('/one'), store.read('/two')];
      for (const call of calls)
        await expect(call).rejects.toMatchObject({ code: 'ECONNRESET', message: expect.stringMatching(/openXenStore/) });
      await expect(waiting).rejects.toMatchObject({ code: 'ECONNRESET' });
      await expect(store.read('/three')).rejects.toMatchObject({ code: 'ECONNRESET' });
      await watch.close();
      store.close();
    });

    it('treats a reply to nothing it asked as a protocol error (EPROTO)', async () => {
      fake = new FakeXenstored((socket, message) => {
        socket.write(encodeXsMessage(message.type, message.reqId + 1000, 0, xsStrings('OK')));
      });
      await fake.listen();
      const store = await openXenStore({ transport: 'socket', socketPath: fake.path });
      await expect(store.mkdir('/a')).rejects.toMatchObject({ code: 'EPROTO' });
      store.close();
    });

    it('says what is wrong when there is no xenstored', async () => {
      const error = await openXenStore({ transport: 'socket', socketPath: path.join(os.tmpdir(), 'no-such-xenstored') }).catch(
        (e: unknown) => e,
      );
      expect(error).toMatchObject({ code: 'ENOENT' });
      expect((error as Error).message).toMatch(/xenstored is not running here/);
    });
  });

  it('picks the simulation under XEN_VCHAN_BACKEND=sim', () => {
    expect(process.env.XEN_VCHAN_BACKEND).toBe('sim');
    expect(xs.transport).toBe('sim');
  });

  it('rejects calls in flight with EBADF when closed, and every call after', async () => {
    const store = await openXenStore({ domid: 1 });
    const inFlight = [store.read('domid'), store.write('data/x', 'y'), store.directory('data')];
    store.close();
    for (const call of inFlight) await expect(call).rejects.toMatchObject({ code: 'EBADF' });
    await expect(store.read('domid')).rejects.toMatchObject({ code: 'EBADF' });
    await expect(store.watch('data')).rejects.toMatchObject({ code: 'EBADF' });
    store.close(); // idempotent
  });

  it('reports the simulation daemon going away as a lost connection', async () => {
    const directory = path.join(path.dirname(process.env.XEN_VCHAN_SIM_DIR!), `xs-lost-${process.pid}`);
    try {
      const store = await openXenStore({ domid: 1, simDirectory: directory });
      const watch = await store.watch('data');
      await watch.next();
      const waiting = watch.next();
      const control = SimConnection.open(directory);
      control.call('stop', {});
      control.close();
      await expect(waiting).rejects.toMatchObject({ code: 'ECONNRESET' });
      await expect(store.read('domid')).rejects.toMatchObject({ code: 'ECONNRESET' });
      store.close();
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });

  it('lets a process exit on its own once nothing is awaited', async () => {
    const code = `
      import { openXenStore } from '@xen-vchan/xenstore';
      const xs = await openXenStore({ domid: 1 });
      console.log(await xs.read('domid'));
    `;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', code], { cwd: root, timeout: 10_000 });
    expect(stdout.trim()).toBe('1');
  });

  it('limits an unprivileged domain to 1000 nodes (ENOSPC, as C xenstored answers)', async () => {
    const outcome = await inDomain<{ code: string; message: string; after: string }>(
      5,
      `
      // The domain already owns data; data/q makes 2, so 998 more reach the quota of 1000.
      await Promise.all(Array.from({ length: 998 }, (_, i) => xs.write('data/q/' + i, '')));
      const error = await xs.write('data/q/over', '').catch((e) => e);
      await xs.rm('data/q');
      await xs.write('data/after', 'fits again');
      return { code: error.code, message: error.message, after: await xs.read('data/after') };
    `,
    );
    expect(outcome.code).toBe('ENOSPC');
    expect(outcome.message).toMatch(/1000 nodes/);
    expect(outcome.after).toBe('fits again');
    // dom0 is not limited.
    expect(
      await inDomain(
        0,
        `await Promise.all(Array.from({ length: 1100 }, (_, i) => xs.write('/tool/many/' + i, ''))); return (await xs.directory('/tool/many')).length;`,
      ),
    ).toBe(1100);
  });

  describe('the simulated daemon, on the wire', () => {
    /** Connects to the simulated XenStore without the client, to see exactly what it sends. */
    async function rawConnection() {
      const socket = net.connect(simFiles(process.env.XEN_VCHAN_SIM_DIR!).xenstore);
      await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      const reader = new XsMessageReader();
      const messages: XsMessage[] = [];
      const waiters: (() => void)[] = [];
      socket.on('data', (chunk) => {
        messages.push(...reader.push(chunk));
        for (const wake of waiters.splice(0)) wake();
      });
      const ended = new Promise<void>((resolve) => socket.on('close', () => resolve()));
      const next = async () => {
        while (messages.length === 0) await new Promise<void>((resolve) => waiters.push(resolve));
        return messages.shift()!;
      };
      return { socket, next, ended };
    }

    it('answers the declaration and echoes req_id and tx_id in native byte order', async () => {
      const { socket, next } = await rawConnection();
      socket.write(encodeXsMessage(XsType.SIM_DECLARE_DOMAIN, 77, 0, xsStrings('4')));
      expect(await next()).toMatchObject({ type: XsType.SIM_DECLARE_DOMAIN, reqId: 77, txId: 0, payload: xsStrings('OK') });
      socket.write(encodeXsMessage(XsType.READ, 0xfffffffe, 0, xsStrings('domid')));
      expect(await next()).toMatchObject({ type: XsType.READ, reqId: 0xfffffffe, payload: Buffer.from('4') });
      socket.write(encodeXsMessage(XsType.READ, 5, 0, xsStrings('nothing-here')));
      expect(await next()).toMatchObject({ type: XsType.ERROR, reqId: 5, payload: xsStrings('ENOENT') });
      socket.write(encodeXsMessage(XsType.READ, 6, 12345, xsStrings('domid')));
      expect(await next()).toMatchObject({ type: XsType.ERROR, reqId: 6, txId: 12345, payload: xsStrings('ENOENT') });
      socket.write(encodeXsMessage(99, 7, 0, Buffer.alloc(0)));
      expect(await next()).toMatchObject({ type: XsType.ERROR, reqId: 7, payload: xsStrings('EINVAL') });
      socket.destroy();
    });

    it('refuses and closes a connection that does not declare its domain first', async () => {
      const { socket, next, ended } = await rawConnection();
      socket.write(encodeXsMessage(XsType.READ, 1, 0, xsStrings('/local/domain/0/domid')));
      expect(await next()).toMatchObject({ type: XsType.ERROR, reqId: 1, payload: xsStrings('EACCES') });
      await ended;
    });

    it('drops a connection whose message announces more than 4096 bytes', async () => {
      const { socket, next, ended } = await rawConnection();
      socket.write(encodeXsMessage(XsType.SIM_DECLARE_DOMAIN, 1, 0, xsStrings('4')));
      await next();
      const header = encodeXsMessage(XsType.WRITE, 2, 0, Buffer.alloc(0));
      header.writeUInt32LE(5000, 12);
      socket.write(header);
      await ended;
    });
  });
});
