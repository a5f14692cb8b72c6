// Event channels, written against the public API and run on every backend.
import { describe, expect, it } from 'vitest';
import { openEventChannel } from '@xen-vchan/evtchn';
import { OTHER, PEER, PROMPT_MS, SELF, SETTLE_MS, sleep } from '../support/domains.js';
import { countEvents, nextEvent } from '../support/events.js';
import { withPeer } from './with-peer.js';

const WAIT_MS = PROMPT_MS * 20;

describe('evtchn', () => {
  const ends = withPeer(() => openEventChannel({ domid: SELF }), 'openEvtchn');

  /** Offers a local port to the peer and has it bind; returns both ends, with the bind's own event consumed. */
  async function connect(): Promise<{ localPort: number; peerPort: number }> {
    const localPort = ends.local.bindUnbound(PEER);
    const peerPort = await ends.peer.call<number>('bindInterdomain', { id: ends.peerHandle, remoteDomain: SELF, remotePort: localPort });
    // Xen marks the binder's new port pending, so the binder always hears one event first.
    await ends.peer.call('waitEvent', { id: ends.peerHandle, port: peerPort, timeoutMs: WAIT_MS });
    await ends.peer.call('unmask', { id: ends.peerHandle, port: peerPort });
    return { localPort, peerPort };
  }

  it('connects an offered port and carries events both ways', async () => {
    const { localPort, peerPort } = await connect();
    expect(ends.local.ports).toEqual([localPort]);

    const heard = nextEvent(ends.local, localPort, WAIT_MS);
    await ends.peer.call('notify', { id: ends.peerHandle, port: peerPort });
    await heard;
    ends.local.unmask(localPort);

    ends.local.notify(localPort);
    await ends.peer.call('waitEvent', { id: ends.peerHandle, port: peerPort, timeoutMs: WAIT_MS });
  });

  it('refuses to bind a port offered to another domain', async () => {
    const offeredElsewhere = ends.local.bindUnbound(OTHER);
    const bind = ends.peer.call('bindInterdomain', { id: ends.peerHandle, remoteDomain: SELF, remotePort: offeredElsewhere });
    await expect(bind).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('refuses to bind a port that is already connected', async () => {
    const { localPort } = await connect();
    const bind = ends.peer.call('bindInterdomain', { id: ends.peerHandle, remoteDomain: SELF, remotePort: localPort });
    await expect(bind).rejects.toMatchObject({ code: 'EINVAL' });
  });

  it('coalesces events while pending and holds them while the port is masked', async () => {
    const { localPort, peerPort } = await connect();
    const first = nextEvent(ends.local, localPort, WAIT_MS);
    await ends.peer.call('notify', { id: ends.peerHandle, port: peerPort });
    await first;
    // The port is masked now: five more sends are one pending event, delivered only at unmask.
    const counter = countEvents(ends.local, localPort);
    await ends.peer.call('notify', { id: ends.peerHandle, port: peerPort, times: 5 });
    await sleep(SETTLE_MS);
    expect(counter.count).toBe(0);
    ends.local.unmask(localPort);
    await sleep(SETTLE_MS);
    expect(counter.count).toBe(1);
    ends.local.unmask(localPort);
    await sleep(SETTLE_MS);
    expect(counter.count).toBe(1);
    counter.stop();
  });

  it('puts the port back to unbound when the peer closes, so a new peer can bind it', async () => {
    const { localPort } = await connect();
    await ends.peer.call('close', { id: ends.peerHandle });
    const newcomer = await ends.peer.call<number>('openEvtchn');
    const newPeerPort = await ends.peer.call<number>('bindInterdomain', { id: newcomer, remoteDomain: SELF, remotePort: localPort });
    await ends.peer.call('waitEvent', { id: newcomer, port: newPeerPort, timeoutMs: WAIT_MS });
    await ends.peer.call('unmask', { id: newcomer, port: newPeerPort });
    ends.local.notify(localPort);
    await ends.peer.call('waitEvent', { id: newcomer, port: newPeerPort, timeoutMs: WAIT_MS });
  });

  it('drops a send on a port with no peer, and refuses ports this handle did not bind', async () => {
    const lonely = ends.local.bindUnbound(PEER);
    expect(() => ends.local.notify(lonely)).not.toThrow();
    const { peerPort } = await connect();
    expect(() => ends.local.notify(peerPort + 50)).toThrow(expect.objectContaining({ code: 'ENOTCONN' }));
    expect(() => ends.local.unbind(peerPort + 50)).toThrow(expect.objectContaining({ code: 'ENOTCONN' }));
  });

  it('unbinds: the port is no longer ours and the peer stops hearing us', async () => {
    const { localPort, peerPort } = await connect();
    ends.local.unbind(localPort);
    expect(ends.local.ports).toEqual([]);
    expect(() => ends.local.notify(localPort)).toThrow(expect.objectContaining({ code: 'ENOTCONN' }));
    await expect(ends.peer.call('waitEvent', { id: ends.peerHandle, port: peerPort, timeoutMs: SETTLE_MS })).rejects.toThrow(/no event/);
  });

  it('restricts a handle to binding interdomain with one domain, once, and never to dom0', () => {
    const offered = ends.local.bindUnbound(OTHER); // bound before the restriction: it stays
    expect(() => ends.local.restrictDomain(0)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    ends.local.restrictDomain(OTHER);
    expect(ends.local.ports).toEqual([offered]);
    expect(() => ends.local.bindUnbound(OTHER)).toThrow(expect.objectContaining({ code: 'EACCES' }));
    expect(() => ends.local.bindUnbound(PEER)).toThrow(expect.objectContaining({ code: 'EACCES' }));
    expect(() => ends.local.bindInterdomain(PEER, 1)).toThrow(expect.objectContaining({ code: 'EACCES' }));
    expect(() => ends.local.restrictDomain(PEER)).toThrow(expect.objectContaining({ code: 'EACCES' }));
  });

  it('reset throws away queued events without unbinding', async () => {
    const { localPort } = await connect();
    ends.local.reset();
    expect(ends.local.ports).toEqual([localPort]);
  });

  it('says a running domain exists, binding nothing to ask', async () => {
    const { localPort, peerPort } = await connect();
    expect(ends.local.domainExists(PEER)).toBe(true);
    expect(ends.local.domainExists(SELF)).toBe(true);
    expect(ends.local.ports).toEqual([localPort]);
    // The question left the connected port alone: events still cross.
    ends.local.notify(localPort);
    await ends.peer.call('waitEvent', { id: ends.peerHandle, port: peerPort, timeoutMs: WAIT_MS });
  });

  it('rejects use after close with EBADF', () => {
    ends.local.close();
    expect(() => ends.local.bindUnbound(PEER)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => ends.local.domainExists(PEER)).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });
});
