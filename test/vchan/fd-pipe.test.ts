// pipeFdToVchan / pipeVchanToFd: data between a vchan and a file descriptor, read by the kernel
// from the read ring and written by it into the write ring. Both ends of the vchan live in this
// process; the fds are temporary files, FIFOs fed or drained by a shell, /dev/null and /dev/zero.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { pipeFdToVchan, pipeVchanToFd } from '@xen-vchan/vchan';
import { SETTLE_MS, sleep } from '../support/domains.js';
import { destroyLinkPairs, quietLinkPair } from '../support/link-pair.js';

const RING = 16384;
let scratch: string;
const fds: number[] = [];

beforeAll(() => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'fd-pipe-'));
});
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));
afterEach(() => {
  destroyLinkPairs();
  for (const fd of fds.splice(0)) fs.closeSync(fd);
});

const pair = () => quietLinkPair(RING);

function open(file: string, flags: string): number {
  const fd = fs.openSync(file, flags);
  fds.push(fd);
  return fd;
}

/** Opens a FIFO in the threadpool: the open waits for the other end, which a child opens. */
function openFifo(file: string, flags: 'r' | 'w'): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.open(file, flags, (error, fd) => {
      if (error) return reject(error);
      fds.push(fd);
      resolve(fd);
    }),
  );
}

async function fifo(name: string): Promise<string> {
  const file = path.join(scratch, name);
  await new Promise<void>((resolve, reject) => {
    const child = spawn('mkfifo', [file]);
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`mkfifo exited ${code}`))));
  });
  return file;
}

function shell(line: string): Promise<number | null> {
  return new Promise((resolve) => spawn('sh', ['-c', line], { stdio: 'ignore' }).on('exit', resolve));
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

describe('pipeFdToVchan and pipeVchanToFd', () => {
  it('moves a file through the vchan into another file intact (regular files: the zero-copy path)', async () => {
    const { server, client } = pair();
    const input = path.join(scratch, 'input');
    const output = path.join(scratch, 'output');
    const data = randomBytes(3_000_000 + 123);
    fs.writeFileSync(input, data);
    const [sent, received] = await Promise.all([pipeFdToVchan(open(input, 'r'), server), pipeVchanToFd(client, open(output, 'w'))]);
    expect(sent).toEqual({ bytes: data.length, kind: 'file', zeroCopy: true });
    expect(received).toEqual({ bytes: data.length, kind: 'file', zeroCopy: true });
    expect(sha256(fs.readFileSync(output))).toBe(sha256(data));
    expect(server.stats().bytesWritten).toBe(data.length);
  });

  it('moves data from a pipe, through the vchan, into a pipe (FIFOs: reads and writes in the threadpool)', async () => {
    const { server, client } = pair();
    const input = path.join(scratch, 'pipe-input');
    const output = path.join(scratch, 'pipe-output');
    const data = randomBytes(2_000_000 + 7);
    fs.writeFileSync(input, data);
    const into = await fifo('into');
    const outOf = await fifo('out-of');
    const feeding = shell(`cat '${input}' > '${into}'`);
    const draining = shell(`cat '${outOf}' > '${output}'`);
    const [readFd, writeFd] = await Promise.all([openFifo(into, 'r'), openFifo(outOf, 'w')]);
    const [sent, received] = await Promise.all([pipeFdToVchan(readFd, server), pipeVchanToFd(client, writeFd)]);
    expect(sent).toEqual({ bytes: data.length, kind: 'pipe', zeroCopy: true });
    expect(received).toEqual({ bytes: data.length, kind: 'pipe', zeroCopy: true });
    fs.closeSync(fds.splice(fds.indexOf(writeFd), 1)[0]!); // the drain's cat sees its end
    expect(await feeding).toBe(0);
    expect(await draining).toBe(0);
    expect(sha256(fs.readFileSync(output))).toBe(sha256(data));
  });

  it('ends the vchan at the end of the fd: an empty input gives the peer an empty stream that ends', async () => {
    const { server, client } = pair();
    const [sent, received] = await Promise.all([
      pipeFdToVchan(open('/dev/null', 'r'), server),
      pipeVchanToFd(client, open('/dev/null', 'w')),
    ]);
    expect(sent).toEqual({ bytes: 0, kind: 'device', zeroCopy: true });
    expect(received).toEqual({ bytes: 0, kind: 'device', zeroCopy: true });
    expect(server.writableEnded).toBe(true);
  });

  it('gives up with ABORT_ERR: a read from the fd waiting for room, a write to it waiting for data', async () => {
    const { server, client } = pair();
    const controller = new AbortController();
    // Nobody reads the client: /dev/zero fills the ring, and the next reservation waits.
    const reading = pipeFdToVchan(open('/dev/zero', 'r'), server, { signal: controller.signal });
    const writing = pipeVchanToFd(server, open('/dev/null', 'w'), { signal: controller.signal });
    await sleep(SETTLE_MS);
    expect(server.stats().bytesWritten).toBe(RING);
    const reason = new Error('enough');
    controller.abort(reason);
    await expect(reading).rejects.toMatchObject({ code: 'ABORT_ERR', cause: reason });
    await expect(writing).rejects.toMatchObject({ code: 'ABORT_ERR', cause: reason });
    expect(client.destroyed).toBe(false);
  });

  it('stops with EPIPE when the peer closes while the fd still has data, and a write to an fd ends with the peer', async () => {
    const { server, client } = pair();
    const reading = pipeFdToVchan(open('/dev/zero', 'r'), server);
    const received = await new Promise<number>((resolve) => {
      let total = 0;
      client.on('data', (chunk: Buffer) => {
        total += chunk.length;
        if (total > 100_000) {
          client.destroy();
          resolve(total);
        }
      });
    });
    expect(received).toBeGreaterThan(100_000);
    await expect(reading).rejects.toMatchObject({ code: expect.stringMatching(/^(EPIPE|ERR_STREAM_DESTROYED)$/) });

    // The other way: the peer sends, then closes; the write to the fd ends cleanly after all of it.
    const second = pair();
    const output = path.join(scratch, 'after-close');
    const data = randomBytes(100_000);
    second.client.end(data);
    const result = await pipeVchanToFd(second.server, open(output, 'w'));
    expect(result.bytes).toBe(data.length);
    expect(fs.readFileSync(output).equals(data)).toBe(true);
  });

  it('leaves the vchan to its caller when the fd fails: a write to a pipe nobody reads rejects with EPIPE', async () => {
    const { server, client } = pair();
    const into = await fifo('nobody');
    const opened = openFifo(into, 'w');
    const reader = await openFifo(into, 'r');
    const writeFd = await opened;
    fs.closeSync(fds.splice(fds.indexOf(reader), 1)[0]!);
    server.write(randomBytes(1000));
    await expect(pipeVchanToFd(client, writeFd)).rejects.toMatchObject({ code: 'EPIPE' });
    expect(client.destroyed).toBe(false);
  });

  it('keeps the rings mapped under a read in the threadpool when the channel is destroyed; the peer hears of it once the read returns', async () => {
    const { server, client } = pair();
    client.resume();
    let clientClosed = false;
    client.on('close', () => (clientClosed = true));
    const file = await fifo('slow');
    // The writer opens the FIFO at once but writes only when told: our read waits in the threadpool.
    const writer = spawn('sh', ['-c', `exec 3> '${file}'; read go; printf late >&3`], { stdio: ['pipe', 'ignore', 'ignore'] });
    const readFd = await openFifo(file, 'r');
    const piping = pipeFdToVchan(readFd, server);
    await sleep(SETTLE_MS);
    server.destroy();
    await sleep(SETTLE_MS);
    // Unmapping now would leave the kernel writing into memory that may be mapped again for something else.
    expect(clientClosed).toBe(false);
    writer.stdin.end('go\n');
    await expect(piping).rejects.toMatchObject({ code: 'EPIPE' });
    const deadline = performance.now() + 5000;
    while (!clientClosed && performance.now() < deadline) await sleep(5);
    expect(clientClosed).toBe(true);
  });
});
