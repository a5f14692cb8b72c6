import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { explained, invalidArgument } from '@xen-vchan/native';
import { mapPages, SimConnection, simDomid, unmapPages } from '@xen-vchan/sim';
import { checkCopyArguments, checkMapArguments, checkNotifyOffset, checkOpen, gntdevAdvice } from './checks.js';
import { GrantStatus, type CopyEnd, type CopySegment, type GntdevOptions, type GrantMapping, type Gntdev, type UnmapNotifyOptions } from './interface.js';

class SimGrantMapping implements GrantMapping {
  released = false;

  constructor(
    private readonly device: SimGntdev,
    readonly domid: number,
    readonly refs: readonly number[],
    readonly writable: boolean,
    readonly buffer: ArrayBuffer,
    readonly mapping: number,
  ) {}

  setUnmapNotify(options: UnmapNotifyOptions): void {
    if (this.released) throw invalidArgument('this mapping was released');
    checkNotifyOffset(options.offset, this.refs.length);
    this.device.call('gntdev setUnmapNotify', 'gntdev.setUnmapNotify', {
      mapping: this.mapping,
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
    this.device.call('gntdev unmap', 'gntdev.unmap', { mapping: this.mapping });
  }
}

export class SimGntdev implements Gntdev {
  readonly backend = 'sim' as const;
  readonly domid: number;
  private readonly connection: SimConnection;
  private handle: number;
  private readonly mappings = new Set<SimGrantMapping>();

  constructor(options: GntdevOptions) {
    this.domid = simDomid(options.domid);
    this.connection = SimConnection.open(options.simDirectory);
    this.handle = explained('open simulated gntdev', () => this.connection.call('gntdev.open', { domid: this.domid }).handle);
  }

  /** One control call on this handle, its errors explained as `operation`. */
  call(operation: string, op: 'gntdev.map' | 'gntdev.setUnmapNotify' | 'gntdev.unmap' | 'gntdev.resolveCopy', request: Record<string, unknown>): unknown {
    checkOpen(this.handle);
    return explained(operation, () => this.connection.call(op, { handle: this.handle, ...request } as never), gntdevAdvice);
  }

  map(domid: number, refs: readonly number[], options: { writable?: boolean } = {}): GrantMapping {
    checkMapArguments(this.handle, domid, refs);
    const writable = options.writable ?? true;
    const { mapping, pages } = this.call('gntdev map', 'gntdev.map', {
      grants: refs.map((ref) => ({ domid, ref })),
      writable,
    }) as { mapping: number; pages: { file: string; offset: number }[] };
    let buffer: ArrayBuffer;
    try {
      buffer = mapPages(pages, writable);
    } catch (error) {
      this.call('gntdev unmap', 'gntdev.unmap', { mapping });
      throw error;
    }
    const result = new SimGrantMapping(this, domid, [...refs], writable, buffer, mapping);
    this.mappings.add(result);
    return result;
  }

  grantCopy(segments: readonly CopySegment[]): number[] {
    checkCopyArguments(this.handle, segments);
    return segments.map((segment) => this.copyOne(segment));
  }

  /** The simulated hypervisor checks each grant end, then copies through the page file. */
  private copyOne(segment: CopySegment): number {
    const resolve = (end: CopyEnd, write: boolean) =>
      end instanceof Uint8Array
        ? { status: GrantStatus.okay, page: undefined }
        : (this.call('gntdev grantCopy', 'gntdev.resolveCopy', { domid: end.domid, ref: end.ref, write }) as {
            status: number;
            page?: { file: string; offset: number };
          });
    const source = resolve(segment.source, false);
    if (source.status !== GrantStatus.okay) return source.status;
    const dest = resolve(segment.dest, true);
    if (dest.status !== GrantStatus.okay) return dest.status;
    const bytes = new Uint8Array(segment.length);
    if (segment.source instanceof Uint8Array) bytes.set(segment.source.subarray(0, segment.length));
    else {
      const from = segment.source;
      withFile(source.page!.file, 'r', (fd) => readSync(fd, bytes, 0, segment.length, source.page!.offset + from.offset));
    }
    if (segment.dest instanceof Uint8Array) segment.dest.set(bytes);
    else {
      const to = segment.dest;
      withFile(dest.page!.file, 'r+', (fd) => writeSync(fd, bytes, 0, segment.length, dest.page!.offset + to.offset));
    }
    return GrantStatus.okay;
  }

  forget(mapping: SimGrantMapping): void {
    this.mappings.delete(mapping);
  }

  close(): void {
    if (this.handle < 0) return;
    for (const mapping of [...this.mappings]) mapping.release();
    this.connection.call('close', { handle: this.handle });
    this.handle = -1;
  }
}

function withFile<T>(file: string, flags: string, body: (fd: number) => T): T {
  const fd = openSync(file, flags);
  try {
    return body(fd);
  } finally {
    closeSync(fd);
  }
}
