import type { Duplex } from 'node:stream';
import { XenVchanError } from '@xen-vchan/native';
import { EventEmitter } from 'eventemitter3';
import { protocolError, sessionClosed, streamCutShort } from './errors.js';
import { Flag, FrameReader, FrameType, GoAwayCode, type Header, HEADER_SIZE, MAX_UINT32, encodeHeader } from './frame.js';
import { type ResolvedOptions, resolveOptions, type SessionOptions } from './options.js';
import { MuxStream, type StreamHost } from './stream.js';

/**
 * Output the peer alone can make us produce (ping answers, refusals of its streams) that may
 * pile up in the transport's buffer while the peer does not read: past this, we stop reading the
 * transport until it drains. Our own data and window updates never count, so two sessions that
 * both write a lot never wait on each other.
 */
const MAX_OWED_CONTROL_BYTES = 64 * 1024;
/** How long an ended transport may take to flush our last frames before it is destroyed. */
const FLUSH_MS = 1000;
/**
 * How many stream ids the peer may skip and open later. Out-of-order SYNs come from streams
 * being opened at the same moment, so a few suffice; the bound keeps a peer that jumps ids from
 * making us remember them all.
 */
const MAX_SKIPPED_IDS = 1024;

export interface SessionEvents {
  /** A stream the peer opened, accepted (taken from the backlog) as it is handed over. */
  stream: [stream: MuxStream];
  /** The peer sent go-away (normal): it accepts no new streams; the open ones go on. */
  goaway: [];
  error: [error: XenVchanError];
  close: [];
}

export interface SessionStats {
  /** Streams open now (both directions, the backlog included). */
  streams: number;
  /** Streams the peer opened that wait to be accepted. */
  backlog: number;
  /** The peer's streams refused (RST) at a limit or after our go-away. */
  refused: number;
  /** Frames received and sent. */
  framesIn: number;
  framesOut: number;
}

interface PendingPing {
  started: number;
  resolve: (rttMs: number) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * A yamux session over any Duplex (a vchan, a socket): open streams, accept the peer's, ping,
 * go-away. Every stream is a MuxStream (a Duplex). The peer is not trusted: a frame that breaks
 * the protocol ends the session with EPROTO, and what the session holds for it is bounded by the
 * window of each open stream and the accept backlog.
 */
export class Session extends EventEmitter<SessionEvents> implements StreamHost, AsyncIterable<MuxStream> {
  readonly role: 'client' | 'server';
  readonly maxWindow: number;
  /** Set once the session has ended: `error` is why, null for a normal end. */
  closedReason: { error: Error | null } | null = null;
  /** The peer sent go-away: open() refuses. */
  remoteGoAway = false;
  /** We sent go-away: the peer's new streams are refused. */
  localGoAway = false;

  private readonly options: ResolvedOptions;
  private readonly transport: Duplex;
  private readonly reader: FrameReader;
  private readonly streams = new Map<number, MuxStream>();
  private readonly backlog: MuxStream[] = [];
  private readonly acceptWaiters: { resolve: (stream: MuxStream) => void; reject: (error: Error) => void }[] = [];
  private readonly drainWaiters = new Set<MuxStream>();
  private readonly pings = new Map<number, PendingPing>();
  private nextPingId = 0;
  private nextStreamId: number;
  /** The highest id the peer has opened (before any: the id below its first, -1 or 0). */
  private lastRemoteId: number;
  /**
   * Ids below lastRemoteId that the peer skipped and may still open. Go's yamux takes ids in order
   * but sends each SYN from the goroutine that opened the stream, so SYNs can arrive out of order;
   * an id is new exactly when it is above lastRemoteId or one of these. Bounded by MAX_SKIPPED_IDS.
   */
  private readonly skippedRemoteIds = new Set<number>();
  /** Where the body of the Data frame being read goes (null: discarded), and whether FIN follows it. */
  private bodyTarget: MuxStream | null = null;
  private bodyFin = false;
  private owedControlBytes = 0;
  private inputPaused = false;
  private keepAliveTimer: NodeJS.Timeout | undefined;
  private keepAlivePing = false;
  private closing = false;
  private transportEnding = false;
  private closeEmitted = false;
  private readonly counters = { refused: 0, framesIn: 0, framesOut: 0 };

  constructor(transport: Duplex, options: SessionOptions) {
    super();
    this.options = resolveOptions(options);
    this.role = this.options.role;
    this.maxWindow = this.options.maxStreamWindow;
    this.nextStreamId = this.role === 'client' ? 1 : 2;
    this.lastRemoteId = this.role === 'client' ? 0 : -1;
    this.transport = transport;
    this.reader = new FrameReader({
      header: (header) => this.onHeader(header),
      body: (piece) => this.onBody(piece),
      bodyEnd: () => this.onBodyEnd(),
    });
    transport.on('data', this.onData);
    transport.on('drain', this.onDrain);
    transport.on('end', this.onEnd);
    transport.on('error', this.onTransportError);
    transport.on('close', this.onTransportClose);
    if (this.options.keepAliveInterval > 0) {
      this.keepAliveTimer = setInterval(() => this.keepAlive(), this.options.keepAliveInterval);
      this.keepAliveTimer.unref();
    }
  }

  /** Opens a stream: SYN goes out at once and writing may start before the peer accepts. */
  open(): MuxStream {
    if (this.closedReason || this.closing) throw sessionClosed('Opening a stream', this.closedReason?.error ?? null);
    if (this.remoteGoAway)
      throw new XenVchanError('ECONNREFUSED', 'The peer sent go-away: it accepts no new streams on this session. Open a new session.');
    if (this.streams.size >= this.options.maxStreams)
      throw new XenVchanError(
        'ERR_MUX_TOO_MANY_STREAMS',
        `${this.streams.size} streams are open on this session, its maxStreams: end or destroy some first, or raise maxStreams.`,
      );
    const id = this.nextStreamId;
    if (id > MAX_UINT32 - 1)
      throw new XenVchanError('ERR_MUX_STREAM_IDS_EXHAUSTED', 'This session has used every stream id it may: open a new session.');
    this.nextStreamId += 2;
    const stream = new MuxStream(this, id, true);
    this.streams.set(id, stream);
    stream.sendOpenOrAccept(Flag.SYN);
    return stream;
  }

  /** The next stream the peer opens (or one waiting in the backlog); rejects once the session ends. */
  accept(): Promise<MuxStream> {
    const waiting = this.backlog.shift();
    if (waiting) return Promise.resolve(this.handOver(waiting));
    if (this.closedReason) return Promise.reject(sessionClosed('Accepting a stream', this.closedReason.error));
    return new Promise((resolve, reject) => this.acceptWaiters.push({ resolve, reject }));
  }

  /** `for await (const stream of session)`: every stream the peer opens, until the session ends. */
  async *[Symbol.asyncIterator](): AsyncIterator<MuxStream> {
    for (;;) {
      try {
        yield await this.accept();
      } catch (error) {
        const reason = this.closedReason;
        if (reason && !reason.error) return;
        throw reason?.error ?? error;
      }
    }
  }

  /** Measures a round trip: resolves with it in ms, or rejects with ETIMEDOUT after pingTimeout (or `timeout`). */
  ping(options: { timeout?: number } = {}): Promise<number> {
    if (this.closedReason) return Promise.reject(sessionClosed('A ping', this.closedReason.error));
    const timeout = options.timeout ?? this.options.pingTimeout;
    const id = this.nextPingId;
    this.nextPingId = (id + 1) % (MAX_UINT32 + 1);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pings.delete(id);
        reject(
          new XenVchanError(
            'ETIMEDOUT',
            `The peer did not answer a ping within ${timeout} ms: is it alive and reading its end of the transport?`,
          ),
        );
      }, timeout);
      this.pings.set(id, { started: performance.now(), resolve, reject, timer });
      this.sendFrame(FrameType.Ping, Flag.SYN, 0, id);
    });
  }

  /** Tells the peer we accept no new streams (its next ones are refused); open streams go on. */
  goAway(): void {
    if (this.closedReason || this.localGoAway) return;
    this.localGoAway = true;
    this.sendFrame(FrameType.GoAway, 0, 0, GoAwayCode.Normal);
  }

  /**
   * Ends the session gracefully: go-away, refuses the streams still waiting to be accepted, waits
   * for the open streams to end on both sides, then ends the transport. Resolves on 'close'.
   */
  close(): Promise<void> {
    const closed = new Promise<void>((resolve) => (this.closeEmitted ? resolve() : this.once('close', resolve)));
    if (this.closedReason || this.closing) return closed;
    this.closing = true;
    this.goAway();
    for (const stream of this.backlog.splice(0)) stream.destroy();
    this.maybeFinishClose();
    return closed;
  }

  /** Ends the session at once: every stream is destroyed (with `error`, if given) and so is the transport. */
  destroy(error?: Error): void {
    this.teardown(error ?? null, error !== undefined);
    this.transport.destroy();
  }

  stats(): SessionStats {
    return { streams: this.streams.size, backlog: this.backlog.length, ...this.counters };
  }

  // --- StreamHost ---

  sendFrame(type: FrameType, flags: number, streamId: number, length: number, body?: Buffer): void {
    if (this.closedReason || this.transport.destroyed || this.transport.writableEnded) return;
    this.counters.framesOut++;
    const header = encodeHeader(type, flags, streamId, length);
    if (body) {
      this.transport.cork();
      this.transport.write(header);
      this.transport.write(body);
      this.transport.uncork();
    } else this.transport.write(header);
  }

  transportFull(): boolean {
    return this.transport.writableNeedDrain;
  }

  waitForDrain(stream: MuxStream): void {
    this.drainWaiters.add(stream);
  }

  forget(stream: MuxStream): void {
    if (this.streams.get(stream.id) === stream) this.streams.delete(stream.id);
    this.drainWaiters.delete(stream);
    const queued = this.backlog.indexOf(stream);
    if (queued >= 0) this.backlog.splice(queued, 1);
    this.maybeFinishClose();
  }

  // --- input ---

  private readonly onData = (chunk: Buffer) => {
    this.reader.feed(chunk);
    if (this.owedControlBytes > MAX_OWED_CONTROL_BYTES && this.transport.writableNeedDrain && !this.closedReason) {
      this.inputPaused = true;
      this.transport.pause();
    }
  };

  private readonly onDrain = () => {
    this.owedControlBytes = 0;
    if (this.inputPaused) {
      this.inputPaused = false;
      this.transport.resume();
    }
    const waiting = [...this.drainWaiters];
    this.drainWaiters.clear();
    for (const stream of waiting) stream.pump();
  };

  private onHeader(header: Header): number {
    this.counters.framesIn++;
    if (header.version !== 0) return this.violation(`a frame of version ${header.version} (only version 0 exists)`);
    switch (header.type) {
      case FrameType.Data:
      case FrameType.WindowUpdate:
        return this.onStreamFrame(header);
      case FrameType.Ping:
        this.onPing(header);
        return 0;
      case FrameType.GoAway:
        this.onGoAway(header);
        return 0;
      default:
        return this.violation(`a frame of unknown type ${header.type}`);
    }
  }

  private isLocalId(id: number): boolean {
    return id % 2 === (this.role === 'client' ? 1 : 0);
  }

  private onStreamFrame({ type, flags, streamId: id, length }: Header): number {
    const what = type === FrameType.Data ? 'data' : 'window update';
    if (id === 0) return this.violation(`a ${what} frame for stream 0`);
    if (type === FrameType.Data && length > this.maxWindow)
      return this.violation(`a data frame of ${length} bytes, more than any stream's window (${this.maxWindow})`);
    let stream = this.streams.get(id);
    if (flags & Flag.SYN) {
      if (this.isLocalId(id))
        return this.violation(
          `the peer opened stream ${id}, an ${id % 2 ? 'odd' : 'even'} id, which only this side (the ${this.role}) may use`,
        );
      if (id > this.lastRemoteId) {
        const skipped = (id - this.lastRemoteId) / 2 - 1;
        if (this.skippedRemoteIds.size + skipped > MAX_SKIPPED_IDS)
          return this.violation(
            `the peer opened stream ${id}, leaving more than ${MAX_SKIPPED_IDS} lower ids unopened (the last it opened was ${this.lastRemoteId})`,
          );
        for (let gap = this.lastRemoteId + 2; gap < id; gap += 2) this.skippedRemoteIds.add(gap);
        this.lastRemoteId = id;
      } else if (!this.skippedRemoteIds.delete(id)) {
        return this.violation(`the peer opened stream ${id} again`);
      }
      const accepted = this.incoming(id);
      if (!accepted) return this.skip(type, length);
      stream = accepted;
    } else if (!stream) {
      if (this.isLocalId(id) ? id >= this.nextStreamId : id > this.lastRemoteId)
        return this.violation(`a ${what} frame for stream ${id}, which was never opened`);
      return this.skip(type, length); // a stream that ended here: what the peer sent before it knew is dropped
    }
    if (flags & Flag.ACK) stream.acknowledged = true;
    if (flags & Flag.RST) {
      stream.receiveReset();
      return this.skip(type, length);
    }
    if (type === FrameType.WindowUpdate) {
      if (stream.sendWindow + length > MAX_UINT32)
        return this.violation(`a window update of ${length} on stream ${id} that overflows its window of ${stream.sendWindow}`);
      if (flags & Flag.FIN && !stream.receiveFin()) return this.violation(`a second FIN on stream ${id}`);
      if (length > 0) stream.grant(length);
      return 0;
    }
    if (length > 0 && stream.remoteFin) return this.violation(`data on stream ${id} after its FIN`);
    if (length > stream.recvWindow)
      return this.violation(`${length} bytes of data on stream ${id}, over the ${stream.recvWindow} bytes its window allows`);
    if (length === 0) {
      if (flags & Flag.FIN && !stream.receiveFin()) return this.violation(`a second FIN on stream ${id}`);
      return 0;
    }
    this.bodyTarget = stream;
    this.bodyFin = (flags & Flag.FIN) !== 0;
    return length;
  }

  /** A frame for no stream of ours: a Data frame's body is read and dropped. */
  private skip(type: number, length: number): number {
    if (type !== FrameType.Data) return 0;
    this.bodyTarget = null;
    this.bodyFin = false;
    return length;
  }

  private onBody(piece: Buffer): void {
    const stream = this.bodyTarget;
    if (stream && !stream.destroyed) stream.receive(piece);
  }

  private onBodyEnd(): void {
    const stream = this.bodyTarget;
    this.bodyTarget = null;
    if (stream && this.bodyFin && !stream.destroyed && !stream.receiveFin()) this.violation(`a second FIN on stream ${stream.id}`);
  }

  /** The peer opens stream `id`: returns it, or null when refused (RST sent). */
  private incoming(id: number): MuxStream | null {
    if (
      this.localGoAway ||
      this.closing ||
      this.streams.size >= this.options.maxStreams ||
      this.backlog.length >= this.options.acceptBacklog
    ) {
      this.counters.refused++;
      this.owedControlBytes += HEADER_SIZE;
      this.sendFrame(FrameType.WindowUpdate, Flag.RST, id, 0);
      return null;
    }
    const stream = new MuxStream(this, id, false);
    this.streams.set(id, stream);
    const waiter = this.acceptWaiters.shift();
    if (waiter) waiter.resolve(this.handOver(stream));
    else if (this.listenerCount('stream') > 0) this.emit('stream', this.handOver(stream));
    else this.backlog.push(stream);
    return stream;
  }

  /** Accepting a stream: ACK, and our window beyond the initial one. */
  private handOver(stream: MuxStream): MuxStream {
    if (!stream.destroyed) stream.sendOpenOrAccept(Flag.ACK);
    return stream;
  }

  private onPing({ flags, streamId, length }: Header): void {
    if (streamId !== 0) {
      this.violation(`a ping on stream ${streamId} (pings belong to stream 0)`);
      return;
    }
    if (flags & Flag.SYN) {
      this.owedControlBytes += HEADER_SIZE;
      this.sendFrame(FrameType.Ping, Flag.ACK, 0, length);
    } else if (flags & Flag.ACK) {
      const ping = this.pings.get(length);
      if (!ping) return; // an answer after we gave up waiting
      this.pings.delete(length);
      clearTimeout(ping.timer);
      ping.resolve(performance.now() - ping.started);
    }
  }

  private onGoAway({ streamId, length }: Header): void {
    if (streamId !== 0) {
      this.violation(`a go-away on stream ${streamId} (go-away belongs to stream 0)`);
      return;
    }
    if (length === GoAwayCode.Normal) {
      if (this.remoteGoAway) return;
      this.remoteGoAway = true;
      this.emit('goaway');
      return;
    }
    if (length !== GoAwayCode.ProtocolError && length !== GoAwayCode.InternalError) {
      this.violation(`a go-away with the unknown code ${length}`);
      return;
    }
    this.reader.stop();
    const error =
      length === GoAwayCode.ProtocolError
        ? new XenVchanError(
            'EPROTO',
            'The peer ended the yamux session with go-away (protocol error): it found a frame of ours it did not accept. Is it speaking yamux version 0, in the other role?',
          )
        : new XenVchanError('ECONNRESET', 'The peer ended the yamux session with go-away (internal error): something failed on its side.');
    this.endWith(error);
  }

  /** A protocol violation: go-away (protocol error), then the session ends with EPROTO. */
  private violation(what: string): number {
    if (this.closedReason) return 0;
    this.reader.stop();
    this.sendFrame(FrameType.GoAway, 0, 0, GoAwayCode.ProtocolError);
    this.endWith(protocolError(what));
    return 0;
  }

  // --- ending ---

  private keepAlive(): void {
    if (this.keepAlivePing || this.closedReason) return;
    this.keepAlivePing = true;
    this.ping().then(
      () => (this.keepAlivePing = false),
      (error: XenVchanError) => {
        if (error.code !== 'ETIMEDOUT' || this.closedReason) return;
        this.endWith(
          new XenVchanError(
            'ETIMEDOUT',
            `The peer did not answer the keepalive ping within ${this.options.pingTimeout} ms (pingTimeout), so the session was closed: the peer or the transport is gone or stuck.`,
          ),
        );
      },
    );
  }

  private maybeFinishClose(): void {
    if (this.closing && !this.closedReason && this.streams.size === 0) {
      this.teardown(null, false);
      this.endTransport();
    }
  }

  /** The session fails: our last frames are flushed if the transport takes them, then it is closed. */
  private endWith(error: XenVchanError): void {
    this.teardown(error, true);
    this.endTransport();
  }

  private endTransport(): void {
    const transport = this.transport;
    if (transport.destroyed || this.transportEnding) return;
    this.transportEnding = true;
    // Nothing more is read; what the peer still sends is drained and dropped, never buffered.
    transport.removeListener('data', this.onData);
    transport.resume();
    if (!transport.writableEnded) transport.end();
    const timer = setTimeout(() => transport.destroy(), FLUSH_MS);
    timer.unref();
    transport.once('finish', () => {
      clearTimeout(timer);
      transport.destroy();
    });
    transport.once('close', () => clearTimeout(timer));
  }

  /**
   * Marks the session ended and lets go of everything: streams (those not done get `error`, or
   * ECONNRESET, when `failStreams`), pings, accept waiters, timers. Emits 'error' once, when there is one.
   */
  private teardown(error: Error | null, failStreams: boolean): void {
    if (this.closedReason) return;
    this.closedReason = { error };
    this.reader.stop();
    clearInterval(this.keepAliveTimer);
    for (const ping of this.pings.values()) {
      clearTimeout(ping.timer);
      ping.reject(error ?? sessionClosed('A ping', null));
    }
    this.pings.clear();
    for (const waiter of this.acceptWaiters.splice(0)) waiter.reject(error ?? sessionClosed('Accepting a stream', null));
    for (const stream of this.backlog.splice(0)) stream.destroy();
    const streams = [...this.streams.values()];
    this.streams.clear();
    this.drainWaiters.clear();
    for (const stream of streams) {
      if (stream.localFin && stream.remoteFin) continue; // everything arrived; the consumer reads it at leisure
      if (failStreams) stream.destroy(streamCutShort(stream.id, error));
      else stream.destroy();
    }
    if (error) this.fail(error);
    if (this.transport.destroyed) this.emitClose();
  }

  private readonly onEnd = () => {
    // The peer closed its side: streams still open can never finish.
    if (!this.closedReason) this.teardown(null, this.streams.size > 0);
    this.endTransport();
  };

  private readonly onTransportError = (error: Error) => {
    if (this.closedReason) return;
    this.teardown(
      new XenVchanError('ECONNRESET', `The transport under the yamux session failed: ${error.message}`, { cause: error }),
      true,
    );
  };

  private readonly onTransportClose = () => {
    if (!this.closedReason) this.teardown(null, true);
    this.emitClose();
  };

  private emitClose(): void {
    if (this.closeEmitted) return;
    this.closeEmitted = true;
    const transport = this.transport;
    transport.removeListener('data', this.onData);
    transport.removeListener('drain', this.onDrain);
    transport.removeListener('end', this.onEnd);
    transport.removeListener('close', this.onTransportClose);
    // Our error listener stays: a late error of a transport we gave up on must not crash the process.
    process.nextTick(() => this.emit('close'));
  }

  /** Emits 'error'; like Node's EventEmitter (eventemitter3 would drop it), throws it when nobody listens. */
  private fail(error: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', error as XenVchanError);
    else
      process.nextTick(() => {
        throw error;
      });
  }
}
