// The numbers a client reads from XenStore come from the other domain: each malformed one is
// refused with EPROTO, never guessed at (no "12abc" -> 12, no hex, no sign, no overflow).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from '@xen-vchan/vchan';
import { Peer } from '../support/peer.mjs';

const SELF = 1;
const HOSTILE = 2;
let peer: Peer;
beforeAll(async () => {
  peer = await Peer.start(HOSTILE, 'hostile');
});
afterAll(async () => {
  await peer.stop();
});

describe('XenStore values from a hostile server', () => {
  it.each(['', '-1', '12abc', ' 5', '5 ', '0x10', '1e3', '007', '4294967296', '99999999999', '0', '+5'])(
    'refuses ring-ref %j',
    async (ringRef) => {
      const name = `garbage-${Buffer.from(ringRef).toString('hex') || 'empty'}`;
      await peer.call('serve', { clientDomid: SELF, name, leftMin: 4096, rightMin: 4096, garbage: { ringRef } });
      try {
        await expect(connect({ domid: HOSTILE, name, simDomid: SELF, timeout: 1000 })).rejects.toMatchObject({ code: 'EPROTO' });
      } finally {
        await peer.call('close');
      }
    },
  );
});
