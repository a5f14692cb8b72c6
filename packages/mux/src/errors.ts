import { XenVchanError } from '@xen-vchan/native';

/** The peer broke the yamux protocol: the session sends go-away (protocol error) and ends. */
export function protocolError(what: string): XenVchanError {
  return new XenVchanError(
    'EPROTO',
    `yamux protocol violation by the peer: ${what}. The session sent go-away (protocol error) and closed with every stream on it. Is the other end speaking yamux version 0, in the other role (client or server)?`,
  );
}

/** The session ended under a stream that was not done: the stream's error names why. */
export function streamCutShort(id: number, cause: Error | null): XenVchanError {
  const code = cause instanceof XenVchanError ? cause.code : 'ECONNRESET';
  const why = cause ? cause.message : 'the transport under the session closed';
  return new XenVchanError(code, `Stream ${id} was cut short because its session ended: ${why}`, cause ? { cause } : undefined);
}

export function sessionClosed(what: string, cause: Error | null): XenVchanError {
  return new XenVchanError(
    'EPIPE',
    `${what}: the yamux session is closed${cause ? ` (${cause.message})` : ''}. Start a new session over a new transport.`,
    cause ? { cause } : undefined,
  );
}
