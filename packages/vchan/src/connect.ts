import { checkDomainId, errorCode, XenVchanError } from '@xen-vchan/native';
import { openXenStore, type XenStore } from '@xen-vchan/xenstore';
import { connectClientLink } from './handshake.js';
import type { VchanLink } from './link.js';
import { conventionalPath, waitForServer } from './keys.js';
import { peerCheckInterval, peerGoneError, watchPeerDomain, type PeerDomainOptions, type PeerDomainWatcher } from './peer-domain.js';
import { deviceOptions, xenstoreOptions, type BackendOptions } from './options.js';
import { announcePresence, type Presence } from './presence.js';
import { Vchan, vchanDeadlines, type VchanDeadlines } from './stream.js';

/** Options of connect(); `closeTimeout` and `stallTimeout` apply to the channel it makes. */
export interface ConnectOptions extends BackendOptions, VchanDeadlines, PeerDomainOptions {
  /** The server's domain. */
  domid: number;
  /** Name under the conventional path /local/domain/<server>/data/vchan/<client>/<name>. Default 'vchan'. */
  name?: string;
  /** The server's XenStore path, if not the conventional one. */
  path?: string;
  /** How long to wait for the server to publish, in ms. Default 10 000; 0 = do not wait. */
  timeout?: number;
  /** Gives up waiting for the server with ABORT_ERR. */
  signal?: AbortSignal;
  /**
   * A XenStore connection to use (default: one of its own, kept while the channel watches the
   * server's domain or has a presence node to remove (a server in another domain), else closed once
   * connected). One you give stays yours to close, after the channel.
   */
  xenstore?: XenStore;
}

/**
 * Connects to a vchan server: waits (with a XenStore watch) until the server has published its
 * ring-ref and event-channel, then maps the pages and binds the port. Resolves with a connected
 * Vchan. Rejects with ETIMEDOUT after `timeout`, with ABORT_ERR on `signal`, and with EPROTO when
 * the published values or the shared page make no sense.
 */
export async function connect(options: ConnectOptions): Promise<Vchan> {
  const serverDomid = checkDomainId(options.domid, 'domid (the server domain)');
  const timeout = options.timeout ?? 10_000;
  const deadlines = vchanDeadlines(options);
  const checkInterval = peerCheckInterval(options);
  const held = new ClientHold(options.xenstore ?? (await openXenStore(xenstoreOptions(options))), !options.xenstore);
  const { xenstore } = held;
  try {
    const self = await xenstore.ownDomid();
    const path = options.path ?? conventionalPath(serverDomid, self, options.name ?? 'vchan');
    const { ringRef, port } = await waitForServer(xenstore, path, timeout, options.signal);
    let link: VchanLink;
    try {
      link = connectClientLink({ serverDomid, ringRef, port, devices: deviceOptions(options), onClose: held.release });
    } catch (error) {
      // Xen refuses a grant or a port that is gone: the keys outlived their server.
      if (errorCode(error) !== 'EINVAL') throw error;
      throw new XenVchanError(
        'ECONNREFUSED',
        `The vchan server at ${path} is gone: its pages or its port no longer exist (stale keys of a server that died?). Start the server again.`,
        { cause: error },
      );
    }
    // The Vchan listens to the port at once: an event that came with nobody listening would leave
    // the port masked. It may fail from its first microtask on (a hostile page); while we still
    // wait here, the caller cannot be listening, so such an error rejects connect() instead.
    const channel = new Vchan(link, deadlines);
    let failed: Error | null = null;
    const onEarlyError = (error: Error) => {
      failed ??= error;
    };
    channel.on('error', onEarlyError);
    try {
      // Written once connected, never before: an attempt that fails must not touch the node of a
      // client that is connected. (dom0 is told of domain deaths by xenstored, and a server in our
      // own domain dies with us.)
      if (serverDomid !== self && serverDomid !== 0 && self !== 0) {
        held.keepPresence(await announcePresence(xenstore, self, serverDomid, path));
      }
      const watched = await watchPeerDomain({
        xenstore,
        self,
        peer: serverDomid,
        check: link.checkPeer,
        peerCheckInterval: checkInterval,
        onGone: (error) => channel.peerDomainGone(error),
      });
      if (watched === 'gone') {
        channel.destroy();
        throw peerGoneError(serverDomid);
      }
      held.keepWatch(watched);
    } finally {
      // Its 'error' may still be on its way (emitted on a later tick); nobody else will listen.
      channel.off('error', onEarlyError);
      if (failed || channel.errored) channel.on('error', () => {});
    }
    if (failed || channel.errored) throw failed ?? channel.errored;
    held.connected();
    return channel;
  } catch (error) {
    // Whatever failed, the link (if there was one) is closed or never was: let go of the rest.
    held.release();
    throw error;
  }
}

/**
 * What a client channel holds besides its link, and the one place that lets go of it: the watch
 * on the server's domain, our presence node, and the XenStore connection when connect() opened it
 * (one the caller gave stays the caller's). The link's close, or a failed connect, releases it
 * all once: the watch stops, the node is removed, and then the connection closes. A connected
 * channel that needs neither watch nor node closes the connection at once.
 */
class ClientHold {
  private watch: PeerDomainWatcher | null = null;
  private presence: Presence | null = null;
  /** Released: what comes later (a watch or node that was on its way) goes at once. */
  private released = false;
  private xenstoreClosed = false;

  constructor(
    readonly xenstore: XenStore,
    private readonly ownsXenStore: boolean,
  ) {}

  keepPresence(presence: Presence | null): void {
    if (this.released) void presence?.withdraw();
    else this.presence = presence;
  }

  keepWatch(watch: PeerDomainWatcher | null): void {
    if (this.released) watch?.close();
    else this.watch = watch;
  }

  /** Connected: the XenStore connection stays only if a watch or a node needs it. */
  connected(): void {
    if (!this.watch && !this.presence) this.closeXenStore();
  }

  /** Idempotent; called by the link's close and by a connect that failed. */
  readonly release = (): void => {
    this.released = true;
    this.watch?.close();
    this.watch = null;
    const presence = this.presence;
    this.presence = null;
    // The node goes through the connection, so the connection waits for it.
    if (presence) void presence.withdraw().finally(() => this.closeXenStore());
    else this.closeXenStore();
  };

  private closeXenStore(): void {
    if (!this.ownsXenStore || this.xenstoreClosed) return;
    this.xenstoreClosed = true;
    this.xenstore.close();
  }
}
