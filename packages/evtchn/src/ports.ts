import type { EventEmitter } from 'eventemitter3';
import { checkDomainId, invalidArgument, XenVchanError } from '@xen-vchan/native';
import type { EventChannelEvents } from './interface.js';
import { addon, type Poller } from './native.js';

/**
 * What both backends keep the same way: whether the handle is open, which ports it bound, and
 * the poller that turns readability of its fd into 'event' emissions on the handle. The poller
 * runs only while a port is bound, so an idle handle does not keep Node alive.
 *
 * The backend supplies `readPending`: the ports that became pending since its last call, each now
 * masked (one read of the device, or of the simulation's wake-up FIFO).
 */
export class BoundPorts {
  private isClosed = false;
  private readonly bound = new Set<number>();
  private readonly poller: Poller;
  private polling = false;

  constructor(
    private readonly channel: EventEmitter<EventChannelEvents>,
    fd: number,
    private readonly readPending: () => number[],
  ) {
    this.poller = new addon.Poller(fd, (status) => this.onReadable(status));
  }

  get closed(): boolean {
    return this.isClosed;
  }

  get list(): number[] {
    return [...this.bound];
  }

  has(port: number): boolean {
    return this.bound.has(port);
  }

  /** Records a port the device just bound; returns it. */
  add(port: number): number {
    this.bound.add(port);
    this.updatePolling();
    return port;
  }

  delete(port: number): void {
    this.bound.delete(port);
    this.updatePolling();
  }

  /** Marks the handle closed and ends event delivery; returns the ports that were bound. */
  close(): number[] {
    const ports = this.list;
    this.isClosed = true;
    this.poller.close();
    this.polling = false;
    this.bound.clear();
    return ports;
  }

  checkOpen(): void {
    if (this.isClosed) throw new XenVchanError('EBADF', 'This event-channel handle is closed; open a new one.');
  }

  checkPort(port: number): void {
    this.checkOpen();
    if (!Number.isInteger(port) || port <= 0) throw invalidArgument(`ports are positive integers, got ${port}`);
  }

  checkDomain(domid: number): void {
    this.checkOpen();
    checkDomainId(domid);
  }

  private updatePolling(): void {
    const wanted = !this.isClosed && this.bound.size > 0;
    if (wanted === this.polling) return;
    this.polling = wanted;
    if (wanted) this.poller.start();
    else this.poller.stop();
  }

  private onReadable(status: number): void {
    if (this.isClosed) return;
    if (status < 0) {
      this.channel.emit(
        'error',
        new XenVchanError('EIO', `waiting for events failed (libuv status ${status}); close this handle and open a new one.`),
      );
      return;
    }
    // One read per wake-up: it takes up to 256 pending ports at once, and the poll is
    // level-triggered, so anything left calls us again on the next turn. A second read to see
    // that nothing is left would cost a syscall on every wake-up (a costly one in a PV guest).
    let ports: number[];
    try {
      ports = this.readPending();
    } catch (error) {
      this.channel.emit('error', error as Error);
      return;
    }
    this.emitEvents(ports);
  }

  /**
   * Every port of the batch is emitted even if a listener throws: the ports are masked until their
   * listener unmasks them, so stopping at a throw would leave the rest deaf. The first exception
   * is rethrown once all are out (the poller hands it to Node as an uncaught exception, as a throw
   * in any EventEmitter listener would be); any further ones follow on the next tick.
   */
  private emitEvents(ports: readonly number[]): void {
    let first: { error: unknown } | null = null;
    for (const port of ports) {
      try {
        this.channel.emit('event', port);
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
}
