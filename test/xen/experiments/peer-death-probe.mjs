// The survivor's side of the peer-death experiment (peer-death.experiment.ts runs it in a guest;
// see docs/peer-death-research.md). It watches, from an unprivileged domain, the signals that
// could tell it that the domain of its vchan peer was destroyed, and prints one line per change:
//
//   PDPROBE {"tag":..,"t":<Date.now()>,"sig":<signal>,"v":<value>}
//
// signals (polled every --interval ms unless said otherwise):
//   grantCopy   client role: status of a 1-byte IOCTL_GNTDEV_GRANT_COPY from the server's ring-ref
//               (the control page, offset 0) into local memory: 0 okay, -2 GNTST_bad_domain
//   bind0       IOCTL_EVTCHN_BIND_INTERDOMAIN(peer, port 0), error code: EINVAL (peer exists,
//               port 0 is reserved) or ESRCH (no such domain). The public bindInterdomain refuses
//               port 0 before asking the kernel, so this goes to the evtchn addon with the public
//               handle's fd (the call EventChannel.domainExists makes since commit 9c53897)
//   bindMax     the public evtchn bindInterdomain(peer, 0x7fffffff): the same question through the
//               public API, with a port that can never be valid (EINVAL) instead of port 0; it
//               costs more (two errors built per call), so it is polled only every 50th tick
//   watch       one line per event (not polled) of the XenStore watches: in the client role on
//               exactly /local/domain/<peer>/data/vchan/<self>/<name>/event-channel (with whether
//               the node is still readable), in both roles on @releaseDomain
//
// usage: node peer-death-probe.mjs --role client|server --peer DOMID --tag TAG [--name NAME]
//          [--interval MS] [--bench N] [--offer] [--take-offer]
//   --name NAME      (client) the vchan to follow: /local/domain/<peer>/data/vchan/<self>/NAME
//   --offer          (server) offer the peer a port (bindUnbound) and one gntalloc page, at
//                    data/pdprobe/offer = "<port> <gref>" readable by the peer, and print
//                    `offerEvent` when the peer notifies that port
//   --take-offer     (client) map the offered page (gntdev, so the grant is pinned as a vchan
//                    client's would be; it is the grant-copy source when there is no --name), and
//                    after the bench bind the offered port on the same evtchn handle and notify it:
//                    failed binds must leave the handle usable
//   --bench N        time N calls of each probe and of fs.statSync('/'), interleaved in 5 rounds,
//                    and print a `bench` line (µs per call, ratio to statSync)
// It also follows data/pdclock in our home: dom0 writes `ping`, we write `pong` = "<ping>
// <Date.now()>" (so dom0 can bound the clock offset); dom0 writes `mark` just before it destroys
// the peer, and we print a `mark` line with our time. Runs until killed.
import { statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { openEventChannel } from '@xen-vchan/evtchn';
import { openGntalloc } from '@xen-vchan/gntalloc';
import { openGntdev } from '@xen-vchan/gntdev';
import { openXenStore } from '@xen-vchan/xenstore';

const { values } = parseArgs({
  options: {
    role: { type: 'string' },
    peer: { type: 'string' },
    name: { type: 'string' },
    tag: { type: 'string', default: 'probe' },
    interval: { type: 'string', default: '20' },
    bench: { type: 'string' },
    offer: { type: 'boolean', default: false },
    'take-offer': { type: 'boolean', default: false },
  },
});
const role = values.role;
const peer = Number(values.peer);
if ((role !== 'client' && role !== 'server') || !Number.isInteger(peer)) {
  console.error(
    'usage: peer-death-probe.mjs --role client|server --peer DOMID --tag TAG [--name NAME] [--interval MS] [--bench N] [--offer] [--take-offer]',
  );
  process.exit(2);
}
const tag = values.tag;
const MAX_PORT = 0x7fffffff;

/**
 * @param {string} sig
 * @param {unknown} v
 * @param {Record<string, unknown>} [more]
 */
function emit(sig, v, more = {}) {
  console.log(`PDPROBE ${JSON.stringify({ tag, t: Date.now(), sig, v, ...more })}`);
}
const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

const xenstore = await openXenStore();
const self = await xenstore.ownDomid();
const events = openEventChannel();
events.on('error', (error) => emit('evtchnError', error.message));
const gntdev = openGntdev();
/** The code of a failed call (its errno name), else its message. @param {unknown} error */
const codeOf = (error) => {
  const { code, message } = /** @type {{ code?: string, message?: string }} */ (error);
  return code ?? message ?? String(error);
};
// The raw addon of @xen-vchan/evtchn, for the port-0 bind that the public API refuses.
const require = createRequire(import.meta.url);
/** @type {{ bindInterdomain(fd: number, domid: number, port: number): number, unbind(fd: number, port: number): void }} */
const raw = require(join(dirname(dirname(require.resolve('@xen-vchan/evtchn'))), 'build/Release/xen_evtchn.node'));
// The Xen backend keeps its file descriptor in a private field.
const handleFd = /** @type {{ fd?: unknown }} */ (/** @type {unknown} */ (events)).fd;
if (typeof handleFd !== 'number') throw new Error('the evtchn handle has no fd (not the Xen backend?)');
const fd = handleFd;

function bind0() {
  try {
    raw.unbind(fd, raw.bindInterdomain(fd, peer, 0));
    return 'BOUND';
  } catch (error) {
    return codeOf(error);
  }
}
function bindMax() {
  try {
    events.unbind(events.bindInterdomain(peer, MAX_PORT));
    return 'BOUND';
  } catch (error) {
    return codeOf(error);
  }
}

/** @param {string} path */
async function readOrCode(path) {
  try {
    return `value ${await xenstore.read(path)}`;
  } catch (error) {
    return codeOf(error);
  }
}

/**
 * @param {string} path
 * @returns {Promise<string>}
 */
async function waitForNode(path, timeout = 120_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return await xenstore.read(path);
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`${path}: ${codeOf(error)} for ${timeout} ms`);
      await sleep(100);
    }
  }
}

/**
 * A 1-byte grant copy from the peer's grant `ref` (offset 0) into local memory: the GNTST_* status.
 * @param {number} ref
 * @returns {() => number | string}
 */
function copier(ref) {
  const segments = [{ source: { domid: peer, ref, offset: 0 }, dest: new Uint8Array(1), length: 1 }];
  return () => {
    try {
      return gntdev.grantCopy(segments)[0];
    } catch (error) {
      return codeOf(error);
    }
  };
}

// The client copies from the server's control page; the grant is pinned by our stream's mapping.
const channelPath = values.name === undefined ? null : `/local/domain/${peer}/data/vchan/${self}/${values.name}`;
/** @type {(() => number | string) | null} */
let copy = null;
if (role === 'client' && channelPath) {
  const ref = Number(await waitForNode(`${channelPath}/ring-ref`));
  copy = copier(ref);
  emit('ringRef', ref);
}

const offerPath = `/local/domain/${role === 'server' ? self : peer}/data/pdprobe/offer`;
if (values.offer) {
  const port = events.bindUnbound(peer);
  const page = openGntalloc().share(peer, 1);
  events.on('event', (p) => {
    if (p !== port) return;
    emit('offerEvent', port);
    events.unmask(p);
  });
  await xenstore.write(offerPath, `${port} ${page.refs[0]}`);
  await xenstore.setPermissions(offerPath, [
    { domid: self, access: 'none' },
    { domid: peer, access: 'read' },
  ]);
  emit('offered', { port, gref: page.refs[0] });
}
/** @type {{ port: number, gref: number, mapping: unknown } | null} */
let offered = null;
if (values['take-offer']) {
  const [port, gref] = (await waitForNode(offerPath)).split(' ').map(Number);
  offered = { port, gref, mapping: gntdev.map(peer, [gref]) };
  copy ??= copier(gref);
  emit('tookOffer', { port, gref });
}

if (values.bench) {
  const calls = Number(values.bench);
  const rounds = 5;
  const per = Math.ceil(calls / rounds);
  /** @type {Record<string, () => unknown>} */
  const probes = { stat: () => statSync('/'), bind0, bindMax };
  if (copy) probes.grantCopy = copy;
  /** @type {Record<string, bigint>} */
  const total = Object.fromEntries(Object.keys(probes).map((name) => [name, 0n]));
  /** @type {Record<string, Record<string, number>>} */
  const answers = Object.fromEntries(Object.keys(probes).map((name) => [name, {}]));
  for (let round = 0; round < rounds; round++) {
    for (const [name, probe] of Object.entries(probes)) {
      const seen = answers[name];
      const started = process.hrtime.bigint();
      for (let i = 0; i < per; i++) {
        const answer = String(probe());
        if (name !== 'stat') seen[answer] = (seen[answer] ?? 0) + 1;
      }
      total[name] += process.hrtime.bigint() - started;
    }
  }
  /** @type {Record<string, number>} */
  const us = Object.fromEntries(Object.entries(total).map(([name, ns]) => [name, Number(ns) / 1000 / (per * rounds)]));
  emit('bench', us, {
    calls: per * rounds,
    answers,
    ratioToStat: Object.fromEntries(Object.entries(us).map(([name, value]) => [name, value / us.stat])),
  });
}

if (offered) {
  const remote = offered.port;
  try {
    const local = events.bindInterdomain(peer, remote);
    events.notify(local);
    emit('realBind', 'ok', { remote, local });
    // Keep it bound a moment (the peer hears the notify either way), then let it go.
    setTimeout(() => events.unbind(local), 2000);
  } catch (error) {
    emit('realBind', codeOf(error), { remote });
  }
}

// Watches: every event is printed, with what a read of the node says at that moment.
/**
 * @param {string} path
 * @param {boolean} read
 */
async function follow(path, read) {
  const watch = await xenstore.watch(path);
  let count = 0;
  for await (const event of watch) {
    count += 1;
    emit('watch', event.path, { watch: path, n: count, ...(read ? { read: await readOrCode(event.path) } : {}) });
  }
}
if (role === 'client' && channelPath) void follow(`${channelPath}/event-channel`, true);
void follow('@releaseDomain', false);

// dom0's clock pings and its mark just before the destroy. The watch is registered before the
// `ready` line, and every event (the first one names the watched path itself) rereads both nodes.
const clock = `/local/domain/${self}/data/pdclock`;
const clockWatch = await xenstore.watch(clock);
void (async () => {
  let lastPing = null;
  let lastMark = null;
  for await (const _event of clockWatch) {
    const at = Date.now();
    const [ping, mark] = await Promise.all([
      xenstore.read(`${clock}/ping`).catch(() => null),
      xenstore.read(`${clock}/mark`).catch(() => null),
    ]);
    if (mark !== null && mark !== lastMark) emit('mark', mark, { at });
    lastMark = mark;
    if (ping !== null && ping !== lastPing) {
      lastPing = ping;
      await xenstore.write(`${clock}/pong`, `${ping} ${at}`);
    }
  }
})();

/** @type {Map<string, string>} */
const last = new Map();
/**
 * @param {string} sig
 * @param {unknown} value
 */
function observe(sig, value) {
  const key = JSON.stringify(value);
  if (last.get(sig) === key) return;
  last.set(sig, key);
  emit(sig, value);
}
let tick = 0;
function poll() {
  if (copy) observe('grantCopy', copy());
  observe('bind0', bind0());
  if (tick++ % 50 === 0) observe('bindMax', bindMax());
}
poll();
emit('ready', { self, peer, role, interval: Number(values.interval) });
setInterval(poll, Number(values.interval));
process.on('SIGTERM', () => {
  emit('end', null);
  process.exit(0);
});
