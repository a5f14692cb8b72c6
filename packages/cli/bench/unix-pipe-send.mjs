// The sending half of the CLI pipeline's Unix-socket anchor (`vchan bench`): like
// `vchan listen -s < file`, it listens (here on the Unix socket argv[2]), takes one connection,
// copies stdin into it with stream.pipeline, and exits once everything is written.
import net from 'node:net';
import { pipeline } from 'node:stream/promises';

const socketPath = process.argv[2];
if (!socketPath) {
  process.stderr.write('usage: node unix-pipe-send.mjs SOCKET < file\n');
  process.exit(2);
}
const server = net.createServer();
server.listen(socketPath);
const [connection] = await new Promise((resolve, reject) => {
  server.once('connection', (socket) => resolve([socket]));
  server.once('error', reject);
});
server.close();
await pipeline(process.stdin, connection);
