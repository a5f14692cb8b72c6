/**
 * The libxenvchan handshake, one function per side, step by step as in its init.c: the server
 * shares the control page and the rings and offers a port (everything short of publishing, which
 * keys.ts does); the client maps what the server published and binds to it. Each returns a
 * VchanLink (link.ts) and, on any failure, releases what it had taken in reverse order.
 */
import { openEventChannel, type EventChannel, type EventChannelOptions } from '@xen-vchan/evtchn';
import { openGntalloc, type SharedPages } from '@xen-vchan/gntalloc';
import { openGntdev, type GrantMapping } from '@xen-vchan/gntdev';
import { ControlPage } from './control.js';
import { protocolError } from './errors.js';
import { ControlOffset, inPageRingOffset, LIVE_CONNECTED, LIVE_WAITING, NOTIFY_WRITE, PAGE_ORDER, ringPages } from './layout.js';
import { ringEnds, sayGoodbye, type VchanLink } from './link.js';
import { badOrders, chooseOrders, type RingOrders } from './orders.js';
import { domainCheck, grantCopyCheck } from './peer-liveness.js';

/** Which devices to use: the backend and, on the simulation, the domain and state folder. */
export type DeviceOptions = Pick<EventChannelOptions, 'backend' | 'domid' | 'simDirectory'>;

/** Releases in reverse order of acquisition, each step at most once, and never stops half way. */
class Cleanup {
  private readonly steps: (() => void)[] = [];

  add(step: () => void): void {
    this.steps.push(step);
  }

  run(): void {
    for (const step of this.steps.splice(0).reverse()) {
      try {
        step();
      } catch {
        /* keep releasing the rest */
      }
    }
  }
}

/**
 * Limits the handle to the one peer domain (RESTRICT_DOMID), so nothing published or shared by
 * anyone can make it bind elsewhere. Linux cannot restrict a handle to dom0; there it is skipped.
 */
function restrictTo(events: EventChannel, domid: number): void {
  if (domid !== 0) events.restrictDomain(domid);
}

export interface ServerLink {
  /** Its close() says goodbye and releases everything; a caller may wrap it (persistent servers). */
  link: VchanLink;
  /** Unmaps, unbinds and closes the devices, without touching the shared page. */
  release: () => void;
  /** What the client needs, published in XenStore as ring-ref and event-channel. */
  ringRef: number;
  port: number;
  orders: RingOrders;
}

/** The server half of the libxenvchan handshake, up to (not including) publishing in XenStore. */
export function createServerLink(options: { clientDomid: number; leftMin: number; rightMin: number; devices?: DeviceOptions }): ServerLink {
  const orders = chooseOrders(options.leftMin, options.rightMin);
  const cleanup = new Cleanup();
  try {
    const events = openEventChannel(options.devices);
    cleanup.add(() => events.close());
    // Bound before the page is shared: its unmap notification needs a bound port. Restricted
    // after: Linux lets a restricted handle bind interdomain only, not offer unbound ports.
    const port = events.bindUnbound(options.clientDomid);
    restrictTo(events, options.clientDomid);
    const gntalloc = openGntalloc(options.devices);
    cleanup.add(() => gntalloc.close());
    const page0 = gntalloc.share(options.clientDomid, 1);
    page0.setUnmapNotify({ offset: ControlOffset.serverLive, clearByte: true, port });
    const control = new ControlPage(page0.buffer, 'server');
    control.setOrders(orders.left, orders.right);
    control.setLive('client', LIVE_WAITING);
    control.setLive('server', LIVE_CONNECTED);
    control.setNotifyBytes(NOTIFY_WRITE, 0);
    let grantIndex = 0;
    // The client writes the left ring; the right one is ours to write, so it gets it read-only.
    const ringMemory = (order: number, clientWrites: boolean): Uint8Array => {
      if (order < PAGE_ORDER) return new Uint8Array(page0.buffer, inPageRingOffset(order), 1 << order);
      const ring: SharedPages = gntalloc.share(options.clientDomid, ringPages(order), { writable: clientWrites });
      for (const ref of ring.refs) control.setGrant(grantIndex++, ref);
      return new Uint8Array(ring.buffer);
    };
    const left = ringMemory(orders.left, true);
    const right = ringMemory(orders.right, false);
    const { reader, writer } = ringEnds(control, 'server', left, right);
    const release = () => cleanup.run();
    const link: VchanLink = {
      side: 'server',
      control,
      reader,
      writer,
      events,
      port,
      checkPeer: domainCheck(events, options.clientDomid),
      close: () => sayGoodbye(control, events, port, release),
    };
    return { link, release, ringRef: page0.refs[0]!, port, orders };
  } catch (error) {
    cleanup.run();
    throw error;
  }
}

/** The client half of the handshake, given what the server published. */
export function connectClientLink(options: {
  serverDomid: number;
  ringRef: number;
  port: number;
  devices?: DeviceOptions;
  onClose?: () => void;
}): VchanLink {
  const cleanup = new Cleanup();
  if (options.onClose) cleanup.add(options.onClose);
  try {
    const events: EventChannel = openEventChannel(options.devices);
    cleanup.add(() => events.close());
    restrictTo(events, options.serverDomid);
    const port = events.bindInterdomain(options.serverDomid, options.port);
    const gntdev = openGntdev(options.devices);
    cleanup.add(() => gntdev.close());
    const page0: GrantMapping = gntdev.map(options.serverDomid, [options.ringRef]);
    page0.setUnmapNotify({ offset: ControlOffset.clientLive, clearByte: true, port });
    const control = new ControlPage(page0.buffer, 'client');
    // The server may change the page at any time: the orders are read once and kept.
    const orders = { left: control.leftOrder, right: control.rightOrder };
    const problem = badOrders(orders.left, orders.right);
    if (problem) throw protocolError(problem);
    let grantIndex = 0;
    const ringMemory = (order: number, writable: boolean): Uint8Array => {
      if (order < PAGE_ORDER) return new Uint8Array(page0.buffer, inPageRingOffset(order), 1 << order);
      const refs = Array.from({ length: ringPages(order) }, () => control.grant(grantIndex++));
      try {
        return new Uint8Array(gntdev.map(options.serverDomid, refs, { writable }).buffer);
      } catch (error) {
        // Page 0 and the port were fine, so the server is there: the grants it listed are what is
        // wrong (not granted to us, or read-only where we must write).
        throw protocolError(
          `the ${writable ? 'left' : 'right'} ring's grants [${refs.join(', ')}] could not be mapped ${writable ? 'writable' : 'read-only'} (${(error as Error).message})`,
          error,
        );
      }
    };
    // We write the left ring; the right one is the server's to write, so we map it read-only.
    const left = ringMemory(orders.left, true);
    const right = ringMemory(orders.right, false);
    const { reader, writer } = ringEnds(control, 'client', left, right);
    control.setLive('client', LIVE_CONNECTED);
    control.requestWake(NOTIFY_WRITE);
    events.notify(port);
    const release = () => cleanup.run();
    return {
      side: 'client',
      control,
      reader,
      writer,
      events,
      port,
      checkPeer: grantCopyCheck(gntdev, options.serverDomid, options.ringRef),
      close: () => sayGoodbye(control, events, port, release),
    };
  } catch (error) {
    cleanup.run();
    throw error;
  }
}
