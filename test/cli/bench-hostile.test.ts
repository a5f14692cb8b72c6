// `vchan bench --serve` answers the bench client in the other domain, and that domain is not to be
// trusted: here the test plays a hostile client, over the same control vchan and RPC the real one
// uses, against a server that runs as dom0 on the simulation (where a XenStore path of the
// client's choosing could reach anything). Every bad request must be refused with EPROTO, nothing
// outside the server's own vchan area for that client may go, and the server must stay up and go
// on serving good requests.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, MessageChannel, RpcPeer, type Vchan } from '@xen-vchan/vchan';
import { openXenStore, type XenStore } from '@xen-vchan/xenstore';
import { backend, sleep } from '../support/domains.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = path.join(root, 'packages/cli/bin/vchan.js');

/** The server plays dom0 (the case that matters: it may write and remove anywhere); we play domain 2. */
const SERVER = 0;
const CLIENT = 2;
const NAME = `bench-hostile-${process.pid}`;
const AREA = `/local/domain/${SERVER}/data/vchan/${CLIENT}`;
/** Nodes outside the server's area that a hostile request aims at; each must survive. */
const PRECIOUS = ['/local/domain/7/precious', '/local/domain/3/data/precious', `/local/domain/${SERVER}/backend/vbd/7/51712/precious`];

let xs: XenStore;
let serving: ChildProcess;
let stderr = '';
const open: Vchan[] = [];

async function tree(xenstore: XenStore, at: string, into: string[] = []): Promise<string[]> {
  into.push(at);
  const children = await xenstore.directory(at).catch(() => []);
  for (const child of children) await tree(xenstore, `${at === '/' ? '' : at}/${child}`, into);
  return into;
}

/** A fresh control connection, as `vchan bench --domain` makes; retried while the server republishes. */
async function control(): Promise<Vchan> {
  for (let attempt = 1; ; attempt++) {
    if (!alive()) throw new Error(`vchan bench --serve is gone (${serving.exitCode ?? serving.signalCode}):\n${stderr}`);
    try {
      const channel = await connect({ domid: SERVER, name: NAME, backend: 'sim', simDomid: CLIENT, timeout: 5000 });
      open.push(channel);
      return channel;
    } catch (error) {
      if (attempt >= 20) throw error;
      await sleep(100);
    }
  }
}

/** Runs `body` on a fresh control session, then leaves as a client does (the server serves one at a time). */
async function session(body: (rpc: RpcPeer) => Promise<void>): Promise<void> {
  const channel = await control();
  const rpc = new RpcPeer(channel, { timeout: 10_000 });
  try {
    expect(await rpc.call('hello', {})).toMatchObject({ pid: serving.pid });
    await body(rpc);
  } finally {
    rpc.close();
    channel.destroy();
  }
}

function outcome(promise: Promise<unknown>): Promise<{ value?: unknown; code?: string; message?: string }> {
  return promise.then(
    (value) => ({ value }),
    (error: Error & { code?: string }) => ({ code: error.code, message: error.message }),
  );
}

/** A listen request as the real client makes it, with `changes` merged in (undefined removes a field). */
function listen(key: string, changes: Record<string, unknown> = {}): Record<string, unknown> {
  const request: Record<string, unknown> = {
    transport: 'vchan',
    key,
    role: { role: 'send', chunk: 4096, seconds: 0.05 },
    maxChunk: 65536,
    seed: 7,
    ring: 65536,
    backend: 'sim',
    ...changes,
  };
  for (const [field, value] of Object.entries(changes)) if (value === undefined) delete request[field];
  return request;
}

const alive = () => serving.exitCode === null && serving.signalCode === null;

describe.skipIf(backend !== 'sim')('vchan bench --serve against a hostile client', () => {
  beforeAll(async () => {
    xs = await openXenStore({ transport: 'sim', domid: 0 });
    for (const node of PRECIOUS) await xs.write(node, 'keep');
    serving = spawn(
      process.execPath,
      [bin, 'bench', '--serve', '--domain', String(CLIENT), '--sim-domid', String(SERVER), '--name', NAME],
      {
        env: { ...process.env, XEN_VCHAN_BACKEND: 'sim' },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    serving.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    for (let waited = 0; !stderr.includes('serving at'); waited += 50) {
      if (waited > 15_000 || !alive()) throw new Error(`vchan bench --serve did not start:\n${stderr}`);
      await sleep(50);
    }
  });

  afterAll(async () => {
    for (const channel of open) channel.destroy();
    if (serving && alive()) {
      const exited = new Promise((resolve) => serving.once('exit', resolve));
      serving.kill('SIGTERM');
      await exited;
    }
    for (const node of PRECIOUS) await xs?.rm(node).catch(() => {});
    xs?.close();
  });

  it('never publishes at, nor removes, a XenStore path the client names', async () => {
    const before = (await tree(xs, '/local/domain')).filter((node) => !node.startsWith(`${AREA}/`));
    const attempts: [string, Record<string, unknown>][] = [
      ['another domain', listen('p1', { path: '/local/domain/7' })],
      ["another domain's data", listen('p2', { path: '/local/domain/3/data' })],
      ["the server's own backend area", listen('p3', { path: `/local/domain/${SERVER}/backend` })],
      // Even inside the area: the server names its vchans, never the client.
      ["a path in the server's area", listen('p4', { path: `${AREA}/bench-mine` })],
      ['a path and a name', listen('p5', { path: '/local/domain/7', name: 'bench-x' })],
    ];
    await session(async (rpc) => {
      for (const [what, request] of attempts) {
        const answer = await outcome(rpc.call('listen', request));
        // Had it been served, closing the measurement is what would remove the path.
        await rpc.call('close', { key: request.key }).catch(() => {});
        for (const node of PRECIOUS)
          expect(await xs.read(node).catch((error: { code?: string }) => error.code), `${node} after ${what}`).toBe('keep');
        expect(answer.code, `listen with ${what}: ${JSON.stringify(answer)}`).toBe('EPROTO');
        expect(answer.message).toMatch(/path/);
      }
    });
    const after = new Set(await tree(xs, '/local/domain'));
    expect(before.filter((node) => !after.has(node))).toEqual([]);
  });

  it('refuses every malformed field of a request with EPROTO, and then serves a good one', { timeout: 30_000 }, async () => {
    await session(async (rpc) => {
      const bad: [string, string, unknown][] = [
        ['a name with slashes', 'listen', listen('n1', { name: '../../x' })],
        ['a name with dots', 'listen', listen('n2', { name: 'bench-..' })],
        ['a name that is not a string', 'listen', listen('n3', { name: 42 })],
        ['a 1 TiB maxChunk', 'listen', listen('c1', { maxChunk: 2 ** 40 })],
        ['a negative maxChunk', 'listen', listen('c2', { maxChunk: -1 })],
        ['a string maxChunk', 'listen', listen('c3', { maxChunk: '64MiB' })],
        ['a fractional maxChunk', 'listen', listen('c4', { maxChunk: 1.5 })],
        ['a chunk over maxChunk', 'listen', listen('c5', { role: { role: 'send', chunk: 2 ** 40, seconds: 0.05 } })],
        ['a negative chunk', 'listen', listen('c6', { role: { role: 'send', chunk: -4096, seconds: 0.05 } })],
        ['a NaN chunk (null in JSON)', 'listen', listen('c7', { role: { role: 'send', chunk: NaN, seconds: 0.05 } })],
        ['a string chunk', 'listen', listen('c8', { role: { role: 'send', chunk: '4096', seconds: 0.05 } })],
        ['a negative ring', 'listen', listen('r1', { ring: -1 })],
        ['a 2 MiB ring', 'listen', listen('r2', { ring: 2 ** 21 })],
        ['a string ring', 'listen', listen('r3', { ring: '64KiB' })],
        ['a NaN ring', 'listen', listen('r4', { ring: NaN })],
        ['endless seconds', 'listen', listen('s1', { role: { role: 'send', chunk: 4096, seconds: 1e12 } })],
        ['negative seconds', 'listen', listen('s2', { role: { role: 'send', chunk: 4096, seconds: -1 } })],
        ['a huge ping', 'listen', listen('s3', { role: { role: 'ping', size: 2 ** 40, seconds: 1 } })],
        ['an empty ping', 'listen', listen('s4', { role: { role: 'ping', size: 0, seconds: 1 } })],
        ['a billion calls in flight', 'listen', listen('s5', { role: { role: 'rpc-call', seconds: 1, inFlight: 1e9 } })],
        ['a million streams', 'listen', listen('m1', { streams: 1e6 })],
        ['no streams', 'listen', listen('m2', { streams: 0 })],
        ['streams for a ping', 'listen', listen('m3', { role: { role: 'pong' }, streams: 2 })],
        ['busy streams beside a send', 'listen', listen('m4', { busy: 8 })],
        ['more lanes than allowed', 'listen', listen('m5', { role: { role: 'pong' }, busy: 1000 })],
        ['a negative seed', 'listen', listen('s6', { seed: -1 })],
        ['a seed over 32 bits', 'listen', listen('s7', { seed: 2 ** 40 })],
        ['an unknown role', 'listen', listen('u1', { role: { role: 'format-disk' } })],
        ['a role that is not an object', 'listen', listen('u2', { role: 'send' })],
        ['an extra field in a role', 'listen', listen('u3', { role: { role: 'pong', evil: 1 } })],
        ['an unknown transport', 'listen', listen('u4', { transport: 'carrier-pigeon' })],
        ['a transport other than vchan', 'listen', listen('u5', { transport: 'unix' })],
        ['another client domain', 'listen', listen('u6', { peerDomid: 0 })],
        ['another simulated domain', 'listen', listen('u7', { simDomid: 5 })],
        ['an unknown backend', 'listen', listen('u8', { backend: 'qemu' })],
        ['an unknown field', 'listen', listen('u9', { evil: true })],
        ['a key with slashes', 'listen', listen('../k1')],
        ['a key that is not a string', 'listen', listen('k2', { key: { toString: 1 } })],
        ['no key', 'listen', listen('k3', { key: undefined })],
        ['no request at all', 'listen', null],
        ['a request that is a list', 'listen', [1, 2, 3]],
        ['a request that is a string', 'listen', 'listen everywhere'],
        ['a result without a key', 'result', {}],
        ['a result of a bad key', 'result', { key: '../../x' }],
        ['a close of a bad key', 'close', { key: 5 }],
        ['a close that is null', 'close', null],
      ];
      for (const [what, method, request] of bad) {
        const answer = await outcome(rpc.call(method, request));
        expect(answer.code, `${what}: ${JSON.stringify(answer)}`).toBe('EPROTO');
        expect(alive(), `the server is still up after ${what}`).toBe(true);
      }
      // Methods the server does not serve to the other domain at all.
      for (const method of ['connect', 'exit', '__proto__']) {
        expect((await outcome(rpc.call(method, {}))).code, method).toMatch(/^(EPROTO|ERR_RPC_NO_METHOD)$/);
      }

      // And then a good request, on the same channel: served in the server's own area, under a
      // name it chose, and gone from there once closed.
      const address = (await rpc.call('listen', listen('good', { name: 'bench-good' }))) as { name?: string; path?: string };
      expect(address.path).toBeUndefined();
      expect(address.name).toMatch(/^bench-[A-Za-z0-9_-]{1,40}$/);
      expect(await xs.directory(`${AREA}/${address.name}`)).toEqual(expect.arrayContaining(['ring-ref', 'event-channel']));
      const data = await connect({ domid: SERVER, name: address.name!, backend: 'sim', simDomid: CLIENT, timeout: 5000 });
      open.push(data);
      let received = 0;
      data.on('data', (piece: Buffer) => (received += piece.length));
      await new Promise((resolve) => data.once('end', resolve));
      const sent = (await rpc.call('result', { key: 'good' })) as { result: { sent: number } };
      expect(sent.result.sent).toBeGreaterThan(0);
      expect(received).toBe(sent.result.sent);
      data.destroy();
      await rpc.call('close', { key: 'good' });
      await expect(xs.read(`${AREA}/${address.name}/ring-ref`)).rejects.toMatchObject({ code: 'ENOENT' });
    });
  });

  it('survives malformed control messages: each closes its own channel only', { timeout: 30_000 }, async () => {
    const frame = (text: string) => Buffer.from(text);
    const garbage: [string, Buffer | 'huge-header'][] = [
      ['malformed JSON', frame('{"type":"call","id":1000,"method":"listen",')],
      ['JSON null', frame('null')],
      ['an error reply without its error', frame('{"type":"error","id":1000}')],
      ['a result for a call never made', frame('{"type":"result","id":99,"value":1}')],
      ['a call with an object id', frame('{"type":"call","id":{},"method":"hello","params":{}}')],
      ['a call with a numeric method', frame('{"type":"call","id":1000,"method":5,"params":{}}')],
      ['an unknown message type', frame('{"type":"shutdown","id":1000}')],
      ['deeply nested JSON', frame(`${'['.repeat(30_000)}${']'.repeat(30_000)}`)],
      ['a header claiming 2 GiB', 'huge-header'],
    ];
    for (const [what, message] of garbage) {
      const channel = await control();
      const messages = new MessageChannel(channel);
      const closed = new Promise((resolve) => channel.once('close', resolve));
      channel.on('error', () => {});
      if (message === 'huge-header') {
        const header = Buffer.alloc(4);
        header.writeUInt32LE(2 ** 31, 0);
        channel.write(header);
      } else {
        await messages.send(message);
      }
      // Either the server drops this channel, or (for harmless nonsense) ignores the message;
      // a well-formed call afterwards tells which, and the server must be up either way.
      const rpc = new RpcPeer(messages, { timeout: 5000 });
      const hello = await outcome(rpc.call('hello', {}));
      expect(alive(), `the server is still up after ${what}:\n${stderr}`).toBe(true);
      if (hello.code) await Promise.race([closed, sleep(2000)]);
      rpc.close();
      channel.destroy();
    }
    // A request nested too deep to be quoted back as JSON is still answered, with EPROTO.
    {
      const channel = await control();
      const messages = new MessageChannel(channel);
      const answer = new Promise<Buffer>((resolve) => messages.onMessage(resolve));
      const deep = `${'['.repeat(25_000)}${']'.repeat(25_000)}`;
      await messages.send(
        Buffer.from(
          `{"type":"call","id":1000,"method":"listen","params":{"transport":"vchan","key":"d1","role":{"role":"pong"},"name":${deep}}}`,
        ),
      );
      expect(JSON.parse((await answer).toString())).toMatchObject({ type: 'error', id: 1000, error: { code: 'EPROTO' } });
      channel.destroy();
      expect(alive()).toBe(true);
    }
    // A fresh client is served as before.
    await session(async (rpc) => {
      expect((await outcome(rpc.call('listen', listen('bad', { name: '../../x' })))).code).toBe('EPROTO');
      expect(await rpc.call('listen', listen('fine'))).toMatchObject({ name: expect.stringMatching(/^bench-/) });
      await rpc.call('close', { key: 'fine' });
    });
    for (const node of PRECIOUS) expect(await xs.read(node)).toBe('keep');
  });
});
