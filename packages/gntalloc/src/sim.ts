import { explained, invalidArgument, PAGE_SIZE } from '@xen-vchan/native';
import { mapPages, SimConnection, simDomid, unmapPages } from '@xen-vchan/sim';
import { gntallocAdvice } from './advice.js';
import { checkNotifyOffset, checkOpen, checkShareArguments } from './checks.js';
import type { Gntalloc, GntallocOptions, SharedPages, UnmapNotifyOptions } from './interface.js';

class SimSharedPages implements SharedPages {
  released = false;

  constructor(
    private readonly device: SimGntalloc,
    readonly domid: number,
    readonly writable: boolean,
    readonly refs: readonly number[],
    readonly buffer: ArrayBuffer,
    readonly allocation: number,
  ) {}

  setUnmapNotify(options: UnmapNotifyOptions): void {
    if (this.released) throw invalidArgument('these pages were released');
    checkNotifyOffset(options.offset, this.refs.length);
    this.device.call('gntalloc setUnmapNotify', 'gntalloc.setUnmapNotify', {
      allocation: this.allocation,
      offset: options.offset,
      clearByte: options.clearByte ?? true,
      port: options.port ?? null,
    });
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.device.forget(this);
    unmapPages(this.buffer);
    this.device.call('gntalloc release', 'gntalloc.release', { allocation: this.allocation });
  }
}

export class SimGntalloc implements Gntalloc {
  readonly backend = 'sim' as const;
  readonly domid: number;
  private readonly connection: SimConnection;
  private handle: number;
  private readonly shares = new Set<SimSharedPages>();

  constructor(options: GntallocOptions) {
    this.domid = simDomid(options.domid);
    this.connection = SimConnection.open(options.simDirectory);
    this.handle = explained('open simulated gntalloc', () => this.connection.call('gntalloc.open', { domid: this.domid }).handle);
  }

  /** One control call on this handle, its errors explained as `operation`. */
  call(operation: string, op: 'gntalloc.alloc' | 'gntalloc.setUnmapNotify' | 'gntalloc.release', request: Record<string, unknown>): unknown {
    checkOpen(this.handle);
    return explained(operation, () => this.connection.call(op, { handle: this.handle, ...request } as never), this.advise);
  }

  share(domid: number, pages: number, options: { writable?: boolean } = {}): SharedPages {
    checkShareArguments(this.handle, domid, pages);
    const writable = options.writable ?? true;
    const { allocation, refs, file } = this.call('gntalloc share', 'gntalloc.alloc', { domid, count: pages, writable }) as {
      allocation: number;
      refs: number[];
      file: string;
    };
    let buffer: ArrayBuffer;
    try {
      buffer = mapPages(
        refs.map((_, page) => ({ file, offset: page * PAGE_SIZE })),
        true,
      );
    } catch (error) {
      this.call('gntalloc release', 'gntalloc.release', { allocation });
      throw error;
    }
    const shared = new SimSharedPages(this, domid, writable, refs, buffer, allocation);
    this.shares.add(shared);
    return shared;
  }

  limit(): { limit: number; used: number | null } {
    return this.connection.call('gntalloc.getLimit', { domid: this.domid });
  }

  /** Simulation only: the per-domain limit, as root would write /sys/module/xen_gntalloc/parameters/limit. */
  setLimit(limit: number): void {
    explained('gntalloc setLimit', () => this.connection.call('gntalloc.setLimit', { domid: this.domid, limit }));
  }

  forget(shared: SimSharedPages): void {
    this.shares.delete(shared);
  }

  close(): void {
    if (this.handle < 0) return;
    for (const shared of [...this.shares]) shared.release();
    this.connection.call('close', { handle: this.handle });
    this.handle = -1;
  }

  private readonly advise = (code: string) =>
    gntallocAdvice(code, () => {
      const { limit, used } = this.limit();
      return `The simulated gntalloc limit of domain ${this.domid} is ${limit} pages (${used} in use). Release shares you no longer need, or raise it with setLimit() or XEN_VCHAN_SIM_GNTALLOC_LIMIT (read when the sim daemon starts).`;
    });
}
