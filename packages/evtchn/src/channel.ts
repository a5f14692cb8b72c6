import { EventEmitter } from 'eventemitter3';
import { checkDomainId, errorCode, explainError, invalidArgument, MAX_GUEST_DOMID, XenVchanError, type BackendName } from '@xen-vchan/native';
import type { EventChannelEvents } from './interface.js';
import { addon, type Poller } from './native.js';

export function evtchnAdvice(code: string): string | undefined {
  switch (code) {
    case 'ENOENT':
      return 'There is no /dev/xen/evtchn: load the module (modprobe xen-evtchn) or use the simulation (backend "sim").';
    case 'EACCES':
      return 'This handle is restricted to another domain (restrictDomain), or the device needs root.';
    case 'EPERM':
      return 'Opening /dev/xen/evtchn needs root (or a udev rule giving you the device).';
    case 'EINVAL':
      return 'Xen refused: the remote port must be an unbound port that its domain offered to this domain.';
    case 'ENOTCONN':
      return 'That port was not bound by this handle.';
    case 'EFBIG':
      return 'Events overflowed the queue; call reset() and re-check the shared state.';
    default:
      return undefined;
  }
}

export function restrictAdvice(code: string): string | undefined {
  if (code === 'EINVAL') return `A handle can be restricted to a domain from 1 to ${MAX_GUEST_DOMID}, not to dom0.`;
  if (code === 'EACCES') return 'This handle is already restricted; a restriction cannot be changed. Open a new handle.';
  return evtchnAdvice(code);
}

/**
 * Xen's answer to a bind of port 0 of `domid` (see EventChannel.domainExists): the remote domain
 * is looked up before the port, so ESRCH says it is gone and EINVAL that it exists.
 */
export function existenceFromBind(bindPortZero: () => void, domid: number): boolean {
  try {
    bindPortZero();
    return true;
  } catch (error) {
    const code = errorCode(error);
    if (code === 'EINVAL') return true;
    if (code === 'ESRCH') return false;
    throw explainError(error, `evtchn domainExists(${domid})`, evtchnAdvice);
  }
}

/**
 * What both backends share: ports bound by this handle, and turning readability of a pollable
 * fd into 'event' emissions. Every event is a hint; users re-check their shared state.
 */
export abstract class EventChannel extends EventEmitter<EventChannelEvents> {
  abstract readonly backend: BackendName;
  /** The domain this handle acts as; null on Xen, where the kernel knows it. */
  abstract readonly domid: number | null;
  protected readonly bound = new Set<number>();
  private poller: Poller | null = null;
  private polling = false;
  protected closed = false;

  /** Ports bound by this handle. */
  get ports(): readonly number[] {
    return [...this.bound];
  }

  /** Offers a new local port to `remoteDomain`, which may then bind it with bindInterdomain. */
  abstract bindUnbound(remoteDomain: number): number;
  /** Connects a new local port to the port `remotePort` that `remoteDomain` offered us. */
  abstract bindInterdomain(remoteDomain: number, remotePort: number): number;
  /** Closes a port; a connected peer's port goes back to unbound. ENOTCONN if not ours. */
  abstract unbind(port: number): void;
  /** Sends an event to the peer of `port`. Dropped if the port has no peer. ENOTCONN if not ours. */
  abstract notify(port: number): void;
  /** Lets `port` deliver events again after an 'event' (which masks it). */
  abstract unmask(port: number): void;
  /** Throws away events that were queued and not yet emitted. */
  abstract reset(): void;
  /**
   * From now on this handle may only bind interdomain to `domid`: binding to another domain, or
   * offering a port with bindUnbound, fails with EACCES (ports bound before stay). Once per
   * handle (EACCES after), and not to dom0 (EINVAL), as Linux allows.
   */
  abstract restrictDomain(domid: number): void;
  /**
   * Whether Xen still has domain `domid` (alive or dying, not yet destroyed). Asked the one way an
   * unprivileged domain can: binding to the domain's port 0, which is always reserved, so Xen
   * refuses with EINVAL when the domain exists and ESRCH when it does not; nothing is bound either
   * way. A domain that a survivor keeps as a zombie (still mapping its grants) still exists.
   * Throws for any other answer (EACCES on a handle restricted to another domain).
   */
  abstract domainExists(domid: number): boolean;
  /** Unbinds every port and closes the handle (idempotent). */
  abstract close(): void;

  /** Reads the ports that became pending since the last call, each now masked. */
  protected abstract readPending(): number[];

  protected startPolling(fd: number): void {
    this.poller = new addon.Poller(fd, (status) => this.onReadable(status));
  }

  /** The poller runs only while ports are bound, so an idle handle does not keep Node alive. */
  protected updatePolling(): void {
    const wanted = !this.closed && this.bound.size > 0;
    if (wanted === this.polling || !this.poller) return;
    this.polling = wanted;
    if (wanted) this.poller.start();
    else this.poller.stop();
  }

  protected stopPolling(): void {
    this.poller?.close();
    this.poller = null;
    this.polling = false;
  }

  protected checkOpen(): void {
    if (this.closed) throw new XenVchanError('EBADF', 'This event-channel handle is closed; open a new one.');
  }

  protected checkPort(port: number): void {
    this.checkOpen();
    if (!Number.isInteger(port) || port <= 0) throw invalidArgument(`ports are positive integers, got ${port}`);
  }

  protected checkDomain(domid: number): void {
    this.checkOpen();
    checkDomainId(domid);
  }

  /**
   * Every port of the batch is emitted even if a listener throws: the ports are masked until their
   * listener unmasks them, so stopping at a throw would leave the rest deaf. The first exception
   * is rethrown once all are out (the poller hands it to Node as an uncaught exception, as a throw
   * in any EventEmitter listener would be); any further ones follow on the next tick.
   */
  protected emitEvents(ports: readonly number[]): void {
    let first: { error: unknown } | null = null;
    for (const port of ports) {
      try {
        this.emit('event', port);
      } catch (error) {
        if (first) {
          process.nextTick(() => {
            throw error;
          });
        } else first = { error };
      }
    }
    if (first) throw first.error;
  }

  private onReadable(status: number): void {
    if (this.closed) return;
    if (status < 0) {
      this.emit('error', new XenVchanError('EIO', `waiting for events failed (libuv status ${status}); close this handle and open a new one.`));
      return;
    }
    // One read per wake-up: it takes up to 256 pending ports at once, and the poll is
    // level-triggered, so anything left calls us again on the next turn. A second read to see
    // that nothing is left would cost a syscall on every wake-up (a costly one in a PV guest).
    let ports: number[];
    try {
      ports = this.readPending();
    } catch (error) {
      this.emit('error', error as Error);
      return;
    }
    this.emitEvents(ports);
  }
}
