import { existsSync } from 'node:fs';
import { chooseBackend, invalidArgument } from '@xen-vchan/native';

export type TransportKind = 'socket' | 'xenbus' | 'sim';
export type TransportChoice = 'auto' | TransportKind;

export interface XenStoreOptions {
  /**
   * 'auto' (default): the simulation when the backend choice is 'sim' (XEN_VCHAN_BACKEND, else
   * whether /dev/xen/xenbus exists); otherwise xenstored's Unix socket if it exists (dom0), else
   * /dev/xen/xenbus (any domain).
   */
  transport?: TransportChoice;
  /** Socket transport: xenstored's socket (default $XENSTORED_PATH, else /var/run/xenstored/socket). */
  socketPath?: string;
  /** Simulation only: the domain this connection acts as (default XEN_VCHAN_SIM_DOMID, else 0). */
  domid?: number;
  /** Simulation only: the state folder. */
  simDirectory?: string;
}

export const XENBUS_DEVICE = '/dev/xen/xenbus';
export const XENSTORED_SOCKET = '/var/run/xenstored/socket';

/** Where xenstored listens, as libxenstore finds it. */
export function xenstoredSocketPath(explicit?: string): string {
  return explicit ?? process.env.XENSTORED_PATH ?? XENSTORED_SOCKET;
}

export function chooseTransport(options: XenStoreOptions): TransportKind {
  const choice = options.transport ?? 'auto';
  if (choice === 'socket' || choice === 'xenbus' || choice === 'sim') return choice;
  if (choice !== 'auto') {
    throw invalidArgument(`Unknown XenStore transport "${String(choice)}": use "auto", "socket", "xenbus" or "sim".`);
  }
  if (chooseBackend() === 'sim') return 'sim';
  return existsSync(xenstoredSocketPath(options.socketPath)) ? 'socket' : 'xenbus';
}
