import { errorCode, XenVchanError } from '@xen-vchan/native';
import type { Watch, XenStore } from '@xen-vchan/xenstore';
import { deadlineOption } from './errors.js';
import { checkPeerPeriodically, DEFAULT_PEER_CHECK_INTERVAL, type PeerCheck } from './peer-liveness.js';
import { watchPresence } from './presence.js';

/** Options of connect() and createServer() about noticing a destroyed peer domain. */
export interface PeerDomainOptions {
  /**
   * How often an unprivileged end checks that the peer's domain still exists, in ms. A domain
   * that is destroyed or crashes cannot close its end, and Xen tells an unprivileged survivor
   * nothing, so it asks: one system call per check (see the README's "When the peer domain dies").
   * The stream then fails with ECONNRESET within about this interval. dom0 does not poll: it is
   * told through XenStore's `@releaseDomain`. Default 500; 0 turns the checks off.
   */
  peerCheckInterval?: number;
}

/** A running watch on the peer's domain, by whichever means this domain has. */
export interface PeerDomainWatcher {
  close(): void;
}

/**
 * Starts noticing the peer domain's death: dom0 (and any domain xenstored answers about others)
 * watches `@releaseDomain`; an unprivileged domain runs `check` every `peerCheckInterval` ms and,
 * for a server whose client announced itself, watches the client's presence node (presence.ts).
 * Resolves with 'gone' when a privileged domain finds the peer domain already gone, and with null
 * when there is nothing to watch: the peer is in our own domain, or is dom0 (when dom0 goes, so
 * does everything else), or the checks are off and there is no presence node to watch.
 * Never rejects: a watch that cannot be had costs only the early notice, and says so in a warning.
 */
export async function watchPeerDomain(options: {
  xenstore: XenStore;
  self: number;
  peer: number;
  check: PeerCheck | undefined;
  peerCheckInterval: number;
  /** A server's view of its client's presence node, and whether the client's live byte says connected. */
  presence?: { path: string; stillConnected: () => boolean };
  onGone: (error: XenVchanError) => void;
}): Promise<PeerDomainWatcher | 'gone' | null> {
  const { xenstore, self, peer, onGone } = options;
  if (peer === self || peer === 0) return null;
  const watched = await PeerDomainWatch.start(xenstore, self, peer, onGone);
  if (watched !== null) return watched;
  const check = options.peerCheckInterval > 0 ? options.check : undefined;
  if (!check && !options.presence) {
    // Turned off on purpose (peerCheckInterval 0): the user chose to rely on the live byte.
    return null;
  }
  let told = false;
  let closed = false;
  let stopChecks = () => {};
  let presence: { close(): void } | null = null;
  const watcher = {
    close: () => {
      closed = true;
      stopChecks();
      presence?.close();
    },
  };
  const gone = () => {
    if (told || closed) return;
    told = true;
    watcher.close();
    tellGone(onGone, peerGoneError(peer));
  };
  if (options.presence) {
    // Only a quicker notice: without it the checks still find the death.
    presence = await watchPresence(xenstore, options.presence.path, options.presence.stillConnected, gone).catch(() => null);
  }
  // Started last: a caller that closed the watcher while we waited has let go of the handles the
  // checks would use.
  if (closed) presence?.close();
  else if (check) {
    stopChecks = checkPeerPeriodically(check, options.peerCheckInterval, gone, (error) =>
      warnUnwatched(peer, `checking failed: ${error.message}`),
    );
  }
  return watcher;
}

/**
 * Runs `onGone`; what it throws (a user's listener, reached through the stream) becomes an uncaught
 * exception, as a throwing listener does elsewhere, rather than an unhandled rejection or nothing.
 */
function tellGone(onGone: (error: XenVchanError) => void, error: XenVchanError): void {
  try {
    onGone(error);
  } catch (thrown) {
    queueMicrotask(() => {
      throw thrown;
    });
  }
}

/** The peerCheckInterval option, checked. */
export function peerCheckInterval(options: PeerDomainOptions): number {
  return deadlineOption(options.peerCheckInterval, DEFAULT_PEER_CHECK_INTERVAL, 'peerCheckInterval');
}

/**
 * Notices that the peer's whole domain went away, the privileged way. A process that dies still
 * has its kernel clear the live byte (the unmap notification), but a destroyed or crashed domain
 * has no kernel left to do that, and Xen tells nobody on the shared page: the survivor would wait
 * forever. xenstored fires `@releaseDomain` whenever some domain dies; on each, we ask whether the
 * peer is still there. Only privileged domains (dom0) may ask xenstored about other domains; the
 * others check for themselves (peer-liveness.ts).
 */
class PeerDomainWatch implements PeerDomainWatcher {
  private watch: Watch | null = null;
  private closed = false;

  private constructor(
    private readonly xenstore: XenStore,
    private readonly peer: number,
    private readonly onGone: (error: XenVchanError) => void,
  ) {}

  /**
   * Starts watching from a privileged domain. Resolves with 'gone' when the peer domain does not
   * exist (any more), and with null when xenstored will not answer us about other domains.
   */
  static async start(
    xenstore: XenStore,
    self: number,
    peer: number,
    onGone: (error: XenVchanError) => void,
  ): Promise<PeerDomainWatch | 'gone' | null> {
    if (refusedDomains.has(self)) return null;
    try {
      if (!(await xenstore.isDomainIntroduced(peer))) return 'gone';
      const watcher = new PeerDomainWatch(xenstore, peer, onGone);
      watcher.watch = await xenstore.watch('@releaseDomain');
      void watcher.follow(watcher.watch);
      return watcher;
    } catch (error) {
      // xenstored refuses unprivileged domains; that is what the checks are for. Anything else is
      // worth a warning, and the checks still run.
      if (errorCode(error) === 'EACCES') refusedDomains.add(self);
      else warnUnwatched(peer, `watching @releaseDomain failed: ${(error as Error).message}`);
      return null;
    }
  }

  close(): void {
    this.closed = true;
    const watch = this.watch;
    this.watch = null;
    void watch?.close().catch(() => {});
  }

  /** The watch fires once when set and then on every domain's death. */
  private async follow(watch: Watch): Promise<void> {
    try {
      for await (const _event of watch) {
        if (this.closed) return;
        if (await this.xenstore.isDomainIntroduced(this.peer)) continue;
        if (this.closed) return;
        this.close();
        tellGone(this.onGone, peerGoneError(this.peer));
        return;
      }
    } catch {
      // XenStore went away under us (closed with the channel): that ends only the watching.
      this.close();
    }
  }
}

export function peerGoneError(peer: number): XenVchanError {
  return new XenVchanError(
    'ECONNRESET',
    `The peer domain ${peer} is gone (destroyed or crashed) without closing the vchan; what it had not yet put into the ring is lost.`,
  );
}

/**
 * Our domains that xenstored refused to tell about other domains: it will refuse every time. (One
 * on Xen; a process on the simulation may act as several.)
 */
const refusedDomains = new Set<number>();
let warned = false;
function warnUnwatched(peer: number, why: string): void {
  if (warned) return;
  warned = true;
  process.emitWarning(
    `A vchan here may not notice if domain ${peer} is destroyed without closing (${why}); a close or a crashed process is still seen.`,
    { code: 'XEN_VCHAN_PEER_UNWATCHED' },
  );
}
