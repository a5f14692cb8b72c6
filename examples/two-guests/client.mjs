#!/usr/bin/env node
// The other half of the two-guests example (see server.mjs): connects to the server in domain
// <server-domid>, waiting up to a minute for it to publish, and swaps 4 MiB each way with it.
//
//   node client.mjs <server-domid> [name]
//
// Needs /dev/xen/evtchn and /dev/xen/gntdev, and XenStore (see docs/real-xen.md).
import { connect } from '@xen-vchan/vchan';
import { exchange, report } from './exchange.mjs';

const [serverArg, name = 'two-guests'] = process.argv.slice(2);
const server = Number(serverArg);
if (serverArg === undefined || !Number.isInteger(server)) {
  console.error('usage: node client.mjs <server-domid> [name]');
  process.exit(2);
}

try {
  const channel = await connect({ domid: server, name, timeout: 60_000 });
  console.log(`client: connected to domain ${server}'s server "${name}"`);
  report('client', server, await exchange(channel));
} catch (error) {
  const { code, message } = /** @type {Error & { code?: string }} */ (error);
  console.error(`client: FAILED: ${code ?? ''} ${message}`);
  process.exitCode = 1;
}
