import { closeSync, constants, openSync } from 'node:fs';
import { EventEmitter } from 'eventemitter3';
import { errorCode, explained, XenVchanError } from '@xen-vchan/native';
import { EventRouter, SimConnection, simDomid, type SimHandleRequest, type SimReplies } from '@xen-vchan/sim';
import { evtchnAdvice, existenceFromBind, restrictAdvice } from './advice.js';
import type { EventChannel, EventChannelEvents, EventChannelOptions } from './interface.js';
import { addon } from './native.js';
import { BoundPorts } from './ports.js';

/** A handle nobody closed and nobody references any more: its FIFO is closed and the daemon told. */
const releaseOnCollect = new FinalizationRegistry<{ connection: SimConnection; handle: number; wakeupFd: number }>(
  ({ connection, handle, wakeupFd }) => {
    try {
      closeSync(wakeupFd);
      connection.call('close', { handle });
    } catch {
      /* the daemon or the fd is gone already */
    }
  },
);

/**
 * Event channels on the simulation. Ports live in the simulated hypervisor; wake-ups arrive on a
 * FIFO as the same 4-byte port records /dev/xen/evtchn returns, read by the same native code.
 * Masking is done here, as the Linux driver does it: a reported port stays masked until unmask,
 * and an event that comes while it is masked is delivered at unmask.
 */
export class SimEventChannel extends EventEmitter<EventChannelEvents> implements EventChannel {
  readonly backend = 'sim' as const;
  readonly domid: number;
  private readonly connection: SimConnection;
  private readonly router: EventRouter;
  private readonly handle: number;
  private readonly wakeupFd: number;
  private readonly bound: BoundPorts;
  private readonly masked = new Set<number>();
  private readonly arrivedWhileMasked = new Set<number>();

  constructor(options: EventChannelOptions) {
    super();
    this.domid = simDomid(options.domid);
    this.connection = SimConnection.open(options.simDirectory);
    this.router = EventRouter.for(this.connection.files);
    const { handle, wakeup } = explained('open simulated evtchn', () => this.connection.call('evtchn.open', { domid: this.domid }));
    this.handle = handle;
    // Read-write, so the FIFO always has a writer and never reports hang-up between events.
    this.wakeupFd = openSync(wakeup, constants.O_RDWR | constants.O_NONBLOCK);
    releaseOnCollect.register(this, { connection: this.connection, handle, wakeupFd: this.wakeupFd }, this);
    this.bound = new BoundPorts(this, this.wakeupFd, () => this.readPending());
  }

  get ports(): readonly number[] {
    return this.bound.list;
  }

  bindUnbound(remoteDomain: number): number {
    this.bound.checkDomain(remoteDomain);
    return this.bound.add(this.call('evtchn bindUnbound', 'evtchn.bindUnbound', { remoteDomain }).port);
  }

  bindInterdomain(remoteDomain: number, remotePort: number): number {
    this.bound.checkDomain(remoteDomain);
    this.bound.checkPort(remotePort);
    return this.bound.add(this.call('evtchn bindInterdomain', 'evtchn.bindInterdomain', { remoteDomain, remotePort }).port);
  }

  domainExists(domid: number): boolean {
    this.bound.checkDomain(domid);
    return existenceFromBind(() => {
      const { port } = this.connection.call('evtchn.bindInterdomain', { handle: this.handle, remoteDomain: domid, remotePort: 0 });
      this.connection.call('evtchn.unbind', { handle: this.handle, port });
    }, domid);
  }

  unbind(port: number): void {
    this.bound.checkPort(port);
    if (this.bound.has(port)) this.router.closing(this.domid, port);
    this.call('evtchn unbind', 'evtchn.unbind', { port });
    this.bound.delete(port);
    this.masked.delete(port);
    this.arrivedWhileMasked.delete(port);
  }

  notify(port: number): void {
    this.bound.checkPort(port);
    if (!this.bound.has(port)) throw notConnected('evtchn notify', port);
    this.router.send(this.domid, port);
  }

  unmask(port: number): void {
    this.bound.checkPort(port);
    if (!this.bound.has(port)) throw notConnected('evtchn unmask', port);
    if (this.arrivedWhileMasked.delete(port)) {
      // It stays masked and is reported again, as the driver does on unmask of a pending port.
      queueMicrotask(() => {
        if (!this.bound.closed && this.bound.has(port)) this.emit('event', port);
      });
      return;
    }
    this.masked.delete(port);
  }

  reset(): void {
    this.bound.checkOpen();
    while (this.readPending().length > 0);
    this.arrivedWhileMasked.clear();
  }

  restrictDomain(domid: number): void {
    this.bound.checkDomain(domid);
    this.call('evtchn restrictDomain', 'evtchn.restrict', { domid }, restrictAdvice);
  }

  close(): void {
    if (this.bound.closed) return;
    const ports = this.bound.close();
    releaseOnCollect.unregister(this);
    for (const port of ports) this.router.closing(this.domid, port);
    closeSync(this.wakeupFd);
    try {
      this.connection.call('close', { handle: this.handle });
    } catch (error) {
      if (errorCode(error) !== 'ESIMDOWN') throw error;
    }
  }

  /** The ports the wake-up FIFO reported since the last read, masked here as the driver masks them. */
  private readPending(): number[] {
    const delivered: number[] = [];
    for (const port of addon.readPorts(this.wakeupFd)) {
      if (!this.bound.has(port)) continue;
      this.router.taken(this.domid, port);
      if (this.masked.has(port)) {
        this.arrivedWhileMasked.add(port);
      } else {
        this.masked.add(port);
        delivered.push(port);
      }
    }
    return delivered;
  }

  private call<Op extends 'evtchn.bindUnbound' | 'evtchn.bindInterdomain' | 'evtchn.unbind' | 'evtchn.restrict'>(
    operation: string,
    op: Op,
    request: SimHandleRequest<Op>,
    advise: (code: string) => string | undefined = evtchnAdvice,
  ): SimReplies[Op] {
    this.bound.checkOpen();
    return explained(operation, () => this.connection.callOnHandle(op, this.handle, request), advise);
  }
}

function notConnected(operation: string, port: number): XenVchanError {
  return new XenVchanError('ENOTCONN', `${operation} failed: port ${port} is not bound by this handle. ${evtchnAdvice('ENOTCONN')}`);
}
