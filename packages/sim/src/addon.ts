import { loadAddon } from '@xen-vchan/native';

export interface SimAddon {
  connectUnix(path: string): number;
  flock(fd: number, exclusive: boolean, wait: boolean): boolean;
  mkfifo(path: string, mode: number): void;
  mmap(fd: number, length: number, offset: number, writable: boolean): ArrayBuffer;
  mmapPages(fds: number[], offsets: number[], writable: boolean): ArrayBuffer;
  munmap(buffer: ArrayBuffer): boolean;
  /** The pid of the process at the other end of a connected Unix socket (SO_PEERCRED). */
  peerPid(fd: number): number;
}

export const addon = loadAddon<SimAddon>(new URL('..', import.meta.url), 'xen_vchan_sim');

/**
 * The pid of the process that connected `socket` (a daemon-side Unix socket), as the kernel
 * reports it; null if it cannot say. Node has no API for the peer's credentials, so this goes
 * through the socket's descriptor, which Node keeps on its internal handle.
 */
export function peerPidOf(socket: object): number | null {
  const fd = (socket as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) return null;
  try {
    const pid = addon.peerPid(fd);
    return pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
