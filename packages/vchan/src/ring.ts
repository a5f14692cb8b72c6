import type { ControlPage } from './control.js';
import { protocolError } from './errors.js';
import { NOTIFY_READ, NOTIFY_WRITE } from './layout.js';

/*
 * The ring protocol, one direction at a time, in the order libxenvchan's io.c has its steps.
 * Our names, and the io.c function each one does the work of:
 *
 *   RingReader.available()        raw_get_data_ready      bytes ready, from one read of prod
 *   RingWriter.space()            raw_get_buffer_space    free bytes, from one read of cons
 *   askToBeWokenThenLook()        the second half of fast_get_data_ready / fast_get_buffer_space:
 *                                 request_notify (WRITE for a reader, READ for a writer), then
 *                                 the same look once more
 *   RingReader.readInto()         do_recv (without its send_notify: see the batching below)
 *   RingReader.view() + consume() do_recv in two halves, for zero-copy reads: the bytes are read
 *                                 in place, and cons moves only when the consumer is done
 *   RingWriter.writeFrom()        do_send (without its send_notify)
 *   RingWriter.reserve() + commit()  do_send in two halves, for zero-copy writes: the producer
 *                                 fills free bytes in place, and prod moves only on commit
 *   tellPeer()                    send_notify (READ after consuming, WRITE after producing)
 *   tellIfDue()                   the batching rule below, then send_notify
 *
 * The event itself (xenevtchn_notify) is the caller's: tellPeer() says whether to send it.
 *
 * Batching, where we differ from io.c: io.c sends (if asked) after every do_send and do_recv. We
 * tell the peer once half a ring has moved since it was last told (tellIfDue after each move), and
 * always before this side waits on the peer or stops moving (tellPeer). A peer only asks to be
 * woken when it is about to wait on us, so it is always told before we could need it to act: no
 * wake-up is lost, only the ones nobody needed are saved.
 *
 * Trust (where we differ from io.c too): the peer can write anything into the shared page at any
 * time. We keep our own index privately (the page copy is only published, never read back), read
 * the peer's index once per decision (the caller passes that count on), and an impossible fill
 * level throws EPROTO instead of reading as "nothing there" (io.c returns 0, which stalls).
 *
 * Memory model. The rings and the control page are memory mapped from the device (or the
 * simulation's file), wrapped in an ordinary ArrayBuffer, not a SharedArrayBuffer. ECMAScript
 * lets Atomics work on non-shared typed arrays but promises nothing about other agents seeing such
 * memory, since in JavaScript none can. What we rely on instead is what V8 does, on x86-64 and
 * arm64 alike, whatever the buffer: (1) Atomics.load, store, or and and are single machine
 * accesses of the element's width, never torn, never merged or cached in a register, and
 * sequentially consistent: a load is an acquire (on arm64 ldar; on x86 a plain load, ordered by
 * TSO), a store a release that is also ordered before later loads (stlr; xchg on x86), an or/and
 * a full-barrier read-modify-write (ldaxr/stlxr loops; lock-prefixed on x86); (2) the ring copies
 * (TypedArray.prototype.set, the consumer's reads through a view, or the producer's writes into a
 * reservation) are accesses the compiler cannot move across an Atomics operation. Under those, each barrier io.c writes out (xen_mb, xen_rmb,
 * xen_wmb) is one of ours, and the comment at each Atomics call says which and why.
 */

type NotifyBit = typeof NOTIFY_READ | typeof NOTIFY_WRITE;

/**
 * One direction of a vchan: a ring of 2^order bytes and its two free-running u32 indices in the
 * control page, as one side sees it.
 */
abstract class RingEnd {
  readonly size: number;
  protected readonly mask: number;
  protected readonly indices: Int32Array;
  /** Bytes moved (consumed or produced) since the peer was last told. */
  private untold = 0;

  constructor(
    protected readonly control: ControlPage,
    protected readonly ownWord: number,
    protected readonly peerWord: number,
    protected readonly data: Uint8Array,
    /** Our index as the page had it at connect time (a persistent server's indices carry over). */
    protected own: number,
    /** What we ask the peer to wake us for when this end has to wait: WRITE for a reader, READ for a writer. */
    private readonly wakeMeFor: NotifyBit,
    /** What the peer asks to be woken for when it waits on this end: READ for a reader, WRITE for a writer. */
    private readonly peerWaitsFor: NotifyBit,
  ) {
    this.indices = control.words;
    this.size = data.length;
    this.mask = this.size - 1;
  }

  /** Bytes ready (reader) or free (writer): one read of the peer's index. */
  abstract level(): number;

  /** Bytes between the indices, from one read of the peer's index; throws EPROTO if impossible. */
  protected fill(peerIsProducer: boolean): number {
    // Seq-cst load (xen_rmb after reading prod, xen_mb before reading cons): a reader's copy out
    // and a writer's copy in come after it, so neither touches bytes the peer has not finished
    // with. Read once: the count it gives is the one every later step of this decision uses.
    const peer = Atomics.load(this.indices, this.peerWord) >>> 0;
    const used = (peerIsProducer ? peer - this.own : this.own - peer) >>> 0;
    if (used > this.size) {
      throw protocolError(`ring indices say ${used} bytes are in a ${this.size}-byte ring`);
    }
    return used;
  }

  /**
   * Asks the peer for an event when it next moves its index, then looks once more: it may have
   * moved it after our last look and before it could see the request, and would then not wake
   * us. Returns the new level; 0 (or less than needed) means the caller can sleep on the event.
   */
  askToBeWokenThenLook(): number {
    // Atomics.or is a full barrier (io.c's xen_mb in request_notify): the request is visible to
    // the peer before the look below reads its index, so either that look sees its move or the
    // peer sees the request after moving, and sends the event.
    this.control.requestWake(this.wakeMeFor);
    return this.level();
  }

  /**
   * send_notify: whether the caller must send the peer an event now. True when bytes moved since
   * the peer was last told and it asked to be woken for them; the request is taken (cleared).
   */
  tellPeer(): boolean {
    if (this.untold === 0) return false;
    this.untold = 0;
    // The index store of the move came first and is seq-cst, and takeWakeRequest's and is a full
    // barrier (io.c's xen_mb in send_notify): a peer that asked after seeing our old index finds
    // the new one when it looks again, and one that asked before is answered here.
    return this.control.takeWakeRequest(this.peerWaitsFor);
  }

  /** The batching rule: after a move, the peer is told once half a ring has moved untold. */
  tellIfDue(): boolean {
    return this.untold >= this.size / 2 && this.tellPeer();
  }

  /** Moves our index by `count` and publishes it. */
  protected advance(count: number): void {
    this.own = (this.own + count) >>> 0;
    this.untold += count;
    // Seq-cst store (xen_mb before cons += n, xen_wmb before prod += n): the reader's copy out,
    // or the writer's copy in (or the producer's fill of a reservation), is complete before the
    // peer can see the index that hands those bytes over.
    Atomics.store(this.indices, this.ownWord, this.own | 0);
  }

  /** Persistent server, between two clients: the next client starts with nothing to be told. */
  protected forgetUntold(): void {
    this.untold = 0;
  }
}

/** The end we read: the peer produces, we consume. */
export class RingReader extends RingEnd {
  constructor(control: ControlPage, ownWord: number, peerWord: number, data: Uint8Array, own: number) {
    super(control, ownWord, peerWord, data, own, NOTIFY_WRITE, NOTIFY_READ);
  }

  /** Bytes ready to read (raw_get_data_ready). */
  available(): number {
    return this.fill(true);
  }

  level(): number {
    return this.available();
  }

  /**
   * Copies up to `target.length` ready bytes into `target` and consumes them; returns how many.
   * `ready` is a count from available(), so the peer's index is read once per decision.
   */
  readInto(target: Uint8Array, ready: number): number {
    const count = Math.min(ready, target.length);
    if (count === 0) return 0;
    const start = this.own & this.mask;
    const first = Math.min(count, this.size - start);
    target.set(this.data.subarray(start, start + first), 0);
    if (first < count) target.set(this.data.subarray(0, count - first), first);
    this.advance(count);
    return count;
  }

  /**
   * The next ready bytes in place, up to `ready` (a count from available()) and at most up to the
   * ring's end, without consuming them: the peer cannot reuse them until consume() is called.
   * The peer can still write into them (the page is shared), so whoever reads them must copy what
   * it validates.
   */
  view(ready: number): Uint8Array {
    const start = this.own & this.mask;
    return this.data.subarray(start, start + Math.min(ready, this.size - start));
  }

  /** Consumes `count` bytes seen through view(); `count` is at most that view's length. */
  consume(count: number): void {
    if (count > 0) this.advance(count);
  }

  /**
   * Persistent server, between two clients: drops what the last client wrote and nobody read, so
   * the next client's stream starts clean. Takes the producer index as it is, whatever it says.
   */
  forgetUnread(): void {
    this.own = Atomics.load(this.indices, this.peerWord) >>> 0;
    Atomics.store(this.indices, this.ownWord, this.own | 0);
    this.forgetUntold();
  }
}

/** The end we write: we produce, the peer consumes. */
export class RingWriter extends RingEnd {
  constructor(control: ControlPage, ownWord: number, peerWord: number, data: Uint8Array, own: number) {
    super(control, ownWord, peerWord, data, own, NOTIFY_READ, NOTIFY_WRITE);
  }

  /** Free bytes (raw_get_buffer_space). */
  space(): number {
    return this.size - this.fill(false);
  }

  level(): number {
    return this.space();
  }

  /** Copies up to `free` bytes of `source` into the ring and publishes them; returns how many. */
  writeFrom(source: Uint8Array, free: number): number {
    const count = Math.min(free, source.length);
    if (count === 0) return 0;
    const start = this.own & this.mask;
    const first = Math.min(count, this.size - start);
    this.data.set(source.subarray(0, first), start);
    if (first < count) this.data.set(source.subarray(first, count), 0);
    this.advance(count);
    return count;
  }

  /**
   * The first half of do_send, for zero-copy writes: the free bytes at our index, up to `free` (a
   * count from space()), `wanted` and the ring's end, to be filled in place. Nothing is published:
   * the peer cannot see them, and space() does not count them as used, until commit().
   */
  reserve(free: number, wanted: number): Uint8Array {
    const start = this.own & this.mask;
    return this.data.subarray(start, start + Math.min(free, wanted, this.size - start));
  }

  /**
   * The second half: publishes the first `count` bytes filled through reserve() (at most that
   * view's length; the caller checks). advance()'s store is what orders the fill before the index.
   */
  commit(count: number): void {
    if (count > 0) this.advance(count);
  }

  /**
   * Persistent server, between two clients: what we wrote for the last client and it never read
   * must not reach the next one, so the consumer index (the client's word, but no client is
   * connected now) is moved up to ours.
   */
  forgetUnread(): void {
    Atomics.store(this.indices, this.peerWord, this.own | 0);
    this.forgetUntold();
  }
}
