import { invalidArgument } from './errors.js';

/** Size of a Xen page; grants and mappings are counted in these. */
export const PAGE_SIZE = 4096;

/**
 * Grant-operation results as Xen's grant_table.h numbers them (GNTST_*): what gntdev's grant copy
 * reports per segment on Xen, and what the simulated hypervisor answers in their place.
 */
export const GrantStatus = {
  okay: 0,
  generalError: -1,
  badDomain: -2,
  badGntref: -4,
  permissionDenied: -8,
  badCopyArg: -10,
} as const;

/**
 * The action bits of gntalloc's and gntdev's SET_UNMAP_NOTIFY ioctl (UNMAP_NOTIFY_CLEAR_BYTE,
 * UNMAP_NOTIFY_SEND_EVENT in the kernel's uapi), for a notification that clears the byte or not
 * and sends an event on `port` if one is given.
 */
export function unmapNotifyAction(clearByte: boolean, port: number | undefined): number {
  return (clearByte ? 1 : 0) | (port === undefined ? 0 : 2);
}

/**
 * The device calls behind one set of pages, as one backend makes them: the pages gntalloc shares
 * or the grants gntdev maps. `map` runs once, when the set is added; `end` runs once, at release
 * (after unmap), or at once if `map` failed.
 */
export interface PageCalls {
  /** Maps the pages into this process. */
  map(): ArrayBuffer;
  /** Registers the unmap notification; the offset was checked. No `port`: no event. */
  setUnmapNotify(offset: number, clearByte: boolean, port: number | undefined): void;
  /** Ends this side's hold on the pages: gntalloc's grants, or gntdev's mapping slots. */
  end(): void;
}

/**
 * Pages mapped here that another domain shares with us or we share with it: gntalloc's
 * SharedPages and gntdev's GrantMapping, on either backend. The rules both devices keep live
 * here: one release, which unmaps (detaching the buffer) before the device lets go, and unmap
 * notifications only on pages still held, at a byte inside them.
 */
export class MappedPages {
  private isReleased = false;

  constructor(
    readonly domid: number,
    readonly refs: readonly number[],
    readonly writable: boolean,
    readonly buffer: ArrayBuffer,
    private readonly calls: PageCalls,
    private readonly sets: PageSets,
  ) {}

  get released(): boolean {
    return this.isReleased;
  }

  setUnmapNotify(options: { offset: number; clearByte?: boolean; port?: number }): void {
    if (this.isReleased) throw invalidArgument('these pages were released');
    const bytes = this.refs.length * PAGE_SIZE;
    const { offset } = options;
    if (!Number.isInteger(offset) || offset < 0 || offset >= bytes) {
      throw invalidArgument(`offset must be a byte inside the ${bytes} mapped bytes, got ${offset}`);
    }
    this.calls.setUnmapNotify(offset, options.clearByte ?? true, options.port);
  }

  /** Idempotent. */
  release(): void {
    if (this.isReleased) return;
    this.isReleased = true;
    // Unmapped first, detaching the buffer: no view can reach the pages once the device lets go.
    this.sets.unmapAndForget(this);
    this.calls.end();
  }
}

/**
 * The page sets one gntalloc or gntdev handle holds, so that its close() releases them first,
 * as closing the device would. `unmap` is the backend's munmap of a buffer it mapped (detaching
 * the buffer, so no view can reach the pages once they are gone).
 */
export class PageSets {
  private readonly held = new Set<MappedPages>();

  constructor(private readonly unmap: (buffer: ArrayBuffer) => void) {}

  /**
   * Maps pages the device has just shared or reserved and holds them until released. If they
   * cannot be mapped, the device's hold ends at once (nothing is left half made) and the mapping's
   * error is thrown.
   */
  add(pages: { domid: number; refs: readonly number[]; writable: boolean }, calls: PageCalls): MappedPages {
    let buffer: ArrayBuffer;
    try {
      buffer = calls.map();
    } catch (error) {
      calls.end();
      throw error;
    }
    const mapped = new MappedPages(pages.domid, pages.refs, pages.writable, buffer, calls, this);
    this.held.add(mapped);
    return mapped;
  }

  /** For MappedPages.release(). */
  unmapAndForget(pages: MappedPages): void {
    this.held.delete(pages);
    this.unmap(pages.buffer);
  }

  /** Releases every set still held, for the handle's close(). */
  releaseAll(): void {
    for (const pages of [...this.held]) pages.release();
  }
}
