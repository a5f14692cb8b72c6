/**
 * What a toolstack writes for a new domain, done by the simulation when a domain first connects,
 * after libxl's layout: its home `/local/domain/<domid>` and `domid` node readable by the domain
 * but owned by dom0, and `data`, owned by the domain, where it may write (vchan publishes there).
 * dom0 gets `domid` and `name` (Domain-0), as xen-init-dom0 writes them.
 */
import type { XsPermission } from '@xen-vchan/native';
import { makeDirectory, setPermissions, writeNode, type NodeChange, type RequestContext } from './node-operations.js';
import { domainPath } from './node-path.js';
import type { NodeStore } from './store.js';

/**
 * Creates the domain's home unless it exists; returns the changes to fire watches for.
 * `domainExists` must already count the new domain in.
 */
export function introduceDomain(store: NodeStore, domid: number, domainExists: (domid: number) => boolean): NodeChange[] | null {
  const home = domainPath(domid);
  if (store.get(home)) return null;
  const asDom0: RequestContext = { domid: 0, view: store, changes: [], domainExists };
  writeNode(asDom0, `${home}/domid`, Buffer.from(String(domid)));
  if (domid === 0) {
    writeNode(asDom0, `${home}/name`, Buffer.from('Domain-0'));
  } else {
    const readOnly: XsPermission[] = [
      { domid: 0, access: 'none' },
      { domid, access: 'read' },
    ];
    setPermissions(asDom0, home, readOnly);
    setPermissions(asDom0, `${home}/domid`, readOnly);
    makeDirectory(asDom0, `${home}/data`);
    setPermissions(asDom0, `${home}/data`, [{ domid, access: 'none' }]);
  }
  return asDom0.changes;
}
