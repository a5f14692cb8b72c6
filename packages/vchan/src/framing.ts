import type { Duplex } from 'node:stream';
import { XenVchanError } from '@xen-vchan/native';

export interface MessageChannelOptions {
  /** Largest message accepted either way, in bytes. Default 64 MiB. */
  maxMessageSize?: number;
}

/** Bytes of the length prefix in front of every message (u32, little-endian). */
const HEADER = 4;
const DEFAULT_MAX = 64 * 1024 * 1024;

/**
 * Whole messages over a byte stream (a Vchan, or any Duplex): each is a u32 little-endian length
 * and that many bytes, so messages may be larger than the ring and arrive intact and in order.
 * Incoming messages are read with async iteration or 'message' events; sending honours the
 * stream's backpressure. A length over `maxMessageSize` is refused on send and, when the peer
 * sends one, ends the channel with EMSGSIZE (it would otherwise make us buffer without bound).
 */
export class MessageChannel implements AsyncIterable<Buffer> {
  readonly maxMessageSize: number;
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private expected: number | null = null;
  private readonly queue: Buffer[] = [];
  private readonly waiters: { resolve: (result: IteratorResult<Buffer>) => void; reject: (error: Error) => void }[] = [];
  private failure: Error | null = null;
  private ended = false;
  private readonly listeners = new Set<(message: Buffer) => void>();
  private drainWait: Promise<void> | null = null;

  constructor(
    readonly stream: Duplex,
    options: MessageChannelOptions = {},
  ) {
    this.maxMessageSize = options.maxMessageSize ?? DEFAULT_MAX;
    stream.on('data', this.onData);
    stream.on('end', () => this.finish(null));
    stream.on('error', (error) => this.finish(error));
    stream.on('close', () => this.finish(null));
  }

  /** Sends one message; resolves when the stream has taken it (after any backpressure wait). */
  async send(message: Uint8Array): Promise<void> {
    if (message.length > this.maxMessageSize) {
      throw new XenVchanError('EMSGSIZE', `A ${message.length}-byte message is over this channel's limit of ${this.maxMessageSize} bytes (option maxMessageSize).`);
    }
    if (this.failure || this.stream.writableEnded || this.stream.destroyed) throw this.closedError();
    const header = Buffer.allocUnsafe(HEADER);
    header.writeUInt32LE(message.length, 0);
    this.stream.cork();
    this.stream.write(header);
    const more = this.stream.write(message);
    process.nextTick(() => this.stream.uncork());
    if (!more) await this.drained();
  }

  /** One wait shared by every sender held up by the same backpressure. */
  private drained(): Promise<void> {
    this.drainWait ??= waitForDrain(this.stream).finally(() => (this.drainWait = null));
    return this.drainWait;
  }

  /** Calls `listener` for each incoming message, instead of async iteration. */
  onMessage(listener: (message: Buffer) => void): () => void {
    this.listeners.add(listener);
    for (const message of this.queue.splice(0)) listener(message);
    return () => this.listeners.delete(listener);
  }

  /** Ends the underlying stream (after what was sent is flushed). */
  end(): void {
    this.stream.end();
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: () => {
        const message = this.queue.shift();
        if (message) return Promise.resolve({ value: message, done: false });
        if (this.failure) return Promise.reject(this.failure);
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
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
    for (;;) {
      if (this.expected === null) {
        if (this.buffered < HEADER) return;
        const length = this.take(HEADER).readUInt32LE(0);
        if (length > this.maxMessageSize) {
          this.stream.destroy(new XenVchanError('EMSGSIZE', `The peer sent a ${length}-byte message, over this channel's limit of ${this.maxMessageSize} bytes.`));
          return;
        }
        this.expected = length;
      }
      if (this.buffered < this.expected) return;
      const message = this.take(this.expected);
      this.expected = null;
      this.deliver(message);
    }
  };

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
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve({ value: message, done: false });
    else this.queue.push(message);
  }

  private finish(error: Error | null): void {
    if (this.ended || this.failure) return;
    if (error) this.failure = error;
    else if (this.expected !== null || this.buffered > 0) this.failure = new XenVchanError('ECONNRESET', 'The channel ended in the middle of a message.');
    this.ended = true;
    for (const waiter of this.waiters.splice(0)) {
      if (this.failure) waiter.reject(this.failure);
      else waiter.resolve({ value: undefined, done: true });
    }
  }

  private closedError(): Error {
    return this.failure ?? new XenVchanError('ECONNRESET', 'The message channel is closed.');
  }
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
