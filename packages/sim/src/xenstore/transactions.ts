/**
 * XenStore transactions: each works on its own snapshot of the tree and remembers every node it
 * touched. Commit applies its writes only if none of those nodes changed meanwhile, else EAGAIN,
 * as xenstored decides it; the caller then runs the transaction again.
 */
import { XsFailure } from './failure.js';
import { NODE_QUOTA, NODE_QUOTA_ERROR, TRANSACTION_QUOTA } from './limits.js';
import type { NodeChange } from './node-operations.js';
import type { NodeStore, NodeView, XsNode } from './store.js';

class TransactionView implements NodeView {
  /** Every node the transaction read or wrote, as it was in the snapshot (undefined: absent). */
  readonly touched = new Map<string, XsNode | undefined>();
  readonly written = new Set<string>();

  constructor(readonly snapshot: NodeStore) {}

  get(path: string): XsNode | undefined {
    this.touch(path);
    return this.snapshot.get(path);
  }

  set(path: string, node: XsNode): void {
    this.touch(path);
    this.written.add(path);
    this.snapshot.set(path, node);
  }

  delete(path: string): void {
    this.touch(path);
    this.written.add(path);
    this.snapshot.delete(path);
  }

  ownedBy(domid: number): number {
    return this.snapshot.ownedBy(domid);
  }

  private touch(path: string): void {
    if (!this.touched.has(path)) this.touched.set(path, this.snapshot.get(path));
  }
}

export class Transaction {
  readonly view: TransactionView;
  /** Watches fire for these at commit, not before. */
  readonly changes: NodeChange[] = [];
  readonly ownedAtStart: number;

  constructor(
    readonly id: number,
    readonly domid: number,
    committed: NodeStore,
  ) {
    this.view = new TransactionView(committed.snapshot());
    this.ownedAtStart = committed.ownedBy(domid);
  }
}

export class TransactionTable {
  private nextId = 1;
  private readonly openByDomain = new Map<number, number>();

  start(domid: number, committed: NodeStore): Transaction {
    const open = this.openByDomain.get(domid) ?? 0;
    if (domid !== 0 && open >= TRANSACTION_QUOTA) {
      throw new XsFailure('ENOSPC', `domain ${domid} already has ${open} open transactions`);
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
      if (committed.get(path) !== seen) throw new XsFailure('EAGAIN', `${path} changed while transaction ${transaction.id} ran`);
    }
    const growth = view.ownedBy(domid) - transaction.ownedAtStart;
    if (domid !== 0 && growth > 0 && committed.ownedBy(domid) + growth > NODE_QUOTA) {
      throw new XsFailure(NODE_QUOTA_ERROR, `domain ${domid} would own more than ${NODE_QUOTA} nodes`);
    }
    for (const path of view.written) {
      const node = view.snapshot.get(path);
      if (node) committed.set(path, node);
      else committed.delete(path);
    }
    return transaction.changes;
  }
}
