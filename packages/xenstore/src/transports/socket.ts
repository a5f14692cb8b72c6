import net from 'node:net';
import { explainError, XENSTORE_PAYLOAD_MAX, XsMessageReader, type XenVchanError } from '@xen-vchan/native';
import { connectionLost, protocolError } from '../errors.js';
import type { Transport, TransportHandlers } from './transport.js';

/**
 * A Unix socket speaking the wire protocol: xenstored's own socket in dom0, or the simulation's.
 * Resolves once connected, so that a missing or dead daemon is reported by openXenStore itself.
 */
export function connectSocket(
  kind: 'socket' | 'sim',
  path: string,
  handlers: TransportHandlers,
  advise: (code: string) => string | undefined,
): Promise<Transport> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path });
    const failed = (error: Error) => reject(explainError(error, `connect to XenStore at ${path}`, advise));
    socket.once('error', failed);
    socket.once('connect', () => {
      socket.off('error', failed);
      resolve(new SocketTransport(kind, path, socket, handlers));
    });
  });
}

class SocketTransport implements Transport {
  readonly maxPayload = XENSTORE_PAYLOAD_MAX;
  private closing = false;

  constructor(
    readonly kind: 'socket' | 'sim',
    readonly address: string,
    private readonly socket: net.Socket,
    handlers: TransportHandlers,
  ) {
    const reader = new XsMessageReader();
    let failure: XenVchanError | null = null;
    socket.on('data', (chunk) => {
      let messages: ReturnType<XsMessageReader['push']>;
      try {
        messages = reader.push(chunk);
      } catch (error) {
        failure = protocolError(address, (error as Error).message);
        socket.destroy();
        return;
      }
      for (const message of messages) handlers.message(message);
    });
    socket.on('error', (error) => {
      failure ??= connectionLost(address, error.message, error);
    });
    socket.on('close', () => {
      handlers.closed(this.closing ? null : (failure ?? connectionLost(address, 'the other end closed it')));
    });
  }

  send(message: Buffer): void {
    this.socket.write(message);
  }

  setActive(active: boolean): void {
    if (active) this.socket.ref();
    else this.socket.unref();
  }

  close(): void {
    this.closing = true;
    this.socket.destroy();
  }
}
