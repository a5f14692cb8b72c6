import { rmSync } from 'node:fs';
import { DOMID_FIRST_RESERVED } from '@xen-vchan/native';
import { addon } from '../addon.js';
import { SimFailure } from '../failure.js';
import type { SimFiles } from '../paths.js';
import { MAX_PORTS, PortState, signalPort, WakeupSender } from '../port-table.js';
import type { Replies, Requests } from '../protocol.js';
import type { Domain, DomainTable } from './domains.js';
import type { Client, HandleOf, HandleTable } from './handles.js';
import { forEachSettled, runAll } from './settled.js';

/**
 * Xen's event channels and Linux's evtchn driver: binding and closing ports in each domain's
 * port table. Sending happens in the processes themselves (port-table.ts: signalPort); the daemon
 * sends only for the binder's first event and for unmap notifications.
 */
export class EventChannels {
  /** Unmap notifications that will send on a port keep it open, as Linux's evtchn_get does. */
  private readonly portHolds = new Map<string, number>();
  private readonly closingPorts = new Set<string>();
  private readonly wakeups: WakeupSender;

  constructor(
    private readonly files: SimFiles,
    private readonly domains: DomainTable,
    private readonly handles: HandleTable,
  ) {
    this.wakeups = new WakeupSender(files.wakeup);
  }

  open(client: Client, { domid }: Requests['evtchn.open']): Replies['evtchn.open'] {
    const handle = this.handles.add({ kind: 'evtchn', id: 0, client, domid, ports: new Set(), restrictedTo: null });
    this.domains.get(domid);
    const wakeup = this.files.wakeup(handle.id);
    addon.mkfifo(wakeup, 0o600);
    return { handle: handle.id, wakeup };
  }

  bindUnbound(client: Client, request: Requests['evtchn.bindUnbound']): Replies['evtchn.bindUnbound'] {
    const handle = this.handles.of(client, request.handle, 'evtchn');
    // As Linux: a restricted handle may only bind interdomain, never offer a port.
    if (handle.restrictedTo !== null)
      throw new SimFailure('EACCES', `this handle is restricted to domain ${handle.restrictedTo}: it may not offer ports`);
    const domain = this.domains.get(handle.domid);
    const port = freePort(domain);
    domain.ports.write(port, { state: PortState.Unbound, remoteDomain: request.remoteDomain, remotePort: 0, owner: handle.id });
    // A fresh port starts with no event pending, as in Xen. A sender racing the close of this
    // port's previous binding may have set PENDING after the close cleared it; left set, it would
    // swallow the new peer's first event (nobody is woken for a port already pending). Nobody can
    // signal an unbound port, so clearing after the state is written loses nothing.
    domain.ports.clearPending(port);
    handle.ports.add(port);
    return { port };
  }

  bindInterdomain(client: Client, request: Requests['evtchn.bindInterdomain']): Replies['evtchn.bindInterdomain'] {
    const handle = this.handles.of(client, request.handle, 'evtchn');
    if (handle.restrictedTo !== null && handle.restrictedTo !== request.remoteDomain) {
      throw new SimFailure('EACCES', `this handle is restricted to domain ${handle.restrictedTo}`);
    }
    const remotePort = request.remotePort;
    const remoteDomain = this.domains.seen.get(request.remoteDomain);
    // Xen looks the remote domain up first. A zombie is still found (and has no port to offer).
    // A domain the sim never saw may well exist (there is no toolstack to say), so it is not ESRCH.
    if (remoteDomain && this.domains.stateOf(remoteDomain) === 'gone') {
      throw new SimFailure('ESRCH', `domain ${request.remoteDomain} does not exist (it was destroyed)`);
    }
    if (remotePort === 0) throw new SimFailure('EINVAL', 'port 0 is reserved in every domain; it is never offered');
    const remote = remoteDomain && remotePort < MAX_PORTS ? remoteDomain.ports.read(remotePort) : null;
    if (!remote || remote.state !== PortState.Unbound || remote.remoteDomain !== handle.domid) {
      throw new SimFailure('EINVAL', `port ${remotePort} of domain ${request.remoteDomain} is not offered to domain ${handle.domid}`);
    }
    const domain = this.domains.get(handle.domid);
    const port = freePort(domain);
    // As for bindUnbound: no stale PENDING on either end of the new channel (none of its events
    // can have been sent yet: a sender needs both entries to point at each other).
    domain.ports.clearPending(port);
    remoteDomain!.ports.clearPending(remotePort);
    domain.ports.write(port, { state: PortState.Interdomain, remoteDomain: request.remoteDomain, remotePort, owner: handle.id });
    remoteDomain!.ports.write(remotePort, {
      state: PortState.Interdomain,
      remoteDomain: handle.domid,
      remotePort: port,
      owner: remote.owner,
    });
    handle.ports.add(port);
    // Xen marks the binder's new port pending, so a binder always sees one event at once.
    if (domain.ports.markPending(port)) this.wakeups.wake(handle.id, port);
    return { port };
  }

  unbind(client: Client, request: Requests['evtchn.unbind']): Replies['evtchn.unbind'] {
    const handle = this.handles.of(client, request.handle, 'evtchn');
    if (!handle.ports.delete(request.port)) throw new SimFailure('ENOTCONN', `port ${request.port} is not bound by this handle`);
    this.closePort(handle.domid, request.port);
    return null;
  }

  restrict(client: Client, request: Requests['evtchn.restrict']): Replies['evtchn.restrict'] {
    const handle = this.handles.of(client, request.handle, 'evtchn');
    // As Linux: once only, and never to dom0 (or a reserved id).
    if (handle.restrictedTo !== null) throw new SimFailure('EACCES', `this handle is already restricted to domain ${handle.restrictedTo}`);
    if (request.domid === 0 || request.domid >= DOMID_FIRST_RESERVED)
      throw new SimFailure('EINVAL', `cannot restrict to domain ${request.domid}`);
    handle.restrictedTo = request.domid;
    return null;
  }

  /** Closes the handle's ports and its wake-up FIFO, each even if another fails. */
  closeHandle(handle: HandleOf<'evtchn'>): void {
    runAll(
      () => forEachSettled(handle.ports, (port) => this.closePort(handle.domid, port)),
      () => handle.ports.clear(),
      () => this.wakeups.forget(handle.id),
      () => rmSync(this.files.wakeup(handle.id), { force: true }),
    );
  }

  /** Keeps `port` of `domid` open for a notification that will send on it (evtchn_get); EINVAL if it is not bound. */
  hold(domid: number, port: number): void {
    const domain = this.domains.get(domid);
    const key = portKey(domid, port);
    if (!domain.usedPorts.has(port) || this.closingPorts.has(key)) {
      throw new SimFailure('EINVAL', `event channel port ${port} is not bound in domain ${domid}; bind it before asking for the event`);
    }
    this.portHolds.set(key, (this.portHolds.get(key) ?? 0) + 1);
  }

  /** Lets go of a hold (evtchn_put): a port its handle closed meanwhile closes with the last one. */
  release(domid: number, port: number): void {
    const key = portKey(domid, port);
    const holds = (this.portHolds.get(key) ?? 1) - 1;
    if (holds > 0) {
      this.portHolds.set(key, holds);
      return;
    }
    this.portHolds.delete(key);
    if (this.closingPorts.delete(key)) this.finishClosingPort(domid, port);
  }

  /** Sends an event on `port` of `domid` (EVTCHNOP_send). */
  signal(domid: number, port: number): void {
    signalPort((id) => this.domains.get(id).ports, this.wakeups, domid, port);
  }

  shutdown(): void {
    this.wakeups.closeAll();
  }

  private closePort(domid: number, port: number): void {
    const key = portKey(domid, port);
    if (this.portHolds.has(key)) {
      // An unmap notification will still send on it; Linux keeps the channel open until then.
      this.closingPorts.add(key);
      return;
    }
    this.finishClosingPort(domid, port);
  }

  /** EVTCHNOP_close: a connected peer's port goes back to unbound, offered to us again. */
  private finishClosingPort(domid: number, port: number): void {
    const domain = this.domains.get(domid);
    const entry = domain.ports.read(port);
    if (entry.state === PortState.Interdomain) {
      const peerTable = this.domains.get(entry.remoteDomain).ports;
      const peer = peerTable.read(entry.remotePort);
      if (peer.state === PortState.Interdomain && peer.remoteDomain === domid && peer.remotePort === port) {
        peerTable.write(entry.remotePort, { state: PortState.Unbound, remoteDomain: domid, remotePort: 0, owner: peer.owner });
      }
    }
    domain.ports.write(port, { state: PortState.Free, remoteDomain: 0, remotePort: 0, owner: 0 });
    domain.ports.clearPending(port);
    domain.usedPorts.delete(port);
  }
}

/** The lowest free port above 0, as Xen allocates them. */
function freePort(domain: Domain): number {
  for (let port = 1; port < MAX_PORTS; port++) {
    if (!domain.usedPorts.has(port)) {
      domain.usedPorts.add(port);
      return port;
    }
  }
  throw new SimFailure('ENOSPC', `all ${MAX_PORTS - 1} event-channel ports of domain ${domain.domid} are in use`);
}

function portKey(domid: number, port: number): string {
  return `${domid}:${port}`;
}
