export { Vchan, type VchanStats } from './stream.js';
export { createServer, VchanServer, type ServerOptions, type ServerEvents } from './server.js';
export { connect, type ConnectOptions } from './connect.js';
export type { BackendOptions } from './options.js';
export { createServerLink, connectClientLink, type ServerLink, type DeviceOptions } from './links.js';
export { chooseOrders, type RingOrders } from './orders.js';
export { conventionalPath } from './paths.js';
export type { VchanLink } from './link.js';
