import { errorCode, invalidArgument, splitXsStrings, XenVchanError, XsType, xsStrings } from '@xen-vchan/native';
import type { XenStoreConnection } from './connection.js';
import { protocolError } from './errors.js';
import { decodePermissions, encodePermissions, type Permission } from './permissions.js';

const DIRECTORY_PART_ATTEMPTS = 10;

/**
 * The node operations, shared by the store and its transactions. Paths are sent as given: one
 * without a leading '/' is resolved by XenStore against /local/domain/<own domid>/.
 */
export abstract class NodeOperations {
  protected constructor(protected readonly connection: XenStoreConnection) {}

  /** 0 outside a transaction. */
  protected abstract readonly transactionId: number;

  /** Throws if this object may no longer send requests. */
  protected abstract checkUsable(): void;

  /** A node's value as UTF-8 text; rejects with code ENOENT if there is no such node. */
  async read(path: string): Promise<string> {
    return (await this.readBytes(path)).toString('utf8');
  }

  /** A node's value as bytes; rejects with code ENOENT if there is no such node. */
  async readBytes(path: string): Promise<Buffer> {
    return this.send(XsType.READ, 'read', path, xsStrings(checkPath(path)));
  }

  /** Sets a node's value, creating it and any missing ancestors (which inherit their parent's permissions). */
  async write(path: string, value: string | Uint8Array): Promise<void> {
    if (typeof value !== 'string' && !(value instanceof Uint8Array)) throw invalidArgument('A XenStore value is a string or bytes.');
    await this.send(XsType.WRITE, 'write', path, Buffer.concat([xsStrings(checkPath(path)), Buffer.from(value)]));
  }

  /** Creates an empty node (and missing ancestors); an existing node is left as it is. */
  async mkdir(path: string): Promise<void> {
    await this.send(XsType.MKDIR, 'mkdir', path, xsStrings(checkPath(path)));
  }

  /** Removes a node and everything below it; fine if it is already gone but its parent exists. */
  async rm(path: string): Promise<void> {
    await this.send(XsType.RM, 'rm', path, xsStrings(checkPath(path)));
  }

  /** The names of a node's children, in the order they were created. */
  async directory(path: string): Promise<string[]> {
    try {
      return splitXsStrings(await this.send(XsType.DIRECTORY, 'directory', path, xsStrings(checkPath(path))));
    } catch (error) {
      // Too many children for one message: read the list in parts, as libxenstore does.
      if (errorCode(error) !== 'E2BIG') throw error;
      return this.directoryInParts(path);
    }
  }

  async getPermissions(path: string): Promise<Permission[]> {
    const reply = await this.send(XsType.GET_PERMS, 'getPermissions', path, xsStrings(checkPath(path)));
    const permissions = decodePermissions(splitXsStrings(reply));
    if (!permissions) throw protocolError(this.connection.address, `GET_PERMS answered "${reply.toString('latin1')}"`);
    return permissions;
  }

  /**
   * Replaces a node's permissions; the first entry is the owner and everyone's default. Only the
   * owner (or dom0) may, and only dom0 may name another owner.
   */
  async setPermissions(path: string, permissions: readonly Permission[]): Promise<void> {
    const payload = xsStrings(checkPath(path), ...encodePermissions(permissions));
    await this.send(XsType.SET_PERMS, 'setPermissions', path, payload);
  }

  /**
   * DIRECTORY_PART: each reply holds the node's generation, then the names from a byte offset on,
   * then an empty string once the list is complete. If the generation changes between parts the
   * list changed meanwhile, and reading starts over.
   */
  private async directoryInParts(path: string): Promise<string[]> {
    for (let attempt = 0; attempt < DIRECTORY_PART_ATTEMPTS; attempt++) {
      const names: string[] = [];
      let generation: string | undefined;
      let offset = 0;
      for (;;) {
        const reply = await this.send(XsType.DIRECTORY_PART, 'directory', path, xsStrings(path, String(offset)));
        const [partGeneration, ...part] = splitXsStrings(reply);
        generation ??= partGeneration;
        if (partGeneration === undefined || partGeneration !== generation) break;
        const complete = part.at(-1) === '';
        if (complete) part.pop();
        else if (part.length === 0)
          throw protocolError(this.connection.address, `DIRECTORY_PART of ${path} made no progress at offset ${offset}`);
        names.push(...part);
        offset += part.reduce((bytes, name) => bytes + Buffer.byteLength(name) + 1, 0);
        if (complete) return names;
      }
    }
    throw new XenVchanError(
      'EAGAIN',
      `XenStore directory ${path} failed: its children kept changing while the list was read in parts (${DIRECTORY_PART_ATTEMPTS} tries). Try again.`,
    );
  }

  protected send(type: number, verb: string, path: string, payload: Buffer): Promise<Buffer> {
    this.checkUsable();
    const where = this.transactionId === 0 ? '' : ` in transaction ${this.transactionId}`;
    return this.connection.request(type, this.transactionId, payload, `${verb} ${path}${where}`, this);
  }
}

/** A path or token goes on the wire as a NUL-terminated string, so it cannot hold a NUL. */
export function checkPath(path: string, what = 'path'): string {
  if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) {
    throw invalidArgument(`A XenStore ${what} is a non-empty string without NUL characters, got ${JSON.stringify(path)}.`);
  }
  return path;
}
