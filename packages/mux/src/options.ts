import { invalidArgument } from '@xen-vchan/native';
import { INITIAL_WINDOW, MAX_UINT32 } from './frame.js';

export interface SessionOptions {
  /** 'client' opens odd stream ids, 'server' even ones; the two ends must take different roles. */
  role: 'client' | 'server';
  /** Streams open at once, both directions together (default 1024). */
  maxStreams?: number;
  /** Streams the peer opened that wait to be accepted (default 256, as Go's yamux). */
  acceptBacklog?: number;
  /** The receive window of each stream, in bytes: at least 256 KiB (the default), at most 16 MiB. */
  maxStreamWindow?: number;
  /** How long `ping()` and the keepalive wait for the answer, in ms (default 10 000). */
  pingTimeout?: number;
  /** Ping the peer every so many ms and fail the session with ETIMEDOUT when it stops answering (default 0: off). */
  keepAliveInterval?: number;
}

export type ResolvedOptions = Required<SessionOptions>;

const MAX_WINDOW = 16 * 1024 * 1024;
const MAX_TIMER_MS = 2 ** 31 - 1;

function integer(value: unknown, name: string, min: number, max: number, fallback: number, unit = ''): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
    throw invalidArgument(`The option ${name} must be an integer from ${min} to ${max}${unit}; got ${String(value)}.`);
  return value;
}

export function resolveOptions(options: SessionOptions): ResolvedOptions {
  if (options?.role !== 'client' && options?.role !== 'server')
    throw invalidArgument(
      `The option role must be 'client' or 'server' (the two ends of a session take different roles); got ${String(options?.role)}.`,
    );
  return {
    role: options.role,
    maxStreams: integer(options.maxStreams, 'maxStreams', 1, MAX_UINT32, 1024),
    acceptBacklog: integer(options.acceptBacklog, 'acceptBacklog', 1, MAX_UINT32, 256),
    maxStreamWindow: integer(options.maxStreamWindow, 'maxStreamWindow', INITIAL_WINDOW, MAX_WINDOW, INITIAL_WINDOW, ' bytes'),
    pingTimeout: integer(options.pingTimeout, 'pingTimeout', 1, MAX_TIMER_MS, 10_000, ' ms'),
    keepAliveInterval: integer(options.keepAliveInterval, 'keepAliveInterval', 0, MAX_TIMER_MS, 0, ' ms'),
  };
}
