import { connect, createServer } from '@xen-vchan/vchan';
import { fork } from 'node:child_process';
import net from 'node:net';
const N = 5000;
if (process.argv[2] === 'echo-vchan') {
  const ch = await connect({ domid: 1, name: 'lat', simDomid: 2 });
  ch.on('data', (d) => ch.write(d));
} else if (process.argv[2] === 'echo-unix') {
  const s = net.connect('/tmp/lat/s'); s.on('data', (d) => s.write(d));
} else {
  async function pingpong(stream) {
    const msg = Buffer.alloc(64, 1); const times = [];
    for (let i = 0; i < N; i++) {
      const t0 = process.hrtime.bigint();
      await new Promise((resolve) => { let got = 0; const on = (d) => { got += d.length; if (got >= 64) { stream.off('data', on); resolve(); } }; stream.on('data', on); stream.write(msg); });
      times.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
    times.sort((a, b) => a - b); return { p50: times[N >> 1].toFixed(1), p99: times[Math.floor(N * 0.99)].toFixed(1) };
  }
  const server = createServer({ domid: 2, name: 'lat', simDomid: 1 });
  const chP = new Promise((r) => server.once('channel', r)); await server.listen();
  const c1 = fork(new URL(import.meta.url), ['echo-vchan']);
  const ch = await chP;
  console.log('vchan', await pingpong(ch), ch.stats());
  c1.kill(); await server.close();
  const us = net.createServer(); await new Promise((r) => us.listen('/tmp/lat/s', r));
  const sP = new Promise((r) => us.once('connection', r));
  const c2 = fork(new URL(import.meta.url), ['echo-unix']);
  const sock = await sP; sock.setNoDelay?.(true);
  console.log('unix', await pingpong(sock));
  c2.kill(); us.close(); process.exit(0);
}
