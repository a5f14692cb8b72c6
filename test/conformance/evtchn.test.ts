// Event channels, written against the public API and run on every backend.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openEventChannel, type EventChannel } from '@xen-vchan/evtchn';
import { OTHER, PEER, PROMPT_MS, SELF, SETTLE_MS, sleep } from '../support/domains.js';
import { countEvents, nextEvent } from '../support/events.js';
import { Peer } from '../support/peer.mjs';

const WAIT_MS = PROMPT_MS * 20;

describe('evtchn', () => {
  let local: EventChannel;
  let peer: Peer;
  let peerChannel: number;

  beforeEach(async () => {
    local = openEventChannel({ domid: SELF });
    peer = await Peer.start(PEER);
    peerChannel = await peer.call<number>('openEvtchn');
  });

  afterEach(async () => {
    local.close();
    await peer.stop();
  });

  /** Offers a local port to the peer and has it bind; returns both ends, with the bind's own event consumed. */
  async function connect(): Promise<{ localPort: number; peerPort: number }> {
    const localPort = local.bindUnbound(PEER);
    const peerPort = await peer.call<number>('bindInterdomain', { id: peerChannel, remoteDomain: SELF, remotePort: localPort });
    // Xen marks the binder's new port pending, so the binder always hears one event first.
    await peer.call('waitEvent', { id: peerChannel, port: peerPort, timeoutMs: WAIT_MS });
    await peer.call('unmask', { id: peerChannel, port: peerPort });
    return { localPort, peerPort };
  }

  it('connects an offered port and carries events both ways', async () => {
    const { localPort, peerPort } = await connect();
    expect(local.ports).toEqual([localPort]);

    const heard = nextEvent(local, localPort, WAIT_MS);
    await peer.call('notify', { id: peerChannel, port: peerPort });
    await heard;
    local.unmask(localPort);

    local.notify(localPort);
    await peer.call('waitEvent', { id: peerChannel, port: peerPort, timeoutMs: WAIT_MS });
  });

  it('refuses to bind a port offered to another domain', async () => {
    const offeredElsewhere = local.bindUnbound(OTHER);
    await expect(peer.call('bindInterdomain', { id: peerChannel, remoteDomain: SELF, remotePort: offeredElsewhere })).rejects.toMatchObject({
      code: 'EINVAL',
    });
  });

  it('refuses to bind a port that is already connected', async () => {
    const { localPort } = await connect();
    await expect(peer.call('bindInterdomain', { id: peerChannel, remoteDomain: SELF, remotePort: localPort })).rejects.toMatchObject({
      code: 'EINVAL',
    });
  });

  it('coalesces events while pending and holds them while the port is masked', async () => {
    const { localPort, peerPort } = await connect();
    const first = nextEvent(local, localPort, WAIT_MS);
    await peer.call('notify', { id: peerChannel, port: peerPort });
    await first;
    // The port is masked now: five more sends are one pending event, delivered only at unmask.
    const counter = countEvents(local, localPort);
    await peer.call('notify', { id: peerChannel, port: peerPort, times: 5 });
    await sleep(SETTLE_MS);
    expect(counter.count).toBe(0);
    local.unmask(localPort);
    await sleep(SETTLE_MS);
    expect(counter.count).toBe(1);
    local.unmask(localPort);
    await sleep(SETTLE_MS);
    expect(counter.count).toBe(1);
    counter.stop();
  });

  it('puts the port back to unbound when the peer closes, so a new peer can bind it', async () => {
    const { localPort } = await connect();
    await peer.call('close', { id: peerChannel });
    const newcomer = await peer.call<number>('openEvtchn');
    const newPeerPort = await peer.call<number>('bindInterdomain', { id: newcomer, remoteDomain: SELF, remotePort: localPort });
    await peer.call('waitEvent', { id: newcomer, port: newPeerPort, timeoutMs: WAIT_MS });
    await peer.call('unmask', { id: newcomer, port: newPeerPort });
    local.notify(localPort);
    await peer.call('waitEvent', { id: newcomer, port: newPeerPort, timeoutMs: WAIT_MS });
  });

  it('drops a send on a port with no peer, and refuses ports this handle did not bind', async () => {
    const lonely = local.bindUnbound(PEER);
    expect(() => local.notify(lonely)).not.toThrow();
    const { peerPort } = await connect();
    expect(() => local.notify(peerPort + 50)).toThrow(expect.objectContaining({ code: 'ENOTCONN' }));
    expect(() => local.unbind(peerPort + 50)).toThrow(expect.objectContaining({ code: 'ENOTCONN' }));
  });

  it('unbinds: the port is no longer ours and the peer stops hearing us', async () => {
    const { localPort, peerPort } = await connect();
    local.unbind(localPort);
    expect(local.ports).toEqual([]);
    expect(() => local.notify(localPort)).toThrow(expect.objectContaining({ code: 'ENOTCONN' }));
    await expect(peer.call('waitEvent', { id: peerChannel, port: peerPort, timeoutMs: SETTLE_MS })).rejects.toThrow(/no event/);
  });

  it('restricts a handle to binding interdomain with one domain, once, and never to dom0', () => {
    const offered = local.bindUnbound(OTHER); // bound before the restriction: it stays
    expect(() => local.restrictDomain(0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    local.restrictDomain(OTHER);
    expect(local.ports).toEqual([offered]);
    expect(() => local.bindUnbound(OTHER)).toThrow(expect.objectContaining({ code: 'EACCES' }));
    expect(() => local.bindUnbound(PEER)).toThrow(expect.objectContaining({ code: 'EACCES' }));
    expect(() => local.bindInterdomain(PEER, 1)).toThrow(expect.objectContaining({ code: 'EACCES' }));
    expect(() => local.restrictDomain(PEER)).toThrow(expect.objectContaining({ code: 'EACCES' }));
  });

  it('reset throws away queued events without unbinding', async () => {
    const { localPort } = await connect();
    local.reset();
    expect(local.ports).toEqual([localPort]);
  });

  it('says a running domain exists, binding nothing to ask', async () => {
    const { localPort, peerPort } = await connect();
    expect(local.domainExists(PEER)).toBe(true);
    expect(local.domainExists(SELF)).toBe(true);
    expect(local.ports).toEqual([localPort]);
    // The question left the connected port alone: events still cross.
    local.notify(localPort);
    await peer.call('waitEvent', { id: peerChannel, port: peerPort, timeoutMs: WAIT_MS });
  });

  it('rejects use after close with EBADF', () => {
    local.close();
    expect(() => local.bindUnbound(PEER)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => local.domainExists(PEER)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});
