import { checkDomainId, invalidArgument, XenVchanError } from '@xen-vchan/native';

/** Refuses a call on a closed handle (`handle` is the fd, or the simulation's handle, -1 once closed). */
export function checkOpen(handle: number): void {
  if (handle < 0) throw new XenVchanError('EBADF', 'This gntalloc handle is closed; open a new one.');
}

export function checkShareArguments(handle: number, domid: number, pages: number): void {
  checkOpen(handle);
  checkDomainId(domid);
  if (!Number.isInteger(pages) || pages < 1) throw invalidArgument(`pages must be a whole number of at least 1, got ${pages}`);
}
