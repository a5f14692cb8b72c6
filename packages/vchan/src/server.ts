import { EventEmitter } from 'eventemitter3';
import { checkDomainId, XenVchanError } from '@xen-vchan/native';
import { openXenStore, type XenStore } from '@xen-vchan/xenstore';
import { LIVE_CONNECTED, LIVE_GONE } from './layout.js';
import { presencePath } from './presence.js';
import { abortError, deadlineOption } from './errors.js';
import { createServerLink, type ServerLink } from './handshake.js';
import { conventionalPath, publish } from './keys.js';
import { deviceOptions, xenstoreOptions, type BackendOptions } from './options.js';
import { sayGoodbye } from './link.js';
import { peerCheckInterval, peerGoneError, watchPeerDomain, type PeerDomainOptions, type PeerDomainWatcher } from './peer-domain.js';
import { Vchan, vchanDeadlines, type VchanDeadlines } from './stream.js';

/** Options of createServer(); `closeTimeout` and `stallTimeout` apply to each channel it makes. */
export interface ServerOptions extends BackendOptions, VchanDeadlines, PeerDomainOptions {
  /** The client's domain: only it may map the pages, bind the port and read the keys. */
  domid: number;
  /** Name under the conventional path /local/domain/<server>/data/vchan/<client>/<name>. Default 'vchan'. */
  name?: string;
  /** A XenStore path of your own instead of the conventional one. */
  path?: string;
  /** Minimum size of the ring the server reads (the client writes). Default 64 KiB. */
  readMin?: number;
  /** Minimum size of the ring the server writes (the client reads). Default 64 KiB. */
  writeMin?: number;
  /** Serve successive clients on the same pages (libxenvchan's server_persist). Default false. */
  persist?: boolean;
  /** A XenStore connection to use (default: one of its own, closed with the server). */
  xenstore?: XenStore;
  /**
   * How long to wait for a client, in ms, each time the server waits for one: from when listen()
   * has published, and for a persistent server from when its last client left. When it passes
   * with no client connected, the server closes (unpublishing itself) and emits 'error' with
   * ETIMEDOUT. Default 0: wait for ever, as net.Server does.
   */
  acceptTimeout?: number;
  /**
   * Closes the server when aborted, as close() does (its current channel included), without an
   * 'error'. listen() rejects with ABORT_ERR when the signal aborts before it has published.
   */
  signal?: AbortSignal;
}

export interface ServerEvents {
  /** A client connected; the channel is ready for reading and writing. */
  channel: [channel: Vchan];
  /**
   * A client mapped the pages and went away before it finished connecting (it died during the
   * handshake: its unmap notification cleared cli_live). The server goes on waiting for a client;
   * libxenvchan would wait forever on that one.
   */
  clientLost: [];
  listening: [];
  error: [error: Error];
  close: [];
}

type State = 'idle' | 'waiting' | 'connected' | 'closed';

/**
 * A vchan server, shaped like net.Server: listen() shares the pages and publishes them in
 * XenStore, and each client that connects arrives as a 'channel'. Without `persist` the server
 * closes with its one channel; with it, the next client may connect once the previous one left.
 */
export class VchanServer extends EventEmitter<ServerEvents> {
  private state: State = 'idle';
  private shared: ServerLink | null = null;
  private xenstore: XenStore | null = null;
  private ownsXenStore = false;
  private channel: Vchan | null = null;
  private publishedPath: string | null = null;
  private selfDomid = 0;
  /** Watches the connected client's domain (see watchPeerDomain); ends with the channel. */
  private clientWatch: Promise<PeerDomainWatcher | null> | null = null;
  private readonly peerCheckInterval: number;
  /** The current client's whole domain was found gone: its live byte will never be cleared. */
  private clientDomainGone = false;
  private readonly acceptTimeout: number;
  /** Runs while the server waits for a client, when acceptTimeout is set. */
  private acceptTimer: NodeJS.Timeout | undefined;
  private readonly deadlines: VchanDeadlines;
  /** listen() has published; until then an abort is left to listen() itself. */
  private listening = false;

  constructor(private readonly options: ServerOptions) {
    super();
    checkDomainId(options.domid, 'domid (the client domain)');
    this.acceptTimeout = deadlineOption(options.acceptTimeout, 0, 'acceptTimeout');
    // Checked here, not when a client arrives, where a bad value could only fail that client.
    this.deadlines = vchanDeadlines(options);
    this.peerCheckInterval = peerCheckInterval(options);
  }

  /** The XenStore path the server published, once listening. */
  get path(): string | null {
    return this.publishedPath;
  }

  /** Ring orders and what was published, once listening. */
  address(): { path: string; ringRef: number; port: number; readOrder: number; writeOrder: number } | null {
    if (!this.shared || !this.publishedPath) return null;
    return {
      path: this.publishedPath,
      ringRef: this.shared.ringRef,
      port: this.shared.port,
      readOrder: this.shared.orders.left,
      writeOrder: this.shared.orders.right,
    };
  }

  async listen(): Promise<this> {
    if (this.state !== 'idle') throw new XenVchanError('ERR_SERVER_ALREADY_LISTEN', 'listen() was already called on this server.');
    const { signal } = this.options;
    if (signal?.aborted) throw this.listenAborted();
    this.state = 'waiting';
    // An abort while listen() is on its way is seen after each of its steps (close() then would
    // miss what the step still creates); from then on, it closes the server.
    signal?.addEventListener('abort', this.onAbort, { once: true });
    try {
      this.ownsXenStore = !this.options.xenstore;
      this.xenstore = this.options.xenstore ?? (await openXenStore(xenstoreOptions(this.options)));
      if (signal?.aborted) throw this.listenAborted();
      const self = await this.xenstore.ownDomid();
      if (signal?.aborted) throw this.listenAborted();
      this.selfDomid = self;
      const path = this.options.path ?? conventionalPath(self, this.options.domid, this.options.name ?? 'vchan');
      warnIfTooLongForLibxenvchan(path);
      this.shared = createServerLink({
        clientDomid: this.options.domid,
        leftMin: this.options.readMin ?? 65536,
        rightMin: this.options.writeMin ?? 65536,
        devices: deviceOptions(this.options),
      });
      await publish(this.xenstore, path, self, this.options.domid, this.shared);
      this.publishedPath = path;
      if (signal?.aborted) throw this.listenAborted();
      this.listening = true;
      this.shared.link.events.on('event', this.onEvent);
      this.shared.link.events.on('error', this.onEventsFailed);
      this.emit('listening');
      this.startAcceptTimer();
      this.checkForClient();
      return this;
    } catch (error) {
      await this.close();
      throw error;
    }
  }

  private listenAborted(): XenVchanError {
    return abortError(this.options.signal?.reason, 'listen()', 'The server did not publish, or took back what it had.');
  }

  private readonly onAbort = () => {
    if (this.listening) void this.close();
  };

  private startAcceptTimer(): void {
    if (this.acceptTimeout === 0 || this.state !== 'waiting') return;
    clearTimeout(this.acceptTimer);
    this.acceptTimer = setTimeout(this.acceptTimedOut, this.acceptTimeout);
    // While listening, the bound port keeps the process alive; the deadline adds nothing.
    this.acceptTimer.unref();
  }

  private stopAcceptTimer(): void {
    clearTimeout(this.acceptTimer);
    this.acceptTimer = undefined;
  }

  private readonly acceptTimedOut = () => {
    this.acceptTimer = undefined;
    if (this.state !== 'waiting') return;
    const error = new XenVchanError(
      'ETIMEDOUT',
      `No client connected to the vchan server at ${this.publishedPath} within ${this.acceptTimeout} ms (option acceptTimeout), so the server closed. Is the client running, in domain ${this.options.domid}, with this name or path?`,
    );
    void this.close();
    this.fail(error);
  };

  /** Emits 'error'; like Node's EventEmitter (eventemitter3 would drop it), throws it when nobody listens. */
  private fail(error: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', error);
    else {
      process.nextTick(() => {
        throw error;
      });
    }
  }

  /** Stops serving: closes the current channel, if any, unpublishes and releases everything. */
  async close(): Promise<void> {
    if (this.state === 'closed') return;
    const wasListening = this.state !== 'idle';
    this.state = 'closed';
    this.listening = false;
    this.stopAcceptTimer();
    this.options.signal?.removeEventListener('abort', this.onAbort);
    const channel = this.channel;
    this.channel = null;
    this.unwatchClientDomain();
    channel?.destroy();
    const shared = this.shared;
    this.shared = null;
    if (shared) {
      shared.link.events.off('event', this.onEvent);
      shared.link.events.off('error', this.onEventsFailed);
      sayGoodbye(shared.link.control, shared.link.events, shared.link.port, shared.release);
    }
    const xenstore = this.xenstore;
    this.xenstore = null;
    if (xenstore && this.publishedPath) {
      try {
        await xenstore.rm(this.publishedPath);
      } catch (error) {
        this.emit('error', error as Error);
      }
    }
    if (xenstore && this.ownsXenStore) xenstore.close();
    if (wasListening) this.emit('close');
  }

  private readonly onEvent = (port: number) => {
    if (this.state !== 'waiting' || !this.shared || port !== this.shared.port) return;
    this.shared.link.events.unmask(port);
    this.checkForClient();
  };

  /** The event channel broke (its poll failed): nothing can be heard any more, so the server closes. */
  private readonly onEventsFailed = (error: Error) => {
    this.channel?.destroy(error);
    void this.close();
    this.fail(error);
  };

  private checkForClient(): void {
    const shared = this.shared;
    if (this.state !== 'waiting' || !shared) return;
    const live = shared.link.control.peerLive;
    if (live === LIVE_GONE) {
      shared.link.control.reopenClientSlot();
      // One more look, for a client that connected in between; never more than one per event,
      // so a client that keeps writing 0 there costs one 'clientLost' per event it sends.
      const next = shared.link.control.peerLive;
      try {
        this.emit('clientLost');
      } finally {
        // Even if a listener threw: that client's connect event has been taken already.
        if (next === LIVE_CONNECTED && this.state === 'waiting' && this.shared === shared) this.accept(shared);
      }
      return;
    }
    if (live === LIVE_CONNECTED) this.accept(shared);
  }

  /** A client connected: the channel is made and handed out. */
  private accept(shared: ServerLink): void {
    this.state = 'connected';
    this.stopAcceptTimer();
    const persist = this.options.persist ?? false;
    const channel = new Vchan(
      {
        ...shared.link,
        close: (peerGone: boolean) => this.channelClosed(channel, peerGone, persist),
      },
      this.deadlines,
    );
    this.channel = channel;
    this.watchClientDomain(channel, shared);
    this.emit('channel', channel);
  }

  /** A client whose whole domain is destroyed cannot say goodbye; see watchPeerDomain. */
  private watchClientDomain(channel: Vchan, shared: ServerLink): void {
    if (!this.xenstore || !this.publishedPath) return;
    this.clientWatch = watchPeerDomain({
      xenstore: this.xenstore,
      self: this.selfDomid,
      peer: this.options.domid,
      check: shared.link.checkPeer,
      peerCheckInterval: this.peerCheckInterval,
      presence: {
        path: presencePath(this.options.domid, this.selfDomid, this.publishedPath),
        stillConnected: () => shared.link.control.peerLive === LIVE_CONNECTED,
      },
      onGone: (error) => {
        this.clientDomainGone = true;
        channel.peerDomainGone(error);
      },
    }).then((watch) => {
      if (watch !== 'gone') return watch;
      this.clientDomainGone = true;
      try {
        channel.peerDomainGone(peerGoneError(this.options.domid));
      } catch (thrown) {
        // A user's listener threw: an uncaught exception, as anywhere else, not a rejection.
        queueMicrotask(() => {
          throw thrown;
        });
      }
      return null;
    });
  }

  private unwatchClientDomain(): void {
    void this.clientWatch?.then((watch) => watch?.close()).catch(() => {});
    this.clientWatch = null;
  }

  private channelClosed(channel: Vchan, peerGone: boolean, persist: boolean): void {
    if (this.channel !== channel) return;
    this.channel = null;
    this.unwatchClientDomain();
    const clientDomainGone = this.clientDomainGone;
    this.clientDomainGone = false;
    if (persist && peerGone && this.state === 'connected') {
      // Only the client left: keep the pages, the port and the keys for the next one, but not
      // the bytes meant for or sent by the last one. (A client that connects in the very instant
      // before this runs would lose what it wrote meanwhile; libxenvchan does not reset at all.)
      this.state = 'waiting';
      const { link } = this.shared!;
      link.reader.forgetUnread();
      link.writer.forgetUnread();
      // A client whose domain died left its live byte at connected: taken as is, it would be
      // accepted again at once, and again, each channel failing as the last did.
      if (clientDomainGone) link.control.forgetDeadClient();
      else link.control.reopenClientSlot();
      this.startAcceptTimer();
      this.checkForClient();
      return;
    }
    void this.close();
  }
}

/**
 * libxenvchan (4.17) builds "<path>/event-channel" in a 64-byte buffer and silently truncates it,
 * so a C peer cannot use a longer path. We can; we only warn, once per path.
 */
const LIBXENVCHAN_KEY_BUFFER = 64;
function warnIfTooLongForLibxenvchan(path: string): void {
  if (`${path}/event-channel`.length < LIBXENVCHAN_KEY_BUFFER) return;
  process.emitWarning(
    `The vchan path ${path} is ${path.length} characters; a libxenvchan peer can only use paths up to ${LIBXENVCHAN_KEY_BUFFER - 15} (shorten the name if one will connect).`,
    { code: 'XEN_VCHAN_LONG_PATH' },
  );
}

/** Creates a server; like net.createServer, `onChannel` is added as a 'channel' listener. */
export function createServer(options: ServerOptions, onChannel?: (channel: Vchan) => void): VchanServer {
  const server = new VchanServer(options);
  if (onChannel) server.on('channel', onChannel);
  return server;
}
