// The `vchan` command line, run as a real binary in child processes.
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = path.join(root, 'packages/cli/bin/vchan.js');
const scratch = mkdtempSync(path.join(os.tmpdir(), 'vchan-cli-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const vchan = (args: string[], options: { timeout?: number } = {}) =>
  promisify(execFile)(process.execPath, [bin, ...args], {
    timeout: options.timeout ?? 20_000,
    env: { ...process.env, XEN_VCHAN_BACKEND: 'sim' },
  }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

/** Runs a shell command line with the binary as $V; resolves with its exit code. */
function shell(line: string): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', line], {
      env: { ...process.env, V: `${process.execPath} ${bin}`, XEN_VCHAN_BACKEND: 'sim' },
      stdio: 'inherit',
    });
    child.on('exit', (code) => resolve(code ?? 1));
  });
}

/**
 * A TCP service on 127.0.0.1 (`handler` serves each connection), reached from the Unix socket
 * `socketPath` through the vchan `name` by two `vchan proxy --once` processes (`mode`: --mux or
 * --no-mux): domain 2 serves
 * the service, domain 1 listens on the socket. Resolves once both proxies serve or listen;
 * `exits` has their exit codes, `service` is for the caller to close.
 */
async function proxiedService(name: string, handler: (socket: net.Socket) => void, mode: string) {
  const service = net.createServer(handler);
  await new Promise<void>((resolve) => service.listen(0, '127.0.0.1', resolve));
  const port = (service.address() as net.AddressInfo).port;
  const socketPath = path.join(scratch, `proxy-${name}.sock`);
  const exits: Promise<number>[] = [];
  const start = (args: string[]) => {
    const child = spawn(process.execPath, [bin, 'proxy', ...args], {
      env: { ...process.env, XEN_VCHAN_BACKEND: 'sim' },
      stdio: ['ignore', 'inherit', 'pipe'],
    });
    exits.push(new Promise((resolve) => child.on('exit', (code) => resolve(code ?? 1))));
    return new Promise<void>((resolve) => child.stderr!.on('data', (text: Buffer) => /serving|listening/.test(String(text)) && resolve()));
  };
  await start([mode, '--role', 'server', '-d', '2', '-n', name, '--sim-domid', '1', '--tcp', String(port), '--once']);
  await start([mode, '--role', 'client', '-d', '1', '-n', name, '--sim-domid', '2', '--unix', socketPath, '--listen', '--once']);
  return { service, socketPath, exits };
}

describe('vchan CLI', () => {
  it.each(['listen', 'connect', 'proxy', 'bench', 'sim'])('%s --help explains itself', async (command) => {
    const { code, stdout } = await vchan([command, '--help']);
    expect(code).toBe(0);
    expect(stdout).toMatch(new RegExp(`usage: vchan ${command}`));
    // Xen's vchan-socket-proxy knows nothing of yamux: the help says which mode it needs.
    if (command === 'proxy') expect(stdout).toMatch(/--no-mux when the other end is vchan-socket-proxy/);
  });

  it('exits 2 on a bad command line and 3 when no server turns up', async () => {
    expect((await vchan([])).code).toBe(2);
    expect((await vchan(['frobnicate'])).code).toBe(2);
    const bad = await vchan(['connect', '--domian', '1']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--help/);
    expect((await vchan(['connect', '-d', 'x'])).code).toBe(2);
    const both = await vchan(['proxy', '--mux', '--no-mux', '--role', 'server', '-d', '2', '--tcp', '1']);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--mux or --no-mux, not both/);
    const late = await vchan(['connect', '-d', '1', '-n', 'nobody', '--sim-domid', '2', '-t', '200']);
    expect(late.code).toBe(3);
    expect(late.stderr).toMatch(/within 200 ms/);
  });

  it('moves a file through a shell pipeline: vchan listen | ... | vchan connect', async () => {
    const input = path.join(scratch, 'input');
    const output = path.join(scratch, 'output');
    writeFileSync(input, randomBytes(8 << 20));
    // Domain 1 sends the file to domain 2, which relays it through gzip to domain 3.
    const code = await shell(`
      set -o pipefail
      $V listen -d 2 -n out --sim-domid 3 -r > '${output}' & receiver=$!
      $V listen -d 1 -n in --sim-domid 2 -r < /dev/null | gzip -1 | gunzip | $V connect -d 3 -n out --sim-domid 2 -s & relay=$!
      $V connect -d 2 -n in --sim-domid 1 -s < '${input}' || exit 11
      wait $relay || exit 12
      wait $receiver || exit 13`);
    expect(code).toBe(0);
    expect(sha256(output)).toBe(sha256(input));
  });

  it('moves data from a socket on stdin to a socket on stdout (the stream paths of listen and connect)', async () => {
    // Node's 'pipe' stdio is a socket pair: stdin is read through a stream, and stdout written
    // from views through one (see pipeFdToVchan's table in the vchan README).
    const env = { ...process.env, XEN_VCHAN_BACKEND: 'sim' };
    const payload = randomBytes(3 << 20);
    const sender = spawn(process.execPath, [bin, 'listen', '-d', '2', '-n', 'sockets', '--sim-domid', '1', '-s'], { env });
    const receiver = spawn(process.execPath, [bin, 'connect', '-d', '1', '-n', 'sockets', '--sim-domid', '2', '-r'], { env });
    const exits = [sender, receiver].map((child) => new Promise((resolve) => child.on('exit', resolve)));
    const chunks: Buffer[] = [];
    receiver.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
    sender.stdin.end(payload);
    expect(await Promise.all(exits)).toEqual([0, 0]);
    expect(Buffer.concat(chunks).equals(payload)).toBe(true);
  });

  it.each(['--mux', '--no-mux'])('proxies (%s): a TCP service reached through a vchan from a Unix socket', async (mode) => {
    const { service: echo, socketPath, exits } = await proxiedService(`echo${mode.slice(2)}`, (socket) => socket.pipe(socket), mode);
    try {
      const payload = randomBytes(300_000);
      const client = net.connect(socketPath);
      const chunks: Buffer[] = [];
      let received = 0;
      await new Promise<void>((resolve) => {
        client.on('data', (chunk) => {
          chunks.push(chunk);
          received += chunk.length;
          if (received >= payload.length) resolve();
        });
        client.write(payload);
      });
      client.destroy();
      expect(Buffer.concat(chunks).equals(payload)).toBe(true);
      expect(await Promise.all(exits)).toEqual([0, 0]);
    } finally {
      echo.close();
    }
  });

  it.each(['--mux', '--no-mux'])(
    'proxies (%s): a service that sends and closes at once still delivers everything to a slow reader',
    async (mode) => {
      const payload = randomBytes(8 * 1024 * 1024);
      const { service, socketPath, exits } = await proxiedService(`slow${mode.slice(2)}`, (socket) => socket.end(payload), mode);
      try {
        const client = net.connect(socketPath);
        client.pause(); // the reader is slow: the proxy holds what the socket cannot take yet
        await new Promise((resolve) => setTimeout(resolve, 500));
        const chunks: Buffer[] = [];
        await new Promise<void>((resolve) => {
          client.on('data', (chunk) => chunks.push(chunk));
          client.on('close', () => resolve());
          client.resume();
        });
        expect(Buffer.concat(chunks).length).toBe(payload.length);
        expect(Buffer.concat(chunks).equals(payload)).toBe(true);
        expect(await Promise.all(exits)).toEqual([0, 0]);
      } finally {
        service.close();
      }
    },
  );

  it('sim start, status and stop', async () => {
    const dir = path.join(path.dirname(process.env.XEN_VCHAN_SIM_DIR!), `cli-${process.pid}`);
    try {
      expect((await vchan(['sim', 'status', '--dir', dir])).stdout).toMatch(/no sim daemon/);
      const started = await vchan(['sim', 'start', '--dir', dir]);
      expect(started.code).toBe(0);
      const status = JSON.parse((await vchan(['sim', 'status', '--dir', dir, '--json'])).stdout);
      expect(status).toMatchObject({ running: true, grants: [], ports: [], clients: [] });
      expect((await vchan(['sim', 'status', '--dir', dir])).stdout).toMatch(/grants: 0/);
      expect((await vchan(['sim', 'stop', '--dir', dir])).code).toBe(0);
      expect((await vchan(['sim', 'status', '--dir', dir])).stdout).toMatch(/no sim daemon/);
      expect((await vchan(['sim', 'bogus', '--dir', dir])).code).toBe(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sim destroy ends a domain, its processes with it, and says what it did', async () => {
    const dir = path.join(path.dirname(process.env.XEN_VCHAN_SIM_DIR!), `cli-destroy-${process.pid}`);
    try {
      expect((await vchan(['sim', 'destroy', '3', '--dir', dir])).stdout).toMatch(/no sim daemon .* no domain 3 to destroy/);
      expect((await vchan(['sim', 'start', '--dir', dir])).code).toBe(0);
      const script = `import { openEventChannel } from '@xen-vchan/evtchn'; globalThis.held = openEventChannel(); globalThis.held.bindUnbound(4); console.log('ready'); setInterval(() => {}, 1 << 30);`;
      const domain3 = spawn(process.execPath, ['--input-type=module', '-e', script], {
        cwd: root,
        env: { ...process.env, XEN_VCHAN_SIM_DIR: dir, XEN_VCHAN_SIM_DOMID: '3', XEN_VCHAN_BACKEND: 'sim' },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const killedBy = new Promise((resolve) => domain3.on('exit', (_code, signal) => resolve(signal)));
      await new Promise((resolve) => domain3.stdout!.once('data', resolve));
      const destroyed = await vchan(['sim', 'destroy', '3', '--dir', dir]);
      expect(destroyed.code).toBe(0);
      expect(destroyed.stdout).toMatch(
        new RegExp(`^destroyed domain 3: killed pid ${domain3.pid}; closed 1 handle and 1 port without unmap notifications;`),
      );
      expect(await killedBy).toBe('SIGKILL');
      expect((await vchan(['sim', 'status', '--dir', dir])).stdout).toMatch(/^ +3 .* destroyed$/m);
      const again = JSON.parse((await vchan(['sim', 'destroy', '3', '--dir', dir, '--json'])).stdout);
      expect(again).toMatchObject({ domid: 3, killed: [], handlesClosed: 0 });
      const dom0 = await vchan(['sim', 'destroy', '0', '--dir', dir]);
      expect(dom0.code).toBe(1);
      expect(dom0.stderr).toMatch(/EPERM.*vchan sim stop/);
      expect((await vchan(['sim', 'destroy', '--dir', dir])).code).toBe(2);
      expect((await vchan(['sim', 'destroy', 'three', '--dir', dir])).code).toBe(2);
    } finally {
      await vchan(['sim', 'stop', '--dir', dir]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
