import { Duplex, type DuplexOptions } from 'node:stream';
import { XenVchanError } from '@xen-vchan/native';
import { protocolError } from './errors.js';
import { LIVE_CONNECTED, LIVE_GONE, LIVE_WAITING, NOTIFY_READ, NOTIFY_WRITE } from './layout.js';
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

interface PendingWrite {
  chunks: Uint8Array[];
  chunk: number;
  offset: number;
  callback: (error?: Error | null) => void;
}

/** Largest Buffer handed to a reader at once. */
const MAX_READ_CHUNK = 64 * 1024;

/**
 * A connected vchan as a Node Duplex stream. Writes go into the ring this side writes; reads come
 * out of the ring it reads; one event channel wakes both directions and tells of the peer's close.
 * Every event is only a hint: each wake-up re-reads the shared state, and every value the peer
 * controls is validated (a violation destroys the stream with EPROTO).
 */
export class Vchan extends Duplex {
  private link: VchanLink | null;
  private pending: PendingWrite | null = null;
  private wantsData = false;
  private ended = false;
  private readonly counters: VchanStats = { bytesRead: 0, bytesWritten: 0, eventsSent: 0, eventsReceived: 0, writeStalls: 0, readStalls: 0 };

  constructor(link: VchanLink, options: DuplexOptions = {}) {
    super({ ...options, allowHalfOpen: false });
    this.link = link;
    link.events.on('event', this.onEvent);
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

  override _read(): void {
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

  /** Everything written is in the ring by now; close the channel (the peer drains it). */
  override _final(callback: (error?: Error | null) => void): void {
    this.closeLink();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
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

  /** Re-checks both directions and the peer's liveness. */
  private service(): void {
    this.guard(() => {
      this.flush();
      if (this.wantsData || this.peerLive() === LIVE_GONE) this.pull();
    });
  }

  /** The peer's live byte, read once and checked: anything but 0, 1 (or 2 for a client not yet connected) is a violation. */
  private peerLive(): number {
    const live = this.link!.control.peerLive;
    const highest = this.link!.side === 'server' ? LIVE_WAITING : LIVE_CONNECTED;
    if (live > highest) throw protocolError(`the peer's live byte is ${live}`);
    return live;
  }

  private guard(body: () => void): void {
    if (!this.link) return;
    try {
      body();
    } catch (error) {
      this.destroy(error as Error);
    }
  }

  private notifyPeer(): void {
    this.link!.events.notify(this.link!.port);
    this.counters.eventsSent++;
  }

  private pull(): void {
    const link = this.link;
    if (!link || this.ended) return;
    for (;;) {
      // Liveness first, then the index: data written before the peer closed is still read.
      const peerGone = this.peerLive() === LIVE_GONE;
      let ready = link.reader.available();
      if (ready === 0) {
        if (peerGone) {
          this.ended = true;
          this.push(null);
          return;
        }
        if (!this.wantsData) return;
        link.control.requestWake(NOTIFY_WRITE);
        ready = link.reader.available(); // it may have been written before our request was seen
        if (ready === 0) {
          this.counters.readStalls++;
          return;
        }
      }
      if (!this.wantsData) return;
      const buffer = Buffer.allocUnsafe(Math.min(ready, MAX_READ_CHUNK));
      const count = link.reader.readInto(buffer, ready);
      this.counters.bytesRead += count;
      if (link.control.takeWakeRequest(NOTIFY_READ)) this.notifyPeer();
      this.wantsData = this.push(buffer);
    }
  }

  private flush(): void {
    const link = this.link;
    const pending = this.pending;
    if (!link || !pending) return;
    while (pending.chunk < pending.chunks.length) {
      if (this.peerLive() === LIVE_GONE) {
        this.pending = null;
        pending.callback(new XenVchanError('EPIPE', 'The peer closed the vchan; the data not yet written was not sent.'));
        return;
      }
      const chunk = pending.chunks[pending.chunk]!;
      let free = link.writer.space();
      if (free === 0) {
        link.control.requestWake(NOTIFY_READ);
        free = link.writer.space(); // it may have been consumed before our request was seen
        if (free === 0) {
          this.counters.writeStalls++;
          return;
        }
      }
      const count = link.writer.writeFrom(chunk.subarray(pending.offset), free);
      this.counters.bytesWritten += count;
      if (link.control.takeWakeRequest(NOTIFY_WRITE)) this.notifyPeer();
      pending.offset += count;
      if (pending.offset === chunk.length) {
        pending.chunk++;
        pending.offset = 0;
      }
    }
    this.pending = null;
    pending.callback();
  }

  /** Hands the link back: it says goodbye on the page and lets go, as its kind requires. */
  private closeLink(): void {
    const link = this.link;
    if (!link) return;
    this.link = null;
    link.events.off('event', this.onEvent);
    link.close(link.control.peerLive === LIVE_GONE);
  }
}

function closedError(): XenVchanError {
  return new XenVchanError('ERR_STREAM_DESTROYED', 'The vchan was closed before this write went into the ring.');
}
