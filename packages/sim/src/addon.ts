import { loadAddon } from '@xen-vchan/native';

export interface SimAddon {
  connectUnix(path: string): number;
  flock(fd: number, exclusive: boolean, wait: boolean): boolean;
  mkfifo(path: string, mode: number): void;
  mmap(fd: number, length: number, offset: number, writable: boolean): ArrayBuffer;
  mmapPages(fds: number[], offsets: number[], writable: boolean): ArrayBuffer;
  munmap(buffer: ArrayBuffer): boolean;
}

export const addon = loadAddon<SimAddon>(new URL('..', import.meta.url), 'xen_vchan_sim');
