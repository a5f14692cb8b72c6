#!/usr/bin/env node
// RPC between two domains: domain 1 serves a small key-value service over a vchan, domain 2
// calls it, including a call that fails on the server and one that times out.
// Runs on the simulation (XEN_VCHAN_BACKEND=xen to run it in a Xen dom0, both ends in dom0).
//
// Between two real domains, run each half in its own domain:
//   node examples/rpc.mjs service --caller 5            (in the service's domain, e.g. dom0)
//   node examples/rpc.mjs caller --service 0 --name kv  (in domain 5)
// The service serves one caller and exits when that caller is done.
import { fork } from 'node:child_process';
import { parseArgs } from 'node:util';
import { connect, createServer, RpcPeer } from '@xen-vchan/vchan';
import { openXenStore } from '@xen-vchan/xenstore';

const onXen = process.env.XEN_VCHAN_BACKEND === 'xen';
const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { caller: { type: 'string' }, service: { type: 'string' }, name: { type: 'string' } },
});
const role = positionals[0] ?? 'both';
/** On Xen this domain's own id (the two halves may run in different domains). */
async function ownDomid() {
  const xenstore = await openXenStore();
  try {
    return await xenstore.ownDomid();
  } finally {
    xenstore.close();
  }
}
const self = onXen && role !== 'both' ? await ownDomid() : 0;
const [SERVICE, CALLER] = !onXen
  ? [1, 2]
  : role === 'service'
    ? [self, Number(values.caller ?? 0)]
    : role === 'caller'
      ? [Number(values.service ?? 0), self]
      : [0, 0];
const NAME = values.name ?? (role === 'both' ? `kv-${process.pid}` : 'kv');

/** @param {{ forkCaller: boolean }} options */
async function service({ forkCaller }) {
  /** @type {Map<string, unknown>} */
  const store = new Map();
  const server = createServer({ domid: CALLER, name: NAME, simDomid: SERVICE }, (channel) => {
    new RpcPeer(channel, {
      handlers: {
        set: ({ key, value }) => void store.set(key, value),
        get: ({ key }) => {
          if (!store.has(key)) throw Object.assign(new Error(`no key ${key}`), { code: 'ENOENT' });
          return store.get(key);
        },
        keys: () => [...store.keys()],
        slow: ({ ms }, { signal }) =>
          new Promise((resolve, reject) => {
            const timer = setTimeout(resolve, ms, 'done');
            signal.addEventListener('abort', () => {
              clearTimeout(timer);
              reject(signal.reason);
            });
          }),
      },
    });
  });
  await server.listen();
  console.log(`[domain ${SERVICE}] serving "${NAME}" at ${server.path}`);
  if (!forkCaller) {
    // Without persist the server closes with its one channel, once the caller has gone.
    await new Promise((resolve) => server.once('close', () => resolve(undefined)));
    return;
  }
  const caller = fork(new URL(import.meta.url), ['caller', '--name', NAME], {
    env: { ...process.env, XEN_VCHAN_SIM_DOMID: String(CALLER) },
  });
  /** @type {number | null} */
  const code = await new Promise((resolve) => caller.on('exit', resolve));
  await server.close();
  process.exitCode = code ?? 1; // null: the caller was killed by a signal
}

/** @param {string} name */
async function caller(name) {
  const rpc = new RpcPeer(await connect({ domid: SERVICE, name, simDomid: CALLER, timeout: 60_000 }));
  const log = (/** @type {string} */ text) => console.log(`[domain ${CALLER}] ${text}`);
  await Promise.all([rpc.call('set', { key: 'colour', value: 'teal' }), rpc.call('set', { key: 'size', value: 42 })]);
  log(`keys: ${JSON.stringify(await rpc.call('keys'))}`);
  log(`get colour: ${await rpc.call('get', { key: 'colour' })}`);
  await rpc.call('get', { key: 'missing' }).catch((error) => log(`get missing: ${error.name} ${error.code}: ${error.message}`));
  await rpc.call('slow', { ms: 5000 }, { timeout: 100 }).catch((error) => log(`slow: ${error.code}: ${error.message}`));
  const started = performance.now();
  const calls = 2000;
  await Promise.all(Array.from({ length: calls }, (_, i) => rpc.call('get', { key: i % 2 ? 'colour' : 'size' })));
  const seconds = (performance.now() - started) / 1000;
  log(`${calls} concurrent calls in ${(seconds * 1000).toFixed(0)} ms (${Math.round(calls / seconds)} calls/s)`);
  rpc.close();
}

if (role === 'caller') await caller(NAME);
else if (role === 'service') await service({ forkCaller: false });
else await service({ forkCaller: true });
