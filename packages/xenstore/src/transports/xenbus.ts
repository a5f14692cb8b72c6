import { explained, FdFinalizer, XENSTORE_PAYLOAD_MAX, XenVchanError, XS_HEADER_BYTES, XsMessageReader, XsType } from '@xen-vchan/native';
import { connectionLost, protocolError, transportError } from '../errors.js';
import { addon, type Poller } from '../native.js';
import { XENBUS_DEVICE } from '../options.js';
import type { Transport, TransportHandlers } from './transport.js';

const RETRY_MS = 1;

/**
 * Transports awaiting a reply or watch events. A socket is kept alive by its libuv handle, but the
 * poller's JS side is not, and without this a store nobody references could be collected while a
 * caller still awaits its reply.
 */
const awaited = new Set<XenbusTransport>();

const fds = new FdFinalizer((fd) => addon.close(fd));

function xenbusAdvice(code: string): string | undefined {
  switch (code) {
    case 'ENOENT':
      return 'There is no /dev/xen/xenbus, or the kernel is not yet connected to XenStore: run in a Xen guest, or use the simulation (transport "sim").';
    case 'EACCES':
    case 'EPERM':
      return 'Opening /dev/xen/xenbus needs root (or a udev rule giving you the device).';
    default:
      return undefined;
  }
}

/**
 * /dev/xen/xenbus: the kernel's own XenStore connection, shared with user space. Every domain has
 * it. The driver acts on a request once a write completes it, answers into a read queue, and
 * registers watches itself. The fd is polled through libuv, so no thread blocks.
 *
 * Requests go to the driver one at a time: Linux's xenbus_dev_request_and_reply queues a request
 * whose payload still lives in the handle's single message buffer, so a second write before the
 * first request reached xenstored overwrites it (seen on Linux 6.1: concurrent writes landed on
 * the wrong nodes). libxenstore waits for each reply too. Callers may still have many requests
 * outstanding; they wait in the outbox here.
 */
export class XenbusTransport implements Transport {
  readonly kind = 'xenbus' as const;
  readonly address = XENBUS_DEVICE;
  /** The driver gathers a request in a buffer of XENSTORE_PAYLOAD_MAX bytes, header included. */
  readonly maxPayload = XENSTORE_PAYLOAD_MAX - XS_HEADER_BYTES;
  private readonly fd: number;
  private readonly poller: Poller;
  private readonly reader = new XsMessageReader();
  private readonly outbox: { message: Buffer; refused: (error: unknown) => void }[] = [];
  private retry: NodeJS.Timeout | null = null;
  /** A request the driver took and whose reply has not come yet. */
  private awaitingReply = false;
  private polling = false;
  private closed = false;

  constructor(private readonly handlers: TransportHandlers) {
    this.fd = explained('open /dev/xen/xenbus', () => addon.open(XENBUS_DEVICE), xenbusAdvice);
    fds.register(this, this.fd);
    this.poller = new addon.Poller(this.fd, (status) => this.onReadable(status));
  }

  send(message: Buffer, refused: (error: unknown) => void): void {
    this.outbox.push({ message, refused });
    this.flush();
  }

  setActive(active: boolean): void {
    if (this.closed || active === this.polling) return;
    this.polling = active;
    if (active) {
      awaited.add(this);
      this.poller.start();
    } else {
      awaited.delete(this);
      this.poller.stop();
    }
  }

  close(): void {
    if (this.shutDown()) this.handlers.closed(null);
  }

  private flush(): void {
    while (this.outbox.length > 0 && !this.closed && !this.awaitingReply && !this.retry) {
      const next = this.outbox[0]!;
      let taken: number;
      try {
        taken = addon.write(this.fd, next.message);
      } catch (error) {
        // The driver answers some requests from write() itself (a WATCH xenstored refused).
        this.outbox.shift();
        next.refused(transportError(error, 'request through /dev/xen/xenbus'));
        continue;
      }
      if (taken === 0) {
        this.retry = setTimeout(() => {
          this.retry = null;
          this.flush();
        }, RETRY_MS);
        return;
      }
      // The driver keeps a partial request and acts once the rest arrives.
      if (taken < next.message.length) {
        next.message = next.message.subarray(taken);
        continue;
      }
      this.outbox.shift();
      this.awaitingReply = true;
    }
  }

  private onReadable(status: number): void {
    if (this.closed) return;
    if (status < 0) {
      this.fail(connectionLost(this.address, `polling the device failed (libuv status ${status})`));
      return;
    }
    // Drain: one wake-up can stand for several replies and events.
    for (;;) {
      let chunk: Buffer;
      try {
        chunk = addon.read(this.fd);
      } catch (error) {
        this.fail(connectionLost(this.address, (error as Error).message, error));
        return;
      }
      if (chunk.length === 0) return;
      let messages: ReturnType<XsMessageReader['push']>;
      try {
        messages = this.reader.push(chunk);
      } catch (error) {
        this.fail(protocolError(this.address, (error as Error).message));
        return;
      }
      for (const message of messages) {
        // Anything but a watch event answers the one request the driver holds.
        if (message.type !== XsType.WATCH_EVENT) this.awaitingReply = false;
        this.handlers.message(message);
      }
      if (this.closed) return;
      this.flush();
    }
  }

  private fail(error: XenVchanError): void {
    if (this.shutDown()) this.handlers.closed(error);
  }

  /** Closing the fd makes the driver abort this handle's transactions and drop its watches. */
  private shutDown(): boolean {
    if (this.closed) return false;
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    this.poller.close();
    awaited.delete(this);
    fds.close(this, this.fd);
    const unsent = this.outbox.splice(0);
    for (const { refused } of unsent) refused(new XenVchanError('EBADF', 'the XenStore handle was closed before this request was sent'));
    return true;
  }
}
