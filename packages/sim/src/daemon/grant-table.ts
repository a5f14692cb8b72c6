import { unlinkSync } from 'node:fs';
import { PAGE_SIZE } from '@xen-vchan/native';
import type { PageLocation } from '../protocol.js';
import type { DomainTable } from './domains.js';
import type { HandleTable } from './handles.js';
import type { UnmapNotifications, UnmapNotify } from './unmap-notify.js';

/** Pages one gntalloc call shared: one file, a grant per page. */
export interface Allocation {
  id: number;
  file: string;
  grants: Grant[];
}

/** One granted page, by the granting domain and its ref. */
export interface Grant {
  domid: number;
  ref: number;
  grantee: number;
  writable: boolean;
  allocation: Allocation;
  page: number;
  mappers: number;
  released: boolean;
  /** Its domain was destroyed while others mapped it: it lives on only until they unmap. */
  orphaned: boolean;
  notify: UnmapNotify | null;
}

/** Grants one gntdev call mapped. */
export interface Mapping {
  id: number;
  grants: Grant[];
  writable: boolean;
  notify: UnmapNotify | null;
}

/** What the gntalloc and gntdev drivers work on, shared with the rest of the hypervisor. */
export interface GrantDriverParts {
  readonly domains: DomainTable;
  readonly handles: HandleTable;
  readonly grants: GrantTable;
  readonly notifications: UnmapNotifications;
  /** One sequence for handles, allocations and mappings. */
  readonly nextId: () => number;
}

/**
 * Xen's grant table, every domain's at once: what gntalloc granted and gntdev maps. A granted page
 * lives until its owner and every mapper let go.
 */
export class GrantTable {
  private readonly grants = new Map<string, Grant>();

  find(domid: number, ref: number): Grant | undefined {
    return this.grants.get(grantKey(domid, ref));
  }

  add(grant: Grant): void {
    this.grants.set(grantKey(grant.domid, grant.ref), grant);
  }

  /** The next ref no grant of `domain` uses. */
  freeRef(domain: { domid: number; nextRef: number }): number {
    while (this.grants.has(grantKey(domain.domid, domain.nextRef))) domain.nextRef++;
    return domain.nextRef++;
  }

  /** Ends `grant` if its owner released it and nobody maps it; the allocation's file goes with its last grant. */
  freeIfUnused(grant: Grant): void {
    if (!grant.released || grant.mappers > 0) return;
    if (!this.grants.delete(grantKey(grant.domid, grant.ref))) return;
    const allocation = grant.allocation;
    if (allocation.grants.every((other) => !this.grants.has(grantKey(other.domid, other.ref)))) {
      try {
        unlinkSync(allocation.file);
      } catch {
        /* already gone */
      }
    }
  }

  /** Domain `domid` was destroyed: its grants live on only while mapped. Returns how many were newly orphaned. */
  orphanDomain(domid: number): number {
    let orphaned = 0;
    for (const grant of this.grants.values()) {
      if (grant.domid !== domid || grant.orphaned) continue;
      grant.orphaned = true;
      orphaned++;
    }
    return orphaned;
  }

  hasOrphaned(domid: number): boolean {
    for (const grant of this.grants.values()) if (grant.domid === domid && grant.orphaned) return true;
    return false;
  }

  all(): Iterable<Grant> {
    return this.grants.values();
  }
}

/** Where a grant's page lies, for a process to map. */
export function pageOf(grant: Grant): PageLocation {
  return { file: grant.allocation.file, offset: grant.page * PAGE_SIZE };
}

function grantKey(domid: number, ref: number): string {
  return `${domid}:${ref}`;
}
