import type { Watch, XenStore } from '@xen-vchan/xenstore';

/**
 * A client's presence node: how a server in an unprivileged domain learns at once that its
 * client's domain is being destroyed.
 *
 * Nothing the server can read changes when the client domain dies, until Xen has finished
 * destroying it (seconds for a large guest; see peer-liveness.ts). But the toolstack removes the
 * dying domain's whole XenStore home first, before it even asks Xen to kill it, and xenstored fires
 * a watch set exactly on a removed node for anyone who may read it. So our client writes one node
 * in its own home, readable by the server, and the server watches it: free while idle, and the
 * earliest notice there is. A libxenvchan client writes no such node; its server still has the
 * periodic check. The node going away proves nothing while the client's live byte still says
 * connected only because our client removes it after its goodbye; a client that removes it early
 * can only end its own channel.
 */

/** The node our client writes for the server at `serverPath` in domain `server`. */
export function presencePath(client: number, server: number, serverPath: string): string {
  // One path component per server path: XenStore paths allow [A-Za-z0-9/_@-], and '/' is the only
  // one of those that cannot stay.
  return `/local/domain/${client}/data/vchan-client/${server}/${serverPath.slice(1).replaceAll('/', '_')}`;
}

/**
 * Writes the presence node, readable by the server only. Resolves with its path, or null when it
 * could not be written (a XenStore quota, say): the server then notices more slowly, nothing else.
 */
export async function announcePresence(xenstore: XenStore, client: number, server: number, serverPath: string): Promise<string | null> {
  const path = presencePath(client, server, serverPath);
  try {
    await xenstore.transaction(async (tx) => {
      await tx.write(path, '1');
      await tx.setPermissions(path, [
        { domid: client, access: 'none' },
        { domid: server, access: 'read' },
      ]);
    });
    return path;
  } catch {
    return null;
  }
}

/** Removes the presence node; after the goodbye, so the server sees the close first. */
export function withdrawPresence(xenstore: XenStore, path: string): void {
  void xenstore.rm(path).catch(() => {});
}

/**
 * The server's side: calls `onGone` once when the client's presence node, seen at least once,
 * disappears while `stillConnected()` (the client's live byte) says the client never left.
 */
export async function watchPresence(xenstore: XenStore, path: string, stillConnected: () => boolean, onGone: () => void): Promise<{ close(): void }> {
  const watch: Watch = await xenstore.watch(path);
  let closed = false;
  const close = () => {
    closed = true;
    void watch.close().catch(() => {});
  };
  void (async () => {
    let seen = false;
    try {
      // The watch fires once when set, then on every change of the node.
      for await (const _event of watch) {
        if (closed) return;
        const present = await xenstore.read(path).then(
          () => true,
          () => false,
        );
        if (closed) return;
        if (present) seen = true;
        else if (seen && stillConnected()) {
          close();
          onGone();
          return;
        }
      }
    } catch {
      // XenStore went away under us (closed with the server): that ends only the watching.
    }
  })();
  return { close };
}
