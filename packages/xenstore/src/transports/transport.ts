import type { XenVchanError, XsMessage } from '@xen-vchan/native';
import type { TransportKind } from '../options.js';

/** What a transport tells the connection above it. */
export interface TransportHandlers {
  message(message: XsMessage): void;
  /** The transport is gone; `error` says why, or is null when close() was called. */
  closed(error: XenVchanError | null): void;
}

/** A way to xenstored: it carries whole messages both ways and knows nothing of their meaning. */
export interface Transport {
  readonly kind: TransportKind;
  /** Where it leads (a socket path or the device), for messages. */
  readonly address: string;
  /** The largest payload one message may carry through it. */
  readonly maxPayload: number;
  /**
   * Sends one whole message. `refused` is called, instead of a reply ever coming, if the
   * transport rejects it: the xenbus driver answers some requests (WATCH) from write() itself.
   */
  send(message: Buffer, refused: (error: unknown) => void): void;
  /** While true, the transport keeps Node's event loop alive: a reply or a watch event is awaited. */
  setActive(active: boolean): void;
  close(): void;
}
