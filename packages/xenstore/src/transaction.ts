import { errorCode, invalidArgument, XenVchanError, XsType, xsStrings } from '@xen-vchan/native';
import type { XenStoreConnection } from './connection.js';
import { NodeOperations } from './operations.js';

export interface TransactionOptions {
  /** How many times to run the body before giving up on conflicts (default 10). */
  attempts?: number;
}

const DEFAULT_ATTEMPTS = 10;
const MAX_BACKOFF_MS = 50;

/**
 * A XenStore transaction: the same node operations, seeing a snapshot of the tree and applied
 * all at once by commit(), or not at all. Only one of commit() and abort() ends it.
 */
export class Transaction extends NodeOperations {
  private ended = false;

  /** @internal Made by XenStore.startTransaction(). */
  constructor(
    connection: XenStoreConnection,
    readonly id: number,
    // Held so that the store (and its connection) stays alive while a transaction is in use.
    private readonly store: object,
  ) {
    super(connection);
  }

  protected get transactionId(): number {
    return this.id;
  }

  /** Whether commit() or abort() may still be called. */
  get active(): boolean {
    return !this.ended;
  }

  /**
   * Applies the transaction. Resolves true, or false when another writer changed a node it used
   * (XenStore's EAGAIN): then nothing was applied, and the caller may run it again.
   * If the connection is lost meanwhile, it rejects and whether it applied is unknown.
   */
  async commit(): Promise<boolean> {
    this.finish();
    try {
      await this.connection.request(XsType.TRANSACTION_END, this.id, xsStrings('T'), `commit of transaction ${this.id}`, this.store);
      return true;
    } catch (error) {
      if (errorCode(error) === 'EAGAIN') return false;
      throw error;
    }
  }

  /** Drops the transaction; nothing it wrote is applied. Does nothing if it already ended. */
  async abort(): Promise<void> {
    if (this.ended) return;
    this.finish();
    if (this.connection.ended) return; // closing the connection already aborted it
    await this.connection.request(XsType.TRANSACTION_END, this.id, xsStrings('F'), `abort of transaction ${this.id}`, this.store);
  }

  protected checkUsable(): void {
    if (this.ended) {
      throw new XenVchanError('ERR_TRANSACTION_ENDED', `Transaction ${this.id} was already committed or aborted; start a new one.`);
    }
  }

  private finish(): void {
    this.checkUsable();
    this.ended = true;
  }
}

/**
 * Runs `body` in a transaction and commits it, running it again (after a short, growing, random
 * pause) while commits conflict. The body may therefore run more than once: it should only read
 * and write through `tx` and keep no other side effects. A body that throws aborts the transaction.
 */
export async function runTransaction<T>(
  start: () => Promise<Transaction>,
  body: (tx: Transaction) => Promise<T>,
  options: TransactionOptions = {},
): Promise<T> {
  const attempts = options.attempts ?? DEFAULT_ATTEMPTS;
  if (!Number.isInteger(attempts) || attempts < 1) throw invalidArgument(`attempts must be a positive integer, got ${attempts}`);
  for (let attempt = 1; ; attempt++) {
    const tx = await start();
    let result: T;
    try {
      result = await body(tx);
    } catch (error) {
      // The body's error is the one to report; an abort that fails too (connection lost) adds nothing.
      await tx.abort().catch(() => undefined);
      throw error;
    }
    if (await tx.commit()) return result;
    if (attempt === attempts) {
      throw new XenVchanError(
        'EAGAIN',
        `XenStore transaction conflicted ${attempts} times in a row: other writers keep changing the nodes it uses. ` +
          'Touch fewer nodes per transaction, or try again later (option attempts raises the limit).',
      );
    }
    await new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(MAX_BACKOFF_MS, 2 ** attempt)));
  }
}
