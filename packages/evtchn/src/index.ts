import { chooseBackend, lazyModule } from '@xen-vchan/native';
import type { EventChannel, EventChannelOptions } from './interface.js';
import { XenEventChannel } from './xen.js';

export type { EventChannel, EventChannelEvents, EventChannelOptions } from './interface.js';
export { EVTCHN_DEVICE } from './interface.js';
// A type only: the class comes with the simulation, which loads when the sim backend is chosen.
export type { SimEventChannel } from './sim.js';
export { XenEventChannel } from './xen.js';

// Loaded on first use, so that a process on Xen never loads @xen-vchan/sim or its addon.
const simBackend = lazyModule<typeof import('./sim.js')>(import.meta.url, './sim.js', 'The simulated event-channel device');

/**
 * Opens the event-channel device: the real /dev/xen/evtchn (backend 'xen') or the simulation
 * ('sim'). With the default 'auto', Xen is used exactly when the device exists.
 */
export function openEventChannel(options: EventChannelOptions = {}): EventChannel {
  return chooseBackend(options.backend) === 'sim' ? new (simBackend().SimEventChannel)(options) : new XenEventChannel();
}
