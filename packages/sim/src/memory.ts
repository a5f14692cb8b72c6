import { closeSync, openSync } from 'node:fs';
import { addon } from './addon.js';
import type { PageLocation } from './protocol.js';

/**
 * Maps simulated grant pages (tmpfs files) MAP_SHARED as one contiguous ArrayBuffer, the way
 * gntdev shows several grants. Read-only pages are mapped PROT_READ only: a write faults, as on Xen.
 */
export function mapPages(pages: readonly PageLocation[], writable: boolean): ArrayBuffer {
  const fds: number[] = [];
  try {
    for (const page of pages) fds.push(openSync(page.file, writable ? 'r+' : 'r'));
    return addon.mmapPages(
      fds,
      pages.map((page) => page.offset),
      writable,
    );
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

/** Detaches and unmaps a buffer made by mapPages; false if it was already unmapped. */
export function unmapPages(buffer: ArrayBuffer): boolean {
  return addon.munmap(buffer);
}
