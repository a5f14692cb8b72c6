import type { ChildProcess } from 'node:child_process';

export type PeerKind = 'devices' | 'vchan' | 'hostile';

export declare class PeerError extends Error {
  readonly code: string | undefined;
}

/** A separate process acting as another domain, driven over IPC. */
export declare class Peer {
  readonly child: ChildProcess;
  readonly domid: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  static start(domid: number, kind?: PeerKind): Promise<Peer>;
  call<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T>;
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): Promise<void>;
}
