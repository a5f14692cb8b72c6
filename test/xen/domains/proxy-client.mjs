// The guest's half of the CLI proxy test: runs the real `vchan proxy --no-mux --role client --listen --once`
// (a Unix socket here, a vchan to --domain there), connects to its socket, sends --bytes of
// seeded data and expects the same bytes back (dom0 echoes them at the other end), then closes
// and waits for the proxy to exit. Prints `RESULT {"bytes":..,"echoed":..,"same":..,"proxyExit":..}`.
//
//   node proxy-client.mjs --domain 0 --path /local/domain/0/data/vchan/1/p --bytes 262144
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { domain: { type: 'string' }, path: { type: 'string' }, bytes: { type: 'string', default: '262144' } },
});
if (values.domain === undefined || values.path === undefined) {
  console.error('usage: proxy-client.mjs --domain DOMID --path XENSTORE_PATH [--bytes N]');
  process.exit(2);
}
const total = Number(values.bytes);
const socketPath = `/tmp/vchan-proxy-${process.pid}.sock`;
const vchanBin = join(import.meta.dirname, '../../../packages/cli/bin/vchan.js');
const proxy = spawn(
  process.execPath,
  [
    vchanBin,
    'proxy',
    '--no-mux',
    '--role',
    'client',
    '--domain',
    values.domain,
    '--path',
    values.path,
    '--unix',
    socketPath,
    '--listen',
    '--once',
  ],
  {
    stdio: ['ignore', 'inherit', 'inherit'],
  },
);
/** @type {Promise<number | NodeJS.Signals | null>} */
const proxyExit = new Promise((resolve) => proxy.on('exit', (code, signal) => resolve(signal ?? code)));

let proxyGone = false;
void proxyExit.then(() => (proxyGone = true));
while (!existsSync(socketPath)) {
  if (proxyGone) {
    console.log(`RESULT ${JSON.stringify({ bytes: total, echoed: 0, same: false, proxyExit: await proxyExit })}`);
    process.exit(1);
  }
  await new Promise((resolve) => setTimeout(resolve, 50));
}
const socket = net.connect(socketPath);
await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));

const data = Buffer.alloc(total);
for (let i = 0; i < total; i++) data[i] = (i * 2654435761) >>> 24;
const sentHash = createHash('sha256').update(data).digest('hex');
const echoedHash = createHash('sha256');
let echoed = 0;
/** @type {Promise<void>} */
const allBack = new Promise((resolve) => {
  socket.on('data', (piece) => {
    echoedHash.update(piece);
    echoed += piece.length;
    if (echoed >= total) resolve();
  });
  socket.on('close', () => resolve());
});
socket.write(data);
await allBack;
socket.end();
const exit = await proxyExit;
console.log(`RESULT ${JSON.stringify({ bytes: total, echoed, same: echoedHash.digest('hex') === sentHash, proxyExit: exit })}`);
process.exitCode = echoed === total && exit === 0 ? 0 : 1;
