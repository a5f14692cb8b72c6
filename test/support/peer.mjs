// A separate process acting as another domain, driven over IPC (see agent.mjs and
// vchan-agent.mjs). Plain JavaScript so that scripts run by node (soak, fuzz) can use it too.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** @typedef {'devices' | 'vchan' | 'hostile'} PeerKind */
/** @typedef {{ code: number | null; signal: NodeJS.Signals | null }} PeerExit */
/**
 * What an agent sends back (see agent-loop.mjs): the answer to call `seq`, or the error it threw.
 * The first message, without `seq`, says the agent is ready.
 * @typedef {{ seq?: number; result?: unknown; error?: { message: string; code?: string } }} AgentReply
 */

const agents = {
  devices: fileURLToPath(new URL('./agent.mjs', import.meta.url)),
  vchan: fileURLToPath(new URL('./vchan-agent.mjs', import.meta.url)),
  hostile: fileURLToPath(new URL('../fuzz/hostile-peer.mjs', import.meta.url)),
};

export class PeerError extends Error {
  /**
   * @param {string} message
   * @param {string | undefined} code
   */
  constructor(message, code) {
    super(message);
    /** @readonly */
    this.code = code;
  }
}

/** A separate process acting as another domain, driven over IPC. */
export class Peer {
  #seq = 0;
  /** @type {Map<number, { resolve: (result: unknown) => void; reject: (error: Error) => void }>} */
  #pending = new Map();

  /**
   * @param {import('node:child_process').ChildProcess} child
   * @param {number} domid
   */
  constructor(child, domid) {
    /** @readonly */
    this.child = child;
    /** @readonly */
    this.domid = domid;
    /** @readonly @type {Promise<PeerExit>} */
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    child.on('message', (/** @type {AgentReply} */ message) => {
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

  /**
   * Starts a peer acting as `domid` (on Xen every process is dom0 and the id is only a label).
   * @param {number} domid
   * @param {PeerKind} [kind]
   * @returns {Promise<Peer>}
   */
  static async start(domid, kind = 'devices') {
    const env = { ...process.env };
    const backend = env.XEN_VCHAN_BACKEND ?? 'auto';
    if (backend !== 'xen') env.XEN_VCHAN_SIM_DOMID = String(domid);
    const child = fork(agents[kind], [], { env, serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const peer = new Peer(child, domid);
    await new Promise((resolve, reject) => {
      child.once('message', () => resolve(undefined));
      child.once('exit', (code, signal) => reject(new Error(`peer exited before it was ready (${code ?? signal})`)));
    });
    return peer;
  }

  /**
   * Runs `command` in the peer; `T` is what the caller knows the command answers.
   * @template [T=unknown]
   * @param {string} command
   * @param {Record<string, unknown>} [args]
   * @returns {Promise<T>}
   */
  call(command, args = {}) {
    const seq = ++this.#seq;
    return new Promise((resolve, reject) => {
      // The answer crossed a process boundary: it is whatever the command returns, taken on trust.
      this.#pending.set(seq, { resolve: /** @type {(result: unknown) => void} */ (resolve), reject });
      this.child.send({ seq, command, args });
    });
  }

  /**
   * @param {NodeJS.Signals} [signal]
   * @returns {Promise<PeerExit>}
   */
  kill(signal = 'SIGKILL') {
    this.child.kill(signal);
    return this.exited;
  }

  /** @returns {Promise<void>} */
  async stop() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }
}
