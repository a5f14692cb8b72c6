import { existsSync } from 'node:fs';
import { XENSTORED_SOCKET, type XenStoreOptions } from '@xen-vchan/xenstore';
import type { DeviceOptions } from './handshake.js';

/** Which backend a channel uses; the sim fields matter only on the simulation. */
export interface BackendOptions {
  /** 'auto' (default), 'xen' or 'sim', for the devices and XenStore alike. */
  backend?: 'auto' | 'xen' | 'sim';
  /** Simulation only: the domain this side plays (default XEN_VCHAN_SIM_DOMID, else 0). */
  simDomid?: number;
  /** Simulation only: the state folder. */
  simDirectory?: string;
}

export function deviceOptions(options: BackendOptions): DeviceOptions {
  return {
    ...(options.backend ? { backend: options.backend } : {}),
    ...(options.simDomid !== undefined ? { domid: options.simDomid } : {}),
    ...(options.simDirectory ? { simDirectory: options.simDirectory } : {}),
  };
}

export function xenstoreOptions(options: BackendOptions): XenStoreOptions {
  return {
    ...(options.backend === 'sim' ? { transport: 'sim' as const } : {}),
    ...(options.backend === 'xen'
      ? { transport: existsSync(process.env.XENSTORED_PATH ?? XENSTORED_SOCKET) ? ('socket' as const) : ('xenbus' as const) }
      : {}),
    ...(options.simDomid !== undefined ? { domid: options.simDomid } : {}),
    ...(options.simDirectory ? { simDirectory: options.simDirectory } : {}),
  };
}
