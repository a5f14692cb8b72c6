export { Vchan, type VchanStats } from './stream.js';
export { createServerLink, connectClientLink, type ServerLink, type DeviceOptions } from './links.js';
export { chooseOrders, type RingOrders } from './orders.js';
export type { VchanLink } from './link.js';
