import { readFileSync } from 'node:fs';

export const LIMIT_FILE = '/sys/module/xen_gntalloc/parameters/limit';

export function readXenLimit(): number | null {
  try {
    return Number(readFileSync(LIMIT_FILE, 'utf8').trim());
  } catch {
    return null;
  }
}

/** What to tell a user for each errno gntalloc gives. */
export function gntallocAdvice(code: string, limit: () => string): string | undefined {
  switch (code) {
    case 'ENOSPC':
      return limit();
    case 'ENOENT':
      return 'There is no /dev/xen/gntalloc: load the module (modprobe xen-gntalloc) or use the simulation (backend "sim").';
    case 'EACCES':
    case 'EPERM':
      return 'Opening /dev/xen/gntalloc needs root (or a udev rule giving you the device).';
    case 'EINVAL':
      return 'The kernel refused the request: check the domain id, the page count and, for unmap notifications, that the port is bound.';
    default:
      return undefined;
  }
}
