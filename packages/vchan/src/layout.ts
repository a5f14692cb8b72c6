/**
 * The shared control page of a vchan, byte for byte as libxenvchan lays it out
 * (xen/io/libxenvchan.h), in the machine's byte order.
 */
export const PAGE_SIZE = 4096;

export const ControlOffset = {
  leftCons: 0,
  leftProd: 4,
  rightCons: 8,
  rightProd: 12,
  leftOrder: 16,
  rightOrder: 18,
  clientLive: 20,
  serverLive: 21,
  clientNotify: 22,
  serverNotify: 23,
  grants: 24,
} as const;

/** Bits of a notify byte: what the side that set them wants to be woken for. */
export const NOTIFY_WRITE = 1; // data was written
export const NOTIFY_READ = 2; // data was consumed

/** Values of a live byte. cli_live starts at WAITING until the client connects. */
export const LIVE_GONE = 0;
export const LIVE_CONNECTED = 1;
export const LIVE_WAITING = 2;

export const MIN_ORDER = 10;
export const MAX_ORDER = 20;
/** Rings of this order and up have pages of their own; smaller ones live inside the control page. */
export const PAGE_ORDER = 12;

/** How many granted pages a ring of `order` has (0 for the rings inside the control page). */
export function ringPages(order: number): number {
  return order >= PAGE_ORDER ? 1 << (order - PAGE_ORDER) : 0;
}

/** Where a small ring lives inside the control page: order 10 at 1024, order 11 at 2048. */
export function inPageRingOffset(order: number): number {
  return order === 10 ? 1024 : 2048;
}
