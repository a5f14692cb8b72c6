import { invalidArgument, PAGE_SIZE, XenVchanError } from '@xen-vchan/native';

export function checkShareArguments(fd: number, domid: number, pages: number): void {
  if (fd < 0) throw new XenVchanError('EBADF', 'This gntalloc handle is closed; open a new one.');
  if (!Number.isInteger(domid) || domid < 0 || domid > 0x7fef) throw invalidArgument(`domid must be an integer from 0 to 32751, got ${domid}`);
  if (!Number.isInteger(pages) || pages < 1) throw invalidArgument(`pages must be a whole number of at least 1, got ${pages}`);
}

export function checkNotifyOffset(offset: number, pages: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset >= pages * PAGE_SIZE) {
    throw invalidArgument(`offset must be a byte inside the ${pages * PAGE_SIZE} shared bytes, got ${offset}`);
  }
}
