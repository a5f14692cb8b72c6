import type { EventChannel } from '@xen-vchan/evtchn';
import { ControlPage, type Side } from './control.js';
import type { PeerCheck } from './peer-liveness.js';
import { LIVE_GONE } from './layout.js';
import { RingReader, RingWriter } from './ring.js';

/**
 * A connected vchan's shared state as one side sees it: the control page, the ring it reads, the
 * ring it writes, and its event-channel port. The Duplex works on this; the handshakes build it.
 */
export interface VchanLink {
  readonly side: Side;
  readonly control: ControlPage;
  readonly reader: RingReader;
  readonly writer: RingWriter;
  readonly events: EventChannel;
  readonly port: number;
  /** Asks, with one system call, whether the peer's domain still exists (see peer-liveness.ts). */
  readonly checkPeer: PeerCheck;
  /**
   * Ends this side's use of the channel. `peerGone` says the peer left first. The usual link sets
   * its live byte to 0, notifies, then unmaps the rings and the control page, unbinds the port and
   * removes what was published; a persistent server keeps everything for the next client when
   * only the client left.
   */
  close(peerGone: boolean): void;
}

/** The usual goodbye: live byte to 0 and an event (the unmap notification covers a crash), then release. */
export function sayGoodbye(control: ControlPage, events: EventChannel, port: number, release: () => void): void {
  try {
    control.setOwnLive(LIVE_GONE);
    events.notify(port);
  } catch {
    /* the peer may be gone already */
  }
  release();
}

/** Builds the two ring ends for `side` over mapped ring memory. */
export function ringEnds(
  control: ControlPage,
  side: Side,
  left: Uint8Array,
  right: Uint8Array,
): { reader: RingReader; writer: RingWriter } {
  const words = control.words;
  const leftCons = Atomics.load(words, ControlPage.LEFT_CONS) >>> 0;
  const leftProd = Atomics.load(words, ControlPage.LEFT_PROD) >>> 0;
  const rightCons = Atomics.load(words, ControlPage.RIGHT_CONS) >>> 0;
  const rightProd = Atomics.load(words, ControlPage.RIGHT_PROD) >>> 0;
  // The client writes the left ring and reads the right one; the server the other way round.
  return side === 'server'
    ? {
        reader: new RingReader(control, ControlPage.LEFT_CONS, ControlPage.LEFT_PROD, left, leftCons),
        writer: new RingWriter(control, ControlPage.RIGHT_PROD, ControlPage.RIGHT_CONS, right, rightProd),
      }
    : {
        reader: new RingReader(control, ControlPage.RIGHT_CONS, ControlPage.RIGHT_PROD, right, rightCons),
        writer: new RingWriter(control, ControlPage.LEFT_PROD, ControlPage.LEFT_CONS, left, leftProd),
      };
}
