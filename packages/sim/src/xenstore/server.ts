/**
 * The simulated XenStore daemon's socket, `xenstore.sock` in the state folder (mode 0600), run
 * inside the sim daemon and living as long as it does. It speaks xenstored's wire protocol; see
 * service.ts for how a connection says which domain it is.
 */
import { chmodSync, rmSync } from 'node:fs';
import net from 'node:net';
import type { SimFiles } from '../paths.js';
import { XenStoreService, type XenStoreClient } from './service.js';
import type { Transaction } from './transactions.js';
import { XsMessageReader } from './wire.js';

export interface XenStoreServer {
  /** Closes every connection and removes the socket; the tree goes with the daemon. */
  close(): void;
}

class SocketClient implements XenStoreClient {
  domid: number | null = null;
  readonly transactions = new Map<number, Transaction>();

  constructor(private readonly socket: net.Socket) {}

  send(message: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(message);
  }

  end(): void {
    this.socket.end();
  }
}

/**
 * Starts listening at once, so that the socket exists before the daemon's control socket does:
 * a client that reached the daemon can then always reach its XenStore.
 */
export function startXenStoreServer(files: SimFiles, log: (message: string) => void): XenStoreServer {
  const service = new XenStoreService(log);
  const sockets = new Set<net.Socket>();
  // Left by a dead daemon; the daemon lock proves nobody serves this folder any more.
  rmSync(files.xenstore, { force: true });

  const server = net.createServer((socket) => {
    sockets.add(socket);
    const client = new SocketClient(socket);
    const reader = new XsMessageReader();
    socket.on('data', (chunk) => {
      try {
        for (const message of reader.push(chunk)) {
          service.handle(client, message);
          if (socket.destroyed) return;
        }
      } catch (error) {
        // xenstored drops a connection that breaks the framing: nothing after it can be trusted.
        log(`dropping a XenStore connection of domain ${client.domid ?? '(undeclared)'}: ${(error as Error).message}`);
        socket.destroy();
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      service.disconnect(client);
    });
  });
  server.on('error', (error) => log(`the XenStore socket ${files.xenstore} failed: ${error.message}`));
  server.listen(files.xenstore, () => chmodSync(files.xenstore, 0o600));

  return {
    close() {
      server.close();
      for (const socket of sockets) socket.destroy();
      rmSync(files.xenstore, { force: true });
    },
  };
}
