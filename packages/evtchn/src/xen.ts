import { EventEmitter } from 'eventemitter3';
import { explained, FdFinalizer } from '@xen-vchan/native';
import { evtchnAdvice, evtchnOpenAdvice, existenceFromBind, restrictAdvice } from './advice.js';
import { EVTCHN_DEVICE, type EventChannel, type EventChannelEvents } from './interface.js';
import { addon } from './native.js';
import { BoundPorts } from './ports.js';

const fds = new FdFinalizer((fd) => addon.close(fd));

/** /dev/xen/evtchn: the kernel masks each port it reports, and a write of the port unmasks it. */
export class XenEventChannel extends EventEmitter<EventChannelEvents> implements EventChannel {
  readonly backend = 'xen' as const;
  readonly domid = null;
  private readonly fd: number;
  private readonly bound: BoundPorts;

  constructor() {
    super();
    this.fd = explained('open /dev/xen/evtchn', () => addon.open(EVTCHN_DEVICE), evtchnOpenAdvice);
    fds.register(this, this.fd);
    this.bound = new BoundPorts(this, this.fd, () => explained('evtchn read', () => addon.readPorts(this.fd), evtchnAdvice));
  }

  get ports(): readonly number[] {
    return this.bound.list;
  }

  bindUnbound(remoteDomain: number): number {
    this.bound.checkDomain(remoteDomain);
    return this.bound.add(explained('evtchn bindUnbound', () => addon.bindUnbound(this.fd, remoteDomain), evtchnAdvice));
  }

  bindInterdomain(remoteDomain: number, remotePort: number): number {
    this.bound.checkDomain(remoteDomain);
    this.bound.checkPort(remotePort);
    const port = explained('evtchn bindInterdomain', () => addon.bindInterdomain(this.fd, remoteDomain, remotePort), evtchnAdvice);
    return this.bound.add(port);
  }

  domainExists(domid: number): boolean {
    this.bound.checkDomain(domid);
    return existenceFromBind(() => {
      // Port 0 never binds; should a kernel ever bind it, it must not stay bound.
      addon.unbind(this.fd, addon.bindInterdomain(this.fd, domid, 0));
    }, domid);
  }

  unbind(port: number): void {
    this.bound.checkPort(port);
    explained('evtchn unbind', () => addon.unbind(this.fd, port), evtchnAdvice);
    this.bound.delete(port);
  }

  notify(port: number): void {
    this.bound.checkPort(port);
    explained('evtchn notify', () => addon.notify(this.fd, port), evtchnAdvice);
  }

  unmask(port: number): void {
    this.bound.checkPort(port);
    explained('evtchn unmask', () => addon.unmask(this.fd, port), evtchnAdvice);
  }

  reset(): void {
    this.bound.checkOpen();
    explained('evtchn reset', () => addon.reset(this.fd), evtchnAdvice);
  }

  restrictDomain(domid: number): void {
    this.bound.checkDomain(domid);
    explained('evtchn restrictDomain', () => addon.restrictDomid(this.fd, domid), restrictAdvice);
  }

  close(): void {
    if (this.bound.closed) return;
    this.bound.close();
    // Closing the fd unbinds every port it bound.
    fds.close(this, this.fd);
  }
}
