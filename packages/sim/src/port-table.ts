import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { addon } from './addon.js';

/**
 * The event-channel table of one simulated domain: a file of fixed-size entries that every
 * process maps, so that sending an event needs no daemon round trip. Only the daemon changes the
 * routing fields (single writer); any process sets PENDING on a port it signals, and the port's
 * owner clears it when it reads the wake-up. Entry layout, Int32 words:
 *   0 pending   1 state   2 remote domain   3 remote port   4 owning handle
 */
export const MAX_PORTS = 4096;
export const ENTRY_WORDS = 8;
export const TABLE_BYTES = MAX_PORTS * ENTRY_WORDS * 4;

export enum PortState {
  Free = 0,
  Unbound = 1,
  Interdomain = 2,
}

const PENDING = 0;
const STATE = 1;
const REMOTE_DOMAIN = 2;
const REMOTE_PORT = 3;
const OWNER = 4;

export interface PortEntry {
  state: PortState;
  remoteDomain: number;
  remotePort: number;
  owner: number;
}

export class PortTable {
  private readonly words: Int32Array;

  constructor(readonly buffer: ArrayBuffer) {
    this.words = new Int32Array(buffer);
  }

  static map(file: string): PortTable {
    const fd = openSync(file, 'r+');
    try {
      return new PortTable(addon.mmap(fd, TABLE_BYTES, 0, true));
    } finally {
      closeSync(fd);
    }
  }

  read(port: number): PortEntry {
    const base = port * ENTRY_WORDS;
    return {
      // The state is read first and published last by the writer, so the fields after it are
      // at least as new as the state they belong to.
      state: Atomics.load(this.words, base + STATE) as PortState,
      remoteDomain: Atomics.load(this.words, base + REMOTE_DOMAIN),
      remotePort: Atomics.load(this.words, base + REMOTE_PORT),
      owner: Atomics.load(this.words, base + OWNER),
    };
  }

  /** Daemon only. Fields first, state last: a reader that sees the state sees its fields. */
  write(port: number, entry: PortEntry): void {
    const base = port * ENTRY_WORDS;
    Atomics.store(this.words, base + REMOTE_DOMAIN, entry.remoteDomain);
    Atomics.store(this.words, base + REMOTE_PORT, entry.remotePort);
    Atomics.store(this.words, base + OWNER, entry.owner);
    Atomics.store(this.words, base + STATE, entry.state);
  }

  /** Marks the port pending; true if it was not pending already (the caller must then wake its owner). */
  markPending(port: number): boolean {
    return Atomics.or(this.words, port * ENTRY_WORDS + PENDING, 1) === 0;
  }

  /** The owner took the wake-up: later signals must wake it again. */
  clearPending(port: number): void {
    Atomics.store(this.words, port * ENTRY_WORDS + PENDING, 0);
  }

  unmap(): void {
    addon.munmap(this.buffer);
  }
}

/**
 * Sends wake-ups: writes the port number into the FIFO of the handle that owns it, the same
 * 4-byte record the real /dev/xen/evtchn hands to read(). One write(2) per event; the owner's
 * PENDING bit keeps a burst of signals to one wake-up.
 */
export class WakeupSender {
  /** Open FIFOs by owning handle, least recently used first; bounded, since owners come and go. */
  private readonly fds = new Map<number, number>();
  private static readonly MAX_OPEN = 16;

  constructor(private readonly fifoPath: (handle: number) => string) {}

  wake(handle: number, port: number): void {
    const record = Buffer.allocUnsafe(4);
    record.writeUInt32LE(port, 0);
    let fd = this.fds.get(handle);
    try {
      if (fd === undefined) {
        // Non-blocking: opening a FIFO whose owner is gone fails at once (ENXIO/ENOENT).
        fd = openSync(this.fifoPath(handle), constants.O_WRONLY | constants.O_NONBLOCK);
        if (this.fds.size >= WakeupSender.MAX_OPEN) this.forget(this.fds.keys().next().value!);
      } else {
        this.fds.delete(handle);
      }
      this.fds.set(handle, fd);
      writeSync(fd, record);
    } catch {
      // The owner closed or died (ENXIO, ENOENT, EPIPE), or has 16K wake-ups unread (EAGAIN,
      // the overflow the real driver reports as EFBIG): like an event to a closed port, dropped.
      this.forget(handle);
    }
  }

  forget(handle: number): void {
    const fd = this.fds.get(handle);
    if (fd === undefined) return;
    this.fds.delete(handle);
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
  }

  closeAll(): void {
    for (const handle of [...this.fds.keys()]) this.forget(handle);
  }
}

/**
 * Sends an event from (domid, port) to its peer, as EVTCHNOP_send does: nothing happens unless
 * the port is connected; the peer's PENDING bit coalesces repeated sends into one wake-up.
 * Returns the handle that owns the peer port (null if there is none).
 */
export function signalPort(tables: (domid: number) => PortTable, wakeups: WakeupSender, domid: number, port: number): number | null {
  const local = tables(domid).read(port);
  if (local.state !== PortState.Interdomain) return null;
  const peerTable = tables(local.remoteDomain);
  const peer = peerTable.read(local.remotePort);
  if (peer.state !== PortState.Interdomain || peer.remoteDomain !== domid || peer.remotePort !== port) return null;
  if (peerTable.markPending(local.remotePort)) wakeups.wake(peer.owner, local.remotePort);
  return peer.owner;
}
