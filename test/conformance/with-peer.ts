// The two ends most conformance tests need: a device handle in this process and a peer process,
// playing domain PEER, with a handle of its own.
import { afterEach, beforeEach } from 'vitest';
import { PEER } from '../support/domains.js';
import { Peer } from '../support/peer.mjs';

/** The agent commands (test/support/agent.mjs) that open a device handle in the peer. */
type PeerDevice = 'openEvtchn' | 'openGntalloc' | 'openGntdev';

export interface Ends<Local> {
  /** This process's handle. */
  readonly local: Local;
  /** The process playing PEER. */
  readonly peer: Peer;
  /** The peer's handle, as the agent numbers it. */
  readonly peerHandle: number;
}

/**
 * Gives each test of the enclosing describe fresh ends, opened before it and closed after it, so
 * the file's leak check (test/support/setup.ts) sees whatever a test leaves behind.
 */
export function withPeer<Local extends { close(): void }>(openLocal: () => Local, peerDevice: PeerDevice): Ends<Local> {
  const ends = {} as { local: Local; peer: Peer; peerHandle: number };
  beforeEach(async () => {
    ends.local = openLocal();
    ends.peer = await Peer.start(PEER);
    ends.peerHandle = await ends.peer.call<number>(peerDevice);
  });
  afterEach(async () => {
    ends.local.close();
    await ends.peer.stop();
  });
  return ends;
}
