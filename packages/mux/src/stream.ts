import { Duplex } from 'node:stream';
import { XenVchanError } from '@xen-vchan/native';
import { sessionClosed } from './errors.js';
import { Flag, FrameType, INITIAL_WINDOW } from './frame.js';

/** Largest Data frame we send: one stream's big write then leaves room for the others' frames. */
const MAX_DATA_FRAME = 64 * 1024;
const HIGH_WATER_MARK = 64 * 1024;

/** What a stream needs of its session. */
export interface StreamHost {
  /** The receive window each stream grants the peer (maxStreamWindow). */
  readonly maxWindow: number;
  /** Why the session ended, when it has. */
  readonly closedReason: { error: Error | null } | null;
  sendFrame(type: FrameType, flags: number, streamId: number, length: number, body?: Buffer): void;
  /** The transport's buffer is over its mark: wait for `resume` before sending more data. */
  transportFull(): boolean;
  waitForDrain(stream: MuxStream): void;
  /** The stream is gone (destroyed): forget it. */
  forget(stream: MuxStream): void;
}

interface PendingWrite {
  chunk: Buffer;
  offset: number;
  callback: (error?: Error | null) => void;
}

/**
 * One yamux stream, a Node `Duplex`. `end()` sends FIN once everything written is sent; the other
 * direction keeps flowing until the peer's FIN. `destroy()` before both FINs sends RST.
 * What the peer may send us is bounded by the receive window we grant: we grant more only as the
 * consumer takes data out of the readable buffer, so a stream whose consumer stops holds at most
 * one window.
 */
export class MuxStream extends Duplex {
  /** The stream id: odd when the client opened it, even when the server did. */
  readonly id: number;
  /** Bytes we may still send before the peer grants more. */
  sendWindow = INITIAL_WINDOW;
  /** Bytes the peer may still send before we grant more. */
  recvWindow = INITIAL_WINDOW;
  /** The peer sent FIN: no more data comes. */
  remoteFin = false;
  /** We sent FIN. */
  localFin = false;
  /** The peer acknowledged a stream we opened (always true for streams the peer opened). */
  acknowledged: boolean;
  /** The peer reset the stream (RST): nothing more is sent either way. */
  private resetByPeer = false;
  private pending: PendingWrite | null = null;
  private readonly host: StreamHost;

  constructor(host: StreamHost, id: number, openedHere: boolean) {
    super({ readableHighWaterMark: HIGH_WATER_MARK, writableHighWaterMark: HIGH_WATER_MARK, allowHalfOpen: true });
    this.host = host;
    this.id = id;
    this.acknowledged = !openedHere;
  }

  /** Sends SYN (we open) or ACK (we accept), with whatever window beyond the initial one we grant. */
  sendOpenOrAccept(flag: number): void {
    const delta = Math.max(0, this.host.maxWindow - this.readableLength - this.recvWindow);
    this.recvWindow += delta;
    this.host.sendFrame(FrameType.WindowUpdate, flag, this.id, delta);
  }

  override _read(): void {
    // Node calls _read from read() before it takes the bytes out of the buffer, and calls it no
    // more until we push: if the peer's window is used up, nothing would ever be pushed. So the
    // buffer is looked at again once this read() has taken its bytes.
    if (!this.grantWindow()) process.nextTick(() => this.grantWindow());
  }

  /** Grants the peer what the consumer has taken, in batches of at least half the window (as Go's yamux). */
  private grantWindow(): boolean {
    if (this.remoteFin || this.resetByPeer || this.destroyed || this.host.closedReason) return false;
    const max = this.host.maxWindow;
    const delta = max - this.readableLength - this.recvWindow;
    if (delta < max / 2) return false;
    this.recvWindow += delta;
    this.host.sendFrame(FrameType.WindowUpdate, 0, this.id, delta);
    return true;
  }

  /** A piece of a Data frame's body; the session checked the frame fits the window. */
  receive(piece: Buffer): void {
    this.recvWindow -= piece.length;
    if (!this.destroyed) this.push(piece);
  }

  /** The peer's FIN; false when it already sent one (a protocol error). */
  receiveFin(): boolean {
    if (this.remoteFin) return false;
    this.remoteFin = true;
    this.push(null);
    return true;
  }

  /** The peer's window update. */
  grant(delta: number): void {
    this.sendWindow += delta;
    this.pump();
  }

  /** The peer's RST: before it acknowledged our SYN it refused the stream, after it reset it. */
  receiveReset(): void {
    this.resetByPeer = true;
    this.host.forget(this);
    if (this.localFin && this.remoteFin) {
      this.destroy();
      return;
    }
    this.destroy(
      this.acknowledged
        ? new XenVchanError(
            'ECONNRESET',
            `The peer reset yamux stream ${this.id} (RST) before both sides had ended it; what was in flight is lost.`,
          )
        : new XenVchanError(
            'ECONNREFUSED',
            `The peer refused yamux stream ${this.id} (RST before it accepted it): its accept backlog or stream limit is full, or it is going away. Retry later, or raise its limits.`,
          ),
    );
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.pending = { chunk, offset: 0, callback };
    this.pump();
  }

  /** Sends as much of the pending write as the window and the transport allow. */
  pump(): void {
    const pending = this.pending;
    if (!pending) return;
    while (pending.offset < pending.chunk.length) {
      const closed = this.host.closedReason;
      if (closed || this.resetByPeer) {
        this.pending = null;
        pending.callback(
          closed
            ? sessionClosed(`A write to yamux stream ${this.id}`, closed.error)
            : new XenVchanError('EPIPE', `A write to yamux stream ${this.id}, which the peer reset.`),
        );
        return;
      }
      if (this.sendWindow === 0) return; // the peer's window update pumps again
      if (this.host.transportFull()) {
        this.host.waitForDrain(this);
        return;
      }
      const size = Math.min(this.sendWindow, pending.chunk.length - pending.offset, MAX_DATA_FRAME);
      this.host.sendFrame(FrameType.Data, 0, this.id, size, pending.chunk.subarray(pending.offset, pending.offset + size));
      this.sendWindow -= size;
      pending.offset += size;
    }
    this.pending = null;
    pending.callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    const closed = this.host.closedReason;
    if (closed) {
      callback(sessionClosed(`Ending yamux stream ${this.id}`, closed.error));
      return;
    }
    if (this.resetByPeer) {
      callback(new XenVchanError('EPIPE', `Ending yamux stream ${this.id}, which the peer reset.`));
      return;
    }
    this.localFin = true;
    this.host.sendFrame(FrameType.WindowUpdate, Flag.FIN, this.id, 0);
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.resetByPeer && !this.host.closedReason && !(this.localFin && this.remoteFin)) {
      this.host.sendFrame(FrameType.WindowUpdate, Flag.RST, this.id, 0);
    }
    this.pending = null;
    this.host.forget(this);
    callback(error);
  }
}
