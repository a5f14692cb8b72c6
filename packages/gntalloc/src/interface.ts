import type { BackendName } from '@xen-vchan/native';

/** What to do when shared pages are let go (released, closed, or their process dies). */
export interface UnmapNotifyOptions {
  /** Byte offset inside the shared pages (0 .. pages*4096-1) of the byte to act on. */
  offset: number;
  /** Set that byte to 0. Default true. */
  clearByte?: boolean;
  /** Send an event on this local event-channel port, which must already be bound in this domain. */
  port?: number;
}

/**
 * Pages this domain shares with one other domain.
 *
 * `buffer` is the pages themselves, mapped here; the other domain sees every write at once. After
 * `release()` the buffer is detached (byteLength 0, views empty, Atomics on it throw): it never
 * points at freed memory. The grants stay valid for the other domain until it unmaps them too,
 * and until then they count against the gntalloc limit.
 */
export interface SharedPages {
  /** The domain that may map these pages. */
  readonly domid: number;
  readonly writable: boolean;
  /** One grant reference per page, to hand to the other domain. */
  readonly refs: readonly number[];
  readonly buffer: ArrayBuffer;
  readonly released: boolean;
  /** At most one per page; a later call for the same page replaces the earlier one. */
  setUnmapNotify(options: UnmapNotifyOptions): void;
  /** Unmaps the pages and ends the grants (idempotent). Fires the unmap notifications. */
  release(): void;
}

/**
 * An open gntalloc device: /dev/xen/gntalloc (XenGntalloc) or the simulation (SimGntalloc). Both
 * backends keep this contract alike, and test/conformance/gntalloc.test.ts holds them to it on
 * each. Every call on a closed handle throws EBADF; arguments either backend would refuse throw
 * ERR_INVALID_ARG_VALUE before the device is asked; the device's refusals are XenVchanErrors
 * whose `code` is the errno name Linux gives, with a message that says what to do.
 */
export interface Gntalloc {
  readonly backend: BackendName;
  /** The domain this handle acts as: on Xen, the caller's own domain is not known here (null). */
  readonly domid: number | null;
  /**
   * Shares `pages` zeroed pages with domain `domid`, writable by it unless `writable: false`.
   * Throws ENOSPC when the domain's gntalloc limit would be exceeded; the message names the limit.
   */
  share(domid: number, pages: number, options?: { writable?: boolean }): SharedPages;
  /** The limit on pages shared by this domain at once, and how many are in use (sim: exact; Xen: limit only). */
  limit(): { limit: number; used: number | null };
  /** Releases every share of this handle, then closes it (idempotent). */
  close(): void;
}

export interface GntallocOptions {
  /** 'auto' (default): 'xen' when /dev/xen/gntalloc exists, else 'sim'. XEN_VCHAN_BACKEND overrides auto. */
  backend?: 'auto' | BackendName;
  /** Simulation only: the domain this handle acts as (default XEN_VCHAN_SIM_DOMID, else 0). */
  domid?: number;
  /** Simulation only: the state folder (default XEN_VCHAN_SIM_DIR, else /dev/shm/xen-vchan-sim-<uid>). */
  simDirectory?: string;
}

export const GNTALLOC_DEVICE = '/dev/xen/gntalloc';
