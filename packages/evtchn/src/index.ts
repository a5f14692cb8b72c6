import { chooseBackend } from '@xen-vchan/native';
import { EVTCHN_DEVICE, type EventChannel, type EventChannelOptions } from './interface.js';
import { SimEventChannel } from './sim.js';
import { XenEventChannel } from './xen.js';

export type { EventChannel, EventChannelEvents, EventChannelOptions } from './interface.js';
export { EVTCHN_DEVICE } from './interface.js';
export { SimEventChannel } from './sim.js';
export { XenEventChannel } from './xen.js';

/**
 * Opens the event-channel device: the real /dev/xen/evtchn (backend 'xen') or the simulation
 * ('sim'). With the default 'auto', Xen is used exactly when the device exists.
 */
export function openEventChannel(options: EventChannelOptions = {}): EventChannel {
  return chooseBackend(options.backend, EVTCHN_DEVICE) === 'sim' ? new SimEventChannel(options) : new XenEventChannel();
}
