import type { BackendName } from '@xen-vchan/native';

/** What to do when a mapping goes away (released, closed, or its process dies). */
export interface UnmapNotifyOptions {
  /** Byte offset inside the mapping of the byte to act on. */
  offset: number;
  /** Set that byte to 0 (writable mappings only). Default true. */
  clearByte?: boolean;
  /** Send an event on this local event-channel port, which must already be bound in this domain. */
  port?: number;
}

/**
 * Grants of another domain mapped here as one contiguous buffer.
 *
 * A read-only mapping is mapped PROT_READ: writing to it faults and kills the process, exactly
 * as on Xen, so only read from a read-only buffer. After `release()` the buffer is detached
 * (byteLength 0, views empty, Atomics on it throw): it never points at unmapped memory.
 */
export interface GrantMapping {
  readonly domid: number;
  readonly refs: readonly number[];
  readonly writable: boolean;
  readonly buffer: ArrayBuffer;
  readonly released: boolean;
  /** One per mapping; a later call replaces the earlier one. */
  setUnmapNotify(options: UnmapNotifyOptions): void;
  /** Unmaps (idempotent) and fires the unmap notification. */
  release(): void;
}

/** One end of a grant copy: local bytes, or a byte range of a grant. */
export type CopyEnd = Uint8Array | { domid: number; ref: number; offset: number };

export interface CopySegment {
  source: CopyEnd;
  dest: CopyEnd;
  /** Bytes to copy; a grant end may not cross its page. */
  length: number;
}

/**
 * An open gntdev device: /dev/xen/gntdev (XenGntdev) or the simulation (SimGntdev). Both backends
 * keep this contract alike, and test/conformance/gntdev.test.ts holds them to it on each. Every
 * call on a closed handle throws EBADF; arguments either backend would refuse throw
 * ERR_INVALID_ARG_VALUE before the device is asked; the device's refusals are XenVchanErrors
 * whose `code` is the errno name Linux gives, with a message that says what to do.
 */
export interface Gntdev {
  readonly backend: BackendName;
  readonly domid: number | null;
  /**
   * Maps `refs` granted by domain `domid`, in order, as one buffer of refs.length pages.
   * Writable unless `writable: false`; a read-only grant can only be mapped read-only.
   * Throws EINVAL when Xen refuses a grant (not ours, ended, or read-only).
   */
  map(domid: number, refs: readonly number[], options?: { writable?: boolean }): GrantMapping;
  /** Copies through the hypervisor without mapping. Returns one GrantStatus (GNTST_*) per segment. */
  grantCopy(segments: readonly CopySegment[]): number[];
  /** Releases every mapping of this handle, then closes it (idempotent). */
  close(): void;
}

export interface GntdevOptions {
  backend?: 'auto' | BackendName;
  /** Simulation only: the domain this handle acts as (default XEN_VCHAN_SIM_DOMID, else 0). */
  domid?: number;
  /** Simulation only: the state folder. */
  simDirectory?: string;
}

export const GNTDEV_DEVICE = '/dev/xen/gntdev';
