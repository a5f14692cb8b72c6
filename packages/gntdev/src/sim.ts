import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { explained, GrantStatus, PageSets } from '@xen-vchan/native';
import { mapPages, SimConnection, simDomid, unmapPages, type SimHandleRequest, type SimReplies } from '@xen-vchan/sim';
import { checkCopyArguments, checkMapArguments, checkOpen, gntdevAdvice } from './checks.js';
import type { CopyEnd, CopySegment, GntdevOptions, GrantMapping, Gntdev } from './interface.js';

export class SimGntdev implements Gntdev {
  readonly backend = 'sim' as const;
  readonly domid: number;
  private readonly connection: SimConnection;
  private handle: number;
  private readonly mappings = new PageSets(unmapPages);

  constructor(options: GntdevOptions) {
    this.domid = simDomid(options.domid);
    this.connection = SimConnection.open(options.simDirectory);
    this.handle = explained('open simulated gntdev', () => this.connection.call('gntdev.open', { domid: this.domid }).handle);
  }

  map(domid: number, refs: readonly number[], options: { writable?: boolean } = {}): GrantMapping {
    checkMapArguments(this.handle, domid, refs);
    const writable = options.writable ?? true;
    const { mapping, pages } = this.call('gntdev map', 'gntdev.map', {
      grants: refs.map((ref) => ({ domid, ref })),
      writable,
    });
    return this.mappings.add(
      { domid, refs: [...refs], writable },
      {
        map: () => mapPages(pages, writable),
        setUnmapNotify: (offset, clearByte, port) =>
          this.call('gntdev setUnmapNotify', 'gntdev.setUnmapNotify', { mapping, offset, clearByte, port: port ?? null }),
        end: () => this.call('gntdev unmap', 'gntdev.unmap', { mapping }),
      },
    );
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
        : this.call('gntdev grantCopy', 'gntdev.resolveCopy', { domid: end.domid, ref: end.ref, write });
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

  close(): void {
    if (this.handle < 0) return;
    this.mappings.releaseAll();
    this.connection.call('close', { handle: this.handle });
    this.handle = -1;
  }

  /** One control call on this handle, its errors explained as `operation`. */
  private call<Op extends 'gntdev.map' | 'gntdev.setUnmapNotify' | 'gntdev.unmap' | 'gntdev.resolveCopy'>(
    operation: string,
    op: Op,
    request: SimHandleRequest<Op>,
  ): SimReplies[Op] {
    checkOpen(this.handle);
    return explained(operation, () => this.connection.callOnHandle(op, this.handle, request), gntdevAdvice);
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
