import { explained, FdFinalizer, loadAddon, PAGE_SIZE, PageSets, unmapNotifyAction } from '@xen-vchan/native';
import { gntallocAdvice, LIMIT_FILE, readXenLimit } from './advice.js';
import { GNTALLOC_DEVICE, type Gntalloc, type SharedPages } from './interface.js';
import { checkShareArguments } from './checks.js';

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

const advise = (code: string) =>
  gntallocAdvice(code, () => {
    const limit = readXenLimit();
    return `The gntalloc limit of this domain is ${limit ?? 'unknown'} pages (${LIMIT_FILE}). Release shares you no longer need, or raise it as root: echo ${Math.max(4096, (limit ?? 1024) * 4)} > ${LIMIT_FILE}`;
  });

const fds = new FdFinalizer((fd) => addon.close(fd));

export class XenGntalloc implements Gntalloc {
  readonly backend = 'xen' as const;
  readonly domid = null;
  fd: number;
  private readonly shares = new PageSets((buffer) => addon.munmap(buffer));

  constructor() {
    this.fd = explained('open /dev/xen/gntalloc', () => addon.open(GNTALLOC_DEVICE), advise);
    fds.register(this, this.fd);
  }

  share(domid: number, pages: number, options: { writable?: boolean } = {}): SharedPages {
    checkShareArguments(this.fd, domid, pages);
    const writable = options.writable ?? true;
    const { index, refs } = explained('gntalloc share', () => addon.allocGref(this.fd, domid, pages, writable), advise);
    return this.shares.add(
      { domid, refs, writable },
      {
        map: () => explained('gntalloc mmap', () => addon.mmap(this.fd, pages * PAGE_SIZE, index, true), advise),
        setUnmapNotify: (offset, clearByte, port) => {
          const action = unmapNotifyAction(clearByte, port);
          explained('gntalloc setUnmapNotify', () => addon.setUnmapNotify(this.fd, index + offset, action, port ?? 0), advise);
        },
        // The grant ends when both our mapping and the allocation are gone; that also fires the notify.
        end: () => explained('gntalloc release', () => addon.deallocGref(this.fd, index, pages), advise),
      },
    );
  }

  limit(): { limit: number; used: number | null } {
    return { limit: readXenLimit() ?? 1024, used: null };
  }

  close(): void {
    if (this.fd < 0) return;
    this.shares.releaseAll();
    fds.close(this, this.fd);
    this.fd = -1;
  }
}
