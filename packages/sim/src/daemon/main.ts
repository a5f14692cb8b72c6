/**
 * The sim daemon: one per state folder, started on demand by the first process that needs it.
 * It owns the simulated hypervisor's state, answers control calls over a Unix socket, and cleans up
 * after each process whose connection closes, whether it exited or was killed.
 */
import { chmodSync, closeSync, mkdirSync, openSync, rmSync } from 'node:fs';
import net from 'node:net';
import { addon } from '../addon.js';
import { ensureSimDirectory, simFiles, type SimFiles } from '../paths.js';
import { encodeFrame, FrameReader, type Operation } from '../protocol.js';
import { startXenStoreServer } from '../xenstore/server.js';
import { ControlFailure, Hypervisor, type Client } from './hypervisor.js';

const IDLE_EXIT_MS = Number(process.env.XEN_VCHAN_SIM_IDLE_MS ?? 30_000);

function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} sim daemon ${process.pid}: ${message}\n`);
}

/** Removes what an earlier daemon and its dead processes left; the lock proves nobody uses it. */
function clearLeftovers(files: SimFiles): void {
  for (const folder of [files.pages, files.ports, files.wakeups]) {
    rmSync(folder, { recursive: true, force: true });
    mkdirSync(folder, { mode: 0o700 });
  }
  rmSync(files.socket, { force: true });
}

/** What a stopping daemon leaves: only its lock and its log. */
function removeState(files: SimFiles): void {
  for (const path of [files.pages, files.ports, files.wakeups, files.socket, files.xenstore]) rmSync(path, { recursive: true, force: true });
}

function main(): void {
  const directory = process.argv[2];
  if (!directory) throw new Error('usage: main.js <state folder>');
  ensureSimDirectory(directory);
  const files = simFiles(directory);
  const lockFd = openSync(files.lock, 'a', 0o600);
  if (!addon.flock(lockFd, true, false)) {
    closeSync(lockFd);
    return; // another daemon serves this folder
  }
  clearLeftovers(files);
  const hypervisor = new Hypervisor(files);
  const xenstore = startXenStoreServer(files, log);
  const sockets = new Set<net.Socket>();
  let idleTimer: NodeJS.Timeout | null = null;

  /** Stops serving and removes the state; `asker` (the connection that asked) is left open. */
  const stopServing = (why: string, asker?: net.Socket) => {
    log(`stopping: ${why}`);
    server.close();
    xenstore.close();
    for (const socket of sockets) if (socket !== asker) socket.destroy();
    hypervisor.shutdown();
    removeState(files);
  };
  const shutdown = (why: string) => {
    stopServing(why);
    process.exit(0);
  };
  const armIdleTimer = () => {
    if (sockets.size === 0 && IDLE_EXIT_MS > 0) idleTimer = setTimeout(() => shutdown('idle'), IDLE_EXIT_MS);
  };

  const server = net.createServer((socket) => {
    if (idleTimer) clearTimeout(idleTimer);
    idleTimer = null;
    sockets.add(socket);
    const client: Client = { pid: 0, handles: new Set() };
    const frames = new FrameReader();
    socket.on('data', (chunk) => {
      for (const body of frames.push(chunk)) {
        const { op, ...request } = body as { op: Operation };
        let reply: unknown;
        try {
          if (op === 'stop') {
            // Everything is gone before the answer, so whoever asked may remove the folder at once.
            stopServing(`asked by pid ${client.pid}`, socket);
            socket.end(encodeFrame({ ok: null }), () => process.exit(0));
            return;
          }
          reply = { ok: hypervisor.handle(client, op, request as never) ?? null };
        } catch (error) {
          if (!(error instanceof ControlFailure)) log(`${op} failed: ${(error as Error).stack}`);
          const code = error instanceof ControlFailure ? error.code : ((error as { code?: string }).code ?? 'EIO');
          reply = { error: { code, message: (error as Error).message } };
        }
        socket.write(encodeFrame(reply));
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      hypervisor.clientGone(client);
      armIdleTimer();
    });
  });
  server.listen(files.socket, () => {
    chmodSync(files.socket, 0o600);
    log(`serving ${directory}`);
    armIdleTimer();
  });
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main();
