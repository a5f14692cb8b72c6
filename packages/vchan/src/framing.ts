import type { Duplex } from 'node:stream';
import { XenVchanError } from '@xen-vchan/native';
import { abortError } from './errors.js';

export interface MessageChannelOptions {
  /** Largest message accepted either way, in bytes (at most 2^32 - 1, the prefix's range). Default 64 MiB. */
  maxMessageSize?: number;
  /**
   * Messages received but not yet taken (by async iteration, or held back by pause()) that this
   * side keeps before it stops reading the stream; reading resumes once some are taken. Default 256.
   */
  maxQueuedMessages?: number;
  /**
   * The same bound in bytes: reading stops once the messages waiting hold this many (the message
   * that crosses the line is kept, so the queue holds at most this plus one message). Default 1 MiB.
   */
  maxQueuedBytes?: number;
}

/** Bytes of the length prefix in front of every message (u32, little-endian). */
const HEADER = 4;
const DEFAULT_MAX = 64 * 1024 * 1024;
const DEFAULT_MAX_QUEUED_MESSAGES = 256;
const DEFAULT_MAX_QUEUED_BYTES = 1024 * 1024;

interface Outgoing {
  message: Uint8Array;
  resolve: () => void;
  reject: (error: Error) => void;
}

export interface MessageSendOptions {
  /**
   * Gives up the send with ABORT_ERR. A message still waiting its turn is dropped (nothing of it
   * is written); one already written to the stream is not taken back, only the wait for the
   * stream's room ends. For a deadline, pass `AbortSignal.timeout(ms)`.
   */
  signal?: AbortSignal;
}

/**
 * Whole messages over a byte stream (a Vchan, or any Duplex): each is a u32 little-endian length
 * and that many bytes, so messages may be larger than the ring and arrive intact and in order.
 * Incoming messages are read with async iteration or onMessage() listeners; sending honours the
 * stream's backpressure. A length over `maxMessageSize` is refused on send and, when the peer
 * sends one, ends the channel with EMSGSIZE (it would otherwise make us buffer without bound).
 *
 * Memory is bounded both ways, whatever the peer does. Incoming: once `maxQueuedMessages` or
 * `maxQueuedBytes` are waiting to be taken (or while pause() holds delivery), the stream is
 * paused, so its buffer fills to its high-water mark and then the peer's writes block (on a vchan,
 * the ring fills); what is held here is then at most the queue bound, plus a message being
 * assembled and one chunk. Outgoing: messages are written one after another only while the
 * stream is under its high-water mark; the rest wait in send() (each caller holds its own bytes),
 * so a peer that stops reading holds up senders instead of growing the stream's buffer.
 */
export class MessageChannel implements AsyncIterable<Buffer> {
  readonly maxMessageSize: number;
  readonly maxQueuedMessages: number;
  readonly maxQueuedBytes: number;
  /** Received bytes not yet split into messages. */
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private expected: number | null = null;
  /** Whole messages nobody has taken yet. */
  private readonly queue: Buffer[] = [];
  private queueBytes = 0;
  private readonly waiters: { resolve: (result: IteratorResult<Buffer>) => void; reject: (error: Error) => void }[] = [];
  private failure: Error | null = null;
  private ended = false;
  private readonly listeners = new Set<(message: Buffer) => void>();
  /** pause() was called: nothing is delivered or read until resume(). */
  private held = false;
  /** We paused the stream (and so must resume it). */
  private streamPaused = false;
  private pumping = false;
  private readonly outgoing: Outgoing[] = [];
  private outgoingBytes = 0;
  private waitingForDrain = false;
  private corked = false;
  private endRequested = false;
  private endCalled = false;

  constructor(
    readonly stream: Duplex,
    options: MessageChannelOptions = {},
  ) {
    this.maxMessageSize = limit(options.maxMessageSize, DEFAULT_MAX, 'maxMessageSize', 0, 0xffff_ffff);
    this.maxQueuedMessages = limit(options.maxQueuedMessages, DEFAULT_MAX_QUEUED_MESSAGES, 'maxQueuedMessages');
    this.maxQueuedBytes = limit(options.maxQueuedBytes, DEFAULT_MAX_QUEUED_BYTES, 'maxQueuedBytes');
    stream.on('data', this.onData);
    // The readable side ending says nothing about the writable one (a Duplex may be half-open);
    // an error or a close ends both.
    stream.on('end', () => this.finish(null));
    stream.on('error', (error) => {
      this.finish(error);
      this.failOutgoing(error);
    });
    stream.on('close', () => {
      this.finish(null);
      this.failOutgoing(this.closedError());
    });
  }

  /** Bytes received and held here: messages not yet taken, and a message still arriving. */
  get queuedBytes(): number {
    return this.queueBytes + this.buffered;
  }

  /** Bytes of messages given to send() and not yet written to the stream (waiting for its 'drain'). */
  get unsentBytes(): number {
    return this.outgoingBytes;
  }

  /**
   * Sends one message; resolves once it is written to the stream and the stream is under its
   * high-water mark again. Messages go out in the order send() was called; while the stream is
   * over its high-water mark they wait here, not in the stream's buffer. Without a `signal` this
   * waits as long as the peer does not read, as a socket write would.
   */
  send(message: Uint8Array, options: MessageSendOptions = {}): Promise<void> {
    if (message.length > this.maxMessageSize) {
      return Promise.reject(
        new XenVchanError(
          'EMSGSIZE',
          `A ${message.length}-byte message is over this channel's limit of ${this.maxMessageSize} bytes (option maxMessageSize).`,
        ),
      );
    }
    if (this.closedForSending()) return Promise.reject(this.closedError());
    const { signal } = options;
    const what = `The send of a ${message.length}-byte message`;
    if (signal?.aborted) return Promise.reject(abortError(signal.reason, what, 'Nothing of it was written.'));
    return new Promise((resolve, reject) => {
      const entry: Outgoing = { message, resolve, reject };
      if (signal) {
        const onAbort = () => this.abandon(entry, signal.reason, what);
        signal.addEventListener('abort', onAbort, { once: true });
        entry.resolve = () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        };
        entry.reject = (error) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        };
      }
      this.outgoing.push(entry);
      this.outgoingBytes += message.length + HEADER;
      this.flushOutgoing();
    });
  }

  /**
   * A send given up: while it waits its turn it is dropped, whole; once written to the stream it
   * cannot be taken back (the stream may be mid-way through it), so only its wait for room ends.
   */
  private abandon(entry: Outgoing, reason: unknown, what: string): void {
    const index = this.outgoing.indexOf(entry);
    if (index < 0) {
      entry.reject(abortError(reason, what, 'It was already written to the stream, and reaches the peer if the stream drains.'));
      return;
    }
    // Entries wait here only while a 'drain' is awaited, and that 'drain' goes on with the rest
    // (and ends the stream, if asked): dropping one needs nothing more.
    this.outgoing.splice(index, 1);
    this.outgoingBytes -= entry.message.length + HEADER;
    entry.reject(abortError(reason, what, 'Nothing of it was written.'));
  }

  /** Calls `listener` for each incoming message, instead of async iteration. */
  onMessage(listener: (message: Buffer) => void): () => void {
    this.listeners.add(listener);
    this.pump();
    return () => this.listeners.delete(listener);
  }

  /**
   * Stops delivering messages, to listeners and to iteration alike, and stops reading the
   * stream, so the peer meets backpressure, until resume(). For a consumer that cannot take more
   * for a while (RpcPeer uses it to bound the calls it serves at once).
   */
  pause(): void {
    this.held = true;
    this.flow();
  }

  /** Delivers what was held back and reads on. */
  resume(): void {
    this.held = false;
    this.pump();
  }

  isPaused(): boolean {
    return this.held;
  }

  /** Ends the underlying stream, after every message already given to send() is written. */
  end(): void {
    this.endRequested = true;
    if (this.outgoing.length === 0) this.endIfRequested();
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: () => {
        if (!this.held && this.queue.length > 0) {
          const message = this.dequeue();
          this.pump();
          return Promise.resolve({ value: message, done: false });
        }
        if (this.queue.length === 0 && this.failure) return Promise.reject(this.failure);
        if (this.queue.length === 0 && this.ended) return Promise.resolve({ value: undefined, done: true });
        const next = new Promise<IteratorResult<Buffer>>((resolve, reject) => this.waiters.push({ resolve, reject }));
        this.pump();
        return next;
      },
      return: async () => {
        this.stream.destroy();
        return { value: undefined, done: true };
      },
    };
  }

  private readonly onData = (chunk: Buffer) => {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    this.pump();
  };

  /**
   * Hands out what can be handed out, splits more messages off what was received while the queue
   * has room, then reads on or stops reading. Listeners may pause, resume or destroy from inside
   * delivery: the loop re-checks everything each time round, and a nested call leaves the work to
   * the loop already running.
   */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (!this.held) {
        const consumer = this.listeners.size > 0 || this.waiters.length > 0;
        if (this.queue.length > 0) {
          if (consumer) {
            this.deliver(this.dequeue());
            continue;
          }
          if (this.queueFull()) break;
        }
        // A stream torn down (by the peer's nonsense, or by a listener that found some) is read no
        // further; after a clean end, finish() has already split off every whole message.
        if (this.stream.destroyed || this.ended) break;
        const message = this.split();
        if (message === null) break;
        if (consumer) this.deliver(message);
        else this.enqueue(message);
      }
    } finally {
      this.pumping = false;
    }
    if (this.ended && this.queue.length === 0) {
      // Everything received was handed out: whoever still waits learns how the channel ended.
      for (const waiter of this.waiters.splice(0)) {
        if (this.failure) waiter.reject(this.failure);
        else waiter.resolve({ value: undefined, done: true });
      }
    }
    this.flow();
  }

  /** Reads while there is room for what arrives, pauses the stream when there is not. */
  private flow(): void {
    if (this.ended || this.stream.destroyed) return;
    const room = !this.held && !this.queueFull();
    if (room && this.streamPaused) {
      this.streamPaused = false;
      this.stream.resume();
    } else if (!room && !this.streamPaused) {
      this.streamPaused = true;
      this.stream.pause();
    }
  }

  private queueFull(): boolean {
    return this.queue.length >= this.maxQueuedMessages || this.queueBytes >= this.maxQueuedBytes;
  }

  private enqueue(message: Buffer): void {
    this.queue.push(message);
    this.queueBytes += message.length;
  }

  private dequeue(): Buffer {
    const message = this.queue.shift()!;
    this.queueBytes -= message.length;
    return message;
  }

  /** The next whole message out of what was received, or null. A length over the limit destroys the stream. */
  private split(): Buffer | null {
    if (this.expected === null) {
      if (this.buffered < HEADER) return null;
      const length = this.take(HEADER).readUInt32LE(0);
      if (length > this.maxMessageSize) {
        this.stream.destroy(
          new XenVchanError(
            'EMSGSIZE',
            `The peer sent a ${length}-byte message, over this channel's limit of ${this.maxMessageSize} bytes (option maxMessageSize).`,
          ),
        );
        return null;
      }
      this.expected = length;
    }
    if (this.buffered < this.expected) return null;
    const message = this.take(this.expected);
    this.expected = null;
    return message;
  }

  /** Removes `count` bytes from the front of what was received, joining chunks only when needed. */
  private take(count: number): Buffer {
    this.buffered -= count;
    const first = this.chunks[0];
    if (first && first.length >= count) {
      const taken = first.subarray(0, count);
      if (first.length === count) this.chunks.shift();
      else this.chunks[0] = first.subarray(count);
      return count === 0 ? Buffer.alloc(0) : taken;
    }
    const result = Buffer.allocUnsafe(count);
    let filled = 0;
    while (filled < count) {
      const chunk = this.chunks[0]!;
      const part = Math.min(chunk.length, count - filled);
      chunk.copy(result, filled, 0, part);
      filled += part;
      if (part === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(part);
    }
    return result;
  }

  private deliver(message: Buffer): void {
    if (this.listeners.size > 0) {
      for (const listener of this.listeners) listener(message);
      return;
    }
    this.waiters.shift()!.resolve({ value: message, done: false });
  }

  /** The readable side is over: splits what is left (after a clean end), and wakes every waiter. */
  private finish(error: Error | null): void {
    if (this.ended || this.failure) return;
    if (error) this.failure = error;
    else {
      // Nothing more will arrive: every whole message still unsplit is queued (bounded by what was
      // already received), and what is left after them was cut off.
      for (let message = this.split(); message !== null; message = this.split()) this.enqueue(message);
      if (this.stream.errored)
        this.failure = this.stream.errored; // an oversized length among them
      else if (this.expected !== null || this.buffered > 0)
        this.failure = new XenVchanError('ECONNRESET', 'The channel ended in the middle of a message.');
    }
    this.ended = true;
    this.pump();
  }

  /** Writes waiting messages while the stream is under its high-water mark. */
  private flushOutgoing(): void {
    if (this.waitingForDrain) return;
    if (!this.corked && this.outgoing.length > 0) {
      // Header and body (and whatever else is sent this tick) leave in one writev.
      this.corked = true;
      this.stream.cork();
      process.nextTick(() => {
        this.corked = false;
        this.stream.uncork();
      });
    }
    while (this.outgoing.length > 0) {
      if (this.closedForWriting()) {
        this.failOutgoing(this.closedError());
        return;
      }
      if (this.stream.writableNeedDrain) {
        this.awaitDrain(null);
        return;
      }
      const entry = this.outgoing.shift()!;
      this.outgoingBytes -= entry.message.length + HEADER;
      const header = Buffer.allocUnsafe(HEADER);
      header.writeUInt32LE(entry.message.length, 0);
      this.stream.write(header);
      if (this.stream.write(entry.message)) entry.resolve();
      else this.awaitDrain(entry);
      if (this.waitingForDrain) return;
    }
    this.endIfRequested();
  }

  private endIfRequested(): void {
    if (!this.endRequested || this.endCalled) return;
    this.endCalled = true;
    this.stream.end();
  }

  /** One wait for 'drain' at a time; `entry` (written last) resolves with it, and writing goes on. */
  private awaitDrain(entry: Outgoing | null): void {
    this.waitingForDrain = true;
    waitForDrain(this.stream).then(
      () => {
        this.waitingForDrain = false;
        entry?.resolve();
        this.flushOutgoing();
      },
      (error: Error) => {
        this.waitingForDrain = false;
        entry?.reject(error);
        this.failOutgoing(error);
      },
    );
  }

  private failOutgoing(error: Error): void {
    this.outgoingBytes = 0;
    for (const entry of this.outgoing.splice(0)) entry.reject(error);
  }

  private closedForSending(): boolean {
    return this.endRequested || this.closedForWriting();
  }

  private closedForWriting(): boolean {
    return this.failure !== null || this.stream.writableEnded || this.stream.destroyed;
  }

  private closedError(): Error {
    return this.failure ?? new XenVchanError('ECONNRESET', 'The message channel is closed.');
  }
}

function limit(value: number | undefined, fallback: number, name: string, least = 1, most = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < least || value > most) {
    throw new XenVchanError(
      'ERR_INVALID_ARG_VALUE',
      `The option ${name} must be a whole number from ${least} to ${most}, got ${String(value)}.`,
    );
  }
  return value;
}

function waitForDrain(stream: Duplex): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (error?: Error) => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
      if (error) reject(error);
      else resolve();
    };
    const onDrain = () => done();
    const onClose = () => done(new XenVchanError('ECONNRESET', 'The channel closed while a message was being sent.'));
    stream.on('drain', onDrain);
    stream.on('close', onClose);
  });
}
