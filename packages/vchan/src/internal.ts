/**
 * `@xen-vchan/vchan/internal`: the pieces below createServer() and connect(), for the tests and
 * tools that build a channel by hand (a raw pair of links, a hostile peer, the interop checks of
 * ring sizes). An application has no need of them; they follow the protocol's internals and may
 * change in any release.
 */
export { createServerLink, connectClientLink, type ServerLink, type DeviceOptions } from './handshake.js';
export { chooseOrders, type RingOrders } from './orders.js';
export type { VchanLink } from './link.js';
export { ControlOffset } from './layout.js';
