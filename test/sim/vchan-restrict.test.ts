// Defence in depth: a vchan's event-channel handle is restricted to the peer domain, so nothing
// the peer publishes or shares can make it bind to a third domain. (Linux cannot restrict a handle
// to dom0, so on the harness, where everything is dom0, there is nothing to check: it runs here.)
import { describe, expect, it } from 'vitest';
import { connectClientLink, createServerLink } from '@xen-vchan/vchan/internal';

describe('vchan event channels are restricted to the peer', () => {
  it('refuses to bind to any other domain, on both sides', () => {
    const server = createServerLink({ clientDomid: 2, leftMin: 4096, rightMin: 4096, devices: { domid: 1 } });
    const client = connectClientLink({ serverDomid: 1, ringRef: server.ringRef, port: server.port, devices: { domid: 2 } });
    try {
      expect(() => client.events.bindInterdomain(3, 1)).toThrow(expect.objectContaining({ code: 'EACCES' }));
      expect(() => client.events.bindUnbound(1)).toThrow(expect.objectContaining({ code: 'EACCES' }));
      expect(() => server.link.events.bindInterdomain(3, 1)).toThrow(expect.objectContaining({ code: 'EACCES' }));
      expect(() => server.link.events.bindUnbound(3)).toThrow(expect.objectContaining({ code: 'EACCES' }));
    } finally {
      client.close(false);
      server.link.close(false);
    }
  });
});
