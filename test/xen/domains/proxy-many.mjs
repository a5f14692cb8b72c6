// The guest's half of the two-domain `vchan proxy --mux` check: runs the real
// `vchan proxy --role client --listen` (a TCP port here, one vchan to --domain there), makes
// --connections connections through it at once, each sending --bytes and reading the echo back
// (dom0's serving proxy connects each stream to an echo service), then stops the proxy.
// Prints `RESULT {"connections":..,"intact":..,"proxyExit":..}`.
//
//   node proxy-many.mjs --domain 0 --name many --connections 50 --bytes 1048576
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { echoMany } from '../../support/echo.mjs';

const { values } = parseArgs({
  options: {
    domain: { type: 'string' },
    name: { type: 'string' },
    connections: { type: 'string', default: '50' },
    bytes: { type: 'string', default: '1048576' },
    port: { type: 'string', default: '24680' },
  },
});
if (values.domain === undefined || values.name === undefined) {
  console.error('usage: proxy-many.mjs --domain DOMID --name NAME [--connections N] [--bytes N] [--port TCP]');
  process.exit(2);
}
const connections = Number(values.connections);
const bytes = Number(values.bytes);
const vchanBin = join(import.meta.dirname, '../../../packages/cli/bin/vchan.js');
const proxy = spawn(
  process.execPath,
  [vchanBin, 'proxy', '--role', 'client', '--domain', values.domain, '--name', values.name, '--tcp', values.port, '--listen'],
  { stdio: ['ignore', 'inherit', 'pipe'] },
);
/** @type {Promise<number | NodeJS.Signals | null>} */
const proxyExit = new Promise((resolve) => proxy.on('exit', (code, signal) => resolve(signal ?? code)));
let errors = '';
/** @type {Promise<boolean>} true once it listens, false if it exits first */
const listening = new Promise((resolve) => {
  proxy.stderr.on('data', (/** @type {Buffer} */ text) => {
    errors += text;
    process.stderr.write(text);
    if (/listening/.test(errors)) resolve(true);
  });
  void proxyExit.then(() => resolve(false));
});
if (!(await listening)) {
  console.log(`RESULT ${JSON.stringify({ connections, intact: 0, proxyExit: await proxyExit })}`);
  process.exit(1);
}
const outcomes = await echoMany(Number(values.port), connections, bytes);
const intact = outcomes.filter((outcome) => outcome.same && outcome.echoed === bytes).length;
proxy.kill('SIGTERM');
console.log(`RESULT ${JSON.stringify({ connections, intact, proxyExit: await proxyExit })}`);
process.exitCode = intact === connections ? 0 : 1;
