import { accessSync, constants } from 'node:fs';
import { chooseBackend, invalidArgument } from '@xen-vchan/native';

export type TransportKind = 'socket' | 'xenbus' | 'sim';
export type TransportChoice = 'auto' | TransportKind;

export interface XenStoreOptions {
  /**
   * 'auto' (default): the simulation when the backend choice is 'sim' (XEN_VCHAN_BACKEND, else
   * whether /dev/xen exists); otherwise xenstored's Unix socket if it exists and this process may
   * use it (dom0, as root), else /dev/xen/xenbus (any domain).
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
  return mayUseSocket(xenstoredSocketPath(options.socketPath)) ? 'socket' : 'xenbus';
}

/**
 * Whether this process may connect to xenstored's socket. Both transports reach the same
 * xenstored, and libxenstore too takes the kernel's device when the socket will not do: a user who
 * is not root in dom0 usually may open /dev/xen/xenbus (a udev rule) but not the root-only socket.
 */
function mayUseSocket(socketPath: string): boolean {
  try {
    accessSync(socketPath, constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}
