import type { Duplex } from 'node:stream';
import v8 from 'node:v8';
import { EventEmitter } from 'eventemitter3';
import { XenVchanError } from '@xen-vchan/native';
import { MessageChannel, type MessageChannelOptions } from './framing.js';

/** Turns values into message bytes and back. */
export interface Codec {
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}

export const jsonCodec: Codec = {
  encode: (value) => Buffer.from(JSON.stringify(value) ?? 'null'),
  decode: (bytes) => JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString()),
};

/** Node's structured clone (v8.serialize): Dates, Maps, Sets, typed arrays, BigInts, cycles. */
export const structuredCloneCodec: Codec = {
  encode: (value) => v8.serialize(value),
  decode: (bytes) => v8.deserialize(bytes),
};

export type Handler = (params: any, context: { signal: AbortSignal; method: string }) => unknown;

export interface RpcOptions extends MessageChannelOptions {
  /** Default JSON. Both sides must use the same. */
  codec?: Codec;
  /** Methods this side serves. More can be added with handle(). */
  handlers?: Record<string, Handler>;
  /** Default per-call timeout in ms (0 = none). Default 30 000. */
  timeout?: number;
}

export interface CallOptions {
  /** ms before the call fails with ETIMEDOUT (0 = none). */
  timeout?: number;
  signal?: AbortSignal;
}

type Wire =
  | { type: 'call'; id: number; method: string; params: unknown }
  | { type: 'result'; id: number; value: unknown }
  | { type: 'error'; id: number; error: { code: string; message: string; name?: string } }
  | { type: 'cancel'; id: number };

/** An error thrown by the method on the other side, with its code and message. */
export class RemoteError extends XenVchanError {
  constructor(code: string, message: string, readonly remoteName?: string) {
    super(code, message);
    this.name = 'RemoteError';
  }
}

interface PendingCall {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  cleanup: () => void;
}

/**
 * Request/response calls over a message channel, in both directions at once: each side may call
 * methods the other serves. Calls carry ids, so many can be in flight and answers may come in any
 * order. A call fails with ETIMEDOUT after its timeout, with ABORT_ERR when its signal aborts
 * (the server is told to cancel), with the server's own code when the method throws, and with
 * ECONNRESET when the channel closes or the peer dies first.
 */
export class RpcPeer extends EventEmitter<{ close: [error: Error | null] }> {
  readonly messages: MessageChannel;
  private readonly codec: Codec;
  private readonly handlers = new Map<string, Handler>();
  private readonly pending = new Map<number, PendingCall>();
  /** Calls being served, each with a way to get (and so create) its AbortController. */
  private readonly serving = new Map<number, () => AbortController>();
  private readonly defaultTimeout: number;
  private nextId = 1;
  private closed: Error | null | undefined;

  constructor(transport: Duplex | MessageChannel, options: RpcOptions = {}) {
    super();
    this.messages = transport instanceof MessageChannel ? transport : new MessageChannel(transport, options);
    this.codec = options.codec ?? jsonCodec;
    this.defaultTimeout = options.timeout ?? 30_000;
    for (const [method, handler] of Object.entries(options.handlers ?? {})) this.handle(method, handler);
    this.messages.onMessage((bytes) => this.receive(bytes));
    const stream = this.messages.stream;
    stream.on('close', () => this.shutdown(stream.errored ?? null));
    stream.on('error', () => {}); // reported through 'close' and the failed calls
  }

  handle(method: string, handler: Handler): this {
    this.handlers.set(method, handler);
    return this;
  }

  call<T = unknown>(method: string, params?: unknown, options: CallOptions = {}): Promise<T> {
    if (this.closed !== undefined) return Promise.reject(this.closedError(method));
    options.signal?.throwIfAborted();
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timeout = options.timeout ?? this.defaultTimeout;
      const timer =
        timeout > 0
          ? setTimeout(() => this.abandon(id, new XenVchanError('ETIMEDOUT', `The call ${method} got no answer within ${timeout} ms.`)), timeout)
          : undefined;
      const onAbort = () =>
        this.abandon(id, Object.assign(new Error(`The call ${method} was aborted.`, { cause: options.signal?.reason }), { code: 'ABORT_ERR', name: 'AbortError' }));
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(id, {
        resolve: resolve as (value: unknown) => void,
        reject,
        cleanup: () => {
          clearTimeout(timer);
          options.signal?.removeEventListener('abort', onAbort);
        },
      });
      this.post({ type: 'call', id, method, params }).catch((error: Error) => this.settle(id, error));
    });
  }

  /** Ends the channel; pending calls fail with ECONNRESET. */
  close(): void {
    this.messages.end();
    this.shutdown(null);
  }

  private abandon(id: number, error: Error): void {
    if (!this.pending.has(id)) return;
    this.settle(id, error);
    this.post({ type: 'cancel', id }).catch(() => {});
  }

  private settle(id: number, error: Error | null, value?: unknown): void {
    const call = this.pending.get(id);
    if (!call) return;
    this.pending.delete(id);
    call.cleanup();
    if (error) call.reject(error);
    else call.resolve(value);
  }

  private post(message: Wire): Promise<void> {
    return this.messages.send(this.codec.encode(message));
  }

  private receive(bytes: Buffer): void {
    let message: Wire;
    try {
      message = this.codec.decode(bytes) as Wire;
    } catch (error) {
      this.messages.stream.destroy(new XenVchanError('EPROTO', `An RPC message could not be decoded: ${(error as Error).message}`));
      return;
    }
    switch (message?.type) {
      case 'call':
        void this.serve(message);
        return;
      case 'result':
        this.settle(message.id, null, message.value);
        return;
      case 'error':
        this.settle(message.id, new RemoteError(message.error.code, message.error.message, message.error.name));
        return;
      case 'cancel':
        this.serving.get(message.id)?.().abort(new XenVchanError('ABORT_ERR', 'The caller cancelled this call.'));
        return;
      default:
        this.messages.stream.destroy(new XenVchanError('EPROTO', 'An RPC message of unknown type arrived.'));
    }
  }

  private async serve(message: Extract<Wire, { type: 'call' }>): Promise<void> {
    const handler = this.handlers.get(message.method);
    // Most handlers never look at their signal: the controller is made only when one does, or
    // when a cancel or a close has to be passed on.
    let controller: AbortController | null = null;
    const control = () => (controller ??= new AbortController());
    const context = {
      method: message.method,
      get signal() {
        return control().signal;
      },
    };
    this.serving.set(message.id, control);
    let reply: Wire;
    try {
      if (!handler) throw new XenVchanError('ERR_RPC_NO_METHOD', `No method ${JSON.stringify(message.method)} is served here.`);
      const value = await handler(message.params, context);
      reply = { type: 'result', id: message.id, value };
    } catch (error) {
      const { code, message: text, name } = error as { code?: unknown; message?: unknown; name?: unknown };
      reply = {
        type: 'error',
        id: message.id,
        error: {
          code: typeof code === 'string' ? code : 'ERR_RPC_REMOTE',
          message: typeof text === 'string' ? text : String(error),
          ...(typeof name === 'string' ? { name } : {}),
        },
      };
    } finally {
      this.serving.delete(message.id);
    }
    if ((controller as AbortController | null)?.signal.aborted || this.closed !== undefined) return;
    await this.post(reply).catch(() => {});
  }

  private shutdown(error: Error | null): void {
    if (this.closed !== undefined) return;
    this.closed = error;
    for (const id of [...this.pending.keys()]) this.settle(id, this.closedError());
    for (const control of this.serving.values()) control().abort(this.closedError());
    this.emit('close', error);
  }

  private closedError(method?: string): XenVchanError {
    const cause = this.closed ? `: ${this.closed.message}` : '';
    return new XenVchanError('ECONNRESET', `The RPC channel closed${method ? ` before ${method} could be called` : ' before the answer came'}${cause}.`);
  }
}
