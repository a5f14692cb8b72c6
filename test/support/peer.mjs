// A separate process acting as another domain, driven over IPC (see agent.mjs and
// vchan-agent.mjs). Plain JavaScript so that scripts run by node (soak, fuzz) can use it too.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const agents = {
  devices: fileURLToPath(new URL('./agent.mjs', import.meta.url)),
  vchan: fileURLToPath(new URL('./vchan-agent.mjs', import.meta.url)),
  hostile: fileURLToPath(new URL('../fuzz/hostile-peer.mjs', import.meta.url)),
};

export class PeerError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

export class Peer {
  #seq = 0;
  #pending = new Map();

  constructor(child, domid) {
    this.child = child;
    this.domid = domid;
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    child.on('message', (message) => {
      if (message.seq === undefined) return;
      const waiter = this.#pending.get(message.seq);
      this.#pending.delete(message.seq);
      if (message.error) waiter?.reject(new PeerError(message.error.message, message.error.code));
      else waiter?.resolve(message.result);
    });
    child.on('exit', () => {
      for (const waiter of this.#pending.values()) waiter.reject(new Error('peer exited'));
      this.#pending.clear();
    });
  }

  /** Starts a peer acting as `domid` (on Xen every process is dom0 and the id is only a label). */
  static async start(domid, kind = 'devices') {
    const env = { ...process.env };
    const backend = env.XEN_VCHAN_BACKEND ?? 'auto';
    if (backend !== 'xen') env.XEN_VCHAN_SIM_DOMID = String(domid);
    const child = fork(agents[kind], [], { env, serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const peer = new Peer(child, domid);
    await new Promise((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code, signal) => reject(new Error(`peer exited before it was ready (${code ?? signal})`)));
    });
    return peer;
  }

  call(command, args = {}) {
    const seq = ++this.#seq;
    return new Promise((resolve, reject) => {
      this.#pending.set(seq, { resolve, reject });
      this.child.send({ seq, command, args });
    });
  }

  kill(signal = 'SIGKILL') {
    this.child.kill(signal);
    return this.exited;
  }

  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }
}
