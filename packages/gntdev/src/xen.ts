import { errorCode, explained, FdFinalizer, loadAddon, PAGE_SIZE, PageSets, sleepSync, unmapNotifyAction } from '@xen-vchan/native';
import { checkCopyArguments, checkMapArguments, gntdevAdvice } from './checks.js';
import { GNTDEV_DEVICE, type CopySegment, type GrantMapping, type Gntdev } from './interface.js';

interface GntdevAddon {
  open(path: string): number;
  close(fd: number): void;
  mapGrantRef(fd: number, domid: number, refs: number[]): number;
  unmapGrantRef(fd: number, index: number, count: number): void;
  setUnmapNotify(fd: number, index: number, action: number, port: number): void;
  grantCopy(fd: number, segments: readonly CopySegment[]): number[];
  mmap(fd: number, length: number, offset: number, writable: boolean): ArrayBuffer;
  munmap(buffer: ArrayBuffer): boolean;
}

const addon = loadAddon<GntdevAddon>(new URL('..', import.meta.url), 'xen_gntdev');
const MMAP_EAGAIN_RETRIES = 100;

const fds = new FdFinalizer((fd) => addon.close(fd));

export class XenGntdev implements Gntdev {
  readonly backend = 'xen' as const;
  readonly domid = null;
  fd: number;
  private readonly mappings = new PageSets((buffer) => addon.munmap(buffer));

  constructor() {
    this.fd = explained('open /dev/xen/gntdev', () => addon.open(GNTDEV_DEVICE), gntdevAdvice);
    fds.register(this, this.fd);
  }

  map(domid: number, refs: readonly number[], options: { writable?: boolean } = {}): GrantMapping {
    checkMapArguments(this.fd, domid, refs);
    const writable = options.writable ?? true;
    const index = explained('gntdev map', () => addon.mapGrantRef(this.fd, domid, [...refs]), gntdevAdvice);
    return this.mappings.add(
      { domid, refs: [...refs], writable },
      {
        map: () => explained('gntdev map', () => this.mmapRetrying(refs.length * PAGE_SIZE, index, writable), gntdevAdvice),
        setUnmapNotify: (offset, clearByte, port) => {
          const action = unmapNotifyAction(clearByte, port);
          explained('gntdev setUnmapNotify', () => addon.setUnmapNotify(this.fd, index + offset, action, port ?? 0), gntdevAdvice);
        },
        end: () => explained('gntdev unmap', () => addon.unmapGrantRef(this.fd, index, refs.length), gntdevAdvice),
      },
    );
  }

  grantCopy(segments: readonly CopySegment[]): number[] {
    checkCopyArguments(this.fd, segments);
    if (segments.length === 0) return [];
    return explained('gntdev grantCopy', () => addon.grantCopy(this.fd, segments), gntdevAdvice);
  }

  close(): void {
    if (this.fd < 0) return;
    this.mappings.releaseAll();
    fds.close(this, this.fd);
    this.fd = -1;
  }

  /** The hypervisor maps at mmap time; a paged-out grant answers EAGAIN for a moment. */
  private mmapRetrying(length: number, index: number, writable: boolean): ArrayBuffer {
    for (let attempt = 0; ; attempt++) {
      try {
        return addon.mmap(this.fd, length, index, writable);
      } catch (error) {
        if (errorCode(error) !== 'EAGAIN' || attempt >= MMAP_EAGAIN_RETRIES) throw error;
        sleepSync(1);
      }
    }
  }
}
