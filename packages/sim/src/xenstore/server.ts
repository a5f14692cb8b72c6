/**
 * The simulated XenStore daemon's socket, `xenstore.sock` in the state folder (mode 0600), run
 * inside the sim daemon and living as long as it does. It speaks xenstored's wire protocol; see
 * service.ts for how a connection says which domain it is.
 */
import { chmodSync, rmSync } from 'node:fs';
import net from 'node:net';
import { encodeXsMessage, XsMessageReader, XsOversizedMessage, XsType, xsStrings } from '@xen-vchan/native';
import { peerPidOf } from '../addon.js';
import type { SimFiles } from '../paths.js';
import { XenStoreService, type XenStoreClient } from './service.js';
import type { Transaction } from './transactions.js';

/** How long a dropped connection may take to receive its last error before it is cut anyway. */
const DROP_FLUSH_MS = 1000;

export interface XenStoreServer {
  /** Closes every connection and removes the socket; the tree goes with the daemon. */
  close(): void;
  /** Pids of the processes with a connection declared as `domid`. */
  processesOf(domid: number): number[];
  /**
   * Closes the domain's connections and every connection of the `killed` processes, then removes
   * the domain's nodes (XenStoreService.destroyDomain).
   */
  destroyDomain(domid: number, killed: readonly number[]): { nodesRemoved: number; connectionsClosed: number };
}

class SocketClient implements XenStoreClient {
  domid: number | null = null;
  readonly transactions = new Map<number, Transaction>();
  /** The connecting process, as the kernel says (null if it cannot): killed with its domain. */
  readonly pid: number | null;

  constructor(readonly socket: net.Socket) {
    this.pid = peerPidOf(socket);
  }

  send(message: Buffer): void {
    if (!this.socket.destroyed && !this.socket.writableEnded) this.socket.write(message);
  }

  end(): void {
    endThenCut(this.socket);
  }
}

/**
 * Ends a connection that broke the framing. An oversized message is answered E2BIG first (its
 * header says which request), so a client learns why.
 */
function dropConnection(socket: net.Socket, error: unknown): void {
  if (error instanceof XsOversizedMessage) endThenCut(socket, encodeXsMessage(XsType.ERROR, error.reqId, error.txId, xsStrings('E2BIG')));
  else socket.destroy();
}

/**
 * Sends `last` (if any) and closes: the socket is cut once all is out, or after DROP_FLUSH_MS if
 * the client does not read, so that a client keeping its half open cannot keep the connection.
 */
function endThenCut(socket: net.Socket, last?: Buffer): void {
  if (socket.destroyed) return;
  const cut = setTimeout(() => socket.destroy(), DROP_FLUSH_MS);
  const done = () => {
    clearTimeout(cut);
    socket.destroy();
  };
  if (last) socket.end(last, done);
  else socket.end(done);
}

/**
 * Starts listening at once, so that the socket exists before the daemon's control socket does:
 * a client that reached the daemon can then always reach its XenStore.
 */
export function startXenStoreServer(
  files: SimFiles,
  log: (message: string) => void,
  onDomainDeclared?: (domid: number) => void,
): XenStoreServer {
  const service = new XenStoreService(log, onDomainDeclared);
  const sockets = new Set<net.Socket>();
  const clients = new Set<SocketClient>();
  // Left by a dead daemon; the daemon lock proves nobody serves this folder any more.
  rmSync(files.xenstore, { force: true });

  const server = net.createServer((socket) => {
    sockets.add(socket);
    const client = new SocketClient(socket);
    clients.add(client);
    const reader = new XsMessageReader();
    let dropped = false;
    socket.on('data', (chunk) => {
      // What a connection being closed still sends is not read (the service refused it, or we did).
      if (dropped || socket.writableEnded) return;
      try {
        for (const message of reader.push(chunk)) {
          service.handle(client, message);
          if (socket.destroyed || socket.writableEnded) return;
        }
      } catch (error) {
        // xenstored drops a connection that breaks the framing (an oversized header is its
        // bad_client case): nothing after it can be trusted. Only this connection goes.
        dropped = true;
        log(`dropping a XenStore connection of domain ${client.domid ?? '(undeclared)'}: ${(error as Error).message}`);
        dropConnection(socket, error);
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      clients.delete(client);
      try {
        service.disconnect(client);
      } catch (error) {
        // One connection's broken state must not take the daemon (and the hypervisor) down.
        log(`cleaning up a XenStore connection of domain ${client.domid ?? '(undeclared)'} failed: ${(error as Error).stack}`);
      }
    });
  });
  server.on('error', (error) => log(`the XenStore socket ${files.xenstore} failed: ${error.message}`));
  server.listen(files.xenstore, () => chmodSync(files.xenstore, 0o600));

  const connectionsOf = (domid: number) => [...clients].filter((client) => client.domid === domid);
  return {
    close() {
      server.close();
      for (const socket of sockets) socket.destroy();
      rmSync(files.xenstore, { force: true });
    },
    processesOf(domid) {
      return connectionsOf(domid).flatMap((client) => (client.pid === null ? [] : [client.pid]));
    },
    destroyDomain(domid, killed) {
      const connections = [...clients].filter((client) => client.domid === domid || (client.pid !== null && killed.includes(client.pid)));
      // Cut at once, not ended: a dead domain's ring takes no more replies, and what its killed
      // processes still sent must not be read (a late declaration would bring the domain back).
      for (const client of connections) {
        service.disconnect(client);
        client.socket.destroy();
      }
      return { nodesRemoved: service.destroyDomain(domid), connectionsClosed: connections.length };
    },
  };
}
