/**
 * Checking a call before the hypervisor sees it. Any local process of the user can connect and
 * send any JSON, so every field is checked before it is used: a domid like "../x" would otherwise
 * reach file names, a count of 1e12 a loop.
 */
import { isGuestDomainId, MAX_GUEST_DOMID } from '@xen-vchan/native';
import { SimFailure } from '../failure.js';
import type { Operation, Requests } from '../protocol.js';

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

/** A checked call: the operation with its own request type, so a switch or table on `op` sees it. */
export type Call = { [Op in Operation]: { op: Op; request: Requests[Op] } }[Operation];

/** The request of `op` with every field checked (EINVAL), or ENOSYS for an operation that does not exist. */
export function checkRequest(op: string, request: unknown): Call {
  if (!Object.hasOwn(requestShapes, op)) throw new SimFailure('ENOSYS', `unknown operation ${JSON.stringify(op.slice(0, 40))}`);
  const known = op as Operation;
  // The request was checked against the shape of `known` itself, so they belong together.
  return { op: known, request: checkFields(known, request) } as Call;
}

function checkFields<Op extends Operation>(op: Op, request: unknown): Requests[Op] {
  return shaped<Requests[Op]>(requestShapes[op], request, op);
}
