import { XenVchanError } from '@xen-vchan/native';
import { MAX_ORDER, MIN_ORDER, PAGE_ORDER } from './layout.js';

export interface RingOrders {
  /** The ring the client writes and the server reads. */
  left: number;
  /** The ring the server writes and the client reads. */
  right: number;
}

const MAX_RING_BYTES = 1 << MAX_ORDER;

function pageOrderFor(size: number): number {
  let order = PAGE_ORDER;
  while (1 << order < size) order++;
  return order;
}

/**
 * The ring orders a libxenvchan server picks for the minimum sizes it is given: page-sized and
 * larger rings round up to a power of two; small rings move into the control page, where an
 * order-10 ring is only ever paired with an order-11 one.
 */
export function chooseOrders(leftMin: number, rightMin: number): RingOrders {
  for (const [name, size] of [
    ['left', leftMin],
    ['right', rightMin],
  ] as const) {
    if (!Number.isInteger(size) || size < 0 || size > MAX_RING_BYTES) {
      throw new XenVchanError('ERR_INVALID_ARG_VALUE', `the ${name} ring size must be 0 to ${MAX_RING_BYTES} bytes, got ${size}`);
    }
  }
  let left = pageOrderFor(leftMin);
  let right = pageOrderFor(rightMin);
  if (leftMin <= 1024 && rightMin <= 2048) {
    left = 10;
    right = 11;
  } else if (leftMin <= 2048 && rightMin <= 1024) {
    left = 11;
    right = 10;
  } else if (leftMin <= 2048) {
    left = 11;
  } else if (rightMin <= 2048) {
    right = 11;
  }
  return { left, right };
}

/** What a client accepts from the (untrusted) control page; null if the orders are valid. */
export function badOrders(left: number, right: number): string | null {
  if (left < MIN_ORDER || left > MAX_ORDER || right < MIN_ORDER || right > MAX_ORDER) {
    return `ring orders ${left}/${right} are outside ${MIN_ORDER}..${MAX_ORDER}`;
  }
  if (left === right && left < PAGE_ORDER) return `both rings have order ${left}, but they would share the same place in the control page`;
  return null;
}
