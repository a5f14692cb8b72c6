/**
 * XenStore transactions as xenstored (4.17) runs them: a transaction sees each node as it was when
 * the transaction first touched it (read or wrote it), not as it was when the transaction started,
 * and keeps that version from then on. Commit applies its writes only if none of the nodes it
 * touched changed meanwhile, else EAGAIN; the caller then runs the transaction again.
 */
import { SimFailure } from '../failure.js';
import { NODE_QUOTA, NODE_QUOTA_ERROR, TRANSACTION_QUOTA } from './limits.js';
import type { NodeChange } from './node-operations.js';
import type { NodeStore, NodeView, XsNode } from './store.js';

class TransactionView implements NodeView {
  /** Every node the transaction touched, as the committed tree had it then (undefined: absent). */
  readonly touched = new Map<string, XsNode | undefined>();
  /** The transaction's own version of each touched node. */
  private readonly own = new Map<string, XsNode | undefined>();
  readonly written = new Set<string>();
  /** Nodes gained (or lost) per owner, for the node quota. */
  readonly ownedChange = new Map<number, number>();

  constructor(private readonly committed: NodeStore) {}

  get(path: string): XsNode | undefined {
    this.touch(path);
    return this.own.get(path);
  }

  set(path: string, node: XsNode): void {
    this.replace(path, node);
  }

  delete(path: string): void {
    this.replace(path, undefined);
  }

  ownedBy(domid: number): number {
    return this.committed.ownedBy(domid) + (this.ownedChange.get(domid) ?? 0);
  }

  /** The transaction's version of a node it wrote. */
  versionOf(path: string): XsNode | undefined {
    return this.own.get(path);
  }

  private replace(path: string, node: XsNode | undefined): void {
    this.touch(path);
    this.count(this.own.get(path), -1);
    this.count(node, 1);
    this.own.set(path, node);
    this.written.add(path);
  }

  private touch(path: string): void {
    if (this.touched.has(path)) return;
    const node = this.committed.get(path);
    this.touched.set(path, node);
    this.own.set(path, node);
  }

  private count(node: XsNode | undefined, delta: number): void {
    if (!node) return;
    const owner = node.permissions[0]!.domid;
    this.ownedChange.set(owner, (this.ownedChange.get(owner) ?? 0) + delta);
  }
}

export class Transaction {
  readonly view: TransactionView;
  /** Watches fire for these at commit, not before. */
  readonly changes: NodeChange[] = [];

  constructor(
    readonly id: number,
    readonly domid: number,
    committed: NodeStore,
  ) {
    this.view = new TransactionView(committed);
  }
}

export class TransactionTable {
  private nextId = 1;
  private readonly openByDomain = new Map<number, number>();

  start(domid: number, committed: NodeStore): Transaction {
    const open = this.openByDomain.get(domid) ?? 0;
    if (domid !== 0 && open >= TRANSACTION_QUOTA) {
      throw new SimFailure('ENOSPC', `domain ${domid} already has ${open} open transactions`);
    }
    this.openByDomain.set(domid, open + 1);
    const transaction = new Transaction(this.nextId, domid, committed);
    this.nextId = (this.nextId % 0xffff_ffff) + 1; // never 0, which means "no transaction"
    return transaction;
  }

  /** Ends `transaction` without applying it (abort, or its connection closed). */
  discard(transaction: Transaction): void {
    const open = (this.openByDomain.get(transaction.domid) ?? 1) - 1;
    if (open === 0) this.openByDomain.delete(transaction.domid);
    else this.openByDomain.set(transaction.domid, open);
  }

  /** Ends `transaction` by applying it to `committed`; returns the changes to fire watches for. */
  commit(transaction: Transaction, committed: NodeStore): NodeChange[] {
    this.discard(transaction);
    const { view, domid } = transaction;
    for (const [path, seen] of view.touched) {
      if (committed.get(path) !== seen) throw new SimFailure('EAGAIN', `${path} changed while transaction ${transaction.id} ran`);
    }
    const growth = view.ownedChange.get(domid) ?? 0;
    if (domid !== 0 && growth > 0 && committed.ownedBy(domid) + growth > NODE_QUOTA) {
      throw new SimFailure(NODE_QUOTA_ERROR, `domain ${domid} would own more than ${NODE_QUOTA} nodes`);
    }
    for (const path of view.written) {
      const node = view.versionOf(path);
      if (node) committed.set(path, node);
      else committed.delete(path);
    }
    return transaction.changes;
  }
}
