import { closeSync, ftruncateSync, openSync } from 'node:fs';
import { PAGE_SIZE } from '@xen-vchan/native';
import { SimFailure } from '../failure.js';
import type { SimFiles } from '../paths.js';
import type { Replies, Requests } from '../protocol.js';
import type { Allocation, Grant, GrantDriverParts } from './grant-table.js';
import type { Client, Ending, HandleOf } from './handles.js';
import { forEachSettled, runAll } from './settled.js';

/**
 * Linux's gntalloc driver: a domain shares pages (one file each allocation) with a grantee,
 * within its page limit, and may ask for an unmap notification on them.
 */
export class GntallocDevice {
  constructor(
    private readonly files: SimFiles,
    private readonly parts: GrantDriverParts,
  ) {}

  open(client: Client, { domid }: Requests['gntalloc.open']): Replies['gntalloc.open'] {
    return { handle: this.parts.handles.add({ kind: 'gntalloc', id: 0, client, domid, allocations: new Map() }).id };
  }

  alloc(client: Client, request: Requests['gntalloc.alloc']): Replies['gntalloc.alloc'] {
    const handle = this.parts.handles.of(client, request.handle, 'gntalloc');
    const domain = this.parts.domains.get(handle.domid);
    if (domain.grantsInUse + request.count > domain.limit) {
      throw new SimFailure(
        'ENOSPC',
        `gntalloc limit reached in domain ${domain.domid}: ${domain.grantsInUse} of ${domain.limit} pages in use, ${request.count} more asked`,
      );
    }
    const id = this.parts.nextId();
    const file = this.files.pageFile(handle.domid, id);
    const fd = openSync(file, 'wx', 0o600);
    try {
      ftruncateSync(fd, request.count * PAGE_SIZE);
    } finally {
      closeSync(fd);
    }
    const allocation: Allocation = { id, file, grants: [] };
    for (let page = 0; page < request.count; page++) {
      const grant: Grant = {
        domid: handle.domid,
        ref: this.parts.grants.freeRef(domain),
        grantee: request.domid,
        writable: request.writable,
        allocation,
        page,
        mappers: 0,
        released: false,
        orphaned: false,
        notify: null,
      };
      allocation.grants.push(grant);
      this.parts.grants.add(grant);
    }
    domain.grantsInUse += request.count;
    handle.allocations.set(id, allocation);
    return { allocation: id, refs: allocation.grants.map((grant) => grant.ref), file };
  }

  setUnmapNotify(client: Client, request: Requests['gntalloc.setUnmapNotify']): Replies['gntalloc.setUnmapNotify'] {
    const handle = this.parts.handles.of(client, request.handle, 'gntalloc');
    const allocation = allocationOf(handle, request.allocation);
    const grant = allocation.grants[Math.floor(request.offset / PAGE_SIZE)];
    if (!grant || request.offset < 0) throw new SimFailure('EINVAL', `offset ${request.offset} is outside the shared pages`);
    this.parts.notifications.set(grant, handle.domid, { ...request, file: allocation.file });
    return null;
  }

  release(client: Client, request: Requests['gntalloc.release']): Replies['gntalloc.release'] {
    const handle = this.parts.handles.of(client, request.handle, 'gntalloc');
    const allocation = allocationOf(handle, request.allocation);
    this.releaseAllocation(handle, allocation, 'process');
    return null;
  }

  setLimit({ domid, limit }: Requests['gntalloc.setLimit']): Replies['gntalloc.setLimit'] {
    this.parts.domains.get(domid).limit = limit;
    return null;
  }

  getLimit({ domid }: Requests['gntalloc.getLimit']): Replies['gntalloc.getLimit'] {
    const domain = this.parts.domains.get(domid);
    return { limit: domain.limit, used: domain.grantsInUse };
  }

  /** Releases every allocation of the handle, each even if another fails. */
  closeHandle(handle: HandleOf<'gntalloc'>, ending: Ending): void {
    forEachSettled([...handle.allocations.values()], (allocation) => this.releaseAllocation(handle, allocation, ending));
  }

  private releaseAllocation(handle: HandleOf<'gntalloc'>, allocation: Allocation, ending: Ending): void {
    handle.allocations.delete(allocation.id);
    forEachSettled(allocation.grants, (grant) => {
      grant.released = true;
      // Linux 6.1's gntalloc stops counting a page against the limit as soon as its owner lets
      // go, even while the peer still maps it (the hypervisor frees it later).
      this.parts.domains.get(grant.domid).grantsInUse--;
      const notify = grant.notify;
      grant.notify = null;
      runAll(
        () => this.parts.notifications.end(notify, ending),
        () => this.parts.grants.freeIfUnused(grant),
      );
    });
  }
}

function allocationOf(handle: HandleOf<'gntalloc'>, id: number): Allocation {
  const allocation = handle.allocations.get(id);
  if (!allocation) throw new SimFailure('EINVAL', `no allocation ${id} on this handle`);
  return allocation;
}
