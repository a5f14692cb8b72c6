import type { Duplex } from 'node:stream';
import { invalidArgument } from '@xen-vchan/native';
import type { SessionOptions } from './options.js';
import { Session } from './session.js';

/**
 * A duplex that may know which end of its connection it is, as a vchan does (`Vchan.side`:
 * 'server' for the end that offered the channel, 'client' for the one that connected).
 */
export type SidedDuplex = Duplex & { readonly side?: 'server' | 'client' };

/** `SessionOptions` with the role optional: it defaults to the duplex's `side`. */
export type OpenSessionOptions = Omit<SessionOptions, 'role'> & { role?: SessionOptions['role'] };

/**
 * A yamux session over `duplex`, in the role its end of the connection implies: over a vchan the
 * server side (the one that offered the channel) is the yamux server and the client side the
 * yamux client, so the two ends always take different roles without agreeing on anything else.
 * A duplex without a `side` (a socket) needs `options.role`; an explicit role wins over the side.
 */
export function openSession(duplex: SidedDuplex, options: OpenSessionOptions = {}): Session {
  const role = options.role ?? duplex.side;
  if (role !== 'client' && role !== 'server')
    throw invalidArgument(
      `openSession needs a role: pass { role: 'client' } or { role: 'server' } (the two ends take different roles), or a duplex with a side, such as a vchan; got ${String(role)}.`,
    );
  return new Session(duplex, { ...options, role });
}
