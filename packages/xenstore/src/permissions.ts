import {
  formatXsPermission,
  invalidArgument,
  isGuestDomainId,
  isXsAccess,
  MAX_GUEST_DOMID,
  parseXsPermission,
  type XsAccess,
  type XsPermission,
} from '@xen-vchan/native';

/** Who may read or write a node: none, read, write or both (`n|r|w|b<domid>` on the wire). */
export type Access = XsAccess;
/**
 * One entry of a node's permission list. The first entry names the owner, who may do anything,
 * and its access is what every domain without an entry of its own gets.
 */
export type Permission = XsPermission;

export function encodePermissions(permissions: readonly Permission[]): string[] {
  if (!Array.isArray(permissions) || permissions.length === 0) {
    throw invalidArgument('A permission list needs at least one entry: the first names the owner and the default access.');
  }
  return permissions.map((permission) => {
    const { domid, access } = permission ?? {};
    if (!isGuestDomainId(domid) || !isXsAccess(access)) {
      throw invalidArgument(
        `Invalid permission ${JSON.stringify(permission)}: use { domid: 0..${MAX_GUEST_DOMID}, access: 'none' | 'read' | 'write' | 'both' }.`,
      );
    }
    return formatXsPermission({ domid, access });
  });
}

/** The permissions in a GET_PERMS reply; null if one of them is not a permission. */
export function decodePermissions(texts: readonly string[]): Permission[] | null {
  const permissions = texts.map(parseXsPermission);
  return permissions.every((permission) => permission !== null) ? (permissions as Permission[]) : null;
}
