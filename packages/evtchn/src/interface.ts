import type { EventEmitter } from 'eventemitter3';
import type { BackendName } from '@xen-vchan/native';

export interface EventChannelEvents {
  /** An event arrived on `port`. The port is now masked: call unmask(port) to hear it again. */
  event: [port: number];
  /** The device failed while waiting for events; the handle should be closed. */
  error: [error: Error];
}

/**
 * An open event-channel device: /dev/xen/evtchn (XenEventChannel) or the simulation
 * (SimEventChannel). Both backends keep this contract alike, and test/conformance/evtchn.test.ts
 * holds them to it on each.
 *
 * Every 'event' is a hint: the user re-checks the shared state it guards, then unmasks the port.
 * A backend emits one 'event' per port per wake-up, never while the port is still masked, and
 * emits them only while it has bound ports (so an idle handle does not keep Node alive). Every
 * call on a closed handle throws EBADF; errors are XenVchanErrors whose `code` is the errno
 * name Linux would give, with a message that says what to do.
 */
export interface EventChannel extends EventEmitter<EventChannelEvents> {
  readonly backend: BackendName;
  /** The domain this handle acts as; null on Xen, where the kernel knows it. */
  readonly domid: number | null;
  /** Ports bound by this handle and not yet unbound. */
  readonly ports: readonly number[];

  /** Offers a new local port to `remoteDomain`, which may then bind it with bindInterdomain. */
  bindUnbound(remoteDomain: number): number;
  /**
   * Connects a new local port to the port `remotePort` that `remoteDomain` offered us (EINVAL
   * otherwise). As on Xen, the new port is pending at once, so one event follows.
   */
  bindInterdomain(remoteDomain: number, remotePort: number): number;
  /** Closes a port; a connected peer's port goes back to unbound. ENOTCONN if not ours. */
  unbind(port: number): void;
  /** Sends an event to the peer of `port`. Dropped if the port has no peer. ENOTCONN if not ours. */
  notify(port: number): void;
  /** Lets `port` deliver events again after an 'event' (which masks it); one that came meanwhile is delivered now. */
  unmask(port: number): void;
  /** Throws away events that were queued and not yet emitted; the ports stay bound. */
  reset(): void;
  /**
   * From now on this handle may only bind interdomain to `domid`: binding to another domain, or
   * offering a port with bindUnbound, fails with EACCES (ports bound before stay). Once per
   * handle (EACCES after), and not to dom0 (EINVAL), as Linux allows.
   */
  restrictDomain(domid: number): void;
  /**
   * Whether Xen still has domain `domid` (alive or dying, not yet destroyed). Asked the one way an
   * unprivileged domain can: binding to the domain's port 0, which is always reserved, so Xen
   * refuses with EINVAL when the domain exists and ESRCH when it does not; nothing is bound either
   * way. A domain that a survivor keeps as a zombie (still mapping its grants) still exists.
   * Throws for any other answer (EACCES on a handle restricted to another domain).
   */
  domainExists(domid: number): boolean;
  /** Unbinds every port and closes the handle (idempotent). */
  close(): void;
}

export interface EventChannelOptions {
  /** 'auto' (default): 'xen' when /dev/xen/evtchn exists, else 'sim'. XEN_VCHAN_BACKEND overrides auto. */
  backend?: 'auto' | BackendName;
  /** Simulation only: the domain this handle acts as (default XEN_VCHAN_SIM_DOMID, else 0). */
  domid?: number;
  /** Simulation only: the state folder. */
  simDirectory?: string;
}

export const EVTCHN_DEVICE = '/dev/xen/evtchn';
