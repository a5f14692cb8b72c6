import type { Duplex } from 'node:stream';
import v8 from 'node:v8';
import { EventEmitter } from 'eventemitter3';
import { XenVchanError } from '@xen-vchan/native';
import { abortError } from './errors.js';
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

/**
 * Serves one method. `params` is whatever the peer sent, decoded but unchecked: the handler
 * declares the shape it expects and must validate it, since the peer may be hostile.
 */
// biome-ignore lint/suspicious/noExplicitAny: the handler annotates its own params type; unknown would refuse every annotated handler.
export type Handler = (params: any, context: { signal: AbortSignal; method: string }) => unknown;

export interface RpcOptions extends MessageChannelOptions {
  /** Default JSON. Both sides must use the same. */
  codec?: Codec;
  /** Methods this side serves. More can be added with handle(). */
  handlers?: Record<string, Handler>;
  /** Default per-call timeout in ms (0 = none). Default 30 000. */
  timeout?: number;
  /**
   * Calls from the peer served at once; a call counts until its answer is written to the stream,
   * so answers held up by a peer that does not read them count too. At the limit nothing more is
   * read from the channel (answers to this side's own calls included) until one finishes: the
   * peer meets backpressure instead of growing our memory. Default 64.
   */
  maxConcurrentCalls?: number;
  /**
   * This side's calls sent and awaiting an answer. Calls beyond it wait here, in order, until an
   * answer frees a place (their timeout and signal apply while they wait; one that ends before it
   * is sent is never sent), so the peer is never asked to serve more than this at once. Default 1024.
   */
  maxCallsInFlight?: number;
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

/** Longest method name either side sends or accepts. */
const MAX_METHOD_LENGTH = 256;
const DEFAULT_MAX_CONCURRENT_CALLS = 64;
const DEFAULT_MAX_CALLS_IN_FLIGHT = 1024;

/** An error thrown by the method on the other side, with its code and message. */
export class RemoteError extends XenVchanError {
  constructor(
    code: string,
    message: string,
    readonly remoteName?: string,
  ) {
    super(code, message);
    this.name = 'RemoteError';
  }
}

interface PendingCall {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  cleanup: () => void;
  /** On the wire (else waiting for a place among maxCallsInFlight). */
  sent: boolean;
}

/**
 * Request/response calls over a message channel, in both directions at once: each side may call
 * methods the other serves. Calls carry ids, so many can be in flight and answers may come in any
 * order. A call fails with ETIMEDOUT after its timeout, with ABORT_ERR when its signal aborts
 * (the server is told to cancel), with the server's own code when the method throws, and with
 * ECONNRESET when the channel closes or the peer dies first (its `cause` is the stream's error).
 *
 * The peer is not trusted. Every message it sends is checked in full (see checkMessage); one
 * that cannot be decoded or is not a well-formed call, result, error or cancel destroys the
 * stream with EPROTO, saying what was wrong. A result or error for a call this side already gave
 * up on (timed out, aborted) is what a late answer looks like and is dropped; one for an id this
 * side never sent is a violation. Serving is bounded by `maxConcurrentCalls`, calling by
 * `maxCallsInFlight` (further calls wait their turn), and nothing a handler or the codec throws
 * escapes: it becomes the call's error answer.
 */
export class RpcPeer extends EventEmitter<{ close: [error: Error | null] }> {
  readonly messages: MessageChannel;
  readonly maxConcurrentCalls: number;
  readonly maxCallsInFlight: number;
  private readonly codec: Codec;
  private readonly handlers = new Map<string, Handler>();
  private readonly pending = new Map<number, PendingCall>();
  /** Calls waiting for a place among maxCallsInFlight, in the order made, with their bytes. */
  private readonly waiting = new Map<number, Uint8Array>();
  private inFlight = 0;
  /**
   * The highest id sent. Calls leave in id order (a call waits only while others do), so an answer
   * for a higher id is for a call the peer cannot know about.
   */
  private lastSentId = 0;
  /** Calls being served, each with a way to get (and so create) its AbortController. */
  private readonly serving = new Map<number, () => AbortController>();
  /** Calls served and not yet answered into the stream (handler running, or answer waiting to be written). */
  private active = 0;
  /** We paused the channel because `active` reached the limit. */
  private throttled = false;
  private readonly defaultTimeout: number;
  private nextId = 1;
  private closed: Error | null | undefined;

  constructor(transport: Duplex | MessageChannel, options: RpcOptions = {}) {
    super();
    this.maxConcurrentCalls = positive(options.maxConcurrentCalls, DEFAULT_MAX_CONCURRENT_CALLS, 'maxConcurrentCalls');
    this.maxCallsInFlight = positive(options.maxCallsInFlight, DEFAULT_MAX_CALLS_IN_FLIGHT, 'maxCallsInFlight');
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

  /**
   * Calls `method` on the peer. With `maxCallsInFlight` calls already awaiting answers, the call
   * waits for one of them to finish before it is sent. Rejects at once with ERR_INVALID_ARG_VALUE
   * for a method name over MAX_METHOD_LENGTH, and with ERR_RPC_ENCODE when the codec cannot
   * encode `params`.
   */
  call<T = unknown>(method: string, params?: unknown, options: CallOptions = {}): Promise<T> {
    if (this.closed !== undefined) return Promise.reject(this.closedError(method));
    if (typeof method !== 'string' || method.length > MAX_METHOD_LENGTH) {
      return Promise.reject(
        new XenVchanError(
          'ERR_INVALID_ARG_VALUE',
          `A method name is a string of at most ${MAX_METHOD_LENGTH} characters, not ${preview(method)}.`,
        ),
      );
    }
    if (options.signal?.aborted) return Promise.reject(abortError(options.signal.reason, `The call ${method}`));
    const id = this.nextId++;
    let bytes: Uint8Array;
    try {
      bytes = this.codec.encode({ type: 'call', id, method, params } satisfies Wire);
    } catch (error) {
      return Promise.reject(
        new XenVchanError('ERR_RPC_ENCODE', `The parameters of ${method} could not be encoded: ${describe(error)}`, { cause: error }),
      );
    }
    return new Promise<T>((resolve, reject) => {
      const timeout = options.timeout ?? this.defaultTimeout;
      const timer =
        timeout > 0
          ? setTimeout(() => {
              const waited = this.waiting.has(id)
                ? ` (it was still waiting to be sent: ${this.maxCallsInFlight} calls awaited answers, option maxCallsInFlight)`
                : '';
              this.abandon(id, new XenVchanError('ETIMEDOUT', `The call ${method} got no answer within ${timeout} ms${waited}.`));
            }, timeout)
          : undefined;
      const onAbort = () => this.abandon(id, abortError(options.signal?.reason, `The call ${method}`));
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(id, {
        resolve: resolve as (value: unknown) => void,
        reject,
        cleanup: () => {
          clearTimeout(timer);
          options.signal?.removeEventListener('abort', onAbort);
        },
        sent: false,
      });
      this.waiting.set(id, bytes);
      this.sendWaiting();
    });
  }

  /** Sends waiting calls, oldest first, while fewer than maxCallsInFlight await answers. */
  private sendWaiting(): void {
    while (this.inFlight < this.maxCallsInFlight && this.waiting.size > 0 && this.closed === undefined) {
      const [id, bytes] = this.waiting.entries().next().value!;
      this.waiting.delete(id);
      this.pending.get(id)!.sent = true;
      this.inFlight++;
      this.lastSentId = id;
      this.messages.send(bytes).catch((error: Error) => this.settle(id, error));
    }
  }

  /** Ends the channel; pending calls fail with ECONNRESET. */
  close(): void {
    this.messages.end();
    this.shutdown(null);
  }

  private abandon(id: number, error: Error): void {
    const call = this.pending.get(id);
    if (!call) return;
    this.settle(id, error);
    // The server is told only about a call it was sent.
    if (call.sent) this.post({ type: 'cancel', id }).catch(() => {});
  }

  private settle(id: number, error: Error | null, value?: unknown): void {
    const call = this.pending.get(id);
    if (!call) return;
    this.pending.delete(id);
    call.cleanup();
    if (call.sent) this.inFlight--;
    else this.waiting.delete(id);
    if (error) call.reject(error);
    else call.resolve(value);
    this.sendWaiting();
  }

  private post(message: Wire): Promise<void> {
    try {
      return this.messages.send(this.codec.encode(message));
    } catch (error) {
      return Promise.reject(error as Error);
    }
  }

  /** Ends the channel over something only a broken or hostile peer sends. */
  private violation(what: string): void {
    this.messages.stream.destroy(
      new XenVchanError(
        'EPROTO',
        `The peer broke the RPC protocol: ${what}. The channel was closed; the peer is broken or hostile, or uses another codec.`,
      ),
    );
  }

  private receive(bytes: Buffer): void {
    if (this.closed !== undefined) return;
    let decoded: unknown;
    try {
      decoded = this.codec.decode(bytes);
    } catch (error) {
      this.violation(`a message of ${bytes.length} bytes could not be decoded (${describe(error)})`);
      return;
    }
    let message: Wire | string;
    try {
      message = checkMessage(decoded);
    } catch (error) {
      // Only a custom codec could hand back something that throws when looked at (a Proxy, a getter).
      message = `a message could not be examined (${describe(error)})`;
    }
    if (typeof message === 'string') {
      this.violation(message);
      return;
    }
    switch (message.type) {
      case 'call':
        if (this.serving.has(message.id)) this.violation(`call ${message.id} arrived while a call with that id was still being served`);
        else this.serve(message);
        return;
      case 'result':
      case 'error':
        // An id not yet sent cannot be a late answer; a sent one no longer pending is (after a timeout or an abort).
        if (message.id > this.lastSentId) this.violation(`an answer came for call ${message.id}, which this side never sent`);
        else if (message.type === 'result') this.settle(message.id, null, message.value);
        else this.settle(message.id, new RemoteError(message.error.code, message.error.message, message.error.name));
        return;
      case 'cancel':
        // A cancel may cross the answer on the way: one for a call no longer served is dropped.
        this.serving
          .get(message.id)?.()
          .abort(abortError(undefined, 'This call', 'Its caller cancelled it.'));
        return;
    }
  }

  /** Serves one call, counting it against maxConcurrentCalls until its answer is in the stream. */
  private serve(message: Extract<Wire, { type: 'call' }>): void {
    this.active++;
    if (this.active >= this.maxConcurrentCalls && !this.throttled) {
      this.throttled = true;
      this.messages.pause();
    }
    const done = () => {
      this.active--;
      if (this.throttled && this.active < this.maxConcurrentCalls) {
        this.throttled = false;
        this.messages.resume();
      }
    };
    void this.answer(message).then(done, done);
  }

  /** Runs the handler and writes its answer. Never rejects: whatever is thrown becomes the error answer. */
  private async answer(message: Extract<Wire, { type: 'call' }>): Promise<void> {
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
      reply = errorAnswer(message.id, error);
    } finally {
      this.serving.delete(message.id);
    }
    if ((controller as AbortController | null)?.signal.aborted || this.closed !== undefined) return;
    const bytes = this.encodeAnswer(reply, message.method);
    if (bytes) await this.messages.send(bytes).catch(() => {});
  }

  /** The answer's bytes; an answer that cannot be encoded or is over the size limit becomes an error saying so. */
  private encodeAnswer(reply: Wire, method: string): Uint8Array | null {
    let problem: XenVchanError;
    try {
      const bytes = this.codec.encode(reply);
      if (bytes.length <= this.messages.maxMessageSize) return bytes;
      problem = new XenVchanError(
        'EMSGSIZE',
        `The answer of ${JSON.stringify(method)} is ${bytes.length} bytes, over the channel's limit of ${this.messages.maxMessageSize} (option maxMessageSize).`,
      );
    } catch (error) {
      problem = new XenVchanError('ERR_RPC_ENCODE', `The answer of ${JSON.stringify(method)} could not be encoded: ${describe(error)}`);
    }
    try {
      return this.codec.encode(errorAnswer(reply.id, problem));
    } catch {
      return null; // a codec that cannot encode a plain error object: the caller's timeout has to do
    }
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
    return new XenVchanError(
      'ECONNRESET',
      `The RPC channel closed${method ? ` before ${method} could be called` : ' before the answer came'}${cause}.`,
      {
        cause: this.closed ?? undefined,
      },
    );
  }
}

/**
 * What the peer sent, checked field by field: the message (with only the fields it should
 * have), or what is wrong with it. Fields a message does not use are ignored.
 */
function checkMessage(value: unknown): Wire | string {
  if (!isPlainObject(value)) return `a message is ${preview(value)}, not an object`;
  const { type, id } = value;
  if (type !== 'call' && type !== 'result' && type !== 'error' && type !== 'cancel') {
    return `a message has the type ${preview(type)}, not "call", "result", "error" or "cancel"`;
  }
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 1)
    return `${type === 'error' ? 'an' : 'a'} ${type} message has the id ${preview(id)}, not a positive safe integer`;
  switch (type) {
    case 'call': {
      const { method } = value;
      if (typeof method !== 'string' || method.length > MAX_METHOD_LENGTH) {
        return `call ${id} names the method ${preview(method)}, not a string of at most ${MAX_METHOD_LENGTH} characters`;
      }
      return { type, id, method, params: value.params };
    }
    case 'result':
      return { type, id, value: value.value };
    case 'error': {
      const { error } = value;
      if (!isPlainObject(error)) return `the error answering call ${id} is ${preview(error)}, not an object`;
      const { code, message, name } = error;
      if (typeof code !== 'string') return `the error answering call ${id} has the code ${preview(code)}, not a string`;
      if (typeof message !== 'string') return `the error answering call ${id} has the message ${preview(message)}, not a string`;
      if (name !== undefined && typeof name !== 'string')
        return `the error answering call ${id} has the name ${preview(name)}, not a string`;
      return { type, id, error: name === undefined ? { code, message } : { code, message, name } };
    }
    case 'cancel':
      return { type, id };
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/** A short description of a value from the peer, for error messages (never its whole content). */
function preview(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
    case 'number':
    case 'boolean':
      return String(value);
    case 'undefined':
      return 'missing';
    case 'object':
      return value === null ? 'null' : Array.isArray(value) ? 'an array' : 'an object';
    default:
      return `a ${typeof value}`;
  }
}

/** The message of something thrown, whatever was thrown. */
function describe(error: unknown): string {
  try {
    return error instanceof Error ? String(error.message) : String(error);
  } catch {
    return 'a value that cannot be turned into text';
  }
}

/** The error answer for whatever a handler threw: its code, message and name if they are strings. */
function errorAnswer(id: number, error: unknown): Wire {
  const code = field(error, 'code');
  const text = field(error, 'message');
  const name = field(error, 'name');
  return {
    type: 'error',
    id,
    error: {
      code: typeof code === 'string' ? code : 'ERR_RPC_REMOTE',
      message: typeof text === 'string' ? text : describe(error),
      ...(typeof name === 'string' ? { name } : {}),
    },
  };
}

/** A property of something thrown, or undefined when it has none or reading it throws. */
function field(error: unknown, key: string): unknown {
  if ((typeof error !== 'object' || error === null) && typeof error !== 'function') return undefined;
  try {
    return (error as Record<string, unknown>)[key];
  } catch {
    return undefined;
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1)
    throw new XenVchanError('ERR_INVALID_ARG_VALUE', `The option ${name} must be a whole number of at least 1, got ${String(value)}.`);
  return value;
}
