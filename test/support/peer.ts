import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { backend } from './domains.js';

/** Device peers (agent.mjs) by default; vchan peers run vchan-agent.mjs. */
export type PeerKind = 'devices' | 'vchan';
const agents: Record<PeerKind, string> = {
  devices: fileURLToPath(new URL('./agent.mjs', import.meta.url)),
  vchan: fileURLToPath(new URL('./vchan-agent.mjs', import.meta.url)),
};

export class PeerError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

/** A separate process acting as another domain, driven over IPC (see agent.mjs). */
export class Peer {
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly child: ChildProcess,
    readonly domid: number,
  ) {
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    child.on('message', (message: { seq?: number; result?: unknown; error?: { message: string; code?: string } }) => {
      if (message.seq === undefined) return;
      const waiter = this.pending.get(message.seq);
      this.pending.delete(message.seq);
      if (message.error) waiter?.reject(new PeerError(message.error.message, message.error.code));
      else waiter?.resolve(message.result);
    });
    child.on('exit', () => {
      for (const waiter of this.pending.values()) waiter.reject(new Error('peer exited'));
      this.pending.clear();
    });
  }

  /** Starts a peer acting as `domid` (on Xen every process is dom0 and the id is only a label). */
  static async start(domid: number, kind: PeerKind = 'devices'): Promise<Peer> {
    const env = { ...process.env };
    if (backend === 'sim') env.XEN_VCHAN_SIM_DOMID = String(domid);
    const child = fork(agents[kind], [], { env, serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const peer = new Peer(child, domid);
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code, signal) => reject(new Error(`peer exited before it was ready (${code ?? signal})`)));
    });
    return peer;
  }

  call<T = unknown>(command: string, args: Record<string, unknown> = {}): Promise<T> {
    const seq = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(seq, { resolve: resolve as (value: unknown) => void, reject });
      this.child.send({ seq, command, args });
    });
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.child.kill(signal);
    return this.exited;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }
}
