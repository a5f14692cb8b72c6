import { encodeXsMessage, errorCode, splitXsStrings, XenVchanError, XsType, type XsMessage } from '@xen-vchan/native';
import { handleClosed, protocolError, transportError, xenstoreError } from './errors.js';
import type { TransportKind } from './options.js';
import type { Transport, TransportHandlers } from './transports/transport.js';

/** A watch as the connection sees it: where its events go. */
export interface WatchRoute {
  deliver(path: string): void;
  /** The handle was closed: iteration ends normally. */
  finish(): void;
  /** The connection was lost: iteration fails with `error`. */
  fail(error: Error): void;
}

interface PendingRequest {
  type: number;
  operation: string;
  resolve(payload: Buffer): void;
  reject(error: Error): void;
  /** The object that asked (store, transaction, watch): kept reachable while it waits. */
  requester: object;
}

/**
 * One connection to XenStore: many requests in flight, each matched to its reply by req_id, and
 * watch events, which may arrive between replies at any time, routed to their watch by token.
 */
export class XenStoreConnection implements TransportHandlers {
  private transport: Transport | null = null;
  private readonly pending = new Map<number, PendingRequest>();
  private readonly watches = new Map<string, WatchRoute>();
  private nextReqId = 1;
  private endedWith: XenVchanError | null = null;

  get kind(): TransportKind {
    return this.attached().kind;
  }

  get address(): string {
    return this.attached().address;
  }

  /** Why the connection ended, or null while it is usable. */
  get ended(): XenVchanError | null {
    return this.endedWith;
  }

  attach(transport: Transport): void {
    this.transport = transport;
    this.updateActivity();
  }

  /** Sends a request; resolves with the reply's payload or rejects with XenStore's error. */
  request(type: number, txId: number, payload: Buffer, operation: string, requester: object): Promise<Buffer> {
    if (this.endedWith) return Promise.reject(this.endedWith);
    const transport = this.attached();
    if (payload.length > transport.maxPayload) {
      return Promise.reject(
        new XenVchanError(
          'E2BIG',
          `XenStore ${operation} failed: the request is ${payload.length} bytes, over the ${transport.maxPayload} bytes one message may ` +
            `carry through ${transport.address}. Store less per node: split the value over several nodes.`,
        ),
      );
    }
    const reqId = this.allocateReqId();
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(reqId, { type, operation, resolve, reject, requester });
      this.updateActivity();
      transport.send(encodeXsMessage(type, reqId, txId, payload), (error) => {
        const refused = this.take(reqId);
        if (!refused) return;
        const code = errorCode(error);
        refused.reject(code !== undefined ? xenstoreError(code, operation) : transportError(error, operation));
      });
    });
  }

  hasWatch(token: string): boolean {
    return this.watches.has(token);
  }

  addWatch(token: string, route: WatchRoute): void {
    this.watches.set(token, route);
    this.updateActivity();
  }

  removeWatch(token: string): void {
    this.watches.delete(token);
    this.updateActivity();
  }

  message(message: XsMessage): void {
    if (message.type === XsType.WATCH_EVENT) {
      const [path, token] = splitXsStrings(message.payload);
      // An event for a watch closed a moment ago is expected, and dropped.
      if (path !== undefined && token !== undefined) this.watches.get(token)?.deliver(path);
      return;
    }
    const request = this.take(message.reqId);
    if (!request) {
      this.fail(protocolError(this.attached().address, `a reply (type ${message.type}) to request ${message.reqId}, which is not waiting`));
      return;
    }
    if (message.type === XsType.ERROR) {
      request.reject(xenstoreError(splitXsStrings(message.payload)[0] ?? 'EIO', request.operation));
    } else if (message.type !== request.type) {
      request.reject(protocolError(this.attached().address, `a reply of type ${message.type} to a request of type ${request.type}`));
    } else {
      request.resolve(message.payload);
    }
  }

  closed(error: XenVchanError | null): void {
    this.end(error ?? handleClosed(), error === null);
  }

  /** Closes the transport: requests in flight fail, watches end. Idempotent. */
  close(): void {
    if (this.endedWith) return;
    this.end(handleClosed(), true);
    this.transport?.close();
  }

  private fail(error: XenVchanError): void {
    if (this.endedWith) return;
    this.end(error, false);
    this.transport?.close();
  }

  private end(error: XenVchanError, byUser: boolean): void {
    if (this.endedWith) return;
    this.endedWith = error;
    const requests = [...this.pending.values()];
    const watches = [...this.watches.values()];
    this.pending.clear();
    this.watches.clear();
    for (const request of requests) request.reject(error);
    for (const watch of watches) {
      if (byUser) watch.finish();
      else watch.fail(error);
    }
  }

  private take(reqId: number): PendingRequest | undefined {
    const request = this.pending.get(reqId);
    if (request) {
      this.pending.delete(reqId);
      this.updateActivity();
    }
    return request;
  }

  private allocateReqId(): number {
    let reqId = this.nextReqId;
    while (this.pending.has(reqId)) reqId = (reqId % 0xffff_ffff) + 1;
    this.nextReqId = (reqId % 0xffff_ffff) + 1;
    return reqId;
  }

  /** Keep Node running exactly while something is awaited: a reply, or events on a watch. */
  private updateActivity(): void {
    if (!this.endedWith) this.transport?.setActive(this.pending.size > 0 || this.watches.size > 0);
  }

  private attached(): Transport {
    if (!this.transport) throw new Error('XenStoreConnection used before a transport was attached');
    return this.transport;
  }
}
