import { checkDomainId, invalidArgument, splitXsStrings, XenVchanError, XsType, xsStrings } from '@xen-vchan/native';
import type { XenStoreConnection } from './connection.js';
import { checkPath, NodeOperations } from './operations.js';
import type { TransportKind } from './options.js';
import { runTransaction, Transaction, type TransactionOptions } from './transaction.js';
import { Watch } from './watch.js';

const closeOnCollect = new FinalizationRegistry<XenStoreConnection>((connection) => connection.close());

/** A connection to XenStore. Open one with openXenStore(); close() it when done. */
export class XenStore extends NodeOperations {
  protected readonly transactionId = 0;
  private nextToken = 1;

  /** @internal Made by openXenStore(). */
  constructor(
    connection: XenStoreConnection,
    /** How it reaches XenStore: xenstored's socket, /dev/xen/xenbus, or the simulation. */
    readonly transport: TransportKind,
    /** The simulated domain it acts as; null on Xen, where XenStore knows (see ownDomid()). */
    readonly domid: number | null,
  ) {
    super(connection);
    closeOnCollect.register(this, connection, this);
  }

  /** The domain's home, `/local/domain/<domid>`. */
  async getDomainPath(domid: number): Promise<string> {
    checkDomainId(domid);
    const [path] = splitXsStrings(await this.send(XsType.GET_DOMAIN_PATH, 'getDomainPath', String(domid), xsStrings(String(domid))));
    return path ?? '';
  }

  /**
   * Whether xenstored knows `domid` as a live domain (IS_DOMAIN_INTRODUCED). False once the domain
   * is dying or gone. Only privileged domains may ask (xenstored answers EACCES to others, since
   * XSA-115), and so does the simulation.
   */
  async isDomainIntroduced(domid: number): Promise<boolean> {
    checkDomainId(domid);
    const [answer] = splitXsStrings(
      await this.send(XsType.IS_DOMAIN_INTRODUCED, 'isDomainIntroduced', String(domid), xsStrings(String(domid))),
    );
    if (answer !== 'T' && answer !== 'F')
      throw new XenVchanError('EPROTO', `XenStore answered IS_DOMAIN_INTRODUCED with "${answer}", not T or F.`);
    return answer === 'T';
  }

  /** This domain's id, from its `domid` node (which the toolstack, or the simulation, writes). */
  async ownDomid(): Promise<number> {
    const text = await this.read('domid');
    const domid = Number(text);
    if (!/^\d+$/.test(text)) throw new XenVchanError('EPROTO', `XenStore's domid node holds "${text}", not a domain id.`);
    return domid;
  }

  /** Starts a transaction; end it with commit() or abort(). transaction() does all of it, with retries. */
  async startTransaction(): Promise<Transaction> {
    const [id] = splitXsStrings(await this.send(XsType.TRANSACTION_START, 'startTransaction', '', xsStrings('')));
    if (id === undefined || !/^\d+$/.test(id) || Number(id) === 0) {
      throw new XenVchanError('EPROTO', `XenStore answered TRANSACTION_START with "${id}", not a transaction id.`);
    }
    return new Transaction(this.connection, Number(id), this);
  }

  /**
   * Runs `body` in a transaction and commits it, running it again while the commit conflicts
   * (EAGAIN), up to `attempts` times; then rejects with code EAGAIN. Resolves with what `body`
   * returned. `body` may run more than once, so it should act only through `tx`.
   */
  transaction<T>(body: (tx: Transaction) => Promise<T>, options?: TransactionOptions): Promise<T> {
    return runTransaction(() => this.startTransaction(), body, options);
  }

  /**
   * Watches `path` and everything below it. Resolves once XenStore registered the watch; its first
   * event is already on the way. `token` (default: a fresh one) must be unique on this handle.
   * An open watch keeps Node running: close it (or leave its `for await` loop) when done.
   */
  async watch(path: string, token?: string): Promise<Watch> {
    checkPath(path);
    this.checkUsable();
    if (token !== undefined) {
      checkPath(token, 'watch token');
      if (this.connection.hasWatch(token))
        throw invalidArgument(`The watch token "${token}" is already used on this handle; tokens tell watches apart.`);
    }
    const chosen = token ?? this.freshToken();
    const watch = new Watch(this.connection, path, chosen, this);
    // Routed before asking: through /dev/xen/xenbus the first event may overtake the reply.
    this.connection.addWatch(chosen, watch);
    try {
      await this.send(XsType.WATCH, 'watch', path, xsStrings(path, chosen));
    } catch (error) {
      this.connection.removeWatch(chosen);
      watch.finish();
      throw error;
    }
    return watch;
  }

  /**
   * Closes the connection: requests in flight reject with code EBADF, watches end, and XenStore
   * aborts open transactions. Idempotent.
   */
  close(): void {
    closeOnCollect.unregister(this);
    this.connection.close();
  }

  protected checkUsable(): void {
    const ended = this.connection.ended;
    if (ended) throw ended;
  }

  private freshToken(): string {
    let token: string;
    do token = `xen-vchan-${this.nextToken++}`;
    while (this.connection.hasWatch(token));
    return token;
  }
}
