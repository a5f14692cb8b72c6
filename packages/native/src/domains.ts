/**
 * Domain ids a guest can have run from 0 to DOMID_FIRST_RESERVED - 1; the ids from 0x7ff0 up are
 * Xen's special names (DOMID_SELF, DOMID_IO, ...) and never name a guest.
 */
export const DOMID_FIRST_RESERVED = 0x7ff0;

/** The domain id that names the caller itself in hypercalls and XenStore requests (DOMID_SELF). */
export const DOMID_SELF = DOMID_FIRST_RESERVED;

/** The largest id a guest domain can have (32751). */
export const MAX_GUEST_DOMID = DOMID_FIRST_RESERVED - 1;

/** True for an integer from 0 to MAX_GUEST_DOMID. */
export function isGuestDomainId(domid: unknown): domid is number {
  return typeof domid === 'number' && Number.isInteger(domid) && domid >= 0 && domid <= MAX_GUEST_DOMID;
}
