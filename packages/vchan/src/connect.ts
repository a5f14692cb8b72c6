import { checkDomainId, errorCode, XenVchanError } from '@xen-vchan/native';
import { openXenStore, type XenStore } from '@xen-vchan/xenstore';
import { connectClientLink } from './handshake.js';
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
  const xenstore = options.xenstore ?? (await openXenStore(xenstoreOptions(options)));
  // Once a link exists, its close lets go of the XenStore connection (after removing our node).
  let linkOwnsXenStore = false;
  try {
    const self = await xenstore.ownDomid();
    const path = options.path ?? conventionalPath(serverDomid, self, options.name ?? 'vchan');
    const { ringRef, port } = await waitForServer(xenstore, path, timeout, options.signal);
    // What the channel holds beyond its link, each let go once, when the link closes: the watch on
    // the server's domain, our presence node and (unless the caller gave it) the XenStore connection.
    let watch: PeerDomainWatcher | null = null;
    let presence: Presence | null = null;
    let linkClosed = false;
    let xenstoreClosed = false;
    const closeOwnXenStore = () => {
      if (xenstoreClosed || options.xenstore) return;
      xenstoreClosed = true;
      xenstore.close();
    };
    const letGo = () => {
      linkClosed = true;
      watch?.close();
      watch = null;
      const withdrawn = presence?.withdraw() ?? Promise.resolve();
      presence = null;
      void withdrawn.finally(closeOwnXenStore);
    };
    let link;
    try {
      link = connectClientLink({ serverDomid, ringRef, port, devices: deviceOptions(options), onClose: letGo });
      linkOwnsXenStore = true;
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
    const onEarlyError = (error: Error) => void (failed ??= error);
    channel.on('error', onEarlyError);
    try {
      // Written once connected, never before: an attempt that fails must not touch the node of a
      // client that is connected. (dom0 is told of domain deaths by xenstored, and a server in our
      // own domain dies with us.)
      if (serverDomid !== self && serverDomid !== 0 && self !== 0) {
        const written = await announcePresence(xenstore, self, serverDomid, path);
        if (linkClosed) void written?.withdraw();
        else presence = written;
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
      // A channel that failed while we waited has let go already: what came after goes now.
      if (linkClosed) watched?.close();
      else watch = watched;
    } finally {
      // Its 'error' may still be on its way (emitted on a later tick); nobody else will listen.
      channel.off('error', onEarlyError);
      if (failed || channel.errored) channel.on('error', () => {});
    }
    if (failed || channel.errored) throw failed ?? channel.errored;
    // Nothing to remove or watch: the connection is not needed any more.
    if (!watch && !presence) closeOwnXenStore();
    return channel;
  } catch (error) {
    if (!options.xenstore && !linkOwnsXenStore) xenstore.close();
    throw error;
  }
}
