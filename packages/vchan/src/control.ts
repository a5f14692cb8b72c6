import { ControlOffset, LIVE_GONE, LIVE_WAITING, type NOTIFY_READ, type NOTIFY_WRITE } from './layout.js';

export type Side = 'server' | 'client';

/**
 * Typed access to the shared control page from one side's point of view. Every access to a
 * field the peer may change goes through Atomics, so it is read once and in order.
 */
export class ControlPage {
  readonly words: Int32Array;
  private readonly bytes: Uint8Array;
  private readonly halves: Uint16Array;

  constructor(
    readonly buffer: ArrayBuffer,
    readonly side: Side,
  ) {
    this.words = new Int32Array(buffer, 0, 1024);
    this.bytes = new Uint8Array(buffer, 0, 4096);
    this.halves = new Uint16Array(buffer, 0, 2048);
  }

  get leftOrder(): number {
    return Atomics.load(this.halves, ControlOffset.leftOrder / 2);
  }

  get rightOrder(): number {
    return Atomics.load(this.halves, ControlOffset.rightOrder / 2);
  }

  setOrders(left: number, right: number): void {
    Atomics.store(this.halves, ControlOffset.leftOrder / 2, left);
    Atomics.store(this.halves, ControlOffset.rightOrder / 2, right);
  }

  grant(index: number): number {
    return Atomics.load(this.words, ControlOffset.grants / 4 + index) >>> 0;
  }

  setGrant(index: number, ref: number): void {
    Atomics.store(this.words, ControlOffset.grants / 4 + index, ref | 0);
  }

  get peerLive(): number {
    return Atomics.load(this.bytes, this.side === 'server' ? ControlOffset.clientLive : ControlOffset.serverLive);
  }

  setOwnLive(value: number): void {
    Atomics.store(this.bytes, this.side === 'server' ? ControlOffset.serverLive : ControlOffset.clientLive, value);
  }

  setLive(side: Side, value: number): void {
    Atomics.store(this.bytes, side === 'server' ? ControlOffset.serverLive : ControlOffset.clientLive, value);
  }

  /**
   * Server only: marks the client slot as waiting again after a client left, unless a new client
   * has already set it to connected (compare-and-swap, so that client is not missed).
   */
  reopenClientSlot(): void {
    Atomics.compareExchange(this.bytes, ControlOffset.clientLive, LIVE_GONE, LIVE_WAITING);
  }

  /**
   * Server only: marks the client slot as waiting after the client's whole domain died, which left
   * its live byte at connected (no kernel ran its unmap notification). A dead domain writes no more.
   */
  forgetDeadClient(): void {
    Atomics.store(this.bytes, ControlOffset.clientLive, LIVE_WAITING);
  }

  /**
   * Asks the peer to wake us for `bit`: set in the peer's notify byte. Atomics.or is a full
   * barrier, so the request is visible before the caller re-reads the indices.
   */
  requestWake(bit: typeof NOTIFY_READ | typeof NOTIFY_WRITE): void {
    Atomics.or(this.bytes, this.side === 'server' ? ControlOffset.clientNotify : ControlOffset.serverNotify, bit);
  }

  /**
   * After moving an index: did the peer ask to be woken for `bit`? Test-and-clear in our own
   * notify byte; the caller's seq-cst index store comes before this read-modify-write.
   */
  takeWakeRequest(bit: typeof NOTIFY_READ | typeof NOTIFY_WRITE): boolean {
    const own = this.side === 'server' ? ControlOffset.serverNotify : ControlOffset.clientNotify;
    return (Atomics.and(this.bytes, own, ~bit & 0xff) & bit) !== 0;
  }

  setNotifyBytes(client: number, server: number): void {
    Atomics.store(this.bytes, ControlOffset.clientNotify, client);
    Atomics.store(this.bytes, ControlOffset.serverNotify, server);
  }

  /** Index words: left ring (client writes) then right ring (server writes). */
  static readonly LEFT_CONS = ControlOffset.leftCons / 4;
  static readonly LEFT_PROD = ControlOffset.leftProd / 4;
  static readonly RIGHT_CONS = ControlOffset.rightCons / 4;
  static readonly RIGHT_PROD = ControlOffset.rightProd / 4;
}
