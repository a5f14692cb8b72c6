import { mkdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { XenVchanError } from '@xen-vchan/native';

/**
 * Where the simulation keeps its shared state: XEN_VCHAN_SIM_DIR, else a per-user folder on
 * tmpfs so that grant pages are real shared memory. Private to the user (0700): grant pages and
 * the daemon's socket must not be reachable by other users of the machine.
 */
export function simDirectory(explicit?: string): string {
  if (explicit) return path.resolve(explicit);
  if (process.env.XEN_VCHAN_SIM_DIR) return path.resolve(process.env.XEN_VCHAN_SIM_DIR);
  const base = isDirectory('/dev/shm') ? '/dev/shm' : os.tmpdir();
  return path.join(base, `xen-vchan-sim-${os.userInfo().uid}`);
}

export function ensureSimDirectory(directory: string): void {
  mkdirSync(directory, { recursive: true, mode: 0o700 });
  const stats = statSync(directory);
  if ((stats.mode & 0o077) !== 0 || stats.uid !== os.userInfo().uid) {
    throw new XenVchanError(
      'EACCES',
      `The simulation folder ${directory} must belong to you and be private (mode 0700); ` +
        `it is ${(stats.mode & 0o777).toString(8)} owned by uid ${stats.uid}. Remove it or set XEN_VCHAN_SIM_DIR elsewhere.`,
    );
  }
}

/** The simulated domain a handle acts as: an explicit option, else XEN_VCHAN_SIM_DOMID, else 0. */
export function simDomid(explicit?: number): number {
  const value = explicit ?? (process.env.XEN_VCHAN_SIM_DOMID === undefined ? 0 : Number(process.env.XEN_VCHAN_SIM_DOMID));
  if (!Number.isInteger(value) || value < 0 || value > 0x7fef) {
    throw new XenVchanError('ERR_INVALID_ARG_VALUE', `Invalid simulated domain id ${String(value)}: use an integer from 0 to 32751 (option domid or XEN_VCHAN_SIM_DOMID).`);
  }
  return value;
}

/** The files of one state folder; the daemon owns them, clients only open what it names. */
export function simFiles(directory: string) {
  return {
    directory,
    lock: path.join(directory, 'daemon.lock'),
    socket: path.join(directory, 'daemon.sock'),
    log: path.join(directory, 'daemon.log'),
    xenstore: path.join(directory, 'xenstore.sock'),
    pages: path.join(directory, 'pages'),
    ports: path.join(directory, 'ports'),
    wakeups: path.join(directory, 'wake'),
    pageFile: (domid: number, allocation: number) => path.join(directory, 'pages', `${domid}-${allocation}`),
    portTable: (domid: number) => path.join(directory, 'ports', String(domid)),
    wakeup: (handle: number) => path.join(directory, 'wake', String(handle)),
  };
}

export type SimFiles = ReturnType<typeof simFiles>;

function isDirectory(candidate: string): boolean {
  try {
    return statSync(candidate).isDirectory();
  } catch {
    return false;
  }
}
