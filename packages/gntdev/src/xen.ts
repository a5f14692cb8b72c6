import { errorCode, explained, FdFinalizer, invalidArgument, loadAddon, PAGE_SIZE, sleepSync } from '@xen-vchan/native';
import { checkCopyArguments, checkMapArguments, checkNotifyOffset, gntdevAdvice } from './checks.js';
import { GNTDEV_DEVICE, GrantStatus, type CopySegment, type GrantMapping, type Gntdev, type UnmapNotifyOptions } from './interface.js';

interface GntdevAddon {
  open(path: string): number;
  close(fd: number): void;
  mapGrantRef(fd: number, domids: number[], refs: number[]): number;
  unmapGrantRef(fd: number, index: number, count: number): void;
  setUnmapNotify(fd: number, index: number, action: number, port: number): void;
  grantCopy(fd: number, segments: readonly CopySegment[]): number[];
  mmap(fd: number, length: number, offset: number, writable: boolean): ArrayBuffer;
  munmap(buffer: ArrayBuffer): boolean;
}

const addon = loadAddon<GntdevAddon>(new URL('..', import.meta.url), 'xen_gntdev');
const NOTIFY_CLEAR_BYTE = 1;
const NOTIFY_SEND_EVENT = 2;
const MMAP_EAGAIN_RETRIES = 100;

const fds = new FdFinalizer((fd) => addon.close(fd));

class XenGrantMapping implements GrantMapping {
  released = false;

  constructor(
    private readonly device: XenGntdev,
    readonly domid: number,
    readonly refs: readonly number[],
    readonly writable: boolean,
    readonly buffer: ArrayBuffer,
    private readonly index: number,
  ) {}

  setUnmapNotify(options: UnmapNotifyOptions): void {
    if (this.released) throw invalidArgument('this mapping was released');
    checkNotifyOffset(options.offset, this.refs.length);
    const action = (options.clearByte ?? true ? NOTIFY_CLEAR_BYTE : 0) | (options.port === undefined ? 0 : NOTIFY_SEND_EVENT);
    explained('gntdev setUnmapNotify', () => addon.setUnmapNotify(this.device.fd, this.index + options.offset, action, options.port ?? 0), gntdevAdvice);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.device.forget(this);
    addon.munmap(this.buffer);
    explained('gntdev unmap', () => addon.unmapGrantRef(this.device.fd, this.index, this.refs.length), gntdevAdvice);
  }
}

export class XenGntdev implements Gntdev {
  readonly backend = 'xen' as const;
  readonly domid = null;
  fd: number;
  private readonly mappings = new Set<XenGrantMapping>();

  constructor() {
    this.fd = explained('open /dev/xen/gntdev', () => addon.open(GNTDEV_DEVICE), gntdevAdvice);
    fds.register(this, this.fd);
  }

  map(domid: number, refs: readonly number[], options: { writable?: boolean } = {}): GrantMapping {
    checkMapArguments(this.fd, domid, refs);
    const writable = options.writable ?? true;
    const index = explained('gntdev map', () => addon.mapGrantRef(this.fd, refs.map(() => domid), [...refs]), gntdevAdvice);
    let buffer: ArrayBuffer | null = null;
    try {
      // The hypervisor maps at mmap time; a paged-out grant answers EAGAIN for a moment.
      for (let attempt = 0; buffer === null; attempt++) {
        try {
          buffer = addon.mmap(this.fd, refs.length * PAGE_SIZE, index, writable);
        } catch (error) {
          if (errorCode(error) !== 'EAGAIN' || attempt >= MMAP_EAGAIN_RETRIES) throw error;
          sleepSync(1);
        }
      }
    } catch (error) {
      addon.unmapGrantRef(this.fd, index, refs.length);
      throw explained('gntdev map', () => {
        throw error;
      }, gntdevAdvice);
    }
    const mapping = new XenGrantMapping(this, domid, [...refs], writable, buffer, index);
    this.mappings.add(mapping);
    return mapping;
  }

  grantCopy(segments: readonly CopySegment[]): number[] {
    checkCopyArguments(this.fd, segments);
    if (segments.length === 0) return [];
    return explained('gntdev grantCopy', () => addon.grantCopy(this.fd, segments), gntdevAdvice);
  }

  forget(mapping: XenGrantMapping): void {
    this.mappings.delete(mapping);
  }

  close(): void {
    if (this.fd < 0) return;
    for (const mapping of [...this.mappings]) mapping.release();
    fds.close(this, this.fd);
    this.fd = -1;
  }
}

export { GrantStatus };
