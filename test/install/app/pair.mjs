// A user's JavaScript program: the install test runs it in a new app whose packages came from
// the tarballs. Domain 1 serves and sends 4 MiB; a child process as domain 2 connects and reads
// to the end (a vchan has no half-close, so one direction). It prints one line of JSON with the
// checksums of what was sent and what arrived.
import { fork } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { connect, createServer } from '@xen-vchan/vchan';

const [SERVER, CLIENT] = [1, 2];

const sha256 = (/** @type {Buffer} */ data) => createHash('sha256').update(data).digest('hex');

if (process.argv[2] === '--client') {
  const channel = await connect({ domid: SERVER, name: process.argv[3], simDomid: CLIENT });
  const hash = createHash('sha256');
  for await (const chunk of channel) hash.update(chunk);
  process.send?.({ received: hash.digest('hex') });
} else {
  const name = `install-${process.pid}`;
  const payload = randomBytes(4 << 20);
  const server = createServer({ domid: CLIENT, name, simDomid: SERVER });
  /** @type {Promise<import('@xen-vchan/vchan').Vchan>} */
  const connected = new Promise((resolve) => server.once('channel', resolve));
  await server.listen();
  const child = fork(new URL(import.meta.url), ['--client', name], { env: { ...process.env, XEN_VCHAN_SIM_DOMID: String(CLIENT) } });
  /** @type {Promise<{ received: string }>} */
  const report = new Promise((resolve, reject) => {
    child.once('message', (message) => resolve(/** @type {{ received: string }} */ (message)));
    child.once('exit', (code) => reject(new Error(`the client domain exited with ${code} before reporting`)));
  });
  const channel = await connected;
  channel.end(payload);
  const { received } = await report;
  await server.close();
  console.log(JSON.stringify({ sent: sha256(payload), received }));
}
