import { chooseBackend, lazyModule } from '@xen-vchan/native';
import type { Gntalloc, GntallocOptions } from './interface.js';
import { XenGntalloc } from './xen.js';

export type { Gntalloc, GntallocOptions, SharedPages, UnmapNotifyOptions } from './interface.js';
export { GNTALLOC_DEVICE } from './interface.js';
// A type only: the class comes with the simulation, which loads when the sim backend is chosen.
export type { SimGntalloc } from './sim.js';
export { XenGntalloc } from './xen.js';

// Loaded on first use, so that a process on Xen never loads @xen-vchan/sim or its addon.
const simBackend = lazyModule<typeof import('./sim.js')>(import.meta.url, './sim.js', 'The simulated gntalloc');

/**
 * Opens the gntalloc device: the real /dev/xen/gntalloc (backend 'xen') or the simulation
 * ('sim'). With the default 'auto', Xen is used exactly when the device exists. Synchronous,
 * like fs.openSync: these are quick system calls.
 */
export function openGntalloc(options: GntallocOptions = {}): Gntalloc {
  return chooseBackend(options.backend) === 'sim' ? new (simBackend().SimGntalloc)(options) : new XenGntalloc();
}
