import { chooseBackend } from '@xen-vchan/native';
import { GNTALLOC_DEVICE, type Gntalloc, type GntallocOptions } from './interface.js';
import { SimGntalloc } from './sim.js';
import { XenGntalloc } from './xen.js';

export type { Gntalloc, GntallocOptions, SharedPages, UnmapNotifyOptions } from './interface.js';
export { GNTALLOC_DEVICE } from './interface.js';
export { SimGntalloc } from './sim.js';
export { XenGntalloc } from './xen.js';

/**
 * Opens the gntalloc device: the real /dev/xen/gntalloc (backend 'xen') or the simulation
 * ('sim'). With the default 'auto', Xen is used exactly when the device exists. Synchronous,
 * like fs.openSync: these are quick system calls.
 */
export function openGntalloc(options: GntallocOptions = {}): Gntalloc {
  return chooseBackend(options.backend, GNTALLOC_DEVICE) === 'sim' ? new SimGntalloc(options) : new XenGntalloc();
}
