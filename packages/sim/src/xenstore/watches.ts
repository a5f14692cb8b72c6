/**
 * XenStore watches: a connection asks to hear of changes at or below a path, under a token of
 * its choosing. As in xenstored, a watch fires once when registered, then for every write,
 * creation, removal or permission change at or below its path that the watcher may read; a
 * relative watch reports relative paths. An event whose path and token would not fit in one
 * message (XENSTORE_PAYLOAD_MAX) is not sent, as xenstored's add_event drops it: a long token on
 * a short watched path, then a long path written below it, must not break the watcher's framing.
 */
import { encodeXsMessage, XENSTORE_ABS_PATH_MAX, XENSTORE_PAYLOAD_MAX, XsType, xsStrings } from '@xen-vchan/native';
import { SimFailure } from '../failure.js';
import { READ, rightsOf } from './access.js';
import { WATCH_QUOTA } from './limits.js';
import type { NodeChange } from './node-operations.js';
import { canonicalPath, domainPath, isRelativePath, isSpecialPath, isValidNodePath, isWithin } from './node-path.js';

/** Where a watch's events go: its connection. */
export interface Watcher {
  send(message: Buffer): void;
}

interface Watch {
  watcher: Watcher;
  domid: number;
  /** Absolute, or a special name such as @introduceDomain. */
  path: string;
  token: string;
  /** Stripped from reported paths when the watch was set with a relative path. */
  relativeTo: string | null;
}

export class WatchTable {
  private readonly watches = new Set<Watch>();

  add(watcher: Watcher, domid: number, path: string, token: string): void {
    const absolute = watchedPath(path, domid);
    for (const watch of this.watches) {
      if (watch.watcher === watcher && watch.path === absolute && watch.token === token) {
        throw new SimFailure('EEXIST', `already watching ${absolute} with token "${token}"`);
      }
    }
    if (domid !== 0 && this.countOf(domid) >= WATCH_QUOTA) {
      throw new SimFailure('E2BIG', `domain ${domid} already has ${WATCH_QUOTA} watches`);
    }
    const relativeTo = isRelativePath(path) ? `${domainPath(domid)}/` : null;
    this.watches.add({ watcher, domid, path: absolute, token, relativeTo });
  }

  /** The event every new watch gets at once, so that its owner checks the current state. */
  announce(watcher: Watcher, path: string, token: string): void {
    sendEvent(watcher, path, token);
  }

  remove(watcher: Watcher, domid: number, path: string, token: string): void {
    const absolute = watchedPath(path, domid);
    for (const watch of this.watches) {
      if (watch.watcher === watcher && watch.path === absolute && watch.token === token) {
        this.watches.delete(watch);
        return;
      }
    }
    throw new SimFailure('ENOENT', `no watch on ${absolute} with token "${token}"`);
  }

  removeAll(watcher: Watcher): void {
    for (const watch of this.watches) if (watch.watcher === watcher) this.watches.delete(watch);
  }

  fire(changes: readonly NodeChange[]): void {
    for (const change of changes) {
      for (const watch of this.watches) {
        if (isSpecialPath(watch.path)) continue;
        const hit = change.exact ? change.path === watch.path : isWithin(change.path, watch.path);
        if (!hit || !change.permissions.some((permissions) => (rightsOf(watch.domid, permissions) & READ) !== 0)) continue;
        const reported = watch.relativeTo ? change.path.slice(watch.relativeTo.length) : change.path;
        sendEvent(watch.watcher, reported, watch.token);
      }
    }
  }

  /** Fires `@introduceDomain` and the like; xenstored tells only privileged watchers by default. */
  fireSpecial(name: string): void {
    for (const watch of this.watches) {
      if (watch.path === name && watch.domid === 0) sendEvent(watch.watcher, name, watch.token);
    }
  }

  private countOf(domid: number): number {
    let count = 0;
    for (const watch of this.watches) if (watch.domid === domid) count++;
    return count;
  }
}

function watchedPath(path: string, domid: number): string {
  if (isSpecialPath(path)) {
    if (path.length > XENSTORE_ABS_PATH_MAX) throw new SimFailure('EINVAL', 'special watch name too long');
    return path;
  }
  const absolute = canonicalPath(path, domid);
  if (!isValidNodePath(absolute)) throw new SimFailure('EINVAL', `invalid path "${path}"`);
  return absolute;
}

/** Sends one WATCH_EVENT, unless it would be over-long: then xenstored sends nothing, and neither do we. */
function sendEvent(watcher: Watcher, path: string, token: string): void {
  const payload = xsStrings(path, token);
  if (payload.length > XENSTORE_PAYLOAD_MAX) return;
  watcher.send(encodeXsMessage(XsType.WATCH_EVENT, 0, 0, payload));
}
