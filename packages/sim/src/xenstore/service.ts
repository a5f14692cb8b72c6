/**
 * The simulated xenstored's request handling: one message in, one reply out, like xenstored's
 * process_message. Requests run one at a time in the daemon, so they need no locks.
 *
 * Domain identity: xenstored knows a guest's domain from the ring it talks through and treats its
 * Unix socket as dom0. Here every connection is a socket, so the first message on each must be
 * SIM_DECLARE_DOMAIN with "<domid>\0"; anything else before it is refused and the connection
 * closed. Domain ids are claimed, not proven, like everything else in the simulation.
 */
import {
  DOMID_SELF,
  encodeXsMessage,
  formatXsPermission,
  isGuestDomainId,
  splitXsStrings,
  XENSTORE_PAYLOAD_MAX,
  XsType,
  xsStrings,
  type XsMessage,
} from '@xen-vchan/native';
import { SimFailure } from '../failure.js';
import { introduceDomain } from './domains.js';
import {
  getPermissions,
  listChildren,
  makeDirectory,
  parsePermissions,
  readableNode,
  readNode,
  removeNode,
  setPermissions,
  writeNode,
  type RequestContext,
} from './node-operations.js';
import { childPath, domainPath } from './node-path.js';
import { NodeStore, type XsNode } from './store.js';
import { TransactionTable, type Transaction } from './transactions.js';
import { WatchTable, type Watcher } from './watches.js';

/** One connection to the simulated XenStore. */
export interface XenStoreClient extends Watcher {
  /** The domain the connection declared; null until it has. */
  domid: number | null;
  readonly transactions: Map<number, Transaction>;
  /** Closes the connection once what was sent has gone out. */
  end(): void;
}

interface Reply {
  payload: Buffer;
  /** Runs once the reply is sent (a new watch's first event comes after the reply, as in xenstored). */
  after?: () => void;
}

const OK = xsStrings('OK');
const typeNames = new Map<number, string>(Object.entries(XsType).map(([name, type]) => [type, name]));
/** Message types of xs_wire.h the simulation does not implement: they serve toolstacks and xenstored's own upkeep. */
const unsupported = new Set<number>([
  XsType.CONTROL,
  XsType.INTRODUCE,
  XsType.RELEASE,
  XsType.RESUME,
  XsType.SET_TARGET,
  XsType.RESET_WATCHES,
]);

export class XenStoreService {
  private readonly store = NodeStore.withRoot();
  private readonly transactions = new TransactionTable();
  private readonly watches = new WatchTable();
  /** DIRECTORY_PART's generation: a node object is replaced on every change, so its identity is its version. */
  private readonly generations = new WeakMap<XsNode, number>();
  private nextGeneration = 1;

  /**
   * Domains that connected and were not destroyed since, and dom0: there is no toolstack to say
   * which exist, so a domain is introduced when a connection first declares it.
   */
  private readonly domains = new Set<number>([0]);
  private readonly domainExists = (domid: number) => this.domains.has(domid);

  constructor(
    private readonly log: (message: string) => void,
    /** Told when a connection declares its domain: the hypervisor's domain of that id lives (again). */
    private readonly onDomainDeclared: (domid: number) => void = () => {},
  ) {
    introduceDomain(this.store, 0, this.domainExists);
  }

  handle(client: XenStoreClient, message: XsMessage): void {
    if (client.domid === null) {
      this.declare(client, message);
      return;
    }
    let type = message.type;
    let reply: Reply;
    try {
      reply = this.dispatch(client, client.domid, message);
      // xenstored answers E2BIG rather than send a reply over the limit (a long DIRECTORY).
      if (reply.payload.length > XENSTORE_PAYLOAD_MAX) throw new SimFailure('E2BIG', `the reply would be ${reply.payload.length} bytes`);
    } catch (error) {
      if (!(error instanceof SimFailure)) this.log(`XenStore ${typeNames.get(type) ?? type} failed: ${(error as Error).stack}`);
      type = XsType.ERROR;
      reply = { payload: xsStrings(error instanceof SimFailure ? error.code : 'EIO') };
    }
    client.send(encodeXsMessage(type, message.reqId, message.txId, reply.payload));
    reply.after?.();
  }

  /** The connection closed: its transactions are aborted and its watches dropped. */
  disconnect(client: XenStoreClient): void {
    for (const transaction of client.transactions.values()) this.transactions.discard(transaction);
    client.transactions.clear();
    this.watches.removeAll(client);
  }

  /**
   * The XenStore part of destroying `domid` (its connections are the server's to close first):
   * libxl removes the domain's home before the destroy hypercall; xenstored, once it sees the
   * domain gone, removes every node the domain still owns anywhere (domain_tree_remove), forgets
   * the domain, and fires @releaseDomain. Watches fire as for any removal. Returns how many nodes went.
   */
  destroyDomain(domid: number): number {
    let removed = this.removeAsToolstack(domainPath(domid));
    for (const path of this.nodesOwnedBy(domid)) removed += this.removeAsToolstack(path);
    this.domains.delete(domid);
    this.watches.fireSpecial('@releaseDomain');
    return removed;
  }

  /** Removes `path` and its subtree as dom0 would, firing the watches; returns how many nodes went. */
  private removeAsToolstack(path: string): number {
    if (!this.store.get(path)) return 0;
    const context: RequestContext = { domid: 0, view: this.store, changes: [], domainExists: this.domainExists };
    removeNode(context, path);
    this.watches.fire(context.changes);
    return context.changes.length;
  }

  /** The topmost nodes owned by `domid`, depth first from the root; what lies below each goes with it. */
  private nodesOwnedBy(domid: number): string[] {
    const owned: string[] = [];
    const visit = (path: string) => {
      const node = this.store.get(path);
      if (!node) return;
      if (node.permissions[0]!.domid === domid) {
        owned.push(path);
        return;
      }
      for (const name of node.children) visit(childPath(path, name));
    };
    visit('/');
    return owned;
  }

  private declare(client: XenStoreClient, message: XsMessage): void {
    const domid = message.type === XsType.SIM_DECLARE_DOMAIN ? declaredDomain(message.payload) : null;
    if (domid === null) {
      this.log(`refusing a XenStore connection that did not declare its domain first (message type ${message.type})`);
      client.send(encodeXsMessage(XsType.ERROR, message.reqId, message.txId, xsStrings('EACCES')));
      client.end();
      return;
    }
    client.domid = domid;
    this.domains.add(domid);
    this.onDomainDeclared(domid);
    const changes = introduceDomain(this.store, domid, this.domainExists);
    if (changes) {
      this.watches.fire(changes);
      this.watches.fireSpecial('@introduceDomain');
    }
    client.send(encodeXsMessage(message.type, message.reqId, message.txId, OK));
  }

  private dispatch(client: XenStoreClient, domid: number, message: XsMessage): Reply {
    switch (message.type) {
      case XsType.READ:
        return { payload: this.onNodes(client, domid, message, (context) => readNode(context, oneArgument(message))) };
      case XsType.DIRECTORY:
        return { payload: xsStrings(...this.onNodes(client, domid, message, (context) => listChildren(context, oneArgument(message)))) };
      case XsType.DIRECTORY_PART: {
        const [path, offset] = twoArguments(message, 'a path and an offset');
        if (!/^\d+$/.test(offset)) throw new SimFailure('EINVAL', `"${offset}" is not an offset`);
        const node = this.onNodes(client, domid, message, (context) => readableNode(context, path));
        return { payload: directoryPart(node, Number(offset), this.generationOf(node)) };
      }
      case XsType.GET_PERMS: {
        const permissions = this.onNodes(client, domid, message, (context) => getPermissions(context, oneArgument(message)));
        return { payload: xsStrings(...permissions.map(formatXsPermission)) };
      }
      case XsType.WRITE: {
        const end = message.payload.indexOf(0);
        if (end < 0) throw new SimFailure('EINVAL', 'WRITE needs a path and a NUL before the value');
        const path = message.payload.toString('utf8', 0, end);
        this.onNodes(client, domid, message, (context) => writeNode(context, path, message.payload.subarray(end + 1)));
        return { payload: OK };
      }
      case XsType.MKDIR:
        this.onNodes(client, domid, message, (context) => makeDirectory(context, oneArgument(message)));
        return { payload: OK };
      case XsType.RM:
        this.onNodes(client, domid, message, (context) => removeNode(context, oneArgument(message)));
        return { payload: OK };
      case XsType.SET_PERMS: {
        const [path, ...texts] = splitXsStrings(message.payload);
        if (path === undefined) throw new SimFailure('EINVAL', 'SET_PERMS needs a path');
        this.onNodes(client, domid, message, (context) => setPermissions(context, path, parsePermissions(context, texts)));
        return { payload: OK };
      }
      case XsType.IS_DOMAIN_INTRODUCED: {
        // xenstored's XS_FLAG_PRIV: checked before the payload is read.
        if (domid !== 0) throw new SimFailure('EACCES', 'only dom0 may ask whether a domain is introduced');
        const asked = atoiDomid(oneArgument(message));
        // IS_DOMAIN_INTRODUCED always answers "T" for DOMID_SELF, as xenstored does.
        return { payload: xsStrings(asked === DOMID_SELF || this.domains.has(asked) ? 'T' : 'F') };
      }
      case XsType.GET_DOMAIN_PATH: {
        const text = oneArgument(message);
        if (!/^\d{1,5}$/.test(text)) throw new SimFailure('EINVAL', `"${text}" is not a domain id`);
        return { payload: xsStrings(domainPath(Number(text))) };
      }
      case XsType.WATCH: {
        const [path, token] = twoArguments(message);
        this.watches.add(client, domid, path, token);
        return { payload: OK, after: () => this.watches.announce(client, path, token) };
      }
      case XsType.UNWATCH: {
        const [path, token] = twoArguments(message);
        this.watches.remove(client, domid, path, token);
        return { payload: OK };
      }
      case XsType.TRANSACTION_START: {
        if (message.txId !== 0) {
          this.transactionOf(client, message.txId);
          throw new SimFailure('EBUSY', 'transactions do not nest');
        }
        const transaction = this.transactions.start(domid, this.store);
        client.transactions.set(transaction.id, transaction);
        return { payload: xsStrings(String(transaction.id)) };
      }
      case XsType.TRANSACTION_END: {
        const verdict = oneArgument(message);
        if (verdict !== 'T' && verdict !== 'F') throw new SimFailure('EINVAL', 'TRANSACTION_END takes "T" (commit) or "F" (abort)');
        const transaction = this.transactionOf(client, message.txId);
        client.transactions.delete(transaction.id);
        if (verdict === 'F') this.transactions.discard(transaction);
        else this.watches.fire(this.transactions.commit(transaction, this.store));
        return { payload: OK };
      }
      default:
        if (unsupported.has(message.type)) throw new SimFailure('ENOSYS', `${typeNames.get(message.type)} is not simulated`);
        throw new SimFailure('EINVAL', `unknown message type ${message.type}`);
    }
  }

  /** Runs a node operation on the committed tree, or inside the message's transaction. */
  private onNodes<T>(client: XenStoreClient, domid: number, message: XsMessage, operation: (context: RequestContext) => T): T {
    const transaction = message.txId === 0 ? null : this.transactionOf(client, message.txId);
    const context: RequestContext = {
      domid,
      view: transaction ? transaction.view : this.store,
      changes: [],
      domainExists: this.domainExists,
    };
    const result = operation(context);
    if (transaction) transaction.changes.push(...context.changes);
    else this.watches.fire(context.changes);
    return result;
  }

  private generationOf(node: XsNode): number {
    let generation = this.generations.get(node);
    if (generation === undefined) {
      generation = this.nextGeneration++;
      this.generations.set(node, generation);
    }
    return generation;
  }

  private transactionOf(client: XenStoreClient, id: number): Transaction {
    const transaction = client.transactions.get(id);
    if (!transaction) throw new SimFailure('ENOENT', `no transaction ${id} on this connection`);
    return transaction;
  }
}

/** The payload as exactly one NUL-terminated string (xenstored's onearg); EINVAL otherwise. */
function oneArgument(message: XsMessage): string {
  const end = message.payload.indexOf(0);
  if (end < 0 || end !== message.payload.length - 1) throw new SimFailure('EINVAL', 'expected one NUL-terminated string');
  return message.payload.toString('utf8', 0, end);
}

/** A domain id as xenstored reads it, with atoi: what is not a number is 0, a negative one wraps. */
function atoiDomid(text: string): number {
  const match = /^\s*([+-]?\d+)/.exec(text);
  return match ? Number(match[1]) >>> 0 : 0;
}

function declaredDomain(payload: Buffer): number | null {
  const match = /^(\d{1,5})\0$/.exec(payload.toString('latin1'));
  const domid = match ? Number(match[1]) : NaN;
  return isGuestDomainId(domid) ? domid : null;
}

function twoArguments(message: XsMessage, what = 'a path and a token'): [string, string] {
  const strings = splitXsStrings(message.payload);
  if (strings.length !== 2) throw new SimFailure('EINVAL', `expected ${what}`);
  return [strings[0]!, strings[1]!];
}

/**
 * One part of a long child list, as xenstored's send_directory_part lays it out: the node's
 * generation, then as many names as fit from byte `offset` of the list on, then an empty string
 * once the list is complete. A reader restarts if the generation changes between parts.
 */
function directoryPart(node: XsNode, offset: number, generation: number): Buffer {
  const header = xsStrings(String(generation));
  const list = xsStrings(...node.children);
  if (offset >= list.length) return Buffer.concat([header, Buffer.alloc(1)]);
  const room = XENSTORE_PAYLOAD_MAX - header.length - 1;
  let end = offset;
  while (end < list.length) {
    const next = list.indexOf(0, end) + 1;
    if (next - offset > room) break;
    end = next;
  }
  const complete = end === list.length;
  return Buffer.concat([header, list.subarray(offset, end), complete ? Buffer.alloc(1) : Buffer.alloc(0)]);
}
