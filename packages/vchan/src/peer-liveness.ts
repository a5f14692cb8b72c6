import type { EventChannel } from '@xen-vchan/evtchn';
import { GrantStatus, type Gntdev } from '@xen-vchan/gntdev';

/**
 * Noticing, from an unprivileged domain, that the peer's whole domain was destroyed.
 *
 * Xen tells an unprivileged survivor nothing when its peer domain dies: no event arrives on the
 * port (Xen quietly turns it back into an unbound one), notifies are dropped, the live byte is
 * never cleared, and `@releaseDomain` / IS_DOMAIN_INTRODUCED are for dom0 only. Two questions an
 * unprivileged domain may still ask, one ioctl each, with the devices a vchan already holds:
 *
 * - the client asks for one byte of the server's control page by grant copy. While the server
 *   lives this is an ordinary copy (we map that page, so the grant is pinned); from the moment Xen
 *   starts killing the server domain, it answers GNTST_bad_domain. Linux 6.1's gntdev passes that
 *   status through.
 * - the server asks whether the client's domain still exists (EventChannel.domainExists: a bind of
 *   port 0, refused with ESRCH once the domain is gone). The client domain goes quickly, since the
 *   server maps none of its pages.
 *
 * Neither can be had as an event, so the answers are polled: one timer for the whole process,
 * unref'd, running only while some channel has a peer to check, each check one system call. (A
 * watch on the server's XenStore keys would be free while idle, but fires on a clean close too and
 * never for Qubes servers, which remove their keys once connected; a check is needed anyway.)
 */

/** What a check found: the peer domain is 'gone', 'alive', or the check could not tell. */
export type PeerState = 'alive' | 'gone' | { unknown: Error };

/** One check of the peer domain, built where the handles are (handshake.ts). */
export type PeerCheck = () => PeerState;

/** Default time between two checks of one channel's peer, in ms: a death is seen within about this. */
export const DEFAULT_PEER_CHECK_INTERVAL = 500;

/** The client's check: one byte of the server's control page, copied through the hypervisor. */
export function grantCopyCheck(gntdev: Gntdev, serverDomid: number, controlRef: number): PeerCheck {
  const scratch = new Uint8Array(1);
  return () => {
    try {
      const [status] = gntdev.grantCopy([{ source: { domid: serverDomid, ref: controlRef, offset: 0 }, dest: scratch, length: 1 }]);
      // Only GNTST_bad_domain says the domain is dying. Anything else says nothing about it: a
      // server that closed normally and let go of the page makes Xen answer GNTST_general_error,
      // and its close reaches the stream through the live byte anyway.
      return status === GrantStatus.badDomain ? 'gone' : 'alive';
    } catch (error) {
      return { unknown: error as Error };
    }
  };
}

/** The server's check: does the client's domain still exist? */
export function domainCheck(events: EventChannel, clientDomid: number): PeerCheck {
  return () => {
    try {
      return events.domainExists(clientDomid) ? 'alive' : 'gone';
    } catch (error) {
      return { unknown: error as Error };
    }
  };
}

interface Watched {
  check: PeerCheck;
  interval: number;
  due: number;
  onGone: () => void;
  onUnknown: (error: Error) => void;
  /** onUnknown ran: it is told once; the checks go on (a later one may still see the death). */
  toldUnknown: boolean;
}

/** Runs every registered check when it is due, on one timer for the process. */
class LivenessMonitor {
  private readonly watched = new Set<Watched>();
  private timer: NodeJS.Timeout | null = null;

  add(entry: Watched): () => void {
    this.watched.add(entry);
    this.schedule();
    return () => {
      if (this.watched.delete(entry)) this.schedule();
    };
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.watched.size === 0) return;
    let next = Infinity;
    for (const entry of this.watched) next = Math.min(next, entry.due);
    this.timer = setTimeout(() => this.tick(), Math.max(0, next - performance.now()));
    // A check never keeps the process alive; the channel's own port does while it is open.
    this.timer.unref();
  }

  private tick(): void {
    this.timer = null;
    const now = performance.now();
    for (const entry of [...this.watched]) {
      // An earlier callback of this tick may have closed this channel.
      if (entry.due > now || !this.watched.has(entry)) continue;
      entry.due = now + entry.interval;
      const state = entry.check();
      if (state === 'alive') continue;
      if (state !== 'gone' && entry.toldUnknown) continue;
      if (state === 'gone') this.watched.delete(entry);
      else entry.toldUnknown = true;
      // A callback that throws must not cost the other channels their checks.
      try {
        if (state === 'gone') entry.onGone();
        else entry.onUnknown(state.unknown);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
    this.schedule();
  }
}

const monitor = new LivenessMonitor();

/**
 * Checks the peer every `interval` ms until the returned function is called. `onGone` runs once
 * when the peer domain is found gone (checking then stops); `onUnknown` the first time a check
 * cannot tell.
 */
export function checkPeerPeriodically(
  check: PeerCheck,
  interval: number,
  onGone: () => void,
  onUnknown: (error: Error) => void,
): () => void {
  return monitor.add({ check, interval, due: performance.now() + interval, onGone, onUnknown, toldUnknown: false });
}
