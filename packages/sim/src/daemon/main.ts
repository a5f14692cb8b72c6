/**
 * The sim daemon: one per state folder, started on demand by the first process that needs it.
 * It owns the simulated hypervisor's state, answers control calls over a Unix socket, and cleans up
 * after each process whose connection closes, whether it exited or was killed.
 */
import { chmodSync, closeSync, constants, lstatSync, mkdirSync, openSync, rmSync, type Stats, unlinkSync } from 'node:fs';
import net from 'node:net';
import { errorCode } from '@xen-vchan/native';
import { addon, peerPidOf } from '../addon.js';
import { SimFailure } from '../failure.js';
import { ensureSimDirectory, simFiles, type SimFiles } from '../paths.js';
import { encodeFrame, FrameReader, FrameViolation, parseCall } from '../protocol.js';
import { startXenStoreServer } from '../xenstore/server.js';
import type { Client } from './handles.js';
import { Hypervisor } from './hypervisor.js';

const IDLE_EXIT_MS = Number(process.env.XEN_VCHAN_SIM_IDLE_MS ?? 30_000);
/**
 * How long a connection refused for breaking the protocol may take to receive its EPROTO answer
 * before it is cut anyway: a client that never reads must not keep its socket here.
 */
const REFUSED_FLUSH_MS = 1000;

function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} sim daemon ${process.pid}: ${message}\n`);
}

/**
 * Removes `entry` without following a symbolic link there: a link is unlinked, its target left
 * alone. (rmSync does not follow links either, at the top or inside, but the daemon deletes
 * whole folders here, so it says so itself rather than rely on that.)
 */
function removeEntry(entry: string): void {
  let stats: Stats;
  try {
    stats = lstatSync(entry);
  } catch {
    return; // nothing there
  }
  if (stats.isDirectory()) rmSync(entry, { recursive: true, force: true });
  else unlinkSync(entry);
}

/** Removes what an earlier daemon and its dead processes left; the lock proves nobody uses it. */
function clearLeftovers(files: SimFiles): void {
  for (const folder of [files.pages, files.ports, files.wakeups]) {
    removeEntry(folder);
    mkdirSync(folder, { mode: 0o700 });
  }
  removeEntry(files.socket);
}

/** What a stopping daemon leaves: only its lock and its log. */
function removeState(files: SimFiles): void {
  for (const path of [files.pages, files.ports, files.wakeups, files.socket, files.xenstore]) removeEntry(path);
}

function main(): void {
  const directory = process.argv[2];
  if (!directory) throw new Error('usage: main.js <state folder>');
  ensureSimDirectory(directory);
  const files = simFiles(directory);
  // Not through a link either: the folder was checked, its entries are opened as they are.
  const lockFd = openSync(files.lock, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  if (!addon.flock(lockFd, true, false)) {
    closeSync(lockFd);
    return; // another daemon serves this folder
  }
  clearLeftovers(files);
  // Each needs the other for a domain's life: the hypervisor clears a destroyed domain's XenStore
  // side, and a XenStore connection as a destroyed domain makes it live again.
  const xenstore = startXenStoreServer(files, log, (domid) => hypervisor.domainActive(domid));
  const hypervisor = new Hypervisor(files, xenstore);
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

  /**
   * Ends a connection that broke the protocol, and only it: EPROTO first where the socket takes
   * it, then the socket goes, and its 'close' runs the usual cleanup for whatever it held.
   */
  const refuseConnection = (socket: net.Socket, client: Client, why: string) => {
    log(`dropping the connection of pid ${client.pid || '(no hello)'}: ${why}`);
    const cut = setTimeout(() => socket.destroy(), REFUSED_FLUSH_MS);
    socket.end(encodeFrame({ error: { code: 'EPROTO', message: `${why}; the sim daemon closed this connection` } }), () => {
      clearTimeout(cut);
      socket.destroy();
    });
  };

  /** Everything is gone before the answer, so whoever asked may remove the folder at once. */
  const stopOnRequest = (socket: net.Socket, client: Client) => {
    try {
      stopServing(`asked by pid ${client.pid}`, socket);
    } catch (error) {
      // Half stopped is no state to serve in: the next daemon clears what is left.
      log(`stopping failed: ${(error as Error).stack}`);
      process.exit(1);
    }
    socket.end(encodeFrame({ ok: null }), () => process.exit(0));
  };

  /** One call: its reply, with any failure as an error reply (the connection stays). */
  const answer = (client: Client, op: string, request: unknown) => {
    try {
      return { ok: hypervisor.handle(client, op, request) ?? null };
    } catch (error) {
      if (!(error instanceof SimFailure)) log(`${JSON.stringify(op.slice(0, 40))} failed: ${(error as Error).stack}`);
      return { error: { code: errorCode(error) ?? 'EIO', message: (error as Error).message } };
    }
  };

  const server = net.createServer((socket) => {
    if (idleTimer) clearTimeout(idleTimer);
    idleTimer = null;
    sockets.add(socket);
    const client: Client = { pid: 0, peerPid: peerPidOf(socket), handles: new Set(), killed: false };
    const frames = new FrameReader();
    let refused = false;
    socket.on('data', (chunk) => {
      if (refused) return; // what a refused connection still sends is dropped unread
      try {
        for (const body of frames.push(chunk)) {
          const { op, request } = parseCall(body);
          if (op === 'stop') {
            stopOnRequest(socket, client);
            return;
          }
          // Calls are one at a time, so a client that does not read its replies is not read either.
          if (!socket.write(encodeFrame(answer(client, op, request)))) {
            socket.pause();
            socket.once('drain', () => socket.resume());
          }
        }
      } catch (error) {
        // Only a broken frame gets here (a failing call is answered above); anything else is a bug,
        // and it too ends this connection rather than the daemon.
        if (!(error instanceof FrameViolation)) log(`handling a frame failed: ${(error as Error).stack}`);
        refused = true;
        refuseConnection(socket, client, (error as Error).message);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      try {
        hypervisor.clientGone(client);
      } catch (error) {
        // One client's broken state must not take the daemon down for everybody else.
        log(`cleaning up after pid ${client.pid || '(no hello)'} failed: ${(error as Error).stack}`);
      }
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
