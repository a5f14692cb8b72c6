import { XenVchanError } from '@xen-vchan/native';

/** The peer broke the protocol (it controls the shared page); the channel cannot go on. */
export function protocolError(what: string, cause?: unknown): XenVchanError {
  return new XenVchanError(
    'EPROTO',
    `vchan protocol violation by the peer: ${what}. The channel was closed; nothing was read or written outside it.`,
    cause === undefined ? undefined : { cause },
  );
}
