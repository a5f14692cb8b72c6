import fs from 'node:fs';
import net from 'node:net';
import { pipeline } from 'node:stream/promises';
import tty from 'node:tty';
import { errorCode } from '@xen-vchan/native';
import { abortError } from './errors.js';
import type { Vchan } from './stream.js';

/*
 * Data between a vchan and a file descriptor with no copy in user space: the kernel reads from
 * the read ring (views()) and writes into the write ring (reserve()/commit()) directly.
 *
 * Who makes the system call depends on what the fd is, decided once by fstat():
 *
 *   file, device   a regular file, a block device, or a character device that is not a terminal
 *                  (/dev/null, /dev/zero): readSync / writeSync on the JavaScript thread. These
 *                  never wait on another process, and a threadpool hop per ring's worth costs more
 *                  than the call.
 *   pipe           a FIFO (a shell pipe): fs.read / fs.write in libuv's threadpool, since a
 *                  blocking pipe waits for the other process. A pipe someone made non-blocking
 *                  answers EAGAIN; from then on that direction goes through a net.Socket on the
 *                  fd (libuv polls it for us; Node has no other way to wait for an fd to be ready).
 *   socket, tty    through a net.Socket / tty stream from the start: they are non-blocking (or
 *                  may wait for ever on a terminal), and only libuv's poll waits for them.
 *
 * Writing to an fd is copy-free on every path: the stream paths write each view itself (libuv
 * writes from it), and release it once written. Reading from a socket, a terminal or a
 * non-blocking pipe is not: the stream reads into its own buffers, copied into the ring by
 * write(). The result says which path was taken (`zeroCopy`), and the README lists them.
 *
 * Views and reservations are ring memory. A system call on them outside this thread holds the
 * rings mapped (Vchan.holdRings) until it returns, so a channel closed meanwhile never leaves the
 * kernel reading or writing memory that was unmapped (or mapped again for something else).
 */

/** What kind of file an fd is, as far as moving data goes (see above). */
export type FdKind = 'file' | 'device' | 'pipe' | 'socket' | 'tty';

export interface FdPipeOptions {
  /** Stops with ABORT_ERR (`cause`: the signal's reason) at the next wait for the vchan. */
  signal?: AbortSignal;
}

export interface FdPipeResult {
  /** Bytes moved. */
  bytes: number;
  /** The fd's kind, from fstat(). */
  kind: FdKind;
  /**
   * True when every byte went between the ring and the kernel directly. False when part or all
   * of a read from the fd went through a stream's buffers (a socket, a terminal, a pipe that
   * answered EAGAIN): see the table in the README.
   */
  zeroCopy: boolean;
}

/** Most bytes asked of one read(): the ring's end or its free room usually bound it first. */
const READ_CHUNK = 1024 * 1024;

/** fs.read in the threadpool, resolving with the count (util.promisify's gives an object). */
function read(fd: number, buffer: Uint8Array): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.read(fd, buffer, 0, buffer.length, null, (error, count) => (error ? reject(error) : resolve(count))),
  );
}

/** fs.write in the threadpool, resolving with the count. */
function write(fd: number, buffer: Uint8Array): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.write(fd, buffer, 0, buffer.length, (error, count) => (error ? reject(error) : resolve(count))),
  );
}

/** What kind of file `fd` is (one fstat). */
export function fdKind(fd: number): FdKind {
  const stat = fs.fstatSync(fd);
  if (stat.isFile() || stat.isBlockDevice()) return 'file';
  if (stat.isFIFO()) return 'pipe';
  if (stat.isSocket()) return 'socket';
  if (stat.isCharacterDevice()) return tty.isatty(fd) ? 'tty' : 'device';
  return 'device';
}

/**
 * Reads `fd` to its end into `vchan` through reservations of the write ring (`fs.read` into the
 * ring itself), then ends the vchan (`end()`: the peer reads everything, then the channel closes).
 * Resolves with what was moved. Rejects with the fd's read error, with what the vchan's writes
 * meet (EPIPE once the peer closed, ...) or with ABORT_ERR when `signal` aborts; the vchan is then
 * left as it is (destroy it, or end it, as suits). The fd is not closed.
 */
export async function pipeFdToVchan(fd: number, vchan: Vchan, options: FdPipeOptions = {}): Promise<FdPipeResult> {
  const { signal } = options;
  const kind = fdKind(fd);
  let bytes = 0;
  if (kind === 'socket' || kind === 'tty') return { bytes: await streamIntoVchan(fd, kind, vchan, signal), kind, zeroCopy: false };
  for (;;) {
    const space = await vchan.reserve(READ_CHUNK, signal ? { signal } : {});
    let count: number;
    try {
      count = kind === 'pipe' ? await withRingsHeld(vchan, () => read(fd, space)) : fs.readSync(fd, space, 0, space.length, null);
    } catch (error) {
      commitIfOpen(vchan, 0);
      if (errorCode(error) !== 'EAGAIN') throw error;
      // Someone made this pipe non-blocking: wait for it through libuv from now on (see above).
      bytes += await streamIntoVchan(fd, 'pipe', vchan, signal);
      return { bytes, kind, zeroCopy: false };
    }
    vchan.commit(count);
    if (count === 0) {
      vchan.end();
      return { bytes, kind, zeroCopy: true };
    }
    bytes += count;
    // What was read went in; a signal that aborted meanwhile stops before the next read.
    if (signal?.aborted) throw abortError(signal.reason, 'Piping the fd into the vchan', `${bytes} bytes went in.`);
  }
}

/**
 * A system call on ring memory in the threadpool (fs.read into a reservation, fs.write from a
 * view), with the rings held mapped until it returns.
 */
async function withRingsHeld(vchan: Vchan, call: () => Promise<number>): Promise<number> {
  const letGo = vchan.holdRings();
  try {
    return await call();
  } finally {
    letGo();
  }
}

/** A reservation given back after a failed read; a channel closed meanwhile has nothing to give back. */
function commitIfOpen(vchan: Vchan, count: number): void {
  try {
    vchan.commit(count);
  } catch {
    /* closed under the read: its own error says so */
  }
}

/** The stream path in: the fd's stream, piped into the vchan (copied by write()); ends the vchan. */
async function streamIntoVchan(
  fd: number,
  kind: 'socket' | 'tty' | 'pipe',
  vchan: Vchan,
  signal: AbortSignal | undefined,
): Promise<number> {
  const source = kind === 'tty' ? new tty.ReadStream(fd) : new net.Socket({ fd, readable: true, writable: false, allowHalfOpen: true });
  let bytes = 0;
  source.on('data', (chunk: Buffer) => (bytes += chunk.length));
  await pipeline(source, vchan, signal ? { signal } : {});
  return bytes;
}

/**
 * Writes everything the vchan receives to `fd`, straight from the read ring (views(): each view
 * is released once the kernel took it), until the peer closes and all it wrote is written.
 * Resolves with what was moved. Rejects with the fd's write error (EPIPE when nobody reads a pipe,
 * ...), with what destroys the vchan, or with ABORT_ERR when `signal` aborts while it waits for
 * the peer. The vchan is read through views() (so not as a stream: see "One way of reading" in
 * the README). The fd is not closed (a socket or a terminal is written through a net.Socket or
 * tty.WriteStream made on it, which is left open).
 */
export async function pipeVchanToFd(vchan: Vchan, fd: number, options: FdPipeOptions = {}): Promise<FdPipeResult> {
  const { signal } = options;
  const kind = fdKind(fd);
  let sink: StreamSink | null = kind === 'socket' || kind === 'tty' ? new StreamSink(fd, kind) : null;
  let bytes = 0;
  for await (const view of vchan.views(signal ? { signal } : {})) {
    let rest = view.bytes;
    while (rest.length > 0) {
      let written: number;
      if (sink) written = await sink.write(vchan, rest);
      else if (kind === 'pipe') {
        try {
          written = await withRingsHeld(vchan, () => write(fd, rest));
        } catch (error) {
          if (errorCode(error) !== 'EAGAIN') throw error;
          // Someone made this pipe non-blocking: wait for it through libuv from now on.
          sink = new StreamSink(fd, 'pipe');
          continue;
        }
      } else written = fs.writeSync(fd, rest);
      rest = rest.subarray(written);
      bytes += written;
    }
  }
  return { bytes, kind, zeroCopy: true };
}

/** The stream path out: libuv writes each view from the ring itself, and waits for the fd. */
class StreamSink {
  private readonly stream: net.Socket | tty.WriteStream;

  constructor(fd: number, kind: 'socket' | 'tty' | 'pipe') {
    this.stream = kind === 'tty' ? new tty.WriteStream(fd) : new net.Socket({ fd, readable: false, writable: true });
    // Failures reach us through each write's callback; the event would be uncaught.
    this.stream.on('error', () => {});
  }

  /** Writes all of `bytes`; resolves with their length once the kernel took them. */
  async write(vchan: Vchan, bytes: Uint8Array): Promise<number> {
    const letGo = vchan.holdRings();
    try {
      await new Promise<void>((resolve, reject) => this.stream.write(bytes, (error) => (error ? reject(error) : resolve())));
    } finally {
      letGo();
    }
    return bytes.length;
  }
}
