import { protocolError } from './errors.js';

/**
 * One direction of a vchan: a ring of 2^order bytes and its two free-running u32 indices in the
 * control page. The peer can write anything into the shared page at any time, so this side keeps
 * its own index privately (the page copy is only published), reads the peer's index once per
 * decision, and treats an impossible fill level as a protocol violation.
 */
abstract class RingEnd {
  readonly size: number;
  protected readonly mask: number;

  constructor(
    protected readonly indices: Int32Array,
    protected readonly ownWord: number,
    protected readonly peerWord: number,
    protected readonly data: Uint8Array,
    /** Our index as the page had it at connect time (a persistent server's indices carry over). */
    protected own: number,
  ) {
    this.size = data.length;
    this.mask = this.size - 1;
  }

  /** Bytes between the indices, from one read of the peer's index; throws EPROTO if impossible. */
  protected fill(peerIsProducer: boolean): number {
    const peer = Atomics.load(this.indices, this.peerWord) >>> 0;
    const used = (peerIsProducer ? peer - this.own : this.own - peer) >>> 0;
    if (used > this.size) {
      throw protocolError(`ring indices say ${used} bytes are in a ${this.size}-byte ring`);
    }
    return used;
  }
}

/** The end we read: the peer produces, we consume. */
export class RingReader extends RingEnd {
  /** Bytes ready to read. */
  available(): number {
    return this.fill(true);
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
    // The index was read with Atomics.load, which orders it before these data reads.
    target.set(this.data.subarray(start, start + first), 0);
    if (first < count) target.set(this.data.subarray(0, count - first), first);
    this.own = (this.own + count) >>> 0;
    // Seq-cst store: the copy out is complete before the peer may see the space as free.
    Atomics.store(this.indices, this.ownWord, this.own | 0);
    return count;
  }

  /**
   * Persistent server, between two clients: drops what the last client wrote and nobody read, so
   * the next client's stream starts clean. Takes the producer index as it is, whatever it says.
   */
  forgetUnread(): void {
    this.own = Atomics.load(this.indices, this.peerWord) >>> 0;
    Atomics.store(this.indices, this.ownWord, this.own | 0);
  }
}

/** The end we write: we produce, the peer consumes. */
export class RingWriter extends RingEnd {
  /** Free bytes. */
  space(): number {
    return this.size - this.fill(false);
  }

  /** Copies up to `free` bytes of `source` into the ring and publishes them; returns how many. */
  writeFrom(source: Uint8Array, free: number): number {
    const count = Math.min(free, source.length);
    if (count === 0) return 0;
    const start = this.own & this.mask;
    const first = Math.min(count, this.size - start);
    this.data.set(source.subarray(0, first), start);
    if (first < count) this.data.set(source.subarray(first, count), 0);
    this.own = (this.own + count) >>> 0;
    // Seq-cst store: the data is in the ring before the peer can see the new producer index.
    Atomics.store(this.indices, this.ownWord, this.own | 0);
    return count;
  }

  /**
   * Persistent server, between two clients: what we wrote for the last client and it never read
   * must not reach the next one, so the consumer index (the client's word, but no client is
   * connected now) is moved up to ours.
   */
  forgetUnread(): void {
    Atomics.store(this.indices, this.peerWord, this.own | 0);
  }
}
