import { isGuestDomainId, MAX_GUEST_DOMID } from '../domains.js';

/**
 * XenStore permissions in their wire form, `<n|r|w|b><domid>` (none, read, write, both), shared
 * by the client and the simulated daemon, which both sit above this package. The first entry names the owner, and its letter is what
 * every domain without an entry of its own gets.
 */
export type XsAccess = 'none' | 'read' | 'write' | 'both';

export interface XsPermission {
  domid: number;
  access: XsAccess;
}

const letters: Record<XsAccess, string> = { none: 'n', read: 'r', write: 'w', both: 'b' };
const accesses: Record<string, XsAccess> = { n: 'none', r: 'read', w: 'write', b: 'both' };

/** Largest domain id XenStore accepts in a permission: a guest's (DOMID_FIRST_RESERVED - 1). */
export const MAX_PERMISSION_DOMID = MAX_GUEST_DOMID;

export function formatXsPermission(permission: XsPermission): string {
  return `${letters[permission.access]}${permission.domid}`;
}

/** The permission `text` stands for, or null if it is not one. */
export function parseXsPermission(text: string): XsPermission | null {
  const match = /^([nrwb])(\d{1,5})$/.exec(text);
  if (!match) return null;
  const domid = Number(match[2]);
  if (!isGuestDomainId(domid)) return null;
  return { domid, access: accesses[match[1]!]! };
}

export function isXsAccess(value: unknown): value is XsAccess {
  return typeof value === 'string' && Object.hasOwn(letters, value);
}
