import { randomBytes } from 'node:crypto';
import { errorCode } from '@xen-vchan/native';
import type { Watch, XenStore } from '@xen-vchan/xenstore';

/**
 * A client's presence node: how a server in an unprivileged domain learns at once that its
 * client's domain is being destroyed.
 *
 * Nothing the server can read changes when the client domain dies until Xen has finished
 * destroying it (seconds for a large guest; see peer-liveness.ts). But the toolstack removes the
 * dying domain's whole XenStore home first, just before it asks Xen to kill the domain, and
 * xenstored fires a watch set exactly on a removed node for anyone who may read it. So our client
 * writes one node in its own home, readable by the server, and the server watches it: free while
 * idle, and the earliest notice there is. A libxenvchan client writes no such node; its server
 * still has the periodic check.
 *
 * The node holds a token of the connection that wrote it, and a client removes it only while it
 * still holds its own token, so an attempt that failed, or the previous client of a persistent
 * server, cannot remove the node of the client that is connected now. Our client removes it after
 * its goodbye, so a server that sees it vanish while the live byte still says connected knows the
 * client never said goodbye. A client that removes its node on purpose ends only its own channel.
 */

/**
 * The node our client writes for the server at `serverPath` in domain `server`: one path component
 * per server path, reversibly ("@" doubled, "_" as "@u", then "/" as "_"; XenStore allows only
 * [A-Za-z0-9/_@-] in paths, and "/" cannot stay).
 */
export function presencePath(client: number, server: number, serverPath: string): string {
  const component = serverPath.slice(1).replaceAll('@', '@@').replaceAll('_', '@u').replaceAll('/', '_');
  return `/local/domain/${client}/data/vchan-client/${server}/${component}`;
}

/** A written presence node; `withdraw()` removes it if it is still ours (once). */
export interface Presence {
  readonly path: string;
  withdraw(): Promise<void>;
}

/**
 * Writes the presence node, readable by the server only. Resolves with it, or null when it could
 * not be written (a XenStore quota, say): the server then notices more slowly, nothing else.
 */
export async function announcePresence(xenstore: XenStore, client: number, server: number, serverPath: string): Promise<Presence | null> {
  const path = presencePath(client, server, serverPath);
  const token = randomBytes(8).toString('hex');
  try {
    await xenstore.transaction(async (tx) => {
      await tx.write(path, token);
      await tx.setPermissions(path, [
        { domid: client, access: 'none' },
        { domid: server, access: 'read' },
      ]);
    });
  } catch {
    return null;
  }
  let withdrawn: Promise<void> | null = null;
  const withdraw = () =>
    (withdrawn ??= xenstore
      .transaction(async (tx) => {
        if ((await tx.read(path).catch(() => null)) === token) await tx.rm(path);
      })
      .catch(() => {}));
  return { path, withdraw };
}

/** Whether a failed read says the node is not there (for us): ENOENT, or EACCES once its parents are gone. */
function meansAbsent(error: unknown): boolean {
  const code = errorCode(error);
  return code === 'ENOENT' || code === 'EACCES';
}

/**
 * The server's side: calls `onGone` once when the client's presence node, seen at least once,
 * disappears while `stillConnected()` (the client's live byte) says the client never left. Any
 * other trouble reading it ends only the watching (the periodic checks still run).
 */
export async function watchPresence(
  xenstore: XenStore,
  path: string,
  stillConnected: () => boolean,
  onGone: () => void,
): Promise<{ close(): void }> {
  const watch: Watch = await xenstore.watch(path);
  let closed = false;
  const close = () => {
    closed = true;
    void watch.close().catch(() => {});
  };
  const follow = async (): Promise<boolean> => {
    let seen = false;
    // The watch fires once when set, then on every change of the node.
    for await (const _event of watch) {
      if (closed) return false;
      let present: boolean;
      try {
        await xenstore.read(path);
        present = true;
      } catch (error) {
        if (!meansAbsent(error)) return false;
        present = false;
      }
      if (closed) return false;
      if (present) seen = true;
      else if (seen && stillConnected()) return true;
    }
    return false;
  };
  follow().then(
    (gone) => {
      const wasClosed = closed;
      close();
      if (gone && !wasClosed) onGone();
    },
    // XenStore went away under us (closed with the server): that ends only the watching.
    () => close(),
  );
  return { close };
}
