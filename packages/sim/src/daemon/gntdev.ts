import { GrantStatus, PAGE_SIZE } from '@xen-vchan/native';
import { SimFailure } from '../failure.js';
import type { Replies, Requests } from '../protocol.js';
import { pageOf, type GrantDriverParts, type Mapping } from './grant-table.js';
import type { Client, Ending, HandleOf } from './handles.js';
import { forEachSettled, runAll } from './settled.js';

/**
 * Linux's gntdev driver: a domain maps pages other domains granted it, may ask for an unmap
 * notification on a mapping, and copies through grants (GNTTABOP_copy).
 */
export class GntdevDevice {
  constructor(private readonly parts: GrantDriverParts) {}

  open(client: Client, { domid }: Requests['gntdev.open']): Replies['gntdev.open'] {
    return { handle: this.parts.handles.add({ kind: 'gntdev', id: 0, client, domid, mappings: new Map() }).id };
  }

  map(client: Client, request: Requests['gntdev.map']): Replies['gntdev.map'] {
    const handle = this.parts.handles.of(client, request.handle, 'gntdev');
    if (request.grants.length === 0) throw new SimFailure('EINVAL', 'no grant references given');
    const grants = request.grants.map(({ domid, ref }) => {
      const grant = this.parts.grants.find(domid, ref);
      // Xen refuses these in the map hypercall; Linux reports any refusal as EINVAL from mmap.
      if (!grant || (grant.released && grant.mappers === 0)) {
        throw new SimFailure('EINVAL', `grant ${ref} of domain ${domid} does not exist`);
      }
      // Xen cannot pin a page of a dying domain for a new mapping; existing ones stay.
      if (grant.orphaned) throw new SimFailure('EINVAL', `grant ${ref} of domain ${domid} belongs to a destroyed domain`);
      if (grant.grantee !== handle.domid) {
        throw new SimFailure('EINVAL', `grant ${ref} of domain ${domid} is for domain ${grant.grantee}, not ${handle.domid}`);
      }
      if (request.writable && !grant.writable) {
        throw new SimFailure('EINVAL', `grant ${ref} of domain ${domid} is read-only; map it read-only`);
      }
      return grant;
    });
    for (const grant of grants) grant.mappers++;
    const mapping: Mapping = { id: this.parts.nextId(), grants, writable: request.writable, notify: null };
    handle.mappings.set(mapping.id, mapping);
    return { mapping: mapping.id, pages: grants.map(pageOf) };
  }

  setUnmapNotify(client: Client, request: Requests['gntdev.setUnmapNotify']): Replies['gntdev.setUnmapNotify'] {
    const handle = this.parts.handles.of(client, request.handle, 'gntdev');
    const mapping = mappingOf(handle, request.mapping);
    const grant = mapping.grants[Math.floor(request.offset / PAGE_SIZE)];
    if (!grant || request.offset < 0) throw new SimFailure('EINVAL', `offset ${request.offset} is outside the mapping`);
    if (request.clearByte && !mapping.writable) throw new SimFailure('EINVAL', 'cannot clear a byte in a read-only mapping');
    const { file, offset } = pageOf(grant);
    this.parts.notifications.set(mapping, handle.domid, { ...request, file, offset: offset + (request.offset % PAGE_SIZE) });
    return null;
  }

  unmap(client: Client, request: Requests['gntdev.unmap']): Replies['gntdev.unmap'] {
    const handle = this.parts.handles.of(client, request.handle, 'gntdev');
    this.unmapMapping(handle, mappingOf(handle, request.mapping), 'process');
    return null;
  }

  resolveCopy(client: Client, request: Requests['gntdev.resolveCopy']): Replies['gntdev.resolveCopy'] {
    const handle = this.parts.handles.of(client, request.handle, 'gntdev');
    const grant = this.parts.grants.find(request.domid, request.ref);
    // Xen looks the domain up before the grant, and refuses a dying domain's pinned grant as well.
    if (grant?.orphaned || this.parts.domains.seen.get(request.domid)?.destroyed) return { status: GrantStatus.badDomain };
    if (!grant || (grant.released && grant.mappers === 0)) return { status: GrantStatus.badGntref };
    if (grant.grantee !== handle.domid || (request.write && !grant.writable)) return { status: GrantStatus.permissionDenied };
    return { status: GrantStatus.okay, page: pageOf(grant) };
  }

  /** Unmaps every mapping of the handle, each even if another fails. */
  closeHandle(handle: HandleOf<'gntdev'>, ending: Ending): void {
    forEachSettled([...handle.mappings.values()], (mapping) => this.unmapMapping(handle, mapping, ending));
  }

  private unmapMapping(handle: HandleOf<'gntdev'>, mapping: Mapping, ending: Ending): void {
    handle.mappings.delete(mapping.id);
    const notify = mapping.notify;
    mapping.notify = null;
    runAll(
      () => this.parts.notifications.end(notify, ending),
      () =>
        forEachSettled(mapping.grants, (grant) => {
          grant.mappers--;
          this.parts.grants.freeIfUnused(grant);
        }),
    );
  }
}

function mappingOf(handle: HandleOf<'gntdev'>, id: number): Mapping {
  const mapping = handle.mappings.get(id);
  if (!mapping) throw new SimFailure('EINVAL', `no mapping ${id} on this handle`);
  return mapping;
}
