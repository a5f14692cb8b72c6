import { SimFailure } from '../failure.js';
import type { DomainTable } from './domains.js';
import type { Allocation, Mapping } from './grant-table.js';

/** A process connected to the daemon. */
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

/** An open device (a file descriptor on /dev/xen/<device>), acting as one domain. */
export type Handle =
  | { kind: 'gntalloc'; id: number; client: Client; domid: number; allocations: Map<number, Allocation> }
  | { kind: 'gntdev'; id: number; client: Client; domid: number; mappings: Map<number, Mapping> }
  | { kind: 'evtchn'; id: number; client: Client; domid: number; ports: Set<number>; restrictedTo: number | null };

export type HandleOf<K extends Handle['kind']> = Extract<Handle, { kind: K }>;

/**
 * Who lets go of a handle's holdings: its 'process' (closing, exiting or killed: its kernel still
 * runs the unmap notifications), or the destruction of its whole 'domain' (no kernel is left to).
 */
export type Ending = 'process' | 'domain';

/** Every open handle, by the id the daemon gave it. */
export class HandleTable {
  private readonly handles = new Map<number, Handle>();
  readonly byId: ReadonlyMap<number, Handle> = this.handles;

  constructor(
    private readonly domains: DomainTable,
    /** One sequence for handles, allocations and mappings. */
    private readonly nextId: () => number,
  ) {}

  /** Opens `handle` (its id is given here) for its client. */
  add<H extends Handle>(handle: H): H {
    handle.id = this.nextId();
    this.handles.set(handle.id, handle);
    handle.client.handles.add(handle.id);
    // A process acting as a destroyed domain makes it a new, live domain with the same id.
    this.domains.get(handle.domid).destroyed = false;
    return handle;
  }

  /** The client's open handle `id` of device `kind`, else EBADF. */
  of<K extends Handle['kind']>(client: Client, id: number, kind: K): HandleOf<K> {
    const handle = this.handles.get(id);
    if (!handle || handle.client !== client || handle.kind !== kind) throw new SimFailure('EBADF', `${kind} handle ${id} is not open`);
    return handle as HandleOf<K>;
  }

  /** The client's open handle `id` of any device, else EBADF. */
  ownedBy(client: Client, id: number): Handle {
    const handle = this.handles.get(id);
    if (!handle || handle.client !== client) throw new SimFailure('EBADF', `handle ${id} is not open`);
    return handle;
  }

  /** The handle is closed: whatever it held was released. */
  remove(handle: Handle): void {
    this.handles.delete(handle.id);
    handle.client.handles.delete(handle.id);
  }
}

/**
 * Orders handles to close maps before event channels, as Linux does for a dying process: an unmap
 * notification may still send on a port, and dropping a notification lets go of its port.
 */
export function mapsBeforeEventChannels(handles: Handle[]): Handle[] {
  return handles.sort((a, b) => Number(a.kind === 'evtchn') - Number(b.kind === 'evtchn'));
}
