// The receiving half of the CLI pipeline's Unix-socket anchor (`vchan bench`): like
// `vchan connect -r > out`, it connects to the Unix socket argv[2] (waiting for it to appear, as
// connect waits for the server's XenStore entry) and copies what arrives to stdout with
// stream.pipeline, exiting when the sender ends.
import net from 'node:net';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';

const socketPath = process.argv[2];
if (!socketPath) {
  process.stderr.write('usage: node unix-pipe-receive.mjs SOCKET > out\n');
  process.exit(2);
}
/** @returns {Promise<net.Socket>} */
async function connect() {
  for (let waited = 0; ; waited += 5) {
    try {
      return await new Promise((resolve, reject) => {
        const socket = net.connect(socketPath, () => resolve(socket));
        socket.once('error', reject);
      });
    } catch (error) {
      const code = /** @type {NodeJS.ErrnoException} */ (error).code;
      if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || waited > 10_000) throw error;
      await sleep(5);
    }
  }
}
await pipeline(await connect(), process.stdout);
