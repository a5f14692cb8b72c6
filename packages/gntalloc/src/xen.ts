import { explained, FdFinalizer, invalidArgument, loadAddon, PAGE_SIZE } from '@xen-vchan/native';
import { gntallocAdvice, LIMIT_FILE, readXenLimit } from './advice.js';
import { GNTALLOC_DEVICE, type Gntalloc, type SharedPages, type UnmapNotifyOptions } from './interface.js';
import { checkShareArguments, checkNotifyOffset } from './checks.js';

interface GntallocAddon {
  open(path: string): number;
  close(fd: number): void;
  allocGref(fd: number, domid: number, count: number, writable: boolean): { index: number; refs: number[] };
  deallocGref(fd: number, index: number, count: number): void;
  setUnmapNotify(fd: number, index: number, action: number, port: number): void;
  mmap(fd: number, length: number, offset: number, writable: boolean): ArrayBuffer;
  munmap(buffer: ArrayBuffer): boolean;
}

const addon = loadAddon<GntallocAddon>(new URL('..', import.meta.url), 'xen_gntalloc');
const NOTIFY_CLEAR_BYTE = 1;
const NOTIFY_SEND_EVENT = 2;

const advise = (code: string) =>
  gntallocAdvice(code, () => {
    const limit = readXenLimit();
    return `The gntalloc limit of this domain is ${limit ?? 'unknown'} pages (${LIMIT_FILE}). Release shares you no longer need, or raise it as root: echo ${Math.max(4096, (limit ?? 1024) * 4)} > ${LIMIT_FILE}`;
  });

const fds = new FdFinalizer((fd) => addon.close(fd));

class XenSharedPages implements SharedPages {
  released = false;

  constructor(
    private readonly device: XenGntalloc,
    readonly domid: number,
    readonly writable: boolean,
    readonly refs: readonly number[],
    readonly buffer: ArrayBuffer,
    private readonly index: number,
  ) {}

  setUnmapNotify(options: UnmapNotifyOptions): void {
    if (this.released) throw invalidArgument('these pages were released');
    checkNotifyOffset(options.offset, this.refs.length);
    const action = (options.clearByte ?? true ? NOTIFY_CLEAR_BYTE : 0) | (options.port === undefined ? 0 : NOTIFY_SEND_EVENT);
    explained('gntalloc setUnmapNotify', () => addon.setUnmapNotify(this.device.fd, this.index + options.offset, action, options.port ?? 0), advise);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.device.forget(this);
    addon.munmap(this.buffer);
    // The grant ends when both our mapping and the allocation are gone; that also fires the notify.
    explained('gntalloc release', () => addon.deallocGref(this.device.fd, this.index, this.refs.length), advise);
  }
}

export class XenGntalloc implements Gntalloc {
  readonly backend = 'xen' as const;
  readonly domid = null;
  fd: number;
  private readonly shares = new Set<XenSharedPages>();

  constructor() {
    this.fd = explained('open /dev/xen/gntalloc', () => addon.open(GNTALLOC_DEVICE), advise);
    fds.register(this, this.fd);
  }

  share(domid: number, pages: number, options: { writable?: boolean } = {}): SharedPages {
    checkShareArguments(this.fd, domid, pages);
    const writable = options.writable ?? true;
    const { index, refs } = explained('gntalloc share', () => addon.allocGref(this.fd, domid, pages, writable), advise);
    let buffer: ArrayBuffer;
    try {
      buffer = explained('gntalloc mmap', () => addon.mmap(this.fd, pages * PAGE_SIZE, index, true), advise);
    } catch (error) {
      addon.deallocGref(this.fd, index, pages);
      throw error;
    }
    const shared = new XenSharedPages(this, domid, writable, refs, buffer, index);
    this.shares.add(shared);
    return shared;
  }

  limit(): { limit: number; used: number | null } {
    return { limit: readXenLimit() ?? 1024, used: null };
  }

  forget(shared: XenSharedPages): void {
    this.shares.delete(shared);
  }

  close(): void {
    if (this.fd < 0) return;
    for (const shared of [...this.shares]) shared.release();
    fds.close(this, this.fd);
    this.fd = -1;
  }
}
