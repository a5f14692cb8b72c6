// `vchan proxy --mux` (the default): many socket connections over one vchan, as yamux streams,
// run as real binaries on the simulation.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SimConnection } from '@xen-vchan/sim';
import { echoMany, echoService } from '../support/echo.mjs';
import { afterEach, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = path.join(root, 'packages/cli/bin/vchan.js');
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** The echo service, closed after the test. */
async function echo(): Promise<{ service: net.Server; port: number }> {
  const made = await echoService();
  cleanups.push(() => new Promise((resolve) => made.service.close(resolve)));
  return made;
}

/** A TCP port free at the moment. */
async function freePort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/**
 * Two `vchan proxy` processes over one vchan `name`: domain 1 serves it and connects each stream to
 * the TCP port `target` (`--once`: it exits when the vchan closes; `servingMode` --no-mux plays a
 * peer that knows nothing of yamux); domain 2 listens on a TCP port and carries each connection
 * as a stream. Resolves once the first serves and the second listens.
 */
async function proxies(name: string, target: number, servingMode = '--mux') {
  const listenPort = await freePort();
  const children: ReturnType<typeof spawn>[] = [];
  const exits: Promise<number | string>[] = [];
  const stderr: string[] = [];
  const start = (args: string[], ready: RegExp) => {
    const child = spawn(process.execPath, [bin, 'proxy', ...args], {
      env: { ...process.env, XEN_VCHAN_BACKEND: 'sim' },
      stdio: ['ignore', 'inherit', 'pipe'],
    });
    children.push(child);
    exits.push(new Promise((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code ?? 1))));
    return new Promise<void>((resolve) =>
      child.stderr!.on('data', (text: Buffer) => {
        stderr.push(String(text));
        if (ready.test(String(text))) resolve();
      }),
    );
  };
  await start([servingMode, '--role', 'server', '-d', '2', '-n', name, '--sim-domid', '1', '--tcp', String(target), '--once'], /serving/);
  await start(['--role', 'client', '-d', '1', '-n', name, '--sim-domid', '2', '--tcp', String(listenPort), '--listen'], /listening/);
  cleanups.push(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await Promise.all(exits);
  });
  /** Stops the listening side (SIGTERM); the serving side sees the vchan close and exits. */
  const stop = async () => {
    children[1]!.kill('SIGTERM');
    return Promise.all(exits);
  };
  return { listenPort, stop, stderr };
}

const simStatus = () => {
  const connection = SimConnection.open(process.env.XEN_VCHAN_SIM_DIR!);
  try {
    return connection.call('status', {});
  } finally {
    connection.close();
  }
};

describe('vchan proxy --mux', () => {
  it('carries 200 concurrent TCP connections, 1 MiB each way with half-close, over one vchan', { timeout: 120_000 }, async () => {
    const { port } = await echo();
    const { listenPort, stop } = await proxies('many', port);
    // One vchan's pages: what the serving side shared for it, before any connection.
    const oneVchan = simStatus().grants.length;
    expect(oneVchan).toBeGreaterThan(0);
    let mostGrants = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        mostGrants = Math.max(mostGrants, simStatus().grants.length);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();
    // All 200 are through to the echo service at once (the proxy does not serve them in turn),
    // then each moves its megabyte.
    const outcomes = await echoMany(listenPort, 200, 1024 * 1024);
    sampling = false;
    await sampler;
    for (const outcome of outcomes) expect(outcome).toEqual({ echoed: 1024 * 1024, same: true });
    expect(mostGrants).toBe(oneVchan);
    expect(simStatus().grants.length).toBe(oneVchan);
    const [serving, listening] = await stop();
    expect(serving).toBe(0); // the vchan closed, and the --once side left cleanly
    expect(listening).toBe('SIGTERM');
  });

  it('a connection the far side cannot make resets that stream only; the others go on', async () => {
    const { service, port } = await echo();
    const { listenPort, stop, stderr } = await proxies('refused', port);
    // Three connections open and half-way through their data ...
    const open = await Promise.all(
      Array.from({ length: 3 }, async () => {
        const socket = net.connect({ port: listenPort, host: '127.0.0.1', allowHalfOpen: true });
        await once(socket, 'connect');
        const chunks: Buffer[] = [];
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        const ended = once(socket, 'end');
        const first = randomBytes(100_000);
        socket.write(first);
        while (Buffer.concat(chunks).length < first.length) await once(socket, 'data');
        return { socket, chunks, ended, first };
      }),
    );
    // ... when the service stops accepting: a new connection through the proxy is refused there.
    service.close(); // stops listening now; its open connections go on
    const refused = net.connect({ port: listenPort, host: '127.0.0.1' });
    const outcome = await new Promise<string>((resolve) => {
      refused.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
      refused.on('end', () => resolve('end'));
    });
    expect(outcome).toBe('ECONNRESET');
    refused.destroy();
    // The three go on: the rest of their data, the half-close, the echo to its end.
    for (const { socket, chunks, ended, first } of open) {
      const rest = randomBytes(200_000);
      socket.end(rest);
      await ended;
      expect(Buffer.concat(chunks).equals(Buffer.concat([first, rest]))).toBe(true);
      socket.destroy();
    }
    expect(stderr.join('')).toMatch(/ECONNREFUSED/);
    expect((await stop())[0]).toBe(0);
  });

  it('a --mux side facing a peer that does not speak yamux fails with EPROTO and says to use --no-mux', async () => {
    const { port } = await echo();
    const { listenPort, stop, stderr } = await proxies('mismatch', port, '--no-mux');
    const client = net.connect({ port: listenPort, host: '127.0.0.1' });
    client.on('error', () => {});
    const closed = new Promise((resolve) => client.on('close', resolve));
    client.write('hello');
    await closed; // reset: the session failed with it
    await expect.poll(() => stderr.join(''), { timeout: 10_000 }).toMatch(/EPROTO|protocol violation/);
    expect(stderr.join('')).toMatch(/--no-mux/);
    await stop();
  });
});
