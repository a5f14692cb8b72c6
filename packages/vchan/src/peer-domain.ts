import { XenVchanError } from '@xen-vchan/native';
import type { Watch, XenStore } from '@xen-vchan/xenstore';

/**
 * Notices that the peer's whole domain went away. A process that dies still has its kernel clear
 * the live byte (the unmap notification), but a destroyed or crashed domain has no kernel left to
 * do that, and Xen tells nobody on the shared page: the survivor would wait forever. xenstored
 * fires `@releaseDomain` whenever some domain dies; on each, we ask whether the peer is still there.
 *
 * Only privileged domains (dom0) may ask xenstored about other domains, so an unprivileged domain
 * cannot watch this way; it is warned once per process and relies on the live byte alone. Nor is
 * dom0 watched: when dom0 goes, so does everything else.
 */
export class PeerDomainWatch {
  private watch: Watch | null = null;
  private closed = false;

  private constructor(
    private readonly xenstore: XenStore,
    private readonly peer: number,
    private readonly onGone: (error: XenVchanError) => void,
  ) {}

  /**
   * Starts watching when it means something and is allowed: on Xen, for a peer in another domain
   * than ours and dom0, from a privileged domain. Resolves with null when there is nothing to watch,
   * and with 'gone' when the peer domain does not exist (any more). Never rejects: a watch that
   * cannot be set only costs the early notice, and says so in a warning.
   */
  static async start(xenstore: XenStore, self: number, peer: number, onGone: (error: XenVchanError) => void): Promise<PeerDomainWatch | 'gone' | null> {
    if (xenstore.transport === 'sim' || peer === self || peer === 0 || unprivileged) return null;
    try {
      if (!(await xenstore.isDomainIntroduced(peer))) return 'gone';
      const watcher = new PeerDomainWatch(xenstore, peer, onGone);
      watcher.watch = await xenstore.watch('@releaseDomain');
      void watcher.follow(watcher.watch);
      return watcher;
    } catch (error) {
      if ((error as { code?: string }).code === 'EACCES') unprivileged = true;
      warnUnwatched(peer, error as Error);
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
        this.onGone(peerGoneError(this.peer));
        return;
      }
    } catch {
      // XenStore went away under us (closed with the channel): that ends only the watching.
      this.close();
    }
  }
}

export function peerGoneError(peer: number): XenVchanError {
  return new XenVchanError('ECONNRESET', `The peer domain ${peer} is gone (destroyed or crashed) without closing the vchan; what it had not yet put into the ring is lost.`);
}

/** Set once xenstored refused to tell us about another domain: it will refuse every time. */
let unprivileged = false;
let warned = false;
function warnUnwatched(peer: number, error: Error): void {
  if (warned) return;
  warned = true;
  const why = unprivileged ? 'only privileged domains may ask xenstored whether another domain still exists' : `watching failed: ${error.message}`;
  process.emitWarning(
    `A vchan here will not notice if domain ${peer} is destroyed without closing (${why}); a close or a crashed process is still seen.`,
    { code: 'XEN_VCHAN_PEER_UNWATCHED' },
  );
}
