/**
 * The XenStore tree: nodes by absolute path. Nodes are immutable values, replaced on every
 * change, so "has this node changed since?" is an identity comparison; transactions rely on it.
 */
import type { XsPermission } from '@xen-vchan/native';

export interface XsNode {
  readonly value: Buffer;
  readonly permissions: readonly XsPermission[];
  /** Names of the children, in the order they were created (what DIRECTORY returns). */
  readonly children: readonly string[];
}

/** What node operations need from a tree: the committed store, or a transaction's view of it. */
export interface NodeView {
  get(path: string): XsNode | undefined;
  set(path: string, node: XsNode): void;
  delete(path: string): void;
  /** Nodes owned by `domid` (the first permission entry), for the node quota. */
  ownedBy(domid: number): number;
}

export class NodeStore implements NodeView {
  private constructor(
    private readonly nodes: Map<string, XsNode>,
    private readonly owned: Map<number, number>,
  ) {}

  /** A tree holding only the root, owned by dom0 and closed to everyone else, as xenstored starts. */
  static withRoot(): NodeStore {
    const store = new NodeStore(new Map(), new Map());
    store.set('/', { value: Buffer.alloc(0), permissions: [{ domid: 0, access: 'none' }], children: [] });
    return store;
  }

  get(path: string): XsNode | undefined {
    return this.nodes.get(path);
  }

  set(path: string, node: XsNode): void {
    const old = this.nodes.get(path);
    if (old) this.count(old, -1);
    this.nodes.set(path, node);
    this.count(node, 1);
  }

  delete(path: string): void {
    const old = this.nodes.get(path);
    if (!old) return;
    this.nodes.delete(path);
    this.count(old, -1);
  }

  ownedBy(domid: number): number {
    return this.owned.get(domid) ?? 0;
  }

  private count(node: XsNode, delta: number): void {
    const owner = node.permissions[0]!.domid;
    const total = (this.owned.get(owner) ?? 0) + delta;
    if (total === 0) this.owned.delete(owner);
    else this.owned.set(owner, total);
  }
}
