// Both ends of the proxy checks: a TCP echo service that half-closes, and a connection that
// sends random bytes through it and checks what comes back. Used on the simulation
// (test/cli/proxy-mux.test.ts) and in a Xen guest (test/xen/domains/proxy-many.mjs).
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';

/**
 * A TCP echo service on 127.0.0.1 that half-closes: it ends its side after the client's end.
 * @returns {Promise<{ service: net.Server; port: number }>}
 */
export async function echoService() {
  const service = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  await new Promise((resolve) => service.listen(0, '127.0.0.1', () => resolve(undefined)));
  return { service, port: /** @type {net.AddressInfo} */ (service.address()).port };
}

/**
 * Sends `bytes` of random data on a new connection to `port`, ends, and reads the echo to the end.
 * The first byte goes alone: once its echo is back, `arrived()` is called, and the rest waits for
 * `together`, so every connection of a batch is carried at once before any moves its data.
 * @param {number} port
 * @param {number} bytes
 * @param {() => void} [arrived]
 * @param {Promise<void>} [together]
 * @returns {Promise<{ echoed: number; same: boolean }>}
 */
export async function echoOnce(port, bytes, arrived = () => {}, together = Promise.resolve()) {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await once(socket, 'connect');
  const sent = createHash('sha256');
  const received = createHash('sha256');
  let echoed = 0;
  /** @type {Promise<void>} */
  const reading = new Promise((resolve, reject) => {
    socket.on('data', (/** @type {Buffer} */ chunk) => {
      received.update(chunk);
      echoed += chunk.length;
    });
    socket.on('end', () => resolve());
    socket.on('error', reject);
  });
  const first = randomBytes(1);
  sent.update(first);
  socket.write(first);
  while (echoed < 1) await Promise.race([once(socket, 'data'), reading]);
  arrived();
  await together;
  for (let written = 1; written < bytes; written += 64 * 1024) {
    const chunk = randomBytes(Math.min(64 * 1024, bytes - written));
    sent.update(chunk);
    if (!socket.write(chunk)) await once(socket, 'drain');
  }
  socket.end(); // half-close: the echo still comes back
  await reading;
  socket.destroy();
  return { echoed, same: sent.digest('hex') === received.digest('hex') };
}

/**
 * `count` connections through `port` at once (each through to the far end before any sends its
 * data), `bytes` each way on each.
 * @param {number} port
 * @param {number} count
 * @param {number} bytes
 */
export function echoMany(port, count, bytes) {
  let waiting = count;
  /** @type {() => void} */
  let allArrived = () => {};
  /** @type {Promise<void>} */
  const together = new Promise((resolve) => (allArrived = resolve));
  const arrived = () => {
    if (--waiting === 0) allArrived();
  };
  return Promise.all(Array.from({ length: count }, () => echoOnce(port, bytes, arrived, together)));
}
