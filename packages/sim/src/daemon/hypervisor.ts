import { closeSync, ftruncateSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { DOMID_FIRST_RESERVED, isGuestDomainId, MAX_GUEST_DOMID } from '@xen-vchan/native';
import { SimFailure } from '../failure.js';
import { addon } from '../addon.js';
import type { SimFiles } from '../paths.js';
import { MAX_PORTS, PortState, PortTable, signalPort, TABLE_BYTES, WakeupSender } from '../port-table.js';
import {
  PROTOCOL_VERSION,
  type Operation,
  type PageLocation,
  type Replies,
  type Requests,
  type SimDomainState,
  type SimStatus,
} from '../protocol.js';

const PAGE = 4096;
const DEFAULT_GNTALLOC_LIMIT = 1024;
// Grant-copy statuses, as Xen's grant_table.h numbers them.
const GNTST_OKAY = 0;
const GNTST_BAD_DOMAIN = -2;
const GNTST_BAD_GNTREF = -4;
const GNTST_PERMISSION_DENIED = -8;

// --- request checking -------------------------------------------------------------------
// Any local process of the user can connect and send any JSON, so every field is checked before
// it is used: a domid like "../x" would otherwise reach file names, a count of 1e12 a loop.

/** Reads one field of a request: returns it typed, or throws EINVAL naming the field. */
type Check<T> = (value: unknown, field: string) => T;
type Shape<T> = { [K in keyof T]-?: Check<T[K]> };

/** Event-channel ports and grant refs are u32 in the ABI; the hypervisor then looks them up. */
const MAX_U32 = 0xffff_ffff;
/**
 * Pages in one gntalloc allocation or gntdev mapping (4 GiB), and the highest gntalloc limit: far
 * above real use, low enough that one call cannot keep the daemon busy building grants for minutes.
 */
const MAX_PAGES = 1 << 20;

function refuse(field: string, wanted: string, value: unknown): never {
  throw new SimFailure('EINVAL', `${field} must be ${wanted}, not ${shown(value)}`);
}

/** A received value for an error message: never its own toString, which the sender chose. */
function shown(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
  if (typeof value === 'object' && value !== null) return Array.isArray(value) ? 'a list' : 'an object';
  return String(value);
}

const integer =
  (min: number, max: number, wanted: string): Check<number> =>
  (value, field) =>
    Number.isSafeInteger(value) && (value as number) >= min && (value as number) <= max ? (value as number) : refuse(field, wanted, value);

const domid: Check<number> = (value, field) =>
  isGuestDomainId(value) ? value : refuse(field, `a domain id, an integer from 0 to ${MAX_GUEST_DOMID}`, value);
/** Handles, allocations and mappings: ids the daemon handed out, looked up afterwards. */
const id = integer(0, Number.MAX_SAFE_INTEGER, 'an id, a non-negative integer');
const u32 = integer(0, MAX_U32, 'an integer from 0 to 4294967295');
const pages = integer(1, MAX_PAGES, `a page count from 1 to ${MAX_PAGES}`);
const limit = integer(0, MAX_PAGES, `a page count from 0 to ${MAX_PAGES}`);
const offset = integer(0, Number.MAX_SAFE_INTEGER, 'a byte offset, a non-negative integer');
const version = integer(0, Number.MAX_SAFE_INTEGER, 'a protocol version number');
const flag: Check<boolean> = (value, field) => (typeof value === 'boolean' ? value : refuse(field, 'true or false', value));
const orNull =
  <T>(check: Check<T>): Check<T | null> =>
  (value, field) =>
    value === null ? null : check(value, field);

function shaped<T>(shape: Shape<T>, value: unknown, name: string): T {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) refuse(name, 'an object', value);
  const checked = {} as T;
  // Only the fields the shape names are kept: nothing else of the request reaches the hypervisor.
  for (const field of Object.keys(shape) as (keyof T)[]) {
    checked[field] = shape[field]((value as Record<keyof T, unknown>)[field], `${name}.${String(field)}`);
  }
  return checked;
}

const grantList: Check<{ domid: number; ref: number }[]> = (value, field) => {
  if (!Array.isArray(value) || value.length > MAX_PAGES) refuse(field, `a list of at most ${MAX_PAGES} grants`, value);
  return value.map((grant, index) => shaped({ domid, ref: u32 }, grant, `${field}[${index}]`));
};

/** What each operation takes; an operation missing here does not exist (ENOSYS). */
const requestShapes: { [Op in Operation]: Shape<Requests[Op]> } = {
  hello: { pid: id, version },
  'gntalloc.open': { domid },
  'gntalloc.alloc': { handle: id, domid, count: pages, writable: flag },
  'gntalloc.setUnmapNotify': { handle: id, allocation: id, offset, clearByte: flag, port: orNull(u32) },
  'gntalloc.release': { handle: id, allocation: id },
  'gntalloc.setLimit': { domid, limit },
  'gntalloc.getLimit': { domid },
  'gntdev.open': { domid },
  'gntdev.map': { handle: id, grants: grantList, writable: flag },
  'gntdev.setUnmapNotify': { handle: id, mapping: id, offset, clearByte: flag, port: orNull(u32) },
  'gntdev.unmap': { handle: id, mapping: id },
  'gntdev.resolveCopy': { handle: id, domid, ref: u32, write: flag },
  'evtchn.open': { domid },
  'evtchn.bindUnbound': { handle: id, remoteDomain: domid },
  'evtchn.bindInterdomain': { handle: id, remoteDomain: domid, remotePort: u32 },
  'evtchn.unbind': { handle: id, port: u32 },
  'evtchn.restrict': { handle: id, domid },
  close: { handle: id },
  'domain.destroy': { domid },
  status: {},
  stop: {},
};

/** The request of `op` with every field checked (EINVAL), or ENOSYS for an operation that does not exist. */
export function checkRequest(op: string, request: unknown): { op: Operation; request: Requests[Operation] } {
  if (!Object.hasOwn(requestShapes, op)) throw new SimFailure('ENOSYS', `unknown operation ${JSON.stringify(op.slice(0, 40))}`);
  const known = op as Operation;
  return { op: known, request: shaped(requestShapes[known] as Shape<Requests[Operation]>, request, known) };
}

export interface Client {
  /** The pid the process gave in hello (0 before it did): for status and logs. */
  pid: number;
  /**
   * The pid the kernel gives for the connection (null if it could not say): whom a domain's
   * destruction kills. Never the pid a client claims, which could name any process of the user.
   */
  readonly peerPid: number | null;
  handles: Set<number>;
  /** Killed with its domain: calls it sent before it died are refused, so none can bring the domain back. */
  killed: boolean;
}

/** What destroying a domain needs of the simulated xenstored (xenstore/server.ts). */
export interface DomainXenStore {
  /** Pids of the processes with a XenStore connection as `domid`. */
  processesOf(domid: number): number[];
  /** Closes the domain's connections (and the killed processes' others) and removes its nodes, as libxl and xenstored do. */
  destroyDomain(domid: number, killed: readonly number[]): { nodesRemoved: number; connectionsClosed: number };
}

/**
 * Who lets go of a handle's holdings: its 'process' (closing, exiting or killed: its kernel still
 * runs the unmap notifications), or the destruction of its whole 'domain' (no kernel is left to).
 */
type Ending = 'process' | 'domain';

interface PortRef {
  domid: number;
  port: number;
}

interface UnmapNotify {
  file: string;
  offset: number;
  clearByte: boolean;
  port: PortRef | null;
}

interface Allocation {
  id: number;
  handle: number;
  file: string;
  grants: Grant[];
}

interface Grant {
  domid: number;
  ref: number;
  grantee: number;
  writable: boolean;
  allocation: Allocation;
  page: number;
  mappers: number;
  released: boolean;
  /** Its domain was destroyed while others mapped it: it lives on only until they unmap. */
  orphaned: boolean;
  notify: UnmapNotify | null;
}

interface Mapping {
  id: number;
  handle: number;
  grants: Grant[];
  writable: boolean;
  notify: UnmapNotify | null;
}

type Handle =
  | { kind: 'gntalloc'; id: number; client: Client; domid: number; allocations: Set<number> }
  | { kind: 'gntdev'; id: number; client: Client; domid: number; mappings: Set<number> }
  | { kind: 'evtchn'; id: number; client: Client; domid: number; ports: Set<number>; restrictedTo: number | null };

interface Domain {
  domid: number;
  limit: number;
  grantsInUse: number;
  nextRef: number;
  ports: PortTable;
  usedPorts: Set<number>;
  /**
   * Destroyed, and no process has acted as it since. The entry stays: every process keeps the
   * domain's port table mapped, so a later incarnation must reuse it.
   */
  destroyed: boolean;
}

/**
 * The simulated hypervisor and kernel drivers: the grant table, gntalloc's limit and unmap
 * notifications, and event-channel binding. Everything here runs in the daemon, one call at a
 * time, so it needs no locks; only sending events happens in the processes themselves.
 */
export class Hypervisor {
  private readonly domains = new Map<number, Domain>();
  private readonly handles = new Map<number, Handle>();
  private readonly grants = new Map<string, Grant>();
  private readonly allocations = new Map<number, Allocation>();
  private readonly mappings = new Map<number, Mapping>();
  /** Unmap notifications that will send on a port keep it open, as Linux's evtchn_get does. */
  private readonly portHolds = new Map<string, number>();
  private readonly closingPorts = new Set<string>();
  private readonly wakeups: WakeupSender;
  /** Every connected client, handles or not: a domain's destruction must find all its processes. */
  private readonly clients = new Set<Client>();
  private nextId = 1;

  constructor(
    private readonly files: SimFiles,
    private readonly xenstore: DomainXenStore | null = null,
  ) {
    this.wakeups = new WakeupSender(files.wakeup);
  }

  /** Runs one call from a client; every field is checked first (see requestShapes), whatever the sender. */
  handle(client: Client, op: string, request: unknown): unknown {
    this.clients.add(client);
    if (client.killed) throw new SimFailure('ESRCH', 'this process was killed with its domain; it cannot act any more');
    const call = checkRequest(op, request);
    const method = (this as unknown as Record<string, (client: Client, request: unknown) => unknown>)[`op_${call.op.replace('.', '_')}`];
    if (typeof method !== 'function') throw new SimFailure('ENOSYS', `operation ${call.op} is not served by the hypervisor`);
    return method.call(this, client, call.request);
  }

  /**
   * The process behind `client` is gone: release what it held, maps before event channels. Every
   * handle is closed even if one fails (its state may be broken); the first failure is rethrown.
   */
  clientGone(client: Client): void {
    this.clients.delete(client);
    const handles = [...client.handles].map((id) => this.handles.get(id)).filter((handle) => handle !== undefined);
    handles.sort((a, b) => Number(a.kind === 'evtchn') - Number(b.kind === 'evtchn'));
    forEachSettled(handles, (handle) => this.closeHandle(handle));
  }

  /** A process acts as `domid` in XenStore: a destroyed domain lives again (a new domain with that id). */
  domainActive(domid: number): void {
    const domain = this.domains.get(domid);
    if (domain) domain.destroyed = false;
  }

  shutdown(): void {
    this.wakeups.closeAll();
    for (const domain of this.domains.values()) domain.ports.unmap();
  }

  op_hello(client: Client, { pid, version }: Requests['hello']): Replies['hello'] {
    if (version !== PROTOCOL_VERSION) {
      throw new SimFailure(
        'ESIMVERSION',
        `the sim daemon (pid ${process.pid}) of ${this.files.directory} speaks protocol ${PROTOCOL_VERSION}, this process ${version}: ` +
          `another version of xen-vchan started it. Stop it (kill ${process.pid}) or use another XEN_VCHAN_SIM_DIR.`,
      );
    }
    client.pid = pid;
    return { daemonPid: process.pid };
  }

  // --- gntalloc -------------------------------------------------------------------------

  op_gntalloc_open(client: Client, { domid }: Requests['gntalloc.open']): Replies['gntalloc.open'] {
    return { handle: this.addHandle({ kind: 'gntalloc', id: 0, client, domid, allocations: new Set() }).id };
  }

  op_gntalloc_alloc(client: Client, request: Requests['gntalloc.alloc']): Replies['gntalloc.alloc'] {
    const handle = this.handleOf(client, request.handle, 'gntalloc');
    const domain = this.domain(handle.domid);
    if (domain.grantsInUse + request.count > domain.limit) {
      throw new SimFailure(
        'ENOSPC',
        `gntalloc limit reached in domain ${domain.domid}: ${domain.grantsInUse} of ${domain.limit} pages in use, ${request.count} more asked`,
      );
    }
    const id = this.nextId++;
    const file = this.files.pageFile(handle.domid, id);
    const fd = openSync(file, 'wx', 0o600);
    try {
      ftruncateSync(fd, request.count * PAGE);
    } finally {
      closeSync(fd);
    }
    const allocation: Allocation = { id, handle: handle.id, file, grants: [] };
    for (let page = 0; page < request.count; page++) {
      const grant: Grant = {
        domid: handle.domid,
        ref: this.freeRef(domain),
        grantee: request.domid,
        writable: request.writable,
        allocation,
        page,
        mappers: 0,
        released: false,
        orphaned: false,
        notify: null,
      };
      allocation.grants.push(grant);
      this.grants.set(grantKey(grant.domid, grant.ref), grant);
    }
    domain.grantsInUse += request.count;
    this.allocations.set(id, allocation);
    handle.allocations.add(id);
    return { allocation: id, refs: allocation.grants.map((grant) => grant.ref), file };
  }

  op_gntalloc_setUnmapNotify(client: Client, request: Requests['gntalloc.setUnmapNotify']): Replies['gntalloc.setUnmapNotify'] {
    const handle = this.handleOf(client, request.handle, 'gntalloc');
    const allocation = this.allocationOf(handle, request.allocation);
    const grant = allocation.grants[Math.floor(request.offset / PAGE)];
    if (!grant || request.offset < 0) throw new SimFailure('EINVAL', `offset ${request.offset} is outside the shared pages`);
    this.replaceNotify(grant, this.makeNotify(handle.domid, allocation.file, request.offset, request.clearByte, request.port));
    return null;
  }

  op_gntalloc_release(client: Client, request: Requests['gntalloc.release']): Replies['gntalloc.release'] {
    const handle = this.handleOf(client, request.handle, 'gntalloc');
    this.releaseAllocation(handle, this.allocationOf(handle, request.allocation));
    return null;
  }

  op_gntalloc_setLimit(_client: Client, { domid, limit }: Requests['gntalloc.setLimit']): Replies['gntalloc.setLimit'] {
    this.domain(domid).limit = limit;
    return null;
  }

  op_gntalloc_getLimit(_client: Client, { domid }: Requests['gntalloc.getLimit']): Replies['gntalloc.getLimit'] {
    const domain = this.domain(domid);
    return { limit: domain.limit, used: domain.grantsInUse };
  }

  // --- gntdev ---------------------------------------------------------------------------

  op_gntdev_open(client: Client, { domid }: Requests['gntdev.open']): Replies['gntdev.open'] {
    return { handle: this.addHandle({ kind: 'gntdev', id: 0, client, domid, mappings: new Set() }).id };
  }

  op_gntdev_map(client: Client, request: Requests['gntdev.map']): Replies['gntdev.map'] {
    const handle = this.handleOf(client, request.handle, 'gntdev');
    if (request.grants.length === 0) throw new SimFailure('EINVAL', 'no grant references given');
    const grants = request.grants.map(({ domid, ref }) => {
      const grant = this.grants.get(grantKey(domid, ref));
      // Xen refuses these in the map hypercall; Linux reports any refusal as EINVAL from mmap.
      if (!grant || (grant.released && grant.mappers === 0)) {
        throw new SimFailure('EINVAL', `grant ${ref} of domain ${domid} does not exist`);
      }
      // Xen cannot pin a page of a dying domain for a new mapping; existing ones stay.
      if (grant.orphaned) throw new SimFailure('EINVAL', `grant ${ref} of domain ${domid} belongs to a destroyed domain`);
      if (grant.grantee !== handle.domid) {
        throw new SimFailure('EINVAL', `grant ${ref} of domain ${domid} is for domain ${grant.grantee}, not ${handle.domid}`);
      }
      if (request.writable && !grant.writable) {
        throw new SimFailure('EINVAL', `grant ${ref} of domain ${domid} is read-only; map it read-only`);
      }
      return grant;
    });
    for (const grant of grants) grant.mappers++;
    const mapping: Mapping = { id: this.nextId++, handle: handle.id, grants, writable: request.writable, notify: null };
    this.mappings.set(mapping.id, mapping);
    handle.mappings.add(mapping.id);
    const pages: PageLocation[] = grants.map((grant) => ({ file: grant.allocation.file, offset: grant.page * PAGE }));
    return { mapping: mapping.id, pages };
  }

  op_gntdev_setUnmapNotify(client: Client, request: Requests['gntdev.setUnmapNotify']): Replies['gntdev.setUnmapNotify'] {
    const handle = this.handleOf(client, request.handle, 'gntdev');
    const mapping = this.mappingOf(handle, request.mapping);
    const grant = mapping.grants[Math.floor(request.offset / PAGE)];
    if (!grant || request.offset < 0) throw new SimFailure('EINVAL', `offset ${request.offset} is outside the mapping`);
    if (request.clearByte && !mapping.writable) throw new SimFailure('EINVAL', 'cannot clear a byte in a read-only mapping');
    const notify = this.makeNotify(handle.domid, grant.allocation.file, grant.page * PAGE + (request.offset % PAGE), request.clearByte, request.port);
    this.dropNotify(mapping.notify);
    mapping.notify = notify;
    return null;
  }

  op_gntdev_unmap(client: Client, request: Requests['gntdev.unmap']): Replies['gntdev.unmap'] {
    const handle = this.handleOf(client, request.handle, 'gntdev');
    this.unmapMapping(handle, this.mappingOf(handle, request.mapping));
    return null;
  }

  op_gntdev_resolveCopy(client: Client, request: Requests['gntdev.resolveCopy']): Replies['gntdev.resolveCopy'] {
    const handle = this.handleOf(client, request.handle, 'gntdev');
    const grant = this.grants.get(grantKey(request.domid, request.ref));
    // Xen looks the domain up before the grant, and refuses a dying domain's pinned grant as well.
    if (grant?.orphaned || this.domains.get(request.domid)?.destroyed) return { status: GNTST_BAD_DOMAIN };
    if (!grant || (grant.released && grant.mappers === 0)) return { status: GNTST_BAD_GNTREF };
    if (grant.grantee !== handle.domid || (request.write && !grant.writable)) return { status: GNTST_PERMISSION_DENIED };
    return { status: GNTST_OKAY, page: { file: grant.allocation.file, offset: grant.page * PAGE } };
  }

  // --- evtchn ---------------------------------------------------------------------------

  op_evtchn_open(client: Client, { domid }: Requests['evtchn.open']): Replies['evtchn.open'] {
    const handle = this.addHandle({ kind: 'evtchn', id: 0, client, domid, ports: new Set(), restrictedTo: null });
    this.domain(domid);
    const wakeup = this.files.wakeup(handle.id);
    addon.mkfifo(wakeup, 0o600);
    return { handle: handle.id, wakeup };
  }

  op_evtchn_bindUnbound(client: Client, request: Requests['evtchn.bindUnbound']): Replies['evtchn.bindUnbound'] {
    const handle = this.handleOf(client, request.handle, 'evtchn');
    // As Linux: a restricted handle may only bind interdomain, never offer a port.
    if (handle.restrictedTo !== null) throw new SimFailure('EACCES', `this handle is restricted to domain ${handle.restrictedTo}: it may not offer ports`);
    const domain = this.domain(handle.domid);
    const port = this.freePort(domain);
    domain.ports.write(port, { state: PortState.Unbound, remoteDomain: request.remoteDomain, remotePort: 0, owner: handle.id });
    // A fresh port starts with no event pending, as in Xen. A sender racing the close of this
    // port's previous binding may have set PENDING after the close cleared it; left set, it would
    // swallow the new peer's first event (nobody is woken for a port already pending). Nobody can
    // signal an unbound port, so clearing after the state is written loses nothing.
    domain.ports.clearPending(port);
    handle.ports.add(port);
    return { port };
  }

  op_evtchn_bindInterdomain(client: Client, request: Requests['evtchn.bindInterdomain']): Replies['evtchn.bindInterdomain'] {
    const handle = this.handleOf(client, request.handle, 'evtchn');
    this.checkRestriction(handle, request.remoteDomain);
    const remotePort = request.remotePort;
    const remoteDomain = this.domains.get(request.remoteDomain);
    // Xen looks the remote domain up first. A zombie is still found (and has no port to offer).
    // A domain the sim never saw may well exist (there is no toolstack to say), so it is not ESRCH.
    if (remoteDomain && this.stateOf(remoteDomain) === 'gone') {
      throw new SimFailure('ESRCH', `domain ${request.remoteDomain} does not exist (it was destroyed)`);
    }
    if (remotePort === 0) throw new SimFailure('EINVAL', 'port 0 is reserved in every domain; it is never offered');
    const remote = remoteDomain && remotePort < MAX_PORTS ? remoteDomain.ports.read(remotePort) : null;
    if (!remote || remote.state !== PortState.Unbound || remote.remoteDomain !== handle.domid) {
      throw new SimFailure('EINVAL', `port ${remotePort} of domain ${request.remoteDomain} is not offered to domain ${handle.domid}`);
    }
    const domain = this.domain(handle.domid);
    const port = this.freePort(domain);
    // As for bindUnbound: no stale PENDING on either end of the new channel (none of its events
    // can have been sent yet: a sender needs both entries to point at each other).
    domain.ports.clearPending(port);
    remoteDomain!.ports.clearPending(remotePort);
    domain.ports.write(port, { state: PortState.Interdomain, remoteDomain: request.remoteDomain, remotePort, owner: handle.id });
    remoteDomain!.ports.write(remotePort, { state: PortState.Interdomain, remoteDomain: handle.domid, remotePort: port, owner: remote.owner });
    handle.ports.add(port);
    // Xen marks the binder's new port pending, so a binder always sees one event at once.
    if (domain.ports.markPending(port)) this.wakeups.wake(handle.id, port);
    return { port };
  }

  op_evtchn_unbind(client: Client, request: Requests['evtchn.unbind']): Replies['evtchn.unbind'] {
    const handle = this.handleOf(client, request.handle, 'evtchn');
    if (!handle.ports.delete(request.port)) throw new SimFailure('ENOTCONN', `port ${request.port} is not bound by this handle`);
    this.closePort(handle.domid, request.port);
    return null;
  }

  op_evtchn_restrict(client: Client, request: Requests['evtchn.restrict']): Replies['evtchn.restrict'] {
    const handle = this.handleOf(client, request.handle, 'evtchn');
    // As Linux: once only, and never to dom0 (or a reserved id).
    if (handle.restrictedTo !== null) throw new SimFailure('EACCES', `this handle is already restricted to domain ${handle.restrictedTo}`);
    if (request.domid === 0 || request.domid >= DOMID_FIRST_RESERVED) throw new SimFailure('EINVAL', `cannot restrict to domain ${request.domid}`);
    handle.restrictedTo = request.domid;
    return null;
  }

  // --- common ---------------------------------------------------------------------------

  op_close(client: Client, request: Requests['close']): Replies['close'] {
    const handle = this.handles.get(request.handle);
    if (!handle || handle.client !== client) throw new SimFailure('EBADF', `handle ${request.handle} is not open`);
    this.closeHandle(handle);
    return null;
  }

  // --- domains --------------------------------------------------------------------------

  /**
   * `xl destroy`: the domain ends at once, as a crash ends it. Its processes are killed; what its
   * kernel would have done on the way out (unmap notifications) never happens; Xen closes its
   * ports, which turns each peer's end back into an unbound port without an event; pages others
   * still map stay with them until they unmap (the domain lingers as a zombie until then); libxl
   * and xenstored clear its XenStore nodes and tell dom0 through @releaseDomain.
   */
  op_domain_destroy(client: Client, { domid }: Requests['domain.destroy']): Replies['domain.destroy'] {
    if (domid === 0) {
      throw new SimFailure('EPERM', 'domain 0 cannot be destroyed: every other domain depends on it. Stop the simulation instead (vchan sim stop).');
    }
    const handles = [...this.handles.values()].filter((handle) => handle.domid === domid);
    const actors = new Set([...handles.map((handle) => handle.client.peerPid), ...(this.xenstore?.processesOf(domid) ?? [])].filter((pid) => pid !== null));
    if (handles.some((handle) => handle.client === client) || (client.peerPid !== null && actors.has(client.peerPid))) {
      throw new SimFailure(
        'EDEADLK',
        `this process acts as domain ${domid} (it opened a device or XenStore as it), and would be killed before it read the answer. ` +
          `Destroy the domain from another process, such as \`vchan sim destroy ${domid}\`.`,
      );
    }
    // Killed first, as Xen pauses a domain before tearing it down: nothing of its processes may
    // act after this call, not even a call they sent before they died.
    const killed = [...actors].filter(killProcess);
    for (const other of new Set([...this.clients, ...handles.map((handle) => handle.client)])) {
      if (other.peerPid !== null && killed.includes(other.peerPid)) other.killed = true;
    }
    const portsClosed = handles.reduce((count, handle) => count + (handle.kind === 'evtchn' ? handle.ports.size : 0), 0);
    // Maps before event channels, as for a dead process: a dropped notification lets go of its port.
    handles.sort((a, b) => Number(a.kind === 'evtchn') - Number(b.kind === 'evtchn'));
    let grantsStillMapped = 0;
    let xenstore = { nodesRemoved: 0, connectionsClosed: 0 };
    // Every step even if one fails (a page file removed by hand): a half-destroyed domain would
    // keep processes' state that nobody releases.
    runAll(
      () => forEachSettled(handles, (handle) => this.closeHandle(handle, 'domain')),
      () => {
        const domain = this.domain(domid);
        domain.destroyed = true;
        domain.limit = defaultLimit();
        for (const grant of this.grants.values()) {
          if (grant.domid !== domid || grant.orphaned) continue;
          grant.orphaned = true;
          grantsStillMapped++;
        }
      },
      () => {
        if (this.xenstore) xenstore = this.xenstore.destroyDomain(domid, killed);
      },
    );
    return {
      domid,
      killed,
      handlesClosed: handles.length,
      portsClosed,
      grantsStillMapped,
      xenstoreNodesRemoved: xenstore.nodesRemoved,
      xenstoreConnectionsClosed: xenstore.connectionsClosed,
    };
  }

  op_status(): SimStatus {
    const clients = new Set([...this.handles.values()].map((handle) => handle.client));
    const ports: SimStatus['ports'] = [];
    for (const domain of this.domains.values()) {
      for (const port of domain.usedPorts) {
        const entry = domain.ports.read(port);
        ports.push({
          domid: domain.domid,
          port,
          state: entry.state === PortState.Interdomain ? 'interdomain' : 'unbound',
          remoteDomain: entry.remoteDomain,
          remotePort: entry.remotePort,
        });
      }
    }
    return {
      daemonPid: process.pid,
      directory: this.files.directory,
      clients: [...clients].map((client) => ({ pid: client.pid, handles: client.handles.size })),
      domains: [...this.domains.values()].map((domain) => ({
        domid: domain.domid,
        state: this.stateOf(domain),
        grants: domain.grantsInUse,
        limit: domain.limit,
        ports: domain.usedPorts.size,
      })),
      grants: [...this.grants.values()].map((grant) => ({
        domid: grant.domid,
        ref: grant.ref,
        grantee: grant.grantee,
        writable: grant.writable,
        mappedBy: grant.mappers,
        released: grant.released,
      })),
      ports,
    };
  }

  // --- internals ------------------------------------------------------------------------

  private addHandle<H extends Handle>(handle: H): H {
    handle.id = this.nextId++;
    this.handles.set(handle.id, handle);
    handle.client.handles.add(handle.id);
    // A process acting as a destroyed domain makes it a new, live domain with the same id.
    this.domain(handle.domid).destroyed = false;
    return handle;
  }

  private stateOf(domain: Domain): SimDomainState {
    if (!domain.destroyed) return 'live';
    for (const grant of this.grants.values()) if (grant.domid === domain.domid && grant.orphaned) return 'zombie';
    return 'gone';
  }

  private handleOf<K extends Handle['kind']>(client: Client, id: number, kind: K): Extract<Handle, { kind: K }> {
    const handle = this.handles.get(id);
    if (!handle || handle.client !== client || handle.kind !== kind) throw new SimFailure('EBADF', `${kind} handle ${id} is not open`);
    return handle as Extract<Handle, { kind: K }>;
  }

  private allocationOf(handle: Extract<Handle, { kind: 'gntalloc' }>, id: number): Allocation {
    const allocation = this.allocations.get(id);
    if (!allocation || !handle.allocations.has(id)) throw new SimFailure('EINVAL', `no allocation ${id} on this handle`);
    return allocation;
  }

  private mappingOf(handle: Extract<Handle, { kind: 'gntdev' }>, id: number): Mapping {
    const mapping = this.mappings.get(id);
    if (!mapping || !handle.mappings.has(id)) throw new SimFailure('EINVAL', `no mapping ${id} on this handle`);
    return mapping;
  }

  /** Closes a handle and all it holds; even if a part fails (rethrown), the rest is released and the handle is gone. */
  private closeHandle(handle: Handle, ending: Ending = 'process'): void {
    try {
      switch (handle.kind) {
        case 'gntalloc':
          forEachSettled([...handle.allocations], (id) => this.releaseAllocation(handle, this.allocations.get(id)!, ending));
          break;
        case 'gntdev':
          forEachSettled([...handle.mappings], (id) => this.unmapMapping(handle, this.mappings.get(id)!, ending));
          break;
        case 'evtchn':
          runAll(
            () => forEachSettled(handle.ports, (port) => this.closePort(handle.domid, port)),
            () => handle.ports.clear(),
            () => this.wakeups.forget(handle.id),
            () => rmSync(this.files.wakeup(handle.id), { force: true }),
          );
          break;
      }
    } finally {
      this.handles.delete(handle.id);
      handle.client.handles.delete(handle.id);
    }
  }

  private domain(domid: number): Domain {
    let domain = this.domains.get(domid);
    if (!domain) {
      const file = this.files.portTable(domid);
      const fd = openSync(file, 'w+', 0o600);
      try {
        ftruncateSync(fd, TABLE_BYTES);
      } finally {
        closeSync(fd);
      }
      domain = {
        domid,
        limit: defaultLimit(),
        grantsInUse: 0,
        nextRef: 8, // Xen keeps the first refs for the guest's own frontends
        ports: PortTable.map(file),
        usedPorts: new Set(),
        destroyed: false,
      };
      this.domains.set(domid, domain);
    }
    return domain;
  }

  private freeRef(domain: Domain): number {
    while (this.grants.has(grantKey(domain.domid, domain.nextRef))) domain.nextRef++;
    return domain.nextRef++;
  }

  /** The lowest free port above 0, as Xen allocates them. */
  private freePort(domain: Domain): number {
    for (let port = 1; port < MAX_PORTS; port++) {
      if (!domain.usedPorts.has(port)) {
        domain.usedPorts.add(port);
        return port;
      }
    }
    throw new SimFailure('ENOSPC', `all ${MAX_PORTS - 1} event-channel ports of domain ${domain.domid} are in use`);
  }

  private checkRestriction(handle: Extract<Handle, { kind: 'evtchn' }>, remoteDomain: number): void {
    if (handle.restrictedTo !== null && handle.restrictedTo !== remoteDomain) {
      throw new SimFailure('EACCES', `this handle is restricted to domain ${handle.restrictedTo}`);
    }
  }

  private makeNotify(domid: number, file: string, offset: number, clearByte: boolean, port: number | null): UnmapNotify {
    if (port !== null) {
      const domain = this.domain(domid);
      const key = portKey(domid, port);
      if (!domain.usedPorts.has(port) || this.closingPorts.has(key)) {
        throw new SimFailure('EINVAL', `event channel port ${port} is not bound in domain ${domid}; bind it before asking for the event`);
      }
      this.portHolds.set(key, (this.portHolds.get(key) ?? 0) + 1);
    }
    return { file, offset, clearByte, port: port === null ? null : { domid, port } };
  }

  private replaceNotify(grant: Grant, notify: UnmapNotify): void {
    this.dropNotify(grant.notify);
    grant.notify = notify;
  }

  /** Does what an unmap notification asks: clear the byte, send the event, let go of the port. */
  private fireNotify(notify: UnmapNotify | null): void {
    if (!notify) return;
    // Each part even if another fails (say the page file was removed by hand): the port hold must go.
    runAll(
      () => notify.clearByte && clearByte(notify.file, notify.offset),
      () => notify.port && signalPort((domid) => this.domain(domid).ports, this.wakeups, notify.port.domid, notify.port.port),
      () => this.dropNotify(notify),
    );
  }

  /** A notification runs only where a kernel is left to run it: not for a destroyed domain. */
  private endNotify(notify: UnmapNotify | null, ending: Ending): void {
    if (ending === 'process') this.fireNotify(notify);
    else this.dropNotify(notify);
  }

  private dropNotify(notify: UnmapNotify | null): void {
    if (!notify?.port) return;
    const key = portKey(notify.port.domid, notify.port.port);
    const holds = (this.portHolds.get(key) ?? 1) - 1;
    if (holds > 0) {
      this.portHolds.set(key, holds);
      return;
    }
    this.portHolds.delete(key);
    if (this.closingPorts.delete(key)) this.finishClosingPort(notify.port.domid, notify.port.port);
  }

  private releaseAllocation(handle: Extract<Handle, { kind: 'gntalloc' }>, allocation: Allocation, ending: Ending = 'process'): void {
    handle.allocations.delete(allocation.id);
    forEachSettled(allocation.grants, (grant) => {
      grant.released = true;
      // Linux 6.1's gntalloc stops counting a page against the limit as soon as its owner lets
      // go, even while the peer still maps it (the hypervisor frees it later).
      this.domain(grant.domid).grantsInUse--;
      const notify = grant.notify;
      grant.notify = null;
      runAll(
        () => this.endNotify(notify, ending),
        () => this.freeGrantIfUnused(grant),
      );
    });
  }

  private unmapMapping(handle: Extract<Handle, { kind: 'gntdev' }>, mapping: Mapping, ending: Ending = 'process'): void {
    handle.mappings.delete(mapping.id);
    this.mappings.delete(mapping.id);
    const notify = mapping.notify;
    mapping.notify = null;
    runAll(
      () => this.endNotify(notify, ending),
      () =>
        forEachSettled(mapping.grants, (grant) => {
          grant.mappers--;
          this.freeGrantIfUnused(grant);
        }),
    );
  }

  /** A granted page lives until its owner and every mapper let go. */
  private freeGrantIfUnused(grant: Grant): void {
    if (!grant.released || grant.mappers > 0) return;
    if (!this.grants.delete(grantKey(grant.domid, grant.ref))) return;
    const allocation = grant.allocation;
    if (allocation.grants.every((other) => !this.grants.has(grantKey(other.domid, other.ref)))) {
      this.allocations.delete(allocation.id);
      try {
        unlinkSync(allocation.file);
      } catch {
        /* already gone */
      }
    }
  }

  private closePort(domid: number, port: number): void {
    const key = portKey(domid, port);
    if (this.portHolds.has(key)) {
      // An unmap notification will still send on it; Linux keeps the channel open until then.
      this.closingPorts.add(key);
      return;
    }
    this.finishClosingPort(domid, port);
  }

  /** EVTCHNOP_close: a connected peer's port goes back to unbound, offered to us again. */
  private finishClosingPort(domid: number, port: number): void {
    const domain = this.domain(domid);
    const entry = domain.ports.read(port);
    if (entry.state === PortState.Interdomain) {
      const peerTable = this.domain(entry.remoteDomain).ports;
      const peer = peerTable.read(entry.remotePort);
      if (peer.state === PortState.Interdomain && peer.remoteDomain === domid && peer.remotePort === port) {
        peerTable.write(entry.remotePort, { state: PortState.Unbound, remoteDomain: domid, remotePort: 0, owner: peer.owner });
      }
    }
    domain.ports.write(port, { state: PortState.Free, remoteDomain: 0, remotePort: 0, owner: 0 });
    domain.ports.clearPending(port);
    domain.usedPorts.delete(port);
  }
}

function defaultLimit(): number {
  const configured = Number(process.env.XEN_VCHAN_SIM_GNTALLOC_LIMIT);
  return Number.isInteger(configured) && configured >= 0 && process.env.XEN_VCHAN_SIM_GNTALLOC_LIMIT ? configured : DEFAULT_GNTALLOC_LIMIT;
}

/** SIGKILLs `pid`; false if there is no such process (any more) or it is not ours to kill. */
function killProcess(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}

function clearByte(file: string, offset: number): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, Buffer.of(0), 0, 1, offset);
  } finally {
    closeSync(fd);
  }
}

/**
 * Runs `step` for every item even if some throw, then rethrows the first failure: releasing what
 * a handle or a dead process held must not stop half-way and leak the rest.
 */
function forEachSettled<T>(items: Iterable<T>, step: (item: T) => void): void {
  let failure: { error: unknown } | null = null;
  for (const item of items) {
    try {
      step(item);
    } catch (error) {
      failure ??= { error };
    }
  }
  if (failure) throw failure.error;
}

/** Runs every step, in order, whatever the others do; rethrows the first failure. */
function runAll(...steps: (() => unknown)[]): void {
  forEachSettled(steps, (step) => step());
}

function grantKey(domid: number, ref: number): string {
  return `${domid}:${ref}`;
}

function portKey(domid: number, port: number): string {
  return `${domid}:${port}`;
}
