import { PortTable, signalPort, WakeupSender } from './port-table.js';
import type { SimFiles } from './paths.js';

/**
 * This process's side of simulated event delivery for one state folder: the port tables it has
 * mapped and the wake-up FIFOs it has opened, kept for the life of the process so that sending an
 * event costs one atomic operation and at most one write(2).
 */
export class EventRouter {
  private static readonly routers = new Map<string, EventRouter>();
  private readonly tables = new Map<number, PortTable>();
  private readonly wakeups: WakeupSender;
  /** The peer handle each of our ports last signalled, so its FIFO can be closed with the port. */
  private readonly peerHandles = new Map<string, number>();

  private constructor(private readonly files: SimFiles) {
    this.wakeups = new WakeupSender(files.wakeup);
  }

  static for(files: SimFiles): EventRouter {
    let router = EventRouter.routers.get(files.directory);
    if (!router) {
      router = new EventRouter(files);
      EventRouter.routers.set(files.directory, router);
    }
    return router;
  }

  /** EVTCHNOP_send from (domid, port). */
  send(domid: number, port: number): void {
    const handle = signalPort((id) => this.table(id), this.wakeups, domid, port);
    if (handle !== null) this.peerHandles.set(`${domid}:${port}`, handle);
  }

  /**
   * (domid, port) is about to be closed: close our cached FIFO to its peer's handle, which
   * nothing here will signal through this port again (the cache would otherwise keep it open).
   */
  closing(domid: number, port: number): void {
    const key = `${domid}:${port}`;
    const handle = this.peerHandles.get(key);
    if (handle === undefined) return;
    this.peerHandles.delete(key);
    this.wakeups.forget(handle);
  }

  /** The owner of (domid, port) took its wake-up; the next send must wake it again. */
  taken(domid: number, port: number): void {
    this.table(domid).clearPending(port);
  }

  private table(domid: number): PortTable {
    let table = this.tables.get(domid);
    if (!table) {
      table = PortTable.map(this.files.portTable(domid));
      this.tables.set(domid, table);
    }
    return table;
  }
}
