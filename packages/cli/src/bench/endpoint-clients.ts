/**
 * How the sweep reaches the two ends of its measurements: a forked measurement process
 * (worker.ts) driven over Node's IPC channel, or `vchan bench --serve` in another domain, driven
 * over a control vchan. Both answer the same requests (endpoint.ts).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { XenVchanError } from '@xen-vchan/native';
import type { RpcPeer } from '@xen-vchan/vchan';

/** A process that plays one end of measurements. */
export interface EndpointClient {
  call<T>(op: string, args: unknown): Promise<T>;
  close(): Promise<void>;
}

interface WorkerReply {
  id: number;
  result?: unknown;
  error?: { message: string; code?: string };
}

/** A forked worker.js, driven over IPC. */
export class ForkedEndpoint implements EndpointClient {
  private readonly child: ChildProcess;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  private exited: Error | null = null;

  constructor(
    readonly label: string,
    env: NodeJS.ProcessEnv,
  ) {
    this.child = fork(new URL('./worker.js', import.meta.url), [], { env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (reply: WorkerReply) => {
      const waiter = this.pending.get(reply.id);
      if (!waiter) return;
      this.pending.delete(reply.id);
      if (reply.error) waiter.reject(new XenVchanError(reply.error.code ?? 'ECHILD', reply.error.message));
      else waiter.resolve(reply.result);
    });
    this.child.on('exit', (code, signal) =>
      this.gone(processFailed(`the measurement process ${label} exited (${signal ?? `code ${code}`})`)),
    );
    this.child.on('error', (error) => this.gone(processFailed(`the measurement process ${label} failed: ${error.message}`)));
  }

  private gone(error: Error): void {
    this.exited ??= error;
    for (const waiter of this.pending.values()) waiter.reject(this.exited);
    this.pending.clear();
  }

  call<T>(op: string, args: unknown): Promise<T> {
    if (this.exited) return Promise.reject(this.exited);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.child.send({ id, op, args }, (error) => {
        if (error) this.gone(processFailed(`the measurement process ${this.label} cannot be reached: ${error.message}`));
      });
    });
  }

  async close(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    try {
      await this.call('exit', null).catch(() => {});
      await exited;
    } finally {
      clearTimeout(timer);
    }
  }

  kill(): void {
    if (this.exited) return;
    this.child.kill('SIGKILL');
    this.gone(processFailed(`the measurement process ${this.label} was stopped`));
  }
}

/** `vchan bench --serve` in another domain, over a control vchan. */
export class RemoteEndpoint implements EndpointClient {
  constructor(private readonly rpc: RpcPeer) {}

  call<T>(op: string, args: unknown): Promise<T> {
    return this.rpc.call<T>(op, args, { timeout: 0 });
  }

  async close(): Promise<void> {
    this.rpc.close();
  }
}

/** A measurement process exited, failed or could not be reached (or failed without a code of its own). */
function processFailed(message: string): XenVchanError {
  return new XenVchanError('ECHILD', message);
}
