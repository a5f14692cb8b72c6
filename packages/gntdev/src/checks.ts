import { checkDomainId, invalidArgument, PAGE_SIZE, XenVchanError } from '@xen-vchan/native';
import type { CopySegment } from './interface.js';

/** gntdev refuses more in one request on current kernels. */
export const MAX_REFS_PER_MAP = 65536;

/** Refuses a call on a closed handle (`handle` is the fd, or the simulation's handle, -1 once closed). */
export function checkOpen(handle: number): void {
  if (handle < 0) throw new XenVchanError('EBADF', 'This gntdev handle is closed; open a new one.');
}

export function checkMapArguments(handle: number, domid: number, refs: readonly number[]): void {
  checkOpen(handle);
  checkDomainId(domid);
  if (refs.length === 0 || refs.length > MAX_REFS_PER_MAP)
    throw invalidArgument(`give 1 to ${MAX_REFS_PER_MAP} grant references, got ${refs.length}`);
  for (const ref of refs) {
    if (!Number.isInteger(ref) || ref < 0 || ref > 0xffffffff)
      throw invalidArgument(`grant references are unsigned 32-bit integers, got ${ref}`);
  }
}

/**
 * Refuses the whole copy if any segment is one the hypervisor would answer GNTST_bad_copy_arg:
 * that is the caller's mistake, not a status to report per segment.
 */
export function checkCopyArguments(handle: number, segments: readonly CopySegment[]): void {
  checkOpen(handle);
  for (const segment of segments) {
    const problem = badCopyArgument(segment);
    if (problem) throw invalidArgument(`grant copy: ${problem}`);
  }
}

/** What is wrong with a segment the hypervisor would refuse as GNTST_bad_copy_arg, or null if nothing. */
function badCopyArgument(segment: CopySegment): string | null {
  if (!Number.isInteger(segment.length) || segment.length < 0 || segment.length > PAGE_SIZE) return 'length must be 0..4096';
  for (const end of [segment.source, segment.dest]) {
    if (end instanceof Uint8Array) {
      if (end.byteLength < segment.length) return 'a local buffer is shorter than length';
    } else if (!Number.isInteger(end.offset) || end.offset < 0 || end.offset + segment.length > PAGE_SIZE) {
      return 'a grant range crosses its page';
    }
  }
  return null;
}

export function gntdevAdvice(code: string): string | undefined {
  switch (code) {
    case 'ENOENT':
      return 'There is no /dev/xen/gntdev: load the module (modprobe xen-gntdev) or use the simulation (backend "sim").';
    case 'EACCES':
    case 'EPERM':
      return 'Opening /dev/xen/gntdev needs root (or a udev rule giving you the device).';
    case 'EINVAL':
      return 'Xen refused the grant: check the granting domain id and the refs, that the grant is for this domain and still exists, and map read-only grants with writable: false.';
    case 'ENOMEM':
    case 'ENOSPC':
      return 'Out of mapping slots; release mappings you no longer need.';
    default:
      return undefined;
  }
}
