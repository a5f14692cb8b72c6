import { loadAddon } from '@xen-vchan/native';

export interface Poller {
  start(): void;
  stop(): void;
  close(): void;
}

export interface EvtchnAddon {
  open(path: string): number;
  close(fd: number): void;
  bindInterdomain(fd: number, remoteDomain: number, remotePort: number): number;
  bindUnbound(fd: number, remoteDomain: number): number;
  unbind(fd: number, port: number): void;
  notify(fd: number, port: number): void;
  reset(fd: number): void;
  restrictDomid(fd: number, domid: number): void;
  readPorts(fd: number): number[];
  unmask(fd: number, port: number): void;
  Poller: new (fd: number, onReadable: (status: number) => void) => Poller;
}

export const addon = loadAddon<EvtchnAddon>(new URL('..', import.meta.url), 'xen_evtchn');
