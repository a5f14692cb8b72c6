// The sim daemon against a hostile local process: any process of the user can connect to its
// sockets and send anything. A broken frame or a bad field must end or fail that one connection,
// never the daemon that every other process of the simulation depends on; and the state folder
// must never be a link planted by somebody else.
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openGntalloc } from '@xen-vchan/gntalloc';
import { openXenStore } from '@xen-vchan/xenstore';
import { encodeXsMessage, XsMessageReader, XsType, xsStrings, type XsMessage } from '@xen-vchan/native';
import { SimConnection, simFiles } from '@xen-vchan/sim';

/** The daemon's frame cap (MAX_FRAME_BYTES in packages/sim/src/protocol.ts). */
const MAX_FRAME_BYTES = 4 << 20;

/** What a raw connection saw next: a reply frame, or the daemon closing it. */
type Seen = { frame: unknown } | { closed: true };

/** A client that writes raw bytes to the control socket and reads length-prefixed replies. */
class RawClient {
  private readonly socket: net.Socket;
  private buffered = Buffer.alloc(0);
  private readonly seen: Seen[] = [];
  private waiting: ((seen: Seen) => void) | null = null;
  closed = false;

  private constructor(socketPath: string) {
    this.socket = net.connect(socketPath);
    this.socket.on('error', () => {});
    this.socket.on('data', (chunk) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      while (this.buffered.length >= 4 && this.buffered.length >= 4 + this.buffered.readUInt32LE(0)) {
        const length = this.buffered.readUInt32LE(0);
        this.deliver({ frame: JSON.parse(this.buffered.subarray(4, 4 + length).toString()) });
        this.buffered = this.buffered.subarray(4 + length);
      }
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.deliver({ closed: true });
    });
  }

  static async connect(socketPath: string): Promise<RawClient> {
    const client = new RawClient(socketPath);
    await new Promise((resolve, reject) => client.socket.once('connect', resolve).once('error', reject));
    return client;
  }

  send(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Sends `body` as a frame with its true length. */
  sendBody(body: string): void {
    const json = Buffer.from(body);
    const header = Buffer.alloc(4);
    header.writeUInt32LE(json.length);
    this.send(Buffer.concat([header, json]));
  }

  async call(request: Record<string, unknown>): Promise<unknown> {
    this.sendBody(JSON.stringify(request));
    const seen = await this.next();
    if (!('frame' in seen)) throw new Error(`the daemon closed the connection on ${JSON.stringify(request)}`);
    return seen.frame;
  }

  next(timeoutMs = 2000): Promise<Seen> {
    const ready = this.seen.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`nothing from the daemon within ${timeoutMs} ms`)), timeoutMs);
      this.waiting = (seen) => {
        clearTimeout(timer);
        resolve(seen);
      };
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private deliver(seen: Seen): void {
    const waiting = this.waiting;
    this.waiting = null;
    if (waiting) waiting(seen);
    else this.seen.push(seen);
  }
}

const files = () => simFiles(process.env.XEN_VCHAN_SIM_DIR!);
let good: SimConnection;
let daemonPid: number;
const raws: RawClient[] = [];

async function raw(): Promise<RawClient> {
  const client = await RawClient.connect(files().socket);
  raws.push(client);
  return client;
}

/** The well-behaved client still gets answers, from the same daemon as at the start. */
function expectDaemonServing(): void {
  const status = good.call('status', {});
  expect(status.daemonPid).toBe(daemonPid);
  expect(() => process.kill(daemonPid, 0)).not.toThrow();
}

beforeAll(() => {
  good = SimConnection.open();
  daemonPid = good.call('status', {}).daemonPid;
});

afterEach(() => {
  for (const client of raws.splice(0)) client.close();
});

describe('sim daemon control socket with a hostile client', () => {
  it.each(['not json', 'null', '[]', '{}', '"op"', '42', '{"op":1}', '{"op":null}', ''])(
    'answers EPROTO to the frame %j and closes only that connection',
    async (body) => {
      expectDaemonServing();
      const client = await raw();
      client.sendBody(body);
      const answer = await client.next();
      expect(answer).toEqual({ frame: { error: { code: 'EPROTO', message: expect.any(String) } } });
      expect(await client.next()).toEqual({ closed: true });
      expectDaemonServing();
    },
  );

  it('refuses a frame announcing 0xffffffff bytes at once, without waiting for them', async () => {
    const client = await raw();
    const header = Buffer.alloc(4);
    header.writeUInt32LE(0xffffffff);
    const sent = performance.now();
    client.send(header);
    expect(await client.next()).toMatchObject({ frame: { error: { code: 'EPROTO', message: expect.stringMatching(/4294967295 bytes/) } } });
    expect(await client.next()).toEqual({ closed: true });
    expect(performance.now() - sent).toBeLessThan(1000);
    expectDaemonServing();
  });

  it('takes a frame of exactly the length limit and refuses one just over it', async () => {
    const client = await raw();
    const padded = Buffer.alloc(MAX_FRAME_BYTES, 0x20);
    padded.write('{"op":"status"}');
    client.sendBody(padded.toString());
    expect(await client.next()).toMatchObject({ frame: { ok: { daemonPid } } });
    const header = Buffer.alloc(4);
    header.writeUInt32LE(MAX_FRAME_BYTES + 1);
    client.send(Buffer.concat([header, Buffer.alloc(1000, 0x20)]));
    expect(await client.next()).toMatchObject({ frame: { error: { code: 'EPROTO' } } });
    expect(await client.next()).toEqual({ closed: true });
    expectDaemonServing();
  });

  it('answers the valid frames before a broken one, then closes', async () => {
    const client = await raw();
    const status = Buffer.from(JSON.stringify({ op: 'status' }));
    const frame = (body: Buffer) => Buffer.concat([Buffer.from(Uint32Array.of(body.length).buffer), body]);
    client.send(Buffer.concat([frame(status), frame(Buffer.from('}{'))]));
    expect(await client.next()).toMatchObject({ frame: { ok: { daemonPid } } });
    expect(await client.next()).toMatchObject({ frame: { error: { code: 'EPROTO' } } });
    expect(await client.next()).toEqual({ closed: true });
    expectDaemonServing();
  });

  it('answers ENOSYS to an unknown operation and keeps the connection', async () => {
    const client = await raw();
    for (const op of ['nope', '__proto__', 'constructor', 'handle', 'clientGone', 'toString']) {
      expect(await client.call({ op })).toMatchObject({ error: { code: 'ENOSYS' } });
    }
    expect(await client.call({ op: 'status' })).toMatchObject({ ok: { daemonPid } });
    expectDaemonServing();
  });

  it.each([
    ['gntalloc.open', { domid: '../x' }],
    ['gntalloc.open', { domid: -1 }],
    ['gntalloc.open', { domid: 1e9 }],
    ['gntalloc.open', { domid: 1.5 }],
    ['gntalloc.open', { domid: 32752 }],
    ['gntalloc.open', {}],
    ['evtchn.open', { domid: '../../x' }],
    ['gntdev.open', { domid: [3] }],
    ['gntalloc.getLimit', { domid: { toString: 'x' } }],
    ['gntalloc.setLimit', { domid: 3, limit: -1 }],
    ['gntalloc.setLimit', { domid: 3, limit: '5' }],
    ['gntalloc.alloc', { handle: 'x', domid: 2, count: 1, writable: true }],
    ['gntalloc.share', { domid: '../x', count: 1 }],
    ['evtchn.unbind', { handle: -1, port: 1 }],
    ['gntdev.map', { handle: 1, grants: 'x', writable: true }],
    ['gntdev.map', { handle: 1, grants: [{ domid: '../x', ref: 8 }], writable: true }],
    ['hello', { pid: 'me', version: 1 }],
  ])('refuses %s %j without touching files and keeps serving', async (op, fields) => {
    const before = readdirSync(files().directory, { recursive: true }).sort();
    const client = await raw();
    const reply = await client.call({ op, ...fields });
    expect(reply).toMatchObject({ error: { code: expect.stringMatching(/^(EINVAL|ENOSYS)$/), message: expect.any(String) } });
    expect(readdirSync(files().directory, { recursive: true }).sort()).toEqual(before);
    expectDaemonServing();
  });

  it('checks every field of a call on an open handle', async () => {
    const client = await raw();
    const opened = (await client.call({ op: 'gntalloc.open', domid: 3 })) as { ok: { handle: number } };
    const handle = opened.ok.handle;
    const alloc = (fields: Record<string, unknown>) =>
      client.call({ op: 'gntalloc.alloc', handle, domid: 2, count: 1, writable: true, ...fields });
    for (const bad of [
      { domid: '../x' },
      { domid: -1 },
      { domid: 1e9 },
      { count: '1' },
      { count: 0 },
      { count: 1e12 },
      { writable: 'yes' },
    ]) {
      expect(await alloc(bad)).toMatchObject({
        error: { code: 'EINVAL', message: expect.stringMatching(/gntalloc\.alloc\.(domid|count|writable)/) },
      });
    }
    expect(readdirSync(files().pages)).toEqual([]);
    const shared = (await alloc({})) as { ok: { allocation: number } };
    const release = { op: 'gntalloc.release', handle };
    expect(await client.call({ ...release, allocation: '1' })).toMatchObject({ error: { code: 'EINVAL' } });
    expect(await client.call({ ...release, allocation: shared.ok.allocation })).toEqual({ ok: null });
    expect(await client.call({ op: 'close', handle })).toEqual({ ok: null });
  });

  it('releases what a connection held when it is dropped for a broken frame', async () => {
    const client = await raw();
    const { ok } = (await client.call({ op: 'gntalloc.open', domid: 3 })) as { ok: { handle: number } };
    await client.call({ op: 'gntalloc.alloc', handle: ok.handle, domid: 2, count: 2, writable: true });
    expect(good.call('status', {}).grants).toHaveLength(2);
    client.sendBody('not json');
    expect(await client.next()).toMatchObject({ frame: { error: { code: 'EPROTO' } } });
    expect(await client.next()).toEqual({ closed: true });
    let status = good.call('status', {});
    for (let tries = 0; tries < 20 && status.grants.length > 0; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 25));
      status = good.call('status', {});
    }
    expect(status.grants).toEqual([]);
    expect(readdirSync(files().pages)).toEqual([]);
  });

  it('survives a cleanup that fails: a page file replaced by hand under an armed unmap notification', async () => {
    const client = await raw();
    await client.call({ op: 'hello', pid: process.pid, version: 1 });
    const { ok } = (await client.call({ op: 'gntalloc.open', domid: 3 })) as { ok: { handle: number } };
    const shared = (await client.call({ op: 'gntalloc.alloc', handle: ok.handle, domid: 2, count: 2, writable: true })) as {
      ok: { allocation: number; file: string };
    };
    const notify = {
      op: 'gntalloc.setUnmapNotify',
      handle: ok.handle,
      allocation: shared.ok.allocation,
      offset: 0,
      clearByte: true,
      port: null,
    };
    expect(await client.call(notify)).toEqual({ ok: null });
    // Clearing the byte at release now fails (EISDIR) inside the daemon's cleanup for this client.
    rmSync(shared.ok.file);
    mkdirSync(shared.ok.file, { mode: 0o700 });
    try {
      client.close();
      let status = good.call('status', {});
      for (let tries = 0; tries < 20 && status.grants.length > 0; tries++) {
        await new Promise((resolve) => setTimeout(resolve, 25));
        status = good.call('status', {});
      }
      expect(status.grants).toEqual([]);
      expectDaemonServing();
      expect(readFileSync(files().log, 'utf8')).toMatch(/cleaning up after pid \d+ failed/);
    } finally {
      rmSync(shared.ok.file, { recursive: true, force: true });
    }
  });

  it('keeps serving real work through the public API around the garbage', async () => {
    const gntalloc = openGntalloc({ backend: 'sim', domid: 3 });
    try {
      const before = gntalloc.share(4, 1);
      const client = await raw();
      client.sendBody('{"op":"gntalloc.share","domid":"../x","count":1}');
      expect(await client.next()).toMatchObject({ frame: { error: { code: 'ENOSYS' } } });
      client.sendBody('null');
      expect(await client.next()).toMatchObject({ frame: { error: { code: 'EPROTO' } } });
      const after = gntalloc.share(4, 1);
      expect(after.refs[0]).not.toBe(before.refs[0]);
      before.release();
      after.release();
    } finally {
      gntalloc.close();
    }
    expectDaemonServing();
  });
});

describe('sim XenStore socket with a hostile client', () => {
  /** A raw XenStore connection: sends bytes, reads messages, reports the close. */
  async function rawXenStore() {
    const socket = net.connect(files().xenstore);
    socket.on('error', () => {});
    await new Promise((resolve) => socket.once('connect', resolve));
    const reader = new XsMessageReader();
    const messages: XsMessage[] = [];
    socket.on('data', (chunk) => messages.push(...reader.push(chunk)));
    const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(performance.now())));
    return { socket, messages, closed };
  }

  const header = (type: number, reqId: number, length: number) => Buffer.from(Uint32Array.of(type, reqId, 0, length).buffer);

  async function expectXenStoreServing(): Promise<void> {
    const xenstore = await openXenStore({ domid: 1 });
    try {
      await xenstore.write('/local/domain/1/data/hostile-check', 'fine');
      expect(await xenstore.read('/local/domain/1/data/hostile-check')).toBe('fine');
      await xenstore.rm('/local/domain/1/data/hostile-check');
    } finally {
      xenstore.close();
    }
    expectDaemonServing();
  }

  it.each([
    ['before declaring a domain', false],
    ['after declaring a domain', true],
  ])('answers E2BIG to an oversized message %s and drops only that connection', async (_when, declare) => {
    await expectXenStoreServing();
    const { socket, messages, closed } = await rawXenStore();
    if (declare) socket.write(encodeXsMessage(XsType.SIM_DECLARE_DOMAIN, 1, 0, xsStrings('1')));
    const sent = performance.now();
    socket.write(header(XsType.WRITE, 77, 0xffffffff));
    const closedAt = await closed;
    expect(closedAt - sent).toBeLessThan(1000);
    const error = messages.find((message) => message.reqId === 77);
    expect(error?.type).toBe(XsType.ERROR);
    expect(error?.payload.toString()).toBe('E2BIG\0');
    await expectXenStoreServing();
  });

  it('refuses a payload one byte over XENSTORE_PAYLOAD_MAX', async () => {
    const { socket, closed } = await rawXenStore();
    socket.write(encodeXsMessage(XsType.SIM_DECLARE_DOMAIN, 1, 0, xsStrings('1')));
    socket.write(Buffer.concat([header(XsType.WRITE, 2, 4097), Buffer.alloc(4097, 0x61)]));
    await closed;
    await expectXenStoreServing();
  });

  it('closes a connection that sends garbage instead of declaring its domain', async () => {
    const { socket, messages, closed } = await rawXenStore();
    socket.write(Buffer.from('GET / HTTP/1.1\r\nHost: xenstore\r\n\r\n'));
    await closed;
    expect(messages[0]?.type).toBe(XsType.ERROR);
    await expectXenStoreServing();
  });

  it('leaves out a watch event too long for one message, as xenstored does, and keeps the connection', async () => {
    const { socket, messages, closed } = await rawXenStore();
    let gone = false;
    void closed.then(() => (gone = true));
    const folder = '/local/domain/1/data/long-events';
    const token = 't'.repeat(4000);
    // Fits: 4096 bytes with the NULs, no more.
    const short = `${folder}/${'s'.repeat(4096 - 2 - token.length - folder.length - 1)}`;
    const long = `${folder}/${'l'.repeat(200)}`;
    socket.write(encodeXsMessage(XsType.SIM_DECLARE_DOMAIN, 1, 0, xsStrings('1')));
    socket.write(encodeXsMessage(XsType.MKDIR, 2, 0, xsStrings(folder)));
    socket.write(encodeXsMessage(XsType.WATCH, 3, 0, xsStrings(folder, token)));
    // path + token + 2 NULs is over XENSTORE_PAYLOAD_MAX: no event, and no broken framing.
    socket.write(encodeXsMessage(XsType.WRITE, 4, 0, Buffer.from(`${long}\0x`)));
    socket.write(encodeXsMessage(XsType.WRITE, 5, 0, Buffer.from(`${short}\0x`)));
    socket.write(encodeXsMessage(XsType.RM, 6, 0, xsStrings(folder)));
    const deadline = Date.now() + 2000;
    while (!messages.some((message) => message.reqId === 6) && !gone && Date.now() < deadline)
      await new Promise((resolve) => setTimeout(resolve, 10));
    expect(gone).toBe(false);
    expect(messages.filter((message) => message.type === XsType.ERROR)).toEqual([]);
    const events = messages
      .filter((message) => message.type === XsType.WATCH_EVENT)
      .map((message) => message.payload.toString().split('\0')[0]);
    // The first event is the watch's own; the removal reports the folder (and what went with it).
    expect(events.slice(0, 2)).toEqual([folder, short]);
    expect(events).not.toContain(long);
    socket.destroy();
    await expectXenStoreServing();
  });

  it('survives a flood of random messages from a declared domain', async () => {
    const { socket, closed } = await rawXenStore();
    socket.write(encodeXsMessage(XsType.SIM_DECLARE_DOMAIN, 1, 0, xsStrings('5')));
    let state = 12345;
    const next = () => (state = (state * 1103515245 + 12345) >>> 0);
    for (let i = 0; i < 200; i++) {
      const payload = Buffer.alloc(next() % 64, next() & 0xff);
      socket.write(encodeXsMessage(next() % 30, i, next() % 3, payload));
    }
    socket.end();
    await closed;
    await expectXenStoreServing();
  });
});

describe('sim state folder planted by somebody else', () => {
  let scratch: string;

  beforeAll(() => {
    scratch = mkdtempSync(path.join(path.dirname(process.env.XEN_VCHAN_SIM_DIR!), 'planted-'));
  });

  afterAll(() => {
    rmSync(scratch, { recursive: true, force: true });
  });

  /** A private folder holding what the daemon would delete: `pages`, `ports`, `wake`. */
  function victimFolder(name: string): string {
    const victim = path.join(scratch, name);
    for (const folder of ['pages', 'ports', 'wake']) {
      mkdirSync(path.join(victim, folder), { recursive: true, mode: 0o700 });
      writeFileSync(path.join(victim, folder, 'precious'), 'keep me');
    }
    return victim;
  }

  function expectUntouched(victim: string): void {
    for (const folder of ['pages', 'ports', 'wake']) {
      expect(readFileSync(path.join(victim, folder, 'precious'), 'utf8')).toBe('keep me');
    }
  }

  /** The error opening the simulation at `directory` gives; a daemon started there by mistake is stopped. */
  function openError(directory: string): unknown {
    try {
      const connection = SimConnection.open(directory);
      connection.call('stop', {});
      connection.close();
      return null;
    } catch (error) {
      return error;
    }
  }

  it('refuses a sim folder that is a symbolic link to a private folder', () => {
    const victim = victimFolder('victim');
    const planted = path.join(scratch, 'xen-vchan-sim-planted');
    symlinkSync(victim, planted);
    expect(openError(planted)).toMatchObject({ code: 'ELOOP', message: expect.stringMatching(/symbolic link.*rm /s) });
    expectUntouched(victim);
    expect(readdirSync(victim).sort()).toEqual(['pages', 'ports', 'wake']);
  });

  it('refuses a dangling link and a plain file at the folder path', () => {
    const dangling = path.join(scratch, 'dangling');
    symlinkSync(path.join(scratch, 'nowhere'), dangling);
    expect(openError(dangling)).toMatchObject({ code: 'ELOOP' });
    expect(() => lstatSync(path.join(scratch, 'nowhere'))).toThrow();
    const file = path.join(scratch, 'file');
    writeFileSync(file, '');
    expect(openError(file)).toMatchObject({ code: 'EACCES' });
  });

  it('removes a link planted inside the folder as a link, not what it points to', () => {
    const victim = victimFolder('inner-victim');
    const folder = path.join(scratch, 'own');
    mkdirSync(folder, { mode: 0o700 });
    symlinkSync(path.join(victim, 'pages'), path.join(folder, 'pages'));
    symlinkSync(path.join(victim, 'wake'), path.join(folder, 'wake'));
    const connection = SimConnection.open(folder);
    try {
      expect(lstatSync(path.join(folder, 'pages')).isDirectory()).toBe(true);
      expect(lstatSync(path.join(folder, 'wake')).isDirectory()).toBe(true);
      expectUntouched(victim);
    } finally {
      connection.call('stop', {});
      connection.close();
    }
  });
});
