import { PortState } from '../port-table.js';
import type { SimStatus } from '../protocol.js';
import type { DomainTable } from './domains.js';
import type { GrantTable } from './grant-table.js';
import type { HandleTable } from './handles.js';

/** What `vchan sim status` shows: the clients with open handles, every domain, grant and bound port. */
export function simulationStatus(directory: string, domains: DomainTable, handles: HandleTable, grants: GrantTable): SimStatus {
  const clients = new Set([...handles.byId.values()].map((handle) => handle.client));
  const ports: SimStatus['ports'] = [];
  for (const domain of domains.seen.values()) {
    for (const port of domain.usedPorts) {
      const entry = domain.ports.read(port);
      ports.push({
        domid: domain.domid,
        port,
        state: entry.state === PortState.Interdomain ? 'interdomain' : 'unbound',
        remoteDomain: entry.remoteDomain,
        remotePort: entry.remotePort,
      });
    }
  }
  return {
    daemonPid: process.pid,
    directory,
    clients: [...clients].map((client) => ({ pid: client.pid, handles: client.handles.size })),
    domains: [...domains.seen.values()].map((domain) => ({
      domid: domain.domid,
      state: domains.stateOf(domain),
      grants: domain.grantsInUse,
      limit: domain.limit,
      ports: domain.usedPorts.size,
    })),
    grants: [...grants.all()].map((grant) => ({
      domid: grant.domid,
      ref: grant.ref,
      grantee: grant.grantee,
      writable: grant.writable,
      mappedBy: grant.mappers,
      released: grant.released,
    })),
    ports,
  };
}
