import { explained, PAGE_SIZE, PageSets } from '@xen-vchan/native';
import { mapPages, SimConnection, simDomid, unmapPages, type SimHandleRequest, type SimReplies } from '@xen-vchan/sim';
import { gntallocAdvice } from './advice.js';
import { checkOpen, checkShareArguments } from './checks.js';
import type { Gntalloc, GntallocOptions, SharedPages } from './interface.js';

export class SimGntalloc implements Gntalloc {
  readonly backend = 'sim' as const;
  readonly domid: number;
  private readonly connection: SimConnection;
  private handle: number;
  private readonly shares = new PageSets(unmapPages);

  constructor(options: GntallocOptions) {
    this.domid = simDomid(options.domid);
    this.connection = SimConnection.open(options.simDirectory);
    this.handle = explained('open simulated gntalloc', () => this.connection.call('gntalloc.open', { domid: this.domid }).handle);
  }

  share(domid: number, pages: number, options: { writable?: boolean } = {}): SharedPages {
    checkShareArguments(this.handle, domid, pages);
    const writable = options.writable ?? true;
    const { allocation, refs, file } = this.call('gntalloc share', 'gntalloc.alloc', { domid, count: pages, writable });
    return this.shares.add(
      { domid, refs, writable },
      {
        map: () =>
          mapPages(
            refs.map((_, page) => ({ file, offset: page * PAGE_SIZE })),
            true,
          ),
        setUnmapNotify: (offset, clearByte, port) =>
          this.call('gntalloc setUnmapNotify', 'gntalloc.setUnmapNotify', { allocation, offset, clearByte, port: port ?? null }),
        end: () => this.call('gntalloc release', 'gntalloc.release', { allocation }),
      },
    );
  }

  limit(): { limit: number; used: number | null } {
    return this.connection.call('gntalloc.getLimit', { domid: this.domid });
  }

  /** Simulation only: the per-domain limit, as root would write /sys/module/xen_gntalloc/parameters/limit. */
  setLimit(limit: number): void {
    explained('gntalloc setLimit', () => this.connection.call('gntalloc.setLimit', { domid: this.domid, limit }));
  }

  close(): void {
    if (this.handle < 0) return;
    this.shares.releaseAll();
    this.connection.call('close', { handle: this.handle });
    this.handle = -1;
  }

  /** One control call on this handle, its errors explained as `operation`. */
  private call<Op extends 'gntalloc.alloc' | 'gntalloc.setUnmapNotify' | 'gntalloc.release'>(
    operation: string,
    op: Op,
    request: SimHandleRequest<Op>,
  ): SimReplies[Op] {
    checkOpen(this.handle);
    return explained(operation, () => this.connection.callOnHandle(op, this.handle, request), this.advise);
  }

  private readonly advise = (code: string) =>
    gntallocAdvice(code, () => {
      const { limit, used } = this.limit();
      return `The simulated gntalloc limit of domain ${this.domid} is ${limit} pages (${used} in use). Release shares you no longer need, or raise it with setLimit() or XEN_VCHAN_SIM_GNTALLOC_LIMIT (read when the sim daemon starts).`;
    });
}
