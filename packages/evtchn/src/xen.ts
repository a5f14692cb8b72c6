import { explained, FdFinalizer } from '@xen-vchan/native';
import { EventChannel, evtchnAdvice, existenceFromBind, restrictAdvice } from './channel.js';
import { EVTCHN_DEVICE } from './interface.js';
import { addon } from './native.js';

const fds = new FdFinalizer((fd) => addon.close(fd));

/** /dev/xen/evtchn: the kernel masks each port it reports, and a write of the port unmasks it. */
export class XenEventChannel extends EventChannel {
  readonly backend = 'xen' as const;
  readonly domid = null;
  private readonly fd: number;

  constructor() {
    super();
    this.fd = explained('open /dev/xen/evtchn', () => addon.open(EVTCHN_DEVICE), evtchnAdvice);
    fds.register(this, this.fd);
    this.startPolling(this.fd);
  }

  bindUnbound(remoteDomain: number): number {
    this.checkDomain(remoteDomain);
    return this.track(explained('evtchn bindUnbound', () => addon.bindUnbound(this.fd, remoteDomain), evtchnAdvice));
  }

  bindInterdomain(remoteDomain: number, remotePort: number): number {
    this.checkDomain(remoteDomain);
    this.checkPort(remotePort);
    return this.track(explained('evtchn bindInterdomain', () => addon.bindInterdomain(this.fd, remoteDomain, remotePort), evtchnAdvice));
  }

  domainExists(domid: number): boolean {
    this.checkDomain(domid);
    return existenceFromBind(() => {
      // Port 0 never binds; should a kernel ever bind it, it must not stay bound.
      addon.unbind(this.fd, addon.bindInterdomain(this.fd, domid, 0));
    }, domid);
  }

  unbind(port: number): void {
    this.checkPort(port);
    explained('evtchn unbind', () => addon.unbind(this.fd, port), evtchnAdvice);
    this.bound.delete(port);
    this.updatePolling();
  }

  notify(port: number): void {
    this.checkPort(port);
    explained('evtchn notify', () => addon.notify(this.fd, port), evtchnAdvice);
  }

  unmask(port: number): void {
    this.checkPort(port);
    explained('evtchn unmask', () => addon.unmask(this.fd, port), evtchnAdvice);
  }

  reset(): void {
    this.checkOpen();
    explained('evtchn reset', () => addon.reset(this.fd), evtchnAdvice);
  }

  restrictDomain(domid: number): void {
    this.checkDomain(domid);
    explained('evtchn restrictDomain', () => addon.restrictDomid(this.fd, domid), restrictAdvice);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopPolling();
    // Closing the fd unbinds every port it bound.
    fds.close(this, this.fd);
    this.bound.clear();
  }

  protected readPending(): number[] {
    return explained('evtchn read', () => addon.readPorts(this.fd), evtchnAdvice);
  }

  private track(port: number): number {
    this.bound.add(port);
    this.updatePolling();
    return port;
  }
}
