import { XsType, xsStrings } from '@xen-vchan/native';
import { XenStore } from './client.js';
import { XenStoreConnection } from './connection.js';
import { xenstoreAdvice } from './errors.js';
import { chooseTransport, xenstoredSocketPath, type XenStoreOptions } from './options.js';
import { connectSocket } from './transports/socket.js';
import { XenbusTransport } from './transports/xenbus.js';

export { XenVchanError, type XenVchanErrorCode, errorCode } from '@xen-vchan/native';
export { XenStore } from './client.js';
export { Transaction, type TransactionOptions } from './transaction.js';
export { Watch, type WatchEvent } from './watch.js';
export type { Access, Permission } from './permissions.js';
export {
  XENBUS_DEVICE,
  XENSTORED_SOCKET,
  type TransportChoice,
  type TransportKind,
  type XenStoreOptions,
} from './options.js';

function xenstoredAdvice(code: string): string | undefined {
  switch (code) {
    case 'ENOENT':
    case 'ECONNREFUSED':
      return 'xenstored is not running here: its socket exists only in dom0 while xenstored runs. In a guest use transport "xenbus".';
    case 'EACCES':
      return "xenstored's socket needs root.";
    default:
      return xenstoreAdvice(code);
  }
}

/**
 * Connects to XenStore: the simulation, xenstored's Unix socket (dom0) or /dev/xen/xenbus (any
 * domain), as `options.transport` says; 'auto' (the default) picks as XenStoreOptions describes.
 * Resolves once the connection is usable; rejects with a XenVchanError saying what is missing.
 */
export async function openXenStore(options: XenStoreOptions = {}): Promise<XenStore> {
  const connection = new XenStoreConnection();
  const kind = chooseTransport(options);
  switch (kind) {
    case 'socket':
      connection.attach(await connectSocket('socket', xenstoredSocketPath(options.socketPath), connection, xenstoredAdvice));
      return new XenStore(connection, kind, null);
    case 'xenbus':
      connection.attach(new XenbusTransport(connection));
      return new XenStore(connection, kind, null);
    case 'sim': {
      // Loaded here only, so that a process on Xen never loads @xen-vchan/sim or its addon.
      const { connectSim } = await import('./transports/sim.js');
      const { transport, domid } = await connectSim(options, connection);
      connection.attach(transport);
      try {
        await connection.request(XsType.SIM_DECLARE_DOMAIN, 0, xsStrings(String(domid)), `declare domain ${domid}`, connection);
      } catch (error) {
        connection.close();
        throw error;
      }
      return new XenStore(connection, kind, domid);
    }
  }
}
