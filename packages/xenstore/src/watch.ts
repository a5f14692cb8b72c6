import { XsType, xsStrings } from '@xen-vchan/native';
import type { WatchRoute, XenStoreConnection } from './connection.js';

export interface WatchEvent {
  /** The node that changed (or was created or removed): the watched path or one below it, relative if the watch's path was. */
  path: string;
  token: string;
}

type Waiter = { resolve: (result: IteratorResult<WatchEvent>) => void; reject: (error: Error) => void };

/**
 * A registered watch: an async iterator of events, until close(). Every event is a hint that
 * something at or below `path` changed: read the nodes again. The first event comes at once on
 * registration (XenStore sends it so that the current state gets checked). A path whose event is
 * still queued is not queued again, so an unread watch holds at most one event per node.
 */
export class Watch implements AsyncIterableIterator<WatchEvent>, WatchRoute {
  private readonly queue = new Set<string>();
  private readonly waiters: Waiter[] = [];
  private state: 'open' | 'closed' = 'open';
  private failure: Error | null = null;

  /** @internal Made by XenStore.watch(). */
  constructor(
    private readonly connection: XenStoreConnection,
    readonly path: string,
    readonly token: string,
    // Held so that the store (and its connection) stays alive while the watch is in use.
    private readonly store: object,
  ) {}

  next(): Promise<IteratorResult<WatchEvent>> {
    const [path] = this.queue;
    if (path !== undefined) {
      this.queue.delete(path);
      return Promise.resolve({ value: { path, token: this.token }, done: false });
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.state === 'closed') return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Leaving a `for await` loop closes the watch. */
  async return(): Promise<IteratorResult<WatchEvent>> {
    await this.close();
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Unregisters the watch (UNWATCH); iteration ends. Idempotent. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.finish();
    this.connection.removeWatch(this.token);
    // A closed connection takes its watches with it, so losing it before the reply is no failure.
    if (this.connection.ended) return;
    try {
      await this.connection.request(XsType.UNWATCH, 0, xsStrings(this.path, this.token), `unwatch ${this.path}`, this.store);
    } catch (error) {
      if (!this.connection.ended) throw error;
    }
  }

  /** @internal */
  deliver(path: string): void {
    if (this.state === 'closed') return;
    const waiter = this.waiters.shift();
    if (waiter) waiter.resolve({ value: { path, token: this.token }, done: false });
    else this.queue.add(path);
  }

  /** @internal */
  finish(): void {
    this.state = 'closed';
    this.queue.clear();
    for (const waiter of this.waiters.splice(0)) waiter.resolve({ value: undefined, done: true });
  }

  /** @internal */
  fail(error: Error): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.failure = error;
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
  }
}
