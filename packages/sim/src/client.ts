import { spawn } from 'node:child_process';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { errorCode, invalidArgument, isGuestDomainId, MAX_GUEST_DOMID, sleepSync, XenVchanError } from '@xen-vchan/native';
import { addon } from './addon.js';
import { SimFailure } from './failure.js';
import { ensureSimDirectory, simDirectory, simFiles, type SimFiles } from './paths.js';
import {
  encodeFrame,
  PROTOCOL_VERSION,
  type HandleOperation,
  type HandleRequest,
  type Operation,
  type Replies,
  type Reply,
  type Requests,
  type SimDomainDestroyed,
} from './protocol.js';

const DAEMON_START_TIMEOUT_MS = 10_000;
const daemonEntry = fileURLToPath(new URL('./daemon/main.js', import.meta.url));

/**
 * This process's link to the sim daemon, one per state folder. Calls block like the ioctls they
 * stand for. The link is also how the daemon learns that the process died: when the kernel closes
 * the socket, the daemon does what Xen and Linux do for a dead process (unmap-notify, unbind).
 */
export class SimConnection {
  private static readonly connections = new Map<string, SimConnection>();
  private readonly header = Buffer.alloc(4);

  private constructor(
    readonly files: SimFiles,
    private fd: number,
  ) {}

  static open(directory?: string): SimConnection {
    const dir = simDirectory(directory);
    let connection = SimConnection.connections.get(dir);
    if (!connection) {
      ensureSimDirectory(dir);
      const files = simFiles(dir);
      connection = new SimConnection(files, connectOrStartDaemon(files));
      SimConnection.connections.set(dir, connection);
      connection.call('hello', { pid: process.pid, version: PROTOCOL_VERSION });
    }
    return connection;
  }

  /** One call; its reply's type follows from the operation (protocol.ts: Requests, Replies). */
  call<Op extends Operation>(operation: Op, request: Requests[Op]): Replies[Op] {
    if (this.fd < 0) throw daemonGone(this.files, 'the link was closed');
    // Trusted as typed: the daemon is this package's own, of the same PROTOCOL_VERSION (hello).
    const reply = this.exchange({ op: operation, ...request }) as Reply<Op>;
    // Like a failed syscall's error, not a XenVchanError: the device layer explains it.
    if ('error' in reply) throw new SimFailure(reply.error.code, `${reply.error.code}: ${reply.error.message}`);
    return reply.ok;
  }

  /** A call on the device handle `handle` (one that gntalloc.open, gntdev.open or evtchn.open returned). */
  callOnHandle<Op extends HandleOperation>(operation: Op, handle: number, request: HandleRequest<Op>): Replies[Op] {
    // Requests[Op] by construction; TypeScript does not see through Omit of a generic type.
    return this.call(operation, { handle, ...request } as Requests[Op]);
  }

  /** Closes the link: the daemon then releases everything this process still holds. */
  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
    SimConnection.connections.delete(this.files.directory);
  }

  private exchange(body: unknown): unknown {
    const frame = encodeFrame(body);
    try {
      for (let sent = 0; sent < frame.length; ) sent += writeSync(this.fd, frame, sent);
      this.readExactly(this.header);
      const reply = Buffer.allocUnsafe(this.header.readUInt32LE(0));
      this.readExactly(reply);
      return JSON.parse(reply.toString());
    } catch (error) {
      if (error instanceof XenVchanError) throw error;
      throw daemonGone(this.files, (error as Error).message);
    }
  }

  private readExactly(target: Buffer): void {
    for (let got = 0; got < target.length; ) {
      const n = readSync(this.fd, target, got, target.length - got, null);
      if (n === 0) throw daemonGone(this.files, 'it closed the connection');
      got += n;
    }
  }
}

/**
 * Destroys simulated domain `domid` as `xl destroy` (or a crash) ends a Xen guest, for testing what
 * survivors see when no kernel is left to run unmap notifications. Every process acting as the
 * domain (a device handle or XenStore connection as it) is killed with SIGKILL; its unmap
 * notifications never run; its event-channel ports close, each peer's end turning unbound without
 * an event; grants others still map stay readable until unmapped (grant copies from them answer
 * GNTST_bad_domain); binding to the domain fails with ESRCH once nothing of it is mapped; its
 * XenStore nodes go, and dom0's @releaseDomain watches fire. A process acting as the domain later
 * makes it a new, live domain. Domain 0 and the calling process's own domain are refused (EPERM,
 * EDEADLK). Returns what was done.
 */
export function destroySimDomain(domid: number, options: { simDirectory?: string } = {}): SimDomainDestroyed {
  if (!isGuestDomainId(domid)) {
    throw invalidArgument(`Cannot destroy domain ${String(domid)}: a domain id is an integer from 0 to ${MAX_GUEST_DOMID}.`);
  }
  const connection = SimConnection.open(options.simDirectory);
  try {
    return connection.call('domain.destroy', { domid });
  } catch (error) {
    if (errorCode(error) !== 'ENOSYS') throw error;
    throw new XenVchanError(
      'ENOSYS',
      `The simulation daemon of ${connection.files.directory} is older than domain destruction. Stop it (vchan sim stop) and try again.`,
      { cause: error },
    );
  }
}

function daemonGone(files: SimFiles, why: string): XenVchanError {
  return new XenVchanError(
    'ESIMDOWN',
    `Lost the simulation daemon of ${files.directory} (${why}). Everything opened on the simulation ` +
      `before is gone; open the devices again. If it keeps happening, see ${files.log}.`,
  );
}

function connectOrStartDaemon(files: SimFiles): number {
  try {
    return addon.connectUnix(files.socket);
  } catch (error) {
    const code = errorCode(error);
    if (code !== 'ENOENT' && code !== 'ECONNREFUSED') throw error;
  }
  startDaemon(files);
  const deadline = Date.now() + DAEMON_START_TIMEOUT_MS;
  for (;;) {
    try {
      return addon.connectUnix(files.socket);
    } catch (error) {
      if (Date.now() > deadline) {
        throw new XenVchanError(
          'ETIMEDOUT',
          `The simulation daemon for ${files.directory} did not start within ${DAEMON_START_TIMEOUT_MS} ms; see ${files.log}.`,
          { cause: error },
        );
      }
      sleepSync(5);
    }
  }
}

/** Starts the daemon detached; when several processes race, its lock lets one of them live. */
function startDaemon(files: SimFiles): void {
  const log = openSync(files.log, 'a', 0o600);
  try {
    const child = spawn(process.execPath, [daemonEntry, files.directory], {
      detached: true,
      stdio: ['ignore', log, log],
      cwd: '/',
    });
    child.unref();
  } finally {
    closeSync(log);
  }
}
