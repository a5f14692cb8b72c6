import { SimFailure } from '../failure.js';
import type { Requests, SimDomainDestroyed } from '../protocol.js';
import { defaultGntallocLimit, type DomainTable } from './domains.js';
import type { GrantTable } from './grant-table.js';
import { mapsBeforeEventChannels, type Client, type Ending, type Handle, type HandleTable } from './handles.js';
import { forEachSettled, runAll } from './settled.js';

/** What destroying a domain needs of the simulated xenstored (xenstore/server.ts). */
export interface DomainXenStore {
  /** Pids of the processes with a XenStore connection as `domid`. */
  processesOf(domid: number): number[];
  /** Closes the domain's connections (and the killed processes' others) and removes its nodes, as libxl and xenstored do. */
  destroyDomain(domid: number, killed: readonly number[]): { nodesRemoved: number; connectionsClosed: number };
}

/**
 * `xl destroy`: the domain ends at once, as a crash ends it. Its processes are killed; what its
 * kernel would have done on the way out (unmap notifications) never happens; Xen closes its
 * ports, which turns each peer's end back into an unbound port without an event; pages others
 * still map stay with them until they unmap (the domain lingers as a zombie until then); libxl
 * and xenstored clear its XenStore nodes and tell dom0 through @releaseDomain.
 */
export class DomainDestruction {
  constructor(
    private readonly domains: DomainTable,
    private readonly handles: HandleTable,
    private readonly grants: GrantTable,
    /** Every connected client, handles or not: a domain's destruction must find all its processes. */
    private readonly clients: ReadonlySet<Client>,
    private readonly xenstore: DomainXenStore | null,
    private readonly closeHandle: (handle: Handle, ending: Ending) => void,
  ) {}

  destroy(client: Client, { domid }: Requests['domain.destroy']): SimDomainDestroyed {
    if (domid === 0) {
      throw new SimFailure(
        'EPERM',
        'domain 0 cannot be destroyed: every other domain depends on it. Stop the simulation instead (vchan sim stop).',
      );
    }
    const handles = [...this.handles.byId.values()].filter((handle) => handle.domid === domid);
    const actors = new Set(
      [...handles.map((handle) => handle.client.peerPid), ...(this.xenstore?.processesOf(domid) ?? [])].filter((pid) => pid !== null),
    );
    if (handles.some((handle) => handle.client === client) || (client.peerPid !== null && actors.has(client.peerPid))) {
      throw new SimFailure(
        'EDEADLK',
        `this process acts as domain ${domid} (it opened a device or XenStore as it), and would be killed before it read the answer. ` +
          `Destroy the domain from another process, such as \`vchan sim destroy ${domid}\`.`,
      );
    }
    // Killed first, as Xen pauses a domain before tearing it down: nothing of its processes may
    // act after this call, not even a call they sent before they died.
    const killed = [...actors].filter(killProcess);
    for (const other of new Set([...this.clients, ...handles.map((handle) => handle.client)])) {
      if (other.peerPid !== null && killed.includes(other.peerPid)) other.killed = true;
    }
    const portsClosed = handles.reduce((count, handle) => count + (handle.kind === 'evtchn' ? handle.ports.size : 0), 0);
    let grantsStillMapped = 0;
    let xenstore = { nodesRemoved: 0, connectionsClosed: 0 };
    // Every step even if one fails (a page file removed by hand): a half-destroyed domain would
    // keep processes' state that nobody releases.
    runAll(
      () => forEachSettled(mapsBeforeEventChannels(handles), (handle) => this.closeHandle(handle, 'domain')),
      () => {
        const domain = this.domains.get(domid);
        domain.destroyed = true;
        domain.limit = defaultGntallocLimit();
        grantsStillMapped = this.grants.orphanDomain(domid);
      },
      () => {
        if (this.xenstore) xenstore = this.xenstore.destroyDomain(domid, killed);
      },
    );
    return {
      domid,
      killed,
      handlesClosed: handles.length,
      portsClosed,
      grantsStillMapped,
      xenstoreNodesRemoved: xenstore.nodesRemoved,
      xenstoreConnectionsClosed: xenstore.connectionsClosed,
    };
  }
}

/** SIGKILLs `pid`; false if there is no such process (any more) or it is not ours to kill. */
function killProcess(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}
