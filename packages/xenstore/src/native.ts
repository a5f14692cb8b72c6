import { loadAddon } from '@xen-vchan/native';

export interface Poller {
  start(): void;
  stop(): void;
  close(): void;
}

export interface XenbusAddon {
  open(path: string): number;
  close(fd: number): void;
  /** What the driver has queued: whole or partial messages; empty when nothing is. */
  read(fd: number): Buffer;
  /** Bytes taken; 0 when the driver cannot take them now. */
  write(fd: number, bytes: Uint8Array): number;
  Poller: new (fd: number, onReadable: (status: number) => void) => Poller;
}

export const addon = loadAddon<XenbusAddon>(new URL('..', import.meta.url), 'xen_xenbus');
