/** Who may do what to a node: xenstored's perm_for_conn. */
import type { XsAccess, XsPermission } from '@xen-vchan/native';

export const READ = 1;
export const WRITE = 2;
/** Changing permissions needs this; only the owner and dom0 have it. */
export const OWNER = 4;

const bits: Record<XsAccess, number> = { none: 0, read: READ, write: WRITE, both: READ | WRITE };

/**
 * The rights of `domid` on a node: dom0 and the owner (the first entry) have all of them; anyone
 * else gets its own entry if the list has one, else the first entry's access.
 */
export function rightsOf(domid: number, permissions: readonly XsPermission[]): number {
  const [owner, ...others] = permissions;
  if (domid === 0) return READ | WRITE | OWNER;
  if (owner === undefined) return 0;
  if (owner.domid === domid) return READ | WRITE | OWNER;
  return bits[(others.find((entry) => entry.domid === domid) ?? owner).access];
}
