import { closeSync, ftruncateSync, openSync } from 'node:fs';
import type { SimFiles } from '../paths.js';
import { PortTable, TABLE_BYTES } from '../port-table.js';
import type { SimDomainState } from '../protocol.js';

const DEFAULT_GNTALLOC_LIMIT = 1024;

/** What the simulated hypervisor and drivers keep per domain. */
export interface Domain {
  domid: number;
  /** gntalloc's page limit, and the pages counted against it. */
  limit: number;
  grantsInUse: number;
  nextRef: number;
  ports: PortTable;
  usedPorts: Set<number>;
  /**
   * Destroyed, and no process has acted as it since. The entry stays: every process keeps the
   * domain's port table mapped, so a later incarnation must reuse it.
   */
  destroyed: boolean;
}

/**
 * The domains the simulation has seen. There is no toolstack to create them: a domain comes into
 * being (with its event-channel table file) the first time anything names it.
 */
export class DomainTable {
  private readonly domains = new Map<number, Domain>();
  /** The domains seen so far, to look one up without making it. */
  readonly seen: ReadonlyMap<number, Domain> = this.domains;

  constructor(
    private readonly files: SimFiles,
    /** True while others still map a grant of the destroyed domain `domid` (grant-table.ts). */
    private readonly hasOrphanedGrants: (domid: number) => boolean,
  ) {}

  /** Domain `domid`, made on first use. */
  get(domid: number): Domain {
    let domain = this.domains.get(domid);
    if (!domain) {
      const file = this.files.portTable(domid);
      const fd = openSync(file, 'w+', 0o600);
      try {
        ftruncateSync(fd, TABLE_BYTES);
      } finally {
        closeSync(fd);
      }
      domain = {
        domid,
        limit: defaultGntallocLimit(),
        grantsInUse: 0,
        nextRef: 8, // Xen keeps the first refs for the guest's own frontends
        ports: PortTable.map(file),
        usedPorts: new Set(),
        destroyed: false,
      };
      this.domains.set(domid, domain);
    }
    return domain;
  }

  stateOf(domain: Domain): SimDomainState {
    if (!domain.destroyed) return 'live';
    return this.hasOrphanedGrants(domain.domid) ? 'zombie' : 'gone';
  }

  /** Unmaps every port table the daemon holds, as it stops. */
  unmapAll(): void {
    for (const domain of this.domains.values()) domain.ports.unmap();
  }
}

/** gntalloc's per-domain page limit: XEN_VCHAN_SIM_GNTALLOC_LIMIT if set to a count, else 1024. */
export function defaultGntallocLimit(): number {
  const configured = Number(process.env.XEN_VCHAN_SIM_GNTALLOC_LIMIT);
  return Number.isInteger(configured) && configured >= 0 && process.env.XEN_VCHAN_SIM_GNTALLOC_LIMIT ? configured : DEFAULT_GNTALLOC_LIMIT;
}
