import { SimFailure } from '../failure.js';
import type { SimFiles } from '../paths.js';
import { PROTOCOL_VERSION, type Operation, type Replies, type Requests } from '../protocol.js';
import { DomainDestruction, type DomainXenStore } from './domain-destroy.js';
import { DomainTable } from './domains.js';
import { EventChannels } from './event-channels.js';
import { GntallocDevice } from './gntalloc.js';
import { GntdevDevice } from './gntdev.js';
import { GrantTable } from './grant-table.js';
import { HandleTable, mapsBeforeEventChannels, type Client, type Ending, type Handle } from './handles.js';
import { checkRequest } from './requests.js';
import { forEachSettled } from './settled.js';
import { simulationStatus } from './status.js';
import { UnmapNotifications } from './unmap-notify.js';

/** The calls the hypervisor serves: all but `stop`, which the daemon answers itself (main.ts). */
type ServedOperation = Exclude<Operation, 'stop'>;

/** How each call is served: the compiler checks that every operation of protocol.ts has its entry. */
type Operations = { [Op in ServedOperation]: (client: Client, request: Requests[Op]) => Replies[Op] };

/**
 * The simulated hypervisor and kernel drivers, composed: the grant table with gntalloc and gntdev
 * on it, event channels, unmap notifications, domains. Everything here runs in the daemon, one call
 * at a time, so it needs no locks; only sending events happens in the processes themselves.
 */
export class Hypervisor {
  /** Every connected client, handles or not: a domain's destruction must find all its processes. */
  private readonly clients = new Set<Client>();
  private readonly grants = new GrantTable();
  private readonly domains: DomainTable;
  private readonly handles: HandleTable;
  private readonly events: EventChannels;
  private readonly gntalloc: GntallocDevice;
  private readonly gntdev: GntdevDevice;
  private readonly destruction: DomainDestruction;

  private readonly operations: Operations = {
    hello: (client, request) => this.hello(client, request),
    'gntalloc.open': (client, request) => this.gntalloc.open(client, request),
    'gntalloc.alloc': (client, request) => this.gntalloc.alloc(client, request),
    'gntalloc.setUnmapNotify': (client, request) => this.gntalloc.setUnmapNotify(client, request),
    'gntalloc.release': (client, request) => this.gntalloc.release(client, request),
    'gntalloc.setLimit': (_client, request) => this.gntalloc.setLimit(request),
    'gntalloc.getLimit': (_client, request) => this.gntalloc.getLimit(request),
    'gntdev.open': (client, request) => this.gntdev.open(client, request),
    'gntdev.map': (client, request) => this.gntdev.map(client, request),
    'gntdev.setUnmapNotify': (client, request) => this.gntdev.setUnmapNotify(client, request),
    'gntdev.unmap': (client, request) => this.gntdev.unmap(client, request),
    'gntdev.resolveCopy': (client, request) => this.gntdev.resolveCopy(client, request),
    'evtchn.open': (client, request) => this.events.open(client, request),
    'evtchn.bindUnbound': (client, request) => this.events.bindUnbound(client, request),
    'evtchn.bindInterdomain': (client, request) => this.events.bindInterdomain(client, request),
    'evtchn.unbind': (client, request) => this.events.unbind(client, request),
    'evtchn.restrict': (client, request) => this.events.restrict(client, request),
    close: (client, request) => this.close(client, request),
    'domain.destroy': (client, request) => this.destruction.destroy(client, request),
    status: () => simulationStatus(this.files.directory, this.domains, this.handles, this.grants),
  };

  constructor(
    private readonly files: SimFiles,
    xenstore: DomainXenStore | null = null,
  ) {
    let nextId = 1;
    const newId = () => nextId++;
    this.domains = new DomainTable(files, (domid) => this.grants.hasOrphaned(domid));
    this.handles = new HandleTable(this.domains, newId);
    this.events = new EventChannels(files, this.domains, this.handles);
    const grantParts = {
      domains: this.domains,
      handles: this.handles,
      grants: this.grants,
      notifications: new UnmapNotifications(this.events),
      nextId: newId,
    };
    this.gntalloc = new GntallocDevice(files, grantParts);
    this.gntdev = new GntdevDevice(grantParts);
    const closeHandle = (handle: Handle, ending: Ending) => this.closeHandle(handle, ending);
    this.destruction = new DomainDestruction(this.domains, this.handles, this.grants, this.clients, xenstore, closeHandle);
  }

  /** Runs one call from a client; every field is checked first (requests.ts), whatever the sender. */
  handle(client: Client, op: string, request: unknown): unknown {
    this.clients.add(client);
    if (client.killed) throw new SimFailure('ESRCH', 'this process was killed with its domain; it cannot act any more');
    const call = checkRequest(op, request);
    if (call.op === 'stop') throw new SimFailure('ENOSYS', `operation ${call.op} is not served by the hypervisor`);
    return this.serve(client, call.op, call.request);
  }

  /**
   * The process behind `client` is gone: release what it held, maps before event channels. Every
   * handle is closed even if one fails (its state may be broken); the first failure is rethrown.
   */
  clientGone(client: Client): void {
    this.clients.delete(client);
    const handles = [...client.handles].map((id) => this.handles.byId.get(id)).filter((handle) => handle !== undefined);
    forEachSettled(mapsBeforeEventChannels(handles), (handle) => this.closeHandle(handle));
  }

  /** A process acts as `domid` in XenStore: a destroyed domain lives again (a new domain with that id). */
  domainActive(domid: number): void {
    const domain = this.domains.seen.get(domid);
    if (domain) domain.destroyed = false;
  }

  shutdown(): void {
    this.events.shutdown();
    this.domains.unmapAll();
  }

  private serve<Op extends ServedOperation>(client: Client, op: Op, request: Requests[Op]): Replies[Op] {
    return this.operations[op](client, request);
  }

  private hello(client: Client, { pid, version }: Requests['hello']): Replies['hello'] {
    if (version !== PROTOCOL_VERSION) {
      throw new SimFailure(
        'ESIMVERSION',
        `the sim daemon (pid ${process.pid}) of ${this.files.directory} speaks protocol ${PROTOCOL_VERSION}, this process ${version}: ` +
          `another version of xen-vchan started it. Stop it (kill ${process.pid}) or use another XEN_VCHAN_SIM_DIR.`,
      );
    }
    client.pid = pid;
    return { daemonPid: process.pid };
  }

  private close(client: Client, request: Requests['close']): Replies['close'] {
    this.closeHandle(this.handles.ownedBy(client, request.handle));
    return null;
  }

  /** Closes a handle and all it holds; even if a part fails (rethrown), the rest is released and the handle is gone. */
  private closeHandle(handle: Handle, ending: Ending = 'process'): void {
    try {
      switch (handle.kind) {
        case 'gntalloc':
          this.gntalloc.closeHandle(handle, ending);
          break;
        case 'gntdev':
          this.gntdev.closeHandle(handle, ending);
          break;
        case 'evtchn':
          this.events.closeHandle(handle);
          break;
      }
    } finally {
      this.handles.remove(handle);
    }
  }
}
