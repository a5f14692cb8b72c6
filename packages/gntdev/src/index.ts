import { chooseBackend, lazyModule } from '@xen-vchan/native';
import type { Gntdev, GntdevOptions } from './interface.js';
import { XenGntdev } from './xen.js';

export type { CopyEnd, CopySegment, Gntdev, GntdevOptions, GrantMapping, UnmapNotifyOptions } from './interface.js';
export { GNTDEV_DEVICE } from './interface.js';
// Grant-copy results per segment; Xen's GNTST_* numbers, which the simulation answers too.
export { GrantStatus } from '@xen-vchan/native';
// A type only: the class comes with the simulation, which loads when the sim backend is chosen.
export type { SimGntdev } from './sim.js';
export { XenGntdev } from './xen.js';

// Loaded on first use, so that a process on Xen never loads @xen-vchan/sim or its addon.
const simBackend = lazyModule<typeof import('./sim.js')>(import.meta.url, './sim.js', 'The simulated gntdev');

/**
 * Opens the gntdev device: the real /dev/xen/gntdev (backend 'xen') or the simulation ('sim').
 * With the default 'auto', Xen is used exactly when the device exists.
 */
export function openGntdev(options: GntdevOptions = {}): Gntdev {
  return chooseBackend(options.backend) === 'sim' ? new (simBackend().SimGntdev)(options) : new XenGntdev();
}
