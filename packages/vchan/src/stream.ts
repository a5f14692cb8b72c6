import { Duplex, type DuplexOptions } from 'node:stream';
import { XenVchanError } from '@xen-vchan/native';
import { abortError, deadlineOption, protocolError } from './errors.js';
import { LIVE_CONNECTED, LIVE_GONE, LIVE_WAITING } from './layout.js';
import type { VchanLink } from './link.js';

/** What a channel has done so far. */
export interface VchanStats {
  /** Bytes taken out of the read ring. */
  bytesRead: number;
  /** Bytes put into the write ring. */
  bytesWritten: number;
  eventsSent: number;
  eventsReceived: number;
  /** Times a write found the ring full and had to wait for the peer. */
  writeStalls: number;
  /** Times a read found the ring empty and had to wait for the peer. */
  readStalls: number;
}

/**
 * Deadlines of a stream: how long it waits on a peer that stopped doing its part. createServer()
 * and connect() take them too, for the streams they make. See "Deadlines" in the README.
 */
export interface VchanDeadlines {
  /**
   * How long `end()` waits for a peer that takes nothing from the ring, in ms. `end()` closes only
   * once everything written is in the ring, so a peer that stopped reading would otherwise keep
   * the stream, its pages and its port for ever (and a process that ended its streams would not
   * exit). When the peer has taken nothing for this long while `end()` still has bytes to put in,
   * the stream is destroyed with ETIMEDOUT saying how many bytes were not sent; the peer still
   * reads what did go in. A slow reader that keeps reading is waited for, however long the rest
   * takes. Seen between 1 and 1.5 times this after the last byte went in. Default 30 000; 0 waits
   * for ever.
   */
  closeTimeout?: number;
  /**
   * Destroys the stream with ETIMEDOUT once it has waited on the peer this long, in ms, without a
   * byte moving either way. The stream waits on the peer while (a) bytes written here wait for
   * room in the ring (a write, a send() or end() in progress: the peer is not reading), or (b) its
   * readable side wants data (a 'data' listener, async iteration, read() or recv() asked, and the
   * buffer is under its high-water mark) and the ring is empty. Bytes moving in either direction
   * count as progress, so a one-way transfer never trips it through its idle direction.
   *
   * Because of (b), a stream being read whose peer has nothing to say is stalled too: set it where
   * the peer is expected to keep talking (answers due, a steady feed). Default 0, off: an idle peer
   * is normal, as an idle socket is, and a stream has no way to know what the protocol above
   * expects. The stall is seen between 1 and 1.5 times this after the last byte moved.
   */
  stallTimeout?: number;
}

/** Options of `new Vchan(link, options)`: the Duplex's (high-water marks) and the deadlines. */
export interface VchanOptions extends DuplexOptions, VchanDeadlines {}

/** A wait for the peer that the caller may give up: `send()` and `recv()`. */
export interface WaitOptions {
  /** Gives up the wait with ABORT_ERR (`cause`: the signal's reason). */
  signal?: AbortSignal;
  /** Gives up the wait with ETIMEDOUT after this many ms. Default 0: none, as with a socket. */
  timeout?: number;
}

/** Options of `Vchan.reserve()`. */
export interface ReserveOptions {
  /** Gives up the wait for room with ABORT_ERR (`cause`: the signal's reason); nothing is reserved. */
  signal?: AbortSignal;
}

/** Options of `Vchan.views()`. */
export interface ViewOptions {
  /** Ends the loop with ABORT_ERR (`cause`: the signal's reason) when it aborts while waiting for bytes. */
  signal?: AbortSignal;
}

/**
 * Bytes of the read ring, read in place (see `Vchan.views()`). The consumer index moves past them
 * only when they are released, so the peer cannot reuse them while the view is held; it can still
 * write into them, since the page is shared.
 */
export interface VchanView {
  /**
   * The bytes, in the ring itself: treat them as read-only (on the client side the ring is
   * mapped read-only, and a write there kills the process). Once the view is released, reading
   * `bytes` throws ERR_VCHAN_VIEW_RELEASED; an array taken from it before then still points into
   * the ring, where the peer writes what comes next (or is empty once the channel closed).
   */
  readonly bytes: Uint8Array;
  /** Whether release() was called (or the loop moved on, which releases). */
  readonly released: boolean;
  /** Hands the bytes back: the consumer index moves past them. A second call does nothing. */
  release(): void;
}

/** A view and what releasing it does: the ring side is Vchan's. */
class RingView implements VchanView {
  #bytes: Uint8Array | null;

  constructor(
    bytes: Uint8Array,
    private readonly onRelease: (count: number) => void,
  ) {
    this.#bytes = bytes;
  }

  get bytes(): Uint8Array {
    if (!this.#bytes) {
      throw new XenVchanError(
        'ERR_VCHAN_VIEW_RELEASED',
        'This view was released (by release() or by the loop moving on): its bytes now belong to the peer. Copy what you need to keep before releasing.',
      );
    }
    return this.#bytes;
  }

  get released(): boolean {
    return this.#bytes === null;
  }

  release(): void {
    const bytes = this.#bytes;
    if (!bytes) return;
    this.#bytes = null;
    this.onRelease(bytes.length);
  }
}

function writeModeError(doing: string): XenVchanError {
  return new XenVchanError(
    'ERR_VCHAN_WRITE_MODE',
    `${doing}: a vchan has one reservation at a time; commit() the one you hold (commit(0) drops it) before reserving again.`,
  );
}

function readModeError(doing: string): XenVchanError {
  return new XenVchanError(
    'ERR_VCHAN_READ_MODE',
    `${doing}: a vchan is read either as a stream (read(), 'data', 'readable', pipe, async iteration of the stream, recv()) or through views(), not both, since each would take bytes the other expects.`,
  );
}

/** Checks the deadline options and keeps only those given (for createServer() and connect()). */
export function vchanDeadlines(options: VchanDeadlines): VchanDeadlines {
  return {
    ...(options.closeTimeout !== undefined ? { closeTimeout: deadlineOption(options.closeTimeout, 0, 'closeTimeout') } : {}),
    ...(options.stallTimeout !== undefined ? { stallTimeout: deadlineOption(options.stallTimeout, 0, 'stallTimeout') } : {}),
  };
}

const DEFAULT_CLOSE_TIMEOUT = 30_000;

/**
 * Gives up on a wait that makes no progress. While armed it looks every half `timeout`, and calls
 * `expire` once two looks in a row found `progress()` unchanged: between 1 and 1.5 times `timeout`
 * after it last changed. One interval per watch, running only while armed, reading counters the
 * stream keeps anyway: nothing is timed per chunk (in a PV guest every clock read is a system
 * call), and an unarmed watch costs nothing. Unref'd: while the stream is open its bound port
 * keeps the process alive, and the deadline should add nothing to that.
 */
class Watchdog {
  private timer: NodeJS.Timeout | undefined;
  private mark = 0;
  private quietLooks = 0;

  constructor(
    readonly timeout: number,
    private readonly progress: () => number,
    private readonly waiting: () => boolean,
    private readonly expire: () => void,
  ) {}

  arm(): void {
    if (this.timer) return;
    this.mark = this.progress();
    this.quietLooks = 0;
    this.timer = setInterval(this.look, Math.max(1, this.timeout / 2));
    this.timer.unref();
  }

  disarm(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private readonly look = () => {
    if (!this.waiting()) {
      this.disarm();
      return;
    }
    const now = this.progress();
    if (now !== this.mark) {
      this.mark = now;
      this.quietLooks = 0;
      return;
    }
    if (++this.quietLooks < 2) return;
    this.disarm();
    this.expire();
  };
}

interface PendingWrite {
  chunks: Uint8Array[];
  chunk: number;
  offset: number;
  callback: (error?: Error | null) => void;
}

/**
 * Largest Buffer handed to a reader at once. Every read copies into a fresh Buffer (the consumer
 * keeps it), and fresh large Buffers are what the reader pays for: memory the allocator has just
 * taken from the kernel page-faults on first touch. Measured between two simulated domains, 64 KiB
 * writes over 1 MiB rings: 256 KiB reads made a page fault every 36 KB moved and read 800-2200
 * MiB/s; 32 KiB reads, which malloc serves from memory it reuses, one every 256 KB and 3600-6400 MiB/s.
 */
const MAX_READ_CHUNK = 32 * 1024;
/**
 * A read wake-up moves at most one ring's worth (and at least this much, so that small rings are
 * not slowed by a turn of the event loop per kilobyte) before it lets the event loop run.
 */
const MIN_BYTES_PER_TURN = 64 * 1024;
/** Default stream buffers: large enough that a 1 MiB ring is kept busy by 64 KiB writes. */
const DEFAULT_HIGH_WATER_MARK = 256 * 1024;

/**
 * Before sleeping on the event channel, a side may busy-wait on the ring for up to this long (ms).
 * A wake-up through the event channel costs tens of microseconds (a syscall and the peer's event
 * loop); a peer that answers within a few microseconds is caught by polling the index instead, and
 * then need not send an event at all. After a few spins in a row that the peer did not answer in
 * time, a side stops spinning, and tries once again every so many sleeps.
 */
const SPIN_MS = 0.05;
const SPIN_GIVE_UP_AFTER = 3;
const SPIN_RETRY_EVERY = 32;

/** Whether one direction's waits are worth spinning for, judged by how recent spins went. */
class SpinPolicy {
  private misses = 0;
  private sleepsSinceRetry = 0;

  get worthIt(): boolean {
    return this.misses < SPIN_GIVE_UP_AFTER;
  }

  /** Spins for `probe` to reach `needed`; returns the last value seen. */
  spin(probe: () => number, needed: number): number {
    let value = probe();
    if (value >= needed || !this.worthIt) return value;
    const deadline = performance.now() + SPIN_MS;
    for (let turn = 1; ; turn++) {
      value = probe();
      if (value >= needed) {
        this.misses = 0;
        return value;
      }
      if ((turn & 31) === 0 && performance.now() > deadline) {
        this.misses++;
        return value;
      }
    }
  }

  slept(): void {
    if (this.worthIt || ++this.sleepsSinceRetry < SPIN_RETRY_EVERY) return;
    this.sleepsSinceRetry = 0;
    this.misses = SPIN_GIVE_UP_AFTER - 1; // one more try
  }
}

/**
 * A message queued by send(). It takes its turn in the Writable's buffer as an empty marker chunk
 * (so the caller's bytes are not copied into a Buffer first) and goes into the ring in one piece,
 * once the ring has room for all of it (one writeFrom, straight from the caller's bytes, so it is
 * never half in), or, cancelled by its signal or timeout before that, not at all: the Writable's
 * buffer cannot drop an entry, so flush() skips it instead.
 */
interface QueuedMessage {
  state: 'queued' | 'written' | 'cancelled';
  bytes: Uint8Array;
  /** Called once all of it is in the ring. */
  written(): void;
}

/** Marker chunks queued by send(), with their message. */
const wholeMessages = new WeakMap<Uint8Array, QueuedMessage>();

/**
 * A reserve() waiting its turn. Like a send(), it is an empty marker chunk in the Writable's
 * buffer, so it comes after everything written before it and before everything written after it.
 * When flush() reaches it and the ring has a byte free, the reservation is granted, and flush()
 * stops there (what was written after it waits) until commit().
 */
interface QueuedReservation {
  state: 'queued' | 'granted' | 'cancelled';
  wanted: number;
  granted(view: Uint8Array): void;
}

/** Marker chunks queued by reserve(), with their reservation. */
const reservations = new WeakMap<Uint8Array, QueuedReservation>();

/**
 * A connected vchan as a Node Duplex stream. Writes go into the ring this side writes; reads come
 * out of the ring it reads; one event channel wakes both directions and tells of the peer's close.
 * Every event is only a hint: each wake-up re-reads the shared state, and every value the peer
 * controls is validated (a violation destroys the stream with EPROTO).
 *
 * The ring protocol itself (how much is ready or free, asking to be woken, when the peer is told,
 * and the memory model) is in ring.ts; this class decides when to take those steps for a Node
 * stream, and sends the events the ring ends say are due.
 */
export class Vchan extends Duplex {
  private link: VchanLink | null;
  private pending: PendingWrite | null = null;
  private wantsData = false;
  private ended = false;
  /** Set when the peer's domain is gone without closing (see PeerDomainWatch). */
  private vanished: XenVchanError | null = null;
  private spinScheduled = false;
  private pullScheduled = false;
  /** Bytes read since the event loop last had a turn: one wake-up moves at most about one ring. */
  private movedSinceYield = 0;
  private readonly readSpin = new SpinPolicy();
  private readonly writeSpin = new SpinPolicy();
  private readonly counters: VchanStats = {
    bytesRead: 0,
    bytesWritten: 0,
    eventsSent: 0,
    eventsReceived: 0,
    writeStalls: 0,
    readStalls: 0,
  };
  /** Armed from end() until everything is in the ring (_final); null with closeTimeout 0. */
  private readonly closeWatch: Watchdog | null;
  /** Armed while the stream waits on the peer (see stallTimeout); null when off. */
  private readonly stallWatch: Watchdog | null;
  private finalCalled = false;
  /** How this channel is read, fixed by the first read: copies through the Readable, or views(). */
  private readMode: 'none' | 'stream' | 'views' = 'none';
  /** A views() loop is running (one at a time). */
  private viewing = false;
  /** Wakes a views() loop waiting for bytes, the peer, an abort or the end. */
  private viewWaiter: (() => void) | null = null;
  /** A reserve() was called and its commit() has not come yet (one at a time). */
  private reserving = false;
  /** The reservation granted and not yet committed: flush() is stopped at its marker. */
  private held: Uint8Array | null = null;
  /** Bytes of send() messages queued and not yet in the ring (their markers are empty chunks). */
  private queuedMessageBytes = 0;

  constructor(link: VchanLink, options: VchanOptions = {}) {
    const { closeTimeout, stallTimeout, ...duplexOptions } = options;
    super({
      readableHighWaterMark: DEFAULT_HIGH_WATER_MARK,
      writableHighWaterMark: DEFAULT_HIGH_WATER_MARK,
      ...duplexOptions,
      allowHalfOpen: false,
    });
    const closeAfter = deadlineOption(closeTimeout, DEFAULT_CLOSE_TIMEOUT, 'closeTimeout');
    const stallAfter = deadlineOption(stallTimeout, 0, 'stallTimeout');
    this.closeWatch =
      closeAfter > 0
        ? new Watchdog(
            closeAfter,
            () => this.counters.bytesWritten,
            () => !this.finalCalled && this.link !== null,
            () => this.closeTimedOut(closeAfter),
          )
        : null;
    this.stallWatch =
      stallAfter > 0
        ? new Watchdog(
            stallAfter,
            () => this.counters.bytesRead + this.counters.bytesWritten,
            () => this.link !== null && this.waitingOnPeer() !== null,
            () => this.stalled(stallAfter),
          )
        : null;
    this.link = link;
    link.events.on('event', this.onEvent);
    link.events.on('error', this.onEventsFailed);
    // Anything that happened before we listened (data, a close) is picked up now.
    queueMicrotask(() => this.service());
  }

  /** 'server' or 'client'. */
  get side(): 'server' | 'client' {
    return this.link?.side ?? 'client';
  }

  stats(): VchanStats {
    return { ...this.counters };
  }

  /** Size of the ring this side writes, the largest message send() accepts. */
  get writeRingSize(): number {
    return this.link?.writer.size ?? 0;
  }

  /** Size of the ring this side reads, the largest message recv() accepts. */
  get readRingSize(): number {
    return this.link?.reader.size ?? 0;
  }

  /**
   * Sends `message` the way libxenvchan_send does: all of it in one piece, once the ring has room
   * for all of it, after whatever was written before. Resolves once it is in the ring. A message
   * larger than the ring can never fit, so it is refused with EMSGSIZE (where libxenvchan would
   * return 0 forever).
   *
   * `signal` and `timeout` give up the wait for room (default: none, as with a socket): the send
   * rejects with ABORT_ERR or ETIMEDOUT and nothing of the message goes into the ring, so the peer
   * never sees half of it, and what is written after it follows as if it had never been sent.
   * Once the message is in the ring it stands, and the send resolves.
   *
   * The bytes go into the ring straight from `message` when its turn comes (no copy is made
   * first): leave them unchanged until the send settles.
   */
  send(message: Uint8Array, options: WaitOptions = {}): Promise<void> {
    if (!this.link || this.writableEnded) {
      return Promise.reject(new XenVchanError('EPIPE', 'The vchan is closed; nothing more can be sent on it.'));
    }
    const size = this.writeRingSize;
    if (message.length > size) {
      return Promise.reject(
        new XenVchanError(
          'EMSGSIZE',
          `A ${message.length}-byte message cannot fit the ${size}-byte ring this side writes; send it in pieces (write()) or use a larger ring.`,
        ),
      );
    }
    let timeout: number;
    try {
      timeout = deadlineOption(options.timeout, 0, 'timeout');
    } catch (error) {
      return Promise.reject(error);
    }
    const { signal } = options;
    const what = `The send of a ${message.length}-byte message`;
    const notSent = 'Nothing of it went into the ring; the stream goes on.';
    if (signal?.aborted) return Promise.reject(abortError(signal.reason, what, notSent));
    // The message takes its turn as an empty marker; its bytes go into the ring straight from
    // `message` when the turn comes (no copy into a Buffer of our own first).
    const marker = Buffer.alloc(0);
    return new Promise((resolve, reject) => {
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const settle = (error?: Error | null) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (queued.state === 'queued' && error) {
          // Given up, or failed with the stream: it will never go in.
          queued.state = 'cancelled';
          this.queuedMessageBytes -= message.length;
        }
        if (error) reject(error);
        else resolve();
      };
      const queued: QueuedMessage = { state: 'queued', bytes: message, written: () => settle() };
      const cancel = (error: Error) => {
        if (queued.state !== 'queued') return; // in the ring already: it stands
        settle(error);
        this.skipIfWaiting(marker);
      };
      const onAbort = () => cancel(abortError(signal!.reason, what, notSent));
      if (timeout > 0) {
        timer = setTimeout(
          () =>
            cancel(
              new XenVchanError(
                'ETIMEDOUT',
                `${what} did not go into the ring within ${timeout} ms: the ring had no room for it, as the peer is not reading (or not fast enough). ${notSent}`,
              ),
            ),
          timeout,
        );
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      wholeMessages.set(marker, queued);
      this.queuedMessageBytes += message.length;
      this.write(marker, settle);
    });
  }

  /** A marker given up: if it is the write waiting for room, skip it now, so what follows can go. */
  private skipIfWaiting(marker: Uint8Array): void {
    const pending = this.pending;
    if (pending && pending.chunks[pending.chunk] === marker) this.guard(() => this.flush());
  }

  /**
   * Zero-copy writes, first half: free bytes of the write ring, in place, for the caller to fill
   * and then publish with commit(count). Resolves with a view of at least 1 and at most `wanted`
   * bytes, and at most up to the ring's end (call again for what lies past the wrap). The peer
   * sees nothing of it until commit(), which moves the producer index.
   *
   * Order: a reservation takes its turn after everything written (write(), send(), pipe) before
   * the call, and whatever is written while it waits or is held goes in after the committed bytes:
   * the stream's writes wait for the commit, as they wait for room. So a write() and a
   * reservation never interleave by accident. One reservation at a time: reserve() again before
   * commit() throws ERR_VCHAN_WRITE_MODE. A corked stream grants nothing until uncork().
   *
   * Backpressure: it waits while the ring is full (the peer is told what is in it, and asked to
   * say when it takes some). `signal` gives up the wait with ABORT_ERR, reserving nothing. Rejects
   * with EPIPE when the peer closed (or this side ended), with what destroys the channel
   * (EPROTO, ...) and with ERR_STREAM_DESTROYED if it is destroyed while the reserve waits.
   */
  reserve(wanted: number, options: ReserveOptions = {}): Promise<Uint8Array> {
    if (!Number.isSafeInteger(wanted) || wanted < 1) {
      return Promise.reject(
        new XenVchanError('ERR_INVALID_ARG_VALUE', `reserve() takes a byte count of at least 1, got ${String(wanted)}.`),
      );
    }
    if (this.reserving) return Promise.reject(writeModeError('reserve() was called while a reservation is pending or held'));
    if (!this.link || this.writableEnded || this.destroyed) {
      return Promise.reject(
        new XenVchanError('EPIPE', 'The vchan is closed (or its writable side ended); nothing more can be written to it.'),
      );
    }
    const { signal } = options;
    const what = `The reservation of ${wanted} bytes`;
    const nothing = 'Nothing was reserved; the stream goes on.';
    if (signal?.aborted) return Promise.reject(abortError(signal.reason, what, nothing));
    this.reserving = true;
    const marker = Buffer.alloc(0);
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (error: Error | null, view?: Uint8Array) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        if (error) {
          this.reserving = false;
          reject(error);
        } else resolve(view!);
      };
      const queued: QueuedReservation = { state: 'queued', wanted, granted: (view) => settle(null, view) };
      const onAbort = () => {
        if (queued.state !== 'queued') return;
        queued.state = 'cancelled';
        settle(abortError(signal!.reason, what, nothing));
        this.skipIfWaiting(marker);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      reservations.set(marker, queued);
      this.write(marker, (error) => settle(error ?? null));
    });
  }

  /**
   * Zero-copy writes, second half: publishes the first `count` bytes of the view reserve() gave
   * (0 to its length; 0 drops the reservation), and lets what was written after it go on. The
   * peer is told as for any write (at once if it waits and half a ring has moved, else before
   * this side next waits or stops). Throws ERR_VCHAN_NO_RESERVATION without a granted reservation,
   * ERR_INVALID_ARG_VALUE for a count past the view (the reservation then stands), and EPIPE once
   * the channel closed (the reserved bytes were not sent).
   */
  commit(count: number): void {
    const view = this.held;
    if (!view) {
      throw new XenVchanError(
        'ERR_VCHAN_NO_RESERVATION',
        'commit() without a reservation: await reserve() first, and commit each reservation once.',
      );
    }
    const link = this.link;
    const pending = this.pending;
    // Closed first: once the rings are unmapped the view is empty, and any count would look wrong.
    if (!link || !pending) {
      this.held = null;
      this.reserving = false;
      throw new XenVchanError('EPIPE', 'The vchan closed while the reservation was held: the reserved bytes were not sent.');
    }
    if (!Number.isSafeInteger(count) || count < 0 || count > view.length) {
      throw new XenVchanError(
        'ERR_INVALID_ARG_VALUE',
        `commit() takes 0 to ${view.length} bytes (the reservation's length), got ${String(count)}; nothing was committed and the reservation stands.`,
      );
    }
    this.held = null;
    this.reserving = false;
    this.guard(() => {
      link.writer.commit(count);
      this.counters.bytesWritten += count;
      if (link.writer.tellIfDue()) this.notifyPeer(link);
      pending.chunk++; // past the reservation's marker: the writes after it go on
      this.flush();
    });
  }

  /**
   * Receives exactly `size` bytes, the way libxenvchan_recv does: it resolves once all of them
   * are there. A size larger than the ring this side reads is refused with EMSGSIZE, since a
   * libxenvchan peer could never send it in one piece. Rejects with ECONNRESET if the channel
   * ends first.
   *
   * `signal` and `timeout` give up the wait (default: none, as with a socket) with ABORT_ERR or
   * ETIMEDOUT. A recv that gives up takes nothing: bytes that arrived meanwhile stay in the
   * stream, for the next recv().
   */
  async recv(size: number, options: WaitOptions = {}): Promise<Buffer> {
    if (!Number.isInteger(size) || size < 0) throw new XenVchanError('ERR_INVALID_ARG_VALUE', `recv takes a byte count, got ${size}`);
    if (size > this.readRingSize && this.link) {
      throw new XenVchanError('EMSGSIZE', `A ${size}-byte message cannot fit the ${this.readRingSize}-byte ring this side reads.`);
    }
    const timeout = deadlineOption(options.timeout, 0, 'timeout');
    if (size === 0) return Buffer.alloc(0);
    const { signal } = options;
    const what = `The recv of ${size} bytes`;
    const nothingTaken = 'Nothing was taken from the stream; a later recv() gets the bytes that came.';
    if (signal?.aborted) throw abortError(signal.reason, what, nothingTaken);
    let gaveUp: Error | null = null;
    let wake: (() => void) | null = null;
    const poke = () => {
      const waiting = wake;
      wake = null;
      waiting?.();
    };
    const giveUp = (error: Error) => {
      gaveUp ??= error;
      poke();
    };
    const onAbort = () => giveUp(abortError(signal!.reason, what, nothingTaken));
    const timer =
      timeout > 0
        ? setTimeout(
            () =>
              giveUp(
                new XenVchanError(
                  'ETIMEDOUT',
                  `${what} timed out after ${timeout} ms with ${this.readableLength} of them there: the peer has not sent the rest. ${nothingTaken}`,
                ),
              ),
            timeout,
          )
        : undefined;
    signal?.addEventListener('abort', onAbort, { once: true });
    // The listeners stay for the whole recv: a 'readable' listener added while bytes are buffered
    // is told so at once, so adding one per turn would spin on a short buffer, starving the event
    // loop (and the timer and the event that would end the wait). Kept, it fires on new bytes only.
    this.on('readable', poke);
    this.on('end', poke);
    this.on('close', poke);
    try {
      for (;;) {
        if (gaveUp) throw gaveUp;
        const chunk = this.read(size) as Buffer | null;
        // At the end Node hands back whatever is left, even if short: that is not a message.
        if (chunk && chunk.length === size) return chunk;
        if (chunk) throw new XenVchanError('ECONNRESET', `The vchan closed after ${chunk.length} of the ${size} bytes asked for.`);
        if (this.readableEnded || this.destroyed) {
          throw new XenVchanError('ECONNRESET', `The vchan closed before ${size} bytes arrived.`);
        }
        await new Promise<void>((resolve) => (wake = resolve));
      }
    } finally {
      this.off('readable', poke);
      this.off('end', poke);
      this.off('close', poke);
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Zero-copy reads: iterates over the read ring's bytes in place, one view at a time, each up to
   * what is ready and at most up to the ring's end. A view stays valid until it is released, and
   * the consumer index (so the peer's room to write) moves only then: by `view.release()`, by the
   * loop asking for the next view, or by leaving the loop (break, return, throw). So a loop that
   * holds a view holds back the peer: backpressure, as a full stream buffer would.
   *
   * The peer can still write into a view's bytes (the page is shared): copy what you validate
   * before acting on it. The loop ends (done) once the peer closed and everything it wrote was
   * viewed, or once this side ended; it throws what destroys the channel (EPROTO, ECONNRESET,
   * ETIMEDOUT, ...), ABORT_ERR when `signal` aborts while it waits for bytes, and
   * ERR_STREAM_PREMATURE_CLOSE if the channel is destroyed without an error.
   *
   * A channel is read one way: views() after the stream was read (read(), 'data', pipe, recv(),
   * ...) throws ERR_VCHAN_READ_MODE, and so does a second loop while one runs; reading the stream
   * once views() was called destroys the channel with that error. Successive loops are fine.
   */
  views(options: ViewOptions = {}): AsyncGenerator<VchanView, void, undefined> {
    if (this.readMode === 'stream') throw readModeError('views() was called on a vchan whose stream was read');
    if (this.viewing) throw readModeError('views() was called while another views() loop runs on this vchan');
    this.readMode = 'views';
    this.viewing = true;
    return this.viewLoop(options.signal);
  }

  private async *viewLoop(signal: AbortSignal | undefined): AsyncGenerator<VchanView, void, undefined> {
    const onAbort = () => this.wakeViewer();
    signal?.addEventListener('abort', onAbort, { once: true });
    let view: VchanView | null = null;
    try {
      for (;;) {
        view = await this.nextView(signal);
        if (!view) return;
        yield view;
        view.release();
      }
    } finally {
      view?.release();
      signal?.removeEventListener('abort', onAbort);
      this.viewWaiter = null;
      this.viewing = false;
    }
  }

  /** The next view, or null at the end; waits for the peer as long as the ring is empty. */
  private async nextView(signal: AbortSignal | undefined): Promise<VchanView | null> {
    const link = this.link;
    if (link && this.movedSinceYield >= Math.max(link.reader.size, MIN_BYTES_PER_TURN)) {
      // As pull() does: a peer that refills as fast as we view would otherwise keep this loop in
      // microtasks for ever; after a ring's worth, timers and other I/O get their turn.
      this.tellConsumed(link);
      await new Promise((resolve) => setImmediate(resolve));
      this.movedSinceYield = 0;
    }
    for (;;) {
      if (signal?.aborted) {
        throw abortError(
          signal.reason,
          'The wait for the next view',
          'Nothing was taken from the ring; a later views() loop gets the bytes.',
        );
      }
      const link = this.link;
      if (!link) {
        if (this.errored) throw this.errored;
        if (this.ended) return null;
        throw new XenVchanError('ERR_STREAM_PREMATURE_CLOSE', 'The vchan was destroyed while views() read it.');
      }
      let found: VchanView | 'wait' | null;
      try {
        found = this.lookForView(link);
      } catch (error) {
        this.destroy(error as Error);
        throw error;
      }
      if (found !== 'wait') return found;
      await new Promise<void>((resolve) => (this.viewWaiter = resolve));
    }
  }

  /**
   * One look at the ring for views(), in pull()'s order: liveness first, then the index, so data
   * written before the peer closed is still viewed. 'wait' once the peer was asked to wake us.
   */
  private lookForView(link: VchanLink): VchanView | 'wait' | null {
    const closedByPeer = this.peerLive(link) === LIVE_GONE;
    let ready = link.reader.available();
    if (ready === 0) {
      this.movedSinceYield = 0;
      this.tellConsumed(link);
      if (this.vanished && !closedByPeer) throw this.vanished;
      if (closedByPeer) {
        this.endReadable();
        return null;
      }
      // The loop asked for more after its own reaction to the last view: a peer that answers
      // within microseconds is caught here without an event either way.
      ready = this.readSpin.spin(() => link.reader.available(), 1);
      if (ready === 0) ready = link.reader.askToBeWokenThenLook();
      if (ready === 0) {
        this.counters.readStalls++;
        this.readSpin.slept();
        this.stallWatch?.arm();
        return 'wait';
      }
    }
    return new RingView(link.reader.view(ready), (count) => this.viewReleased(link, count));
  }

  private viewReleased(link: VchanLink, count: number): void {
    // Once the link is closed its rings are unmapped and its indices no longer ours to move.
    if (this.link !== link) return;
    this.guard(() => {
      link.reader.consume(count);
      this.counters.bytesRead += count;
      this.movedSinceYield += count;
      if (link.reader.tellIfDue()) this.notifyPeer(link);
    });
  }

  /** Ends the readable side (once): after what the peer wrote, or at our own close. */
  private endReadable(): void {
    if (this.ended) return;
    this.ended = true;
    this.push(null);
    // views() reads the ring, never the (empty) Readable: resume() lets it emit 'end' all the
    // same, which ends the writable side (no half-close) and then 'close' follows, as it does for
    // a drained stream. read() on an ended stream never calls _read(), so this is no stream read.
    if (this.readMode === 'views') this.resume();
  }

  private wakeViewer(): void {
    const waiting = this.viewWaiter;
    this.viewWaiter = null;
    waiting?.();
  }

  /**
   * @internal The peer's domain no longer exists and nobody cleared its live byte: what it put into
   * the ring is still read, then the stream fails with `error` (writes fail with it at once).
   */
  peerDomainGone(error: XenVchanError): void {
    if (!this.link || this.vanished) return;
    this.vanished = error;
    this.service();
  }

  override _read(): void {
    if (this.readMode === 'views') {
      this.destroy(readModeError('The stream was read while views() reads this channel'));
      return;
    }
    this.readMode = 'stream';
    this.wantsData = true;
    this.guard(() => this.pull());
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.pending = { chunks: [chunk], chunk: 0, offset: 0, callback };
    this.guard(() => this.flush());
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    this.pending = { chunks: chunks.map((entry) => entry.chunk), chunk: 0, offset: 0, callback };
    this.guard(() => this.flush());
  }

  /**
   * Ends the writable side as any Writable does, and arms the closeTimeout: _final runs only once
   * everything written is in the ring, which a peer that stopped reading never allows.
   */
  // biome-ignore lint/suspicious/noExplicitAny: Writable.end has three overloads; the override must accept them all and forwards them unchanged.
  override end(...args: any[]): this {
    super.end(...args);
    if (!this.finalCalled && !this.destroyed && this.link) this.closeWatch?.arm();
    return this;
  }

  private closeTimedOut(timeout: number): void {
    this.destroy(
      new XenVchanError(
        'ETIMEDOUT',
        `end() could not put everything written into the ring: the peer took nothing from it for ${timeout} ms (it stopped reading). ${this.unsentBytes()} bytes were not sent; the peer gets what did go in. Make sure the peer reads to the end, or raise the option closeTimeout (0 waits for ever).`,
      ),
    );
  }

  /** Bytes written to the stream and not yet in the ring. */
  private unsentBytes(): number {
    let inRing = 0;
    const pending = this.pending;
    if (pending) {
      for (let index = 0; index < pending.chunk; index++) inRing += pending.chunks[index]!.length;
      inRing += pending.offset;
    }
    return this.writableLength - inRing + this.queuedMessageBytes;
  }

  /**
   * Everything written is in the ring by now; close the channel (the peer drains it). A vchan has
   * no half-close, so the readable side ends too, after what the peer had put into the ring.
   */
  override _final(callback: (error?: Error | null) => void): void {
    this.finalCalled = true;
    this.closeWatch?.disarm();
    this.guard(() => this.takeWhatIsLeft());
    if (this.destroyed) {
      callback(); // the peer's nonsense destroyed the stream meanwhile; its error stands
      return;
    }
    const vanished = this.vanished;
    this.closeLink();
    if (vanished) {
      callback(vanished);
      return;
    }
    this.endReadable();
    callback();
  }

  /**
   * Before closing: what the peer had put into the ring when we looked is taken too, whatever the
   * buffer holds. Only that one look: a peer that refills as fast as we take would otherwise keep
   * us here, buffering without end. So this costs at most one ring beyond the high-water mark.
   */
  private takeWhatIsLeft(): void {
    const link = this.link;
    // A views() reader takes its bytes itself; there is no stream buffer to put them in.
    if (!link || this.ended || this.readMode === 'views') return;
    let left = link.reader.available();
    // push() may run user code that closes the stream; stop as soon as the link is gone.
    while (left > 0 && this.link === link) {
      const buffer = Buffer.allocUnsafe(Math.min(left, MAX_READ_CHUNK));
      const count = link.reader.readInto(buffer, left);
      this.counters.bytesRead += count;
      left -= count;
      this.deliver(buffer);
    }
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.closeWatch?.disarm();
    this.stallWatch?.disarm();
    const pending = this.pending;
    this.pending = null;
    this.closeLink();
    pending?.callback(error ?? closedError());
    callback(error);
  }

  private readonly onEvent = (port: number) => {
    if (!this.link || port !== this.link.port) return;
    this.counters.eventsReceived++;
    this.link.events.unmask(port);
    this.service();
  };

  /** The event channel broke (its poll failed): no wake-up can come any more, so waiting would hang. */
  private readonly onEventsFailed = (error: Error) => {
    this.destroy(error);
  };

  /** Re-checks both directions and the peer's liveness. */
  private service(): void {
    this.guard(() => {
      this.flush();
      if (this.readMode === 'views') {
        this.wakeViewer();
        return;
      }
      if (this.link && (this.wantsData || this.vanished || this.peerLive(this.link) === LIVE_GONE)) this.pull();
    });
  }

  /** The peer's live byte, read once and checked: anything but 0, 1 (or 2 for a client not yet connected) is a violation. */
  private peerLive(link: VchanLink): number {
    const live = link.control.peerLive;
    const highest = link.side === 'server' ? LIVE_WAITING : LIVE_CONNECTED;
    if (live > highest) throw protocolError(`the peer's live byte is ${live}`);
    return live;
  }

  /**
   * Runs protocol work: anything it throws (the peer's nonsense, a failed device call) destroys
   * the stream with that error. A throw from the consumer's own listener is not ours to judge: it
   * goes on up, to become an uncaught exception as in any EventEmitter.
   */
  private guard(body: () => void): void {
    if (!this.link) return;
    try {
      body();
    } catch (error) {
      if (error instanceof ListenerThrew) throw error.error;
      this.destroy(error as Error);
    }
  }

  /** push(), which in flowing mode runs the consumer's 'data' listeners right here. */
  private deliver(chunk: Buffer | null): boolean {
    try {
      return this.push(chunk);
    } catch (error) {
      throw new ListenerThrew(error);
    }
  }

  private notifyPeer(link: VchanLink): void {
    link.events.notify(link.port);
    this.counters.eventsSent++;
  }

  /** Tells a writer waiting for space that we consumed, if it asked (before we wait or stop). */
  private tellConsumed(link: VchanLink): void {
    if (link.reader.tellPeer()) this.notifyPeer(link);
  }

  /** Tells a reader waiting for data that we produced, if it asked (before we wait or stop). */
  private tellProduced(link: VchanLink): void {
    if (link.writer.tellPeer()) this.notifyPeer(link);
  }

  private pull(): void {
    const link = this.link;
    if (!link || this.ended) return;
    // A turn of the event loop is due first (see below); _read() calls in between only wait.
    if (this.pullScheduled) return;
    const turnLimit = Math.max(link.reader.size, MIN_BYTES_PER_TURN);
    // push() may run user code that closes the stream; stop as soon as the link is gone.
    while (this.link === link) {
      if (this.movedSinceYield >= turnLimit) {
        // A peer that refills as fast as a synchronous consumer reads would keep us reading for
        // ever: after one ring's worth, let timers and other I/O run, then go on.
        this.tellConsumed(link);
        this.pullScheduled = true;
        setImmediate(this.resumePull);
        return;
      }
      // Liveness first, then the index: data written before the peer closed is still read.
      const closedByPeer = this.peerLive(link) === LIVE_GONE;
      let ready = link.reader.available();
      if (ready === 0) {
        this.movedSinceYield = 0; // waiting for the peer gives the event loop its turn anyway
        this.tellConsumed(link);
        if (this.vanished && !closedByPeer) {
          this.destroy(this.vanished);
          return;
        }
        if (closedByPeer) {
          this.endReadable();
          return;
        }
        if (!this.wantsData) return;
        if (this.readSpin.worthIt) {
          // Spin only after the caller's own reaction to what it just read (often a write the
          // peer answers) has run: polling before it would wait for an answer not yet asked for.
          if (!this.spinScheduled) {
            this.spinScheduled = true;
            setImmediate(this.spinForData);
          }
          return;
        }
        if (this.sleepForData(link)) return;
        ready = link.reader.available();
      }
      if (!this.wantsData) {
        this.tellConsumed(link);
        return;
      }
      const buffer = Buffer.allocUnsafe(Math.min(ready, MAX_READ_CHUNK));
      const count = link.reader.readInto(buffer, ready);
      this.counters.bytesRead += count;
      this.movedSinceYield += count;
      if (link.reader.tellIfDue()) this.notifyPeer(link);
      this.wantsData = this.deliver(buffer);
    }
  }

  private readonly resumePull = () => {
    this.pullScheduled = false;
    this.movedSinceYield = 0;
    this.guard(() => this.pull());
  };

  private readonly spinForData = () => {
    this.spinScheduled = false;
    const link = this.link;
    if (!link || this.ended || !this.wantsData) return;
    this.guard(() => {
      if (this.readSpin.spin(() => link.reader.available(), 1) > 0 || !this.sleepForData(link)) this.pull();
    });
  };

  /** True if the ring is still empty once the peer was asked for an event, and we now sleep until it. */
  private sleepForData(link: VchanLink): boolean {
    if (link.reader.askToBeWokenThenLook() > 0) return false;
    this.counters.readStalls++;
    this.readSpin.slept();
    this.stallWatch?.arm();
    return true;
  }

  /**
   * What the stream waits on the peer for, if anything (see stallTimeout): bytes written here that
   * wait for room in the ring, or a readable side that wants data. The stall watch is armed where
   * the stream starts to wait (about to sleep, off the data path) and looks at this.
   */
  private waitingOnPeer(): 'room' | 'data' | null {
    if (this.pending !== null && this.held === null) return 'room';
    if ((this.wantsData || this.viewWaiter !== null) && !this.ended) return 'data';
    return null;
  }

  private stalled(timeout: number): void {
    const waiting =
      this.waitingOnPeer() === 'room'
        ? `${this.unsentBytes()} bytes written here waited for room in the ring`
        : 'this side waited for data';
    this.destroy(
      new XenVchanError(
        'ETIMEDOUT',
        `The vchan stalled: nothing moved either way for ${timeout} ms while ${waiting} (option stallTimeout). The peer is stuck or gone quiet; if a quiet peer is normal here, raise stallTimeout or set it to 0.`,
      ),
    );
  }

  private flush(): void {
    const link = this.link;
    const pending = this.pending;
    if (!link || !pending) return;
    while (pending.chunk < pending.chunks.length) {
      if (this.link !== link) return;
      if (this.vanished || this.peerLive(link) === LIVE_GONE) {
        this.pending = null;
        pending.callback(this.vanished ?? new XenVchanError('EPIPE', 'The peer closed the vchan; the data not yet written was not sent.'));
        return;
      }
      const chunk = pending.chunks[pending.chunk]!;
      const message = pending.offset === 0 ? wholeMessages.get(chunk) : undefined;
      const reservation = pending.offset === 0 ? reservations.get(chunk) : undefined;
      if (message?.state === 'cancelled' || reservation?.state === 'cancelled') {
        pending.chunk++; // its send() or reserve() gave up before its turn: nothing of it goes
        continue;
      }
      // Held by the producer: what follows waits for its commit().
      if (reservation?.state === 'granted') return;
      const needed = message ? message.bytes.length : 1;
      let free = link.writer.space();
      if (free < needed) {
        // The reader must know about what is in the ring before we wait for it to make room.
        this.tellProduced(link);
        free = this.writeSpin.spin(() => link.writer.space(), needed);
        if (free < needed) {
          free = link.writer.askToBeWokenThenLook();
          if (free < needed) {
            this.counters.writeStalls++;
            this.writeSpin.slept();
            this.stallWatch?.arm();
            return;
          }
        }
      }
      if (reservation) {
        reservation.state = 'granted';
        this.held = link.writer.reserve(free, reservation.wanted);
        // The producer may take its time to fill it: the reader hears now of what went in before.
        this.tellProduced(link);
        reservation.granted(this.held);
        return;
      }
      if (message) {
        // free >= its length, so all of it goes in at once.
        const count = link.writer.writeFrom(message.bytes, free);
        this.counters.bytesWritten += count;
        this.queuedMessageBytes -= count;
        if (link.writer.tellIfDue()) this.notifyPeer(link);
        pending.chunk++;
        message.state = 'written';
        message.written();
        continue;
      }
      const count = link.writer.writeFrom(chunk.subarray(pending.offset), free);
      this.counters.bytesWritten += count;
      if (link.writer.tellIfDue()) this.notifyPeer(link);
      pending.offset += count;
      if (pending.offset === chunk.length) {
        pending.chunk++;
        pending.offset = 0;
      }
    }
    this.tellProduced(link);
    this.pending = null;
    pending.callback();
  }

  /** Hands the link back: it says goodbye on the page and lets go, as its kind requires. */
  private closeLink(): void {
    const link = this.link;
    if (!link) return;
    this.link = null;
    this.wakeViewer();
    link.events.off('event', this.onEvent);
    link.events.off('error', this.onEventsFailed);
    const peerGone = this.vanished !== null || link.control.peerLive === LIVE_GONE;
    if (this.ringHolds > 0) this.closeWhenLetGo = () => link.close(peerGone);
    else link.close(peerGone);
  }

  /** Holds on the ring memory (see holdRings()); the link is closed (and unmapped) when the last goes. */
  private ringHolds = 0;
  private closeWhenLetGo: (() => void) | null = null;

  /**
   * @internal Keeps the rings mapped until the returned function is called, even if the channel
   * closes meanwhile: for a system call that reads or writes a view or a reservation outside the
   * JavaScript thread (fs.read or fs.write in libuv's threadpool, a socket write that libuv
   * finishes later). Unmapped under such a call, the kernel would fail it with EFAULT at best, and
   * at worst read or write whatever memory was mapped there next. The peer hears of the close
   * only once the last hold goes.
   */
  holdRings(): () => void {
    this.ringHolds++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      if (--this.ringHolds > 0) return;
      const close = this.closeWhenLetGo;
      this.closeWhenLetGo = null;
      close?.();
    };
  }
}

/** Carries a consumer listener's exception through guard() unchanged. */
class ListenerThrew {
  constructor(readonly error: unknown) {}
}

function closedError(): XenVchanError {
  return new XenVchanError('ERR_STREAM_DESTROYED', 'The vchan was closed before this write went into the ring.');
}
