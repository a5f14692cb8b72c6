/**
 * What XenStore requests do to the tree, with xenstored's permission rules: the nodes are read
 * and changed through a NodeView, which is either the committed store or a transaction's view.
 * Every check comes before the first change, so a refused request changes nothing.
 */
import { parseXsPermission, type XsPermission } from '@xen-vchan/native';
import { SimFailure } from '../failure.js';
import { OWNER, READ, rightsOf, WRITE } from './access.js';
import { NODE_QUOTA, NODE_QUOTA_ERROR, PERMISSIONS_QUOTA } from './limits.js';
import { baseName, canonicalPath, childPath, isValidNodePath, parentPath } from './node-path.js';
import type { NodeView, XsNode } from './store.js';

/** A change that watches may fire for. */
export interface NodeChange {
  path: string;
  /** Fires only watches on exactly this path: the descendants of a removed node. */
  exact: boolean;
  /** The node's permissions around the change; a watcher hears of it if one of them lets it read. */
  permissions: readonly (readonly XsPermission[])[];
}

export interface RequestContext {
  /** The requesting domain; 0 is privileged, as dom0 is for xenstored. */
  domid: number;
  view: NodeView;
  /** Whether a domain exists: a node's owner must. */
  domainExists(domid: number): boolean;
  /** Filled in by the operations, for the watches. */
  changes: NodeChange[];
}

const EMPTY = Buffer.alloc(0);

/** The absolute path of `path` as the requesting domain means it; EINVAL if xenstored would refuse it. */
export function resolvePath(context: RequestContext, path: string): string {
  const absolute = canonicalPath(path, context.domid);
  if (!isValidNodePath(absolute)) throw new SimFailure('EINVAL', `invalid path "${path}"`);
  return absolute;
}

export function readNode(context: RequestContext, path: string): Buffer {
  return existingNode(context, resolvePath(context, path), READ).value;
}

export function listChildren(context: RequestContext, path: string): readonly string[] {
  return readableNode(context, path).children;
}

/** The node itself, for a domain that may read it (DIRECTORY_PART needs its identity). */
export function readableNode(context: RequestContext, path: string): XsNode {
  return existingNode(context, resolvePath(context, path), READ);
}

export function getPermissions(context: RequestContext, path: string): readonly XsPermission[] {
  return existingNode(context, resolvePath(context, path), READ).permissions;
}

/** Writes a value, creating the node and any missing ancestors. */
export function writeNode(context: RequestContext, path: string, value: Buffer): void {
  const absolute = resolvePath(context, path);
  const node = findNode(context, absolute, WRITE);
  if (!node) {
    createNode(context, absolute, value);
    return;
  }
  context.view.set(absolute, { ...node, value });
  context.changes.push({ path: absolute, exact: false, permissions: [node.permissions] });
}

/** Creates an empty node (and missing ancestors); an existing node is left as it is. */
export function makeDirectory(context: RequestContext, path: string): void {
  const absolute = resolvePath(context, path);
  if (!findNode(context, absolute, WRITE)) createNode(context, absolute, EMPTY);
}

/** Removes a node and everything below it. Removing a missing node whose parent exists is fine. */
export function removeNode(context: RequestContext, path: string): void {
  const absolute = resolvePath(context, path);
  const node = findNode(context, absolute, WRITE);
  if (!node) {
    if (context.view.get(parentPath(absolute))) return;
    throw new SimFailure('ENOENT', `neither ${absolute} nor its parent exists`);
  }
  if (absolute === '/') throw new SimFailure('EINVAL', 'the root cannot be removed');
  context.changes.push({ path: absolute, exact: false, permissions: [node.permissions] });
  removeSubtree(context, absolute, node);
  const parent = parentPath(absolute);
  const parentNode = context.view.get(parent)!;
  const name = baseName(absolute);
  context.view.set(parent, { ...parentNode, children: parentNode.children.filter((child) => child !== name) });
}

/** Parses SET_PERMS's permission strings, with xenstored's limits. */
export function parsePermissions(context: RequestContext, texts: readonly string[]): XsPermission[] {
  if (texts.length === 0) throw new SimFailure('EINVAL', 'a permission list needs at least the owner');
  if (context.domid !== 0 && texts.length > PERMISSIONS_QUOTA) {
    throw new SimFailure('ENOSPC', `at most ${PERMISSIONS_QUOTA} permission entries per node`);
  }
  return texts.map((text) => {
    const permission = parseXsPermission(text);
    if (!permission) throw new SimFailure('EINVAL', `"${text}" is not a permission (n|r|w|b then a domid)`);
    return permission;
  });
}

/**
 * Replaces a node's permissions: only its owner or dom0 may, only dom0 may change the owner, and
 * the owner must be a domain that exists.
 */
export function setPermissions(context: RequestContext, path: string, permissions: readonly XsPermission[]): void {
  const absolute = resolvePath(context, path);
  const node = existingNode(context, absolute, WRITE | OWNER);
  const owner = permissions[0]!.domid;
  if (context.domid !== 0 && owner !== node.permissions[0]!.domid) {
    throw new SimFailure('EPERM', 'only dom0 may give a node another owner');
  }
  // xenstored 4.17 refuses an owner that is no domain (entries for other domains it accepts).
  if (!context.domainExists(owner)) throw new SimFailure('ENOENT', `domain ${owner} does not exist`);
  context.view.set(absolute, { ...node, permissions });
  context.changes.push({ path: absolute, exact: false, permissions: [node.permissions, permissions] });
}

function existingNode(context: RequestContext, path: string, needed: number): XsNode {
  const node = findNode(context, path, needed);
  if (!node) throw new SimFailure('ENOENT', `no node ${path}`);
  return node;
}

/**
 * The node at `path` if the domain has the `needed` rights on it; undefined if it is missing.
 * Like xenstored, a missing node is reported as missing only to a domain that has one of those
 * rights on its nearest existing ancestor: to others it is EACCES, so existence does not leak.
 */
function findNode(context: RequestContext, path: string, needed: number): XsNode | undefined {
  const node = context.view.get(path);
  if (node) {
    if ((rightsOf(context.domid, node.permissions) & needed) !== needed) {
      throw new SimFailure('EACCES', `domain ${context.domid} lacks the rights on ${path}`);
    }
    return node;
  }
  let ancestor = path;
  let ancestorNode: XsNode | undefined;
  do {
    ancestor = parentPath(ancestor);
    ancestorNode = context.view.get(ancestor);
  } while (!ancestorNode && ancestor !== '/');
  if (ancestorNode && (rightsOf(context.domid, ancestorNode.permissions) & needed) === 0) {
    throw new SimFailure('EACCES', `domain ${context.domid} lacks the rights on ${ancestor}`);
  }
  return undefined;
}

/**
 * Creates `path` and its missing ancestors, each inheriting its parent's permissions; a node an
 * unprivileged domain creates is owned by that domain (xenstored's construct_node).
 */
function createNode(context: RequestContext, path: string, value: Buffer): void {
  const missing: string[] = [];
  let existing = path;
  while (!context.view.get(existing)) {
    missing.unshift(existing);
    existing = parentPath(existing);
  }
  if (context.domid !== 0 && context.view.ownedBy(context.domid) + missing.length > NODE_QUOTA) {
    throw new SimFailure(NODE_QUOTA_ERROR, `domain ${context.domid} would own more than ${NODE_QUOTA} nodes`);
  }
  let parent = existing;
  for (const created of missing) {
    const parentNode = context.view.get(parent)!;
    context.view.set(parent, { ...parentNode, children: [...parentNode.children, baseName(created)] });
    const permissions = inheritedPermissions(parentNode.permissions, context.domid);
    context.view.set(created, { value: created === path ? value : EMPTY, permissions, children: [] });
    parent = created;
  }
  const permissions = context.view.get(path)!.permissions;
  context.changes.push({ path, exact: false, permissions: [permissions] });
}

function inheritedPermissions(parent: readonly XsPermission[], creator: number): readonly XsPermission[] {
  if (creator === 0) return parent;
  const [owner, ...others] = parent;
  return [{ domid: creator, access: owner!.access }, ...others];
}

function removeSubtree(context: RequestContext, path: string, node: XsNode): void {
  for (const name of node.children) {
    const child = childPath(path, name);
    const childNode = context.view.get(child);
    if (!childNode) continue;
    removeSubtree(context, child, childNode);
    context.changes.push({ path: child, exact: true, permissions: [childNode.permissions] });
  }
  context.view.delete(path);
}
