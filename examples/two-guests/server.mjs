#!/usr/bin/env node
// One half of the two-guests example: run it in the domain that serves, and client.mjs in the
// other. It publishes a vchan for one client domain, swaps 4 MiB each way with it, checksummed,
// and exits (status 0 when the client's bytes arrived intact).
//
//   node server.mjs <client-domid> [name]      in the server's domain
//   node client.mjs <server-domid> [name]      in the client's domain, in either order
//
// Needs /dev/xen/evtchn and /dev/xen/gntalloc, and XenStore (see docs/real-xen.md).
import { createServer } from '@xen-vchan/vchan';
import { exchange, report } from './exchange.mjs';

const [clientArg, name = 'two-guests'] = process.argv.slice(2);
const client = Number(clientArg);
if (clientArg === undefined || !Number.isInteger(client)) {
  console.error('usage: node server.mjs <client-domid> [name]');
  process.exit(2);
}

const server = createServer({ domid: client, name }, async (channel) => {
  console.log(`server: domain ${client} connected`);
  try {
    report('server', client, await exchange(channel));
  } catch (error) {
    console.error(`server: FAILED: ${/** @type {Error} */ (error).message}`);
    process.exitCode = 1;
  }
});
try {
  // Without `persist`, the server closes with its one channel, so the process then ends.
  await server.listen();
  console.log(`server: waiting for domain ${client} at ${server.path}`);
} catch (error) {
  const { code, message } = /** @type {Error & { code?: string }} */ (error);
  console.error(`server: FAILED: ${code ?? ''} ${message}`);
  process.exitCode = 1;
}
