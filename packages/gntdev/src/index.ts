import { chooseBackend } from '@xen-vchan/native';
import { GNTDEV_DEVICE, type Gntdev, type GntdevOptions } from './interface.js';
import { SimGntdev } from './sim.js';
import { XenGntdev } from './xen.js';

export type { CopyEnd, CopySegment, Gntdev, GntdevOptions, GrantMapping, UnmapNotifyOptions } from './interface.js';
export { GNTDEV_DEVICE } from './interface.js';
// Grant-copy results per segment; Xen's GNTST_* numbers, which the simulation answers too.
export { GrantStatus } from '@xen-vchan/native';
export { SimGntdev } from './sim.js';
export { XenGntdev } from './xen.js';

/**
 * Opens the gntdev device: the real /dev/xen/gntdev (backend 'xen') or the simulation ('sim').
 * With the default 'auto', Xen is used exactly when the device exists.
 */
export function openGntdev(options: GntdevOptions = {}): Gntdev {
  return chooseBackend(options.backend, GNTDEV_DEVICE) === 'sim' ? new SimGntdev(options) : new XenGntdev();
}
