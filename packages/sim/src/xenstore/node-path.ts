/** XenStore path rules, as xenstored's is_valid_nodename and canonicalize apply them. */
import { XENSTORE_ABS_PATH_MAX } from '@xen-vchan/native';

const allowedCharacters = /^[A-Za-z0-9\-/_@]*$/;

export function domainPath(domid: number): string {
  return `/local/domain/${domid}`;
}

/** Special watch paths (`@introduceDomain`, `@releaseDomain`) name events, not nodes. */
export function isSpecialPath(path: string): boolean {
  return path.startsWith('@');
}

/** A path without a leading '/' is relative to the requesting domain's home. */
export function isRelativePath(path: string): boolean {
  return !path.startsWith('/') && !isSpecialPath(path);
}

export function canonicalPath(path: string, domid: number): string {
  return isRelativePath(path) ? `${domainPath(domid)}/${path}` : path;
}

export function isValidNodePath(path: string): boolean {
  return (
    path.startsWith('/') &&
    (path === '/' || !path.endsWith('/')) &&
    !path.includes('//') &&
    path.length <= XENSTORE_ABS_PATH_MAX &&
    allowedCharacters.test(path)
  );
}

/** The parent of an absolute path other than '/'. */
export function parentPath(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash <= 0 ? '/' : path.slice(0, slash);
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

export function childPath(parent: string, name: string): string {
  return parent === '/' ? `/${name}` : `${parent}/${name}`;
}

/** True when `path` is `ancestor` or lies below it. */
export function isWithin(path: string, ancestor: string): boolean {
  return path === ancestor || ancestor === '/' || path.startsWith(`${ancestor}/`);
}
