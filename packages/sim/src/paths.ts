import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, statSync, type Stats } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { errorCode, invalidArgument, isGuestDomainId, MAX_GUEST_DOMID, XenVchanError } from '@xen-vchan/native';

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

/**
 * Creates the state folder if needed and makes sure it is a real folder of this user, private to
 * them. The daemon deletes and recreates folders inside it, so a link planted at its path by
 * another user (in /dev/shm anybody may create names) must never be followed: the path is checked
 * with lstat, then opened with O_NOFOLLOW and checked again on the open descriptor, which must be
 * the very folder lstat saw (nothing swapped in between).
 */
export function ensureSimDirectory(directory: string): void {
  try {
    mkdirSync(directory, { recursive: true, mode: 0o700 });
  } catch (error) {
    // A dangling link or a file at the path: explained below; anything else is for the caller.
    if (!lstatOrNull(directory)) throw error;
  }
  const seen = lstatSync(directory);
  if (seen.isSymbolicLink()) {
    throw new XenVchanError(
      'ELOOP',
      `The simulation folder ${directory} is a symbolic link; the simulation refuses to follow it, as another user ` +
        `could have planted it to make the daemon delete files elsewhere. Remove the link (rm ${directory}) or set XEN_VCHAN_SIM_DIR to a folder of your own.`,
    );
  }
  if (!seen.isDirectory()) {
    throw new XenVchanError(
      'EACCES',
      `The simulation folder ${directory} exists but is not a folder. Remove it or set XEN_VCHAN_SIM_DIR elsewhere.`,
    );
  }
  checkPrivate(directory, seen);
  let fd: number;
  try {
    fd = openSync(directory, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (error) {
    const code = errorCode(error);
    if (code !== 'ELOOP' && code !== 'ENOTDIR') throw error;
    throw new XenVchanError(
      'ELOOP',
      `The simulation folder ${directory} changed while it was checked (it is no longer a folder). Remove it or set XEN_VCHAN_SIM_DIR elsewhere.`,
      { cause: error },
    );
  }
  try {
    const opened = fstatSync(fd);
    if (opened.dev !== seen.dev || opened.ino !== seen.ino) {
      throw new XenVchanError(
        'EACCES',
        `The simulation folder ${directory} was replaced while it was checked. Remove it or set XEN_VCHAN_SIM_DIR elsewhere.`,
      );
    }
    checkPrivate(directory, opened);
  } finally {
    closeSync(fd);
  }
}

function checkPrivate(directory: string, stats: Stats): void {
  if ((stats.mode & 0o077) !== 0 || stats.uid !== os.userInfo().uid) {
    throw new XenVchanError(
      'EACCES',
      `The simulation folder ${directory} must belong to you and be private (mode 0700); ` +
        `it is ${(stats.mode & 0o777).toString(8)} owned by uid ${stats.uid}. Remove it or set XEN_VCHAN_SIM_DIR elsewhere.`,
    );
  }
}

function lstatOrNull(candidate: string): Stats | null {
  try {
    return lstatSync(candidate);
  } catch {
    return null;
  }
}

/** The simulated domain a handle acts as: an explicit option, else XEN_VCHAN_SIM_DOMID, else 0. */
export function simDomid(explicit?: number): number {
  const value = explicit ?? (process.env.XEN_VCHAN_SIM_DOMID === undefined ? 0 : Number(process.env.XEN_VCHAN_SIM_DOMID));
  if (!isGuestDomainId(value)) {
    throw invalidArgument(
      `Invalid simulated domain id ${String(value)}: use an integer from 0 to ${MAX_GUEST_DOMID} (option domid or XEN_VCHAN_SIM_DOMID).`,
    );
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
    pageFile: (domid: number, allocation: number) =>
      path.join(directory, 'pages', `${fileId(domid, 'domain id')}-${fileId(allocation, 'allocation')}`),
    portTable: (domid: number) => path.join(directory, 'ports', fileId(domid, 'domain id')),
    wakeup: (handle: number) => path.join(directory, 'wake', fileId(handle, 'handle')),
  };
}

/**
 * An id as it goes into a file name. The daemon checks requests before they get here; this is the
 * second line: only a non-negative integer can name a file, never "../x" or "1e9" text.
 */
function fileId(value: number, what: string): string {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new XenVchanError(
      'EINVAL',
      `a simulation file name needs a ${what} that is a non-negative integer, not ${JSON.stringify(value)}`,
    );
  }
  return String(value);
}

export type SimFiles = ReturnType<typeof simFiles>;

function isDirectory(candidate: string): boolean {
  try {
    return statSync(candidate).isDirectory();
  } catch {
    return false;
  }
}
