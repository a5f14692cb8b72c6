import { XenVchanError } from '@xen-vchan/native';
import type { Watch, XenStore } from '@xen-vchan/xenstore';

/**
 * Notices that the peer's whole domain went away. A process that dies still has its kernel clear
 * the live byte (the unmap notification), but a destroyed or crashed domain has no kernel left to
 * do that, and Xen tells nobody on the shared page: the survivor would wait forever. xenstored
 * fires `@releaseDomain` whenever some domain dies; on each, we ask whether the peer is still there.
 *
 * Only privileged domains (dom0) may ask xenstored about other domains, so an unprivileged domain
 * cannot watch this way; it is warned once per process and relies on the live byte alone.
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
   * Starts watching when it means something: on Xen, for a peer in another domain. Resolves with
   * null when there is nothing to watch (the simulation, a vchan within one domain).
   */
  static async start(xenstore: XenStore, self: number, peer: number, onGone: (error: XenVchanError) => void): Promise<PeerDomainWatch | null> {
    if (xenstore.transport === 'sim' || peer === self) return null;
    const watcher = new PeerDomainWatch(xenstore, peer, onGone);
    try {
      watcher.watch = await xenstore.watch('@releaseDomain');
    } catch (error) {
      if ((error as { code?: string }).code !== 'EACCES') throw error;
      warnUnwatched(peer);
      return null;
    }
    void watcher.follow(watcher.watch);
    return watcher;
  }

  close(): void {
    this.closed = true;
    const watch = this.watch;
    this.watch = null;
    void watch?.close().catch(() => {});
  }

  /** The watch fires once when set (the peer may be gone already) and then on every domain's death. */
  private async follow(watch: Watch): Promise<void> {
    try {
      for await (const _event of watch) {
        if (this.closed) return;
        if (await this.xenstore.isDomainIntroduced(this.peer)) continue;
        if (this.closed) return;
        this.close();
        this.onGone(
          new XenVchanError('ECONNRESET', `The peer domain ${this.peer} is gone (destroyed or crashed) without closing the vchan; what it had not yet put into the ring is lost.`),
        );
        return;
      }
    } catch (error) {
      if (this.closed) return;
      this.close();
      if ((error as { code?: string }).code === 'EACCES') warnUnwatched(this.peer);
      // Anything else (XenStore closed under us) ends only the watching, not the channel.
    }
  }
}

let warned = false;
function warnUnwatched(peer: number): void {
  if (warned) return;
  warned = true;
  process.emitWarning(
    `This domain may not ask xenstored whether domain ${peer} still exists (only privileged domains may), so a vchan here will not notice if its peer's domain is destroyed without closing; a close or a crashed process is still seen.`,
    { code: 'XEN_VCHAN_PEER_UNWATCHED' },
  );
}
