#!/usr/bin/env node
// Soak: thousands of connect-transfer-close cycles between this process (server) and a peer
// process (client), random sizes both ways, checksummed. Reports this process's RSS, heap and
// open fds and the simulation's grants, ports and clients at the start and the end, and fails if
// they did not come back flat.
//   node test/soak/soak.mjs [--cycles 1000] [--seed 1] [--json]
import { readdirSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createServer } from '@xen-vchan/vchan';
import { SimConnection } from '@xen-vchan/sim';
import { Peer } from '../support/peer.mjs';
import { random, receiveCount, sendSeeded } from '../support/stream-data.mjs';

/** @typedef {Awaited<ReturnType<typeof receiveCount>>} Received what the peer's receiveCount answers */

/**
 * @param {{ cycles: number; seed: number; log?: (line: string) => void }} options
 */
export async function soak({ cycles, seed, log = () => {} }) {
  const [SELF, PEER] = [1, 2];
  const next = random(seed);
  const peer = await Peer.start(PEER, 'vchan');
  const sim = SimConnection.open();
  const measure = () => {
    global.gc?.();
    const status = sim.call('status', {});
    return {
      rssMiB: +(process.memoryUsage().rss / 2 ** 20).toFixed(1),
      heapMiB: +(process.memoryUsage().heapUsed / 2 ** 20).toFixed(1),
      fds: readdirSync('/proc/self/fd').length,
      grants: status.grants.length,
      ports: status.ports.length,
      handles: status.clients.reduce((sum, client) => sum + client.handles, 0),
    };
  };
  const cycle = async (/** @type {number} */ index) => {
    const name = `soak-${index}`;
    const sizes = [0, 4096, 65536, 1 << 20];
    const server = createServer({ domid: PEER, name, simDomid: SELF, readMin: sizes[next() % 4], writeMin: sizes[next() % 4] });
    /** @type {Promise<import('@xen-vchan/vchan').Vchan>} */
    const connected = new Promise((resolve) => server.once('channel', resolve));
    await server.listen();
    const id = await peer.call('connect', { domid: SELF, name });
    const channel = await connected;
    const down = next() % 200_000;
    const up = next() % 200_000;
    const [sentDown, gotDown, sentUp, gotUp] = await Promise.all([
      sendSeeded(channel, { total: down, seed: index * 2 + 1, maxChunk: 1 + (next() % 70_000) }),
      /** @type {Promise<Received>} */ (peer.call('receiveCount', { id, bytes: down })),
      /** @type {Promise<string>} */ (
        peer.call('send', { id, total: up, seed: index * 2 + 2, maxChunk: 1 + (next() % 70_000), end: false })
      ),
      receiveCount(channel, up),
    ]);
    if (gotDown.bytes !== down || gotDown.sha256 !== sentDown || gotUp.bytes !== up || gotUp.sha256 !== sentUp) {
      throw new Error(`cycle ${index}: the data did not arrive intact`);
    }
    await peer.call('end', { id });
    await new Promise((resolve) => (channel.closed ? resolve(undefined) : channel.once('close', resolve)));
    await server.close();
  };
  // A few cycles first, so lazily created things (tables, caches, JIT) are in the baseline.
  for (let index = 0; index < Math.min(20, cycles); index++) await cycle(index);
  const start = measure();
  const started = performance.now();
  for (let index = 20; index < cycles + 20; index++) {
    await cycle(index);
    if ((index - 19) % 100 === 0) log(`  ${index - 19}/${cycles} cycles`);
  }
  await new Promise((resolve) => setTimeout(resolve, 100));
  const end = measure();
  await peer.stop();
  sim.close();
  const growth = { rssMiB: end.rssMiB - start.rssMiB, heapMiB: end.heapMiB - start.heapMiB };
  const flat =
    end.fds <= start.fds &&
    end.grants === start.grants &&
    end.ports === start.ports &&
    end.handles === start.handles &&
    growth.heapMiB < 8 &&
    growth.rssMiB < 48;
  return { cycles, seconds: +((performance.now() - started) / 1000).toFixed(1), start, end, growth, flat };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    args: process.argv.slice(2).filter((arg) => arg !== '--'),
    options: { cycles: { type: 'string', default: '1000' }, seed: { type: 'string', default: '1' }, json: { type: 'boolean' } },
  });
  const result = await soak({ cycles: Number(values.cycles), seed: Number(values.seed), log: (line) => console.error(line) });
  if (values.json) console.log(JSON.stringify(result, null, 2));
  else {
    console.log(`soak: ${result.cycles} connect-transfer-close cycles in ${result.seconds} s`);
    console.log(`        start: ${JSON.stringify(result.start)}`);
    console.log(`          end: ${JSON.stringify(result.end)}`);
    console.log(`  ${result.flat ? 'flat: nothing leaked' : 'NOT FLAT: something leaked'}`);
  }
  process.exit(result.flat ? 0 : 1);
}
