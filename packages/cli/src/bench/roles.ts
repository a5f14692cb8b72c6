/**
 * What each end of a measurement does with its stream. The same code runs over a vchan, a Unix
 * socket and TCP, so the only difference between the rows of the table is the transport.
 */
import type { Duplex } from 'node:stream';
import { XenVchanError } from '@xen-vchan/native';
import { RpcPeer, type Vchan } from '@xen-vchan/vchan';
import { PERIOD, type Pattern, Verifier } from './pattern.js';

export interface SendResult {
  /** Bytes handed to write() and flushed (the stream finished). */
  sent: number;
  writes: number;
}

export interface ReceiveResult {
  /** Bytes received and verified against the pattern. */
  bytes: number;
  /** Bytes received after the first piece: what `seconds` measures. */
  measuredBytes: number;
  /** Receiver's clock, from the first piece to the last. */
  seconds: number;
  pieces: number;
}

export interface LatencyResult {
  roundTrips: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
  minUs: number;
}

export interface RpcResult {
  /** One call in flight at a time. */
  sequential: { calls: number; seconds: number; callsPerSecond: number; p50Us: number; p99Us: number };
  /** `inFlight` calls in flight at all times. */
  concurrent: { inFlight: number; calls: number; seconds: number; callsPerSecond: number; p50Us: number; p99Us: number };
}

/** Round trips (or calls) discarded at the start, while code warms up. */
const WARMUP = 100;
const MAX_SAMPLES = 1 << 20;

/** The stream closed before the role was done (Node's code for a stream that closed before its end). */
function prematureClose(what: string): XenVchanError {
  return new XenVchanError('ERR_STREAM_PREMATURE_CLOSE', what);
}

/** The peer's data is not what was sent. */
function corrupted(what: string): XenVchanError {
  return new XenVchanError('EBADMSG', what);
}

/** Listens for the first of `handlers`' events only: whichever comes first takes them all off. */
function first(stream: Duplex, handlers: Record<string, (error?: Error) => void>): void {
  const listeners = Object.entries(handlers).map(([event, handler]) => {
    const listener = (error?: Error) => {
      for (const [name, added] of listeners) stream.off(name, added);
      handler(error);
    };
    return [event, listener] as const;
  });
  for (const [event, listener] of listeners) stream.on(event, listener);
}

function waitFor(stream: Duplex, event: 'drain' | 'finish'): Promise<void> {
  if (event === 'finish' && stream.writableFinished) return Promise.resolve();
  // A destroyed stream has said 'close' already and never says anything again.
  if (stream.destroyed) return Promise.reject(stream.errored ?? prematureClose(`the stream was destroyed while waiting for '${event}'`));
  return new Promise((resolve, reject) =>
    first(stream, {
      [event]: () => resolve(),
      close: () => reject(stream.errored ?? prematureClose(`the stream closed while waiting for '${event}'`)),
      error: reject,
    }),
  );
}

/** Writes `chunk`-byte pieces of the pattern for `seconds`, honouring backpressure, then ends. */
export async function send(stream: Duplex, pattern: Pattern, chunk: number, seconds: number): Promise<SendResult> {
  const deadline = performance.now() + seconds * 1000;
  // Small writes: look at the clock every so often only.
  const batch = Math.max(1, Math.floor(65536 / chunk));
  let sent = 0;
  let writes = 0;
  let offset = 0;
  for (;;) {
    for (let i = 0; i < batch; i++) {
      const piece = pattern.slice(offset, chunk);
      offset = (offset + chunk) % PERIOD;
      sent += chunk;
      writes++;
      if (!stream.write(piece)) await waitFor(stream, 'drain');
    }
    if (performance.now() >= deadline) break;
  }
  const finished = waitFor(stream, 'finish');
  stream.end();
  await finished;
  return { sent, writes };
}

/**
 * Checks the pieces a receiver gets against the pattern and times them. The clock starts at the
 * first piece, which is not counted: the rate covers the bytes that came while it ran.
 */
class CheckedReceipt {
  readonly verifier: Verifier;
  private first = 0;
  private last = 0;
  private firstPiece = 0;
  private pieces = 0;

  constructor(pattern: Pattern) {
    this.verifier = new Verifier(pattern);
  }

  /** Notes one piece; false when it differs from the pattern (verifier.failure says where). */
  take(piece: Buffer): boolean {
    const now = performance.now();
    if (this.pieces === 0) {
      this.first = now;
      this.firstPiece = piece.length;
    }
    this.last = now;
    this.pieces++;
    return this.verifier.check(piece);
  }

  result(): ReceiveResult {
    const verified = this.verifier.verified;
    return { bytes: verified, measuredBytes: verified - this.firstPiece, seconds: (this.last - this.first) / 1000, pieces: this.pieces };
  }
}

/** Reads until the end, checking every byte against the pattern. */
export function receive(stream: Duplex, pattern: Pattern): Promise<ReceiveResult> {
  return new Promise((resolve, reject) => {
    const receipt = new CheckedReceipt(pattern);
    let settled = false;
    const fail = (error: Error) => {
      if (settled) return;
      settled = true;
      reject(error);
    };
    stream.on('data', (piece: Buffer) => {
      if (!receipt.take(piece)) {
        const error = corrupted(receipt.verifier.failure!);
        fail(error);
        stream.destroy(error);
      }
    });
    stream.once('end', () => {
      if (settled) return;
      settled = true;
      resolve(receipt.result());
    });
    stream.once('error', fail);
    stream.once('close', () => fail(prematureClose(`the stream closed after ${receipt.verifier.verified} bytes, before its end`)));
  });
}

/**
 * receive() through Vchan.views(): each view is checked against the pattern where it lies in the
 * ring (a memcmp, no copy), then released by the loop moving on.
 */
export async function receiveViews(vchan: Vchan, pattern: Pattern): Promise<ReceiveResult> {
  const receipt = new CheckedReceipt(pattern);
  for await (const view of vchan.views()) {
    const bytes = view.bytes;
    if (!receipt.take(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length))) {
      const error = corrupted(receipt.verifier.failure!);
      vchan.destroy(error);
      throw error;
    }
  }
  return receipt.result();
}

function summarize(samples: Float64Array, count: number): { p50Us: number; p99Us: number; meanUs: number; minUs: number } {
  if (count === 0) return { p50Us: NaN, p99Us: NaN, meanUs: NaN, minUs: NaN };
  const sorted = samples.slice(0, count).sort();
  let sum = 0;
  for (const sample of sorted) sum += sample;
  return {
    p50Us: sorted[Math.floor(count / 2)]! * 1000,
    p99Us: sorted[Math.floor((count - 1) * 0.99)]! * 1000,
    meanUs: (sum / count) * 1000,
    minUs: sorted[0]! * 1000,
  };
}

/**
 * Echoes whatever arrives until the peer ends. The peer may be another domain that writes and
 * never reads: reading waits while the echo cannot be written, or it would pile up here unbounded.
 */
export function pong(stream: Duplex): Promise<Record<string, never>> {
  return new Promise((resolve, reject) => {
    stream.on('data', (piece: Buffer) => {
      if (stream.write(piece)) return;
      stream.pause();
      stream.once('drain', () => stream.resume());
    });
    stream.once('error', reject);
    stream.once('close', () => resolve({}));
  });
}

/** `size`-byte messages, one in flight, each checked when it comes back; for `seconds`. */
export function ping(stream: Duplex, size: number, seconds: number): Promise<LatencyResult> {
  return new Promise((resolve, reject) => {
    const samples = new Float64Array(MAX_SAMPLES);
    let count = 0;
    let sequence = 0;
    let message = Buffer.alloc(0);
    let got = 0;
    let started = 0;
    let deadline = Infinity;
    let done = false;
    const next = () => {
      message = Buffer.allocUnsafe(size).fill(sequence & 0xff);
      if (size >= 4) message.writeUInt32LE(sequence >>> 0, 0);
      got = 0;
      started = performance.now();
      stream.write(message);
    };
    const finish = (error?: Error) => {
      if (done) return;
      done = true;
      stream.off('data', onData);
      if (error) {
        reject(error);
        return;
      }
      const result = { roundTrips: count, ...summarize(samples, count) };
      waitFor(stream, 'finish').then(() => resolve(result), reject);
      stream.end();
    };
    const onData = (piece: Buffer) => {
      if (got + piece.length > size || !piece.equals(message.subarray(got, got + piece.length))) {
        finish(corrupted(`the echo of message ${sequence} differs from what was sent`));
        return;
      }
      got += piece.length;
      if (got < size) return;
      const now = performance.now();
      if (sequence === WARMUP) deadline = now + seconds * 1000;
      if (sequence >= WARMUP && count < MAX_SAMPLES) samples[count++] = now - started;
      sequence++;
      if (now >= deadline) finish();
      else next();
    };
    stream.on('data', onData);
    stream.once('error', (error) => finish(error));
    stream.once('close', () => finish(prematureClose('the stream closed in the middle of the round trips')));
    next();
  });
}

/** The calls are `{ n, text: 'ping' }`: no reason to buffer MessageChannel's default 64 MiB for one. */
const MAX_RPC_MESSAGE = 64 * 1024;

/** Serves `echo` until the peer ends. */
export function rpcServe(stream: Duplex): Promise<Record<string, never>> {
  return new Promise((resolve) => {
    new RpcPeer(stream, { maxMessageSize: MAX_RPC_MESSAGE, handlers: { echo: (params) => params } });
    stream.once('close', () => resolve({}));
  });
}

/** Calls `echo` one at a time for half of `seconds`, then with `inFlight` calls in flight for the other half. */
export async function rpcCall(stream: Duplex, seconds: number, inFlight: number): Promise<RpcResult> {
  const rpc = new RpcPeer(stream, { timeout: 0, maxMessageSize: MAX_RPC_MESSAGE });
  let id = 0;
  const call = async () => {
    const n = id++;
    const reply = (await rpc.call('echo', { n, text: 'ping' })) as { n?: number };
    if (reply?.n !== n) throw corrupted(`call ${n} came back as ${JSON.stringify(reply)}`);
  };
  for (let i = 0; i < WARMUP; i++) await call();

  const samples = new Float64Array(MAX_SAMPLES);
  let count = 0;
  let started = performance.now();
  let deadline = started + (seconds / 2) * 1000;
  for (;;) {
    const before = performance.now();
    if (before >= deadline && count > 0) break;
    await call();
    if (count < MAX_SAMPLES) samples[count++] = performance.now() - before;
  }
  const sequentialSeconds = (performance.now() - started) / 1000;
  const sequential = {
    calls: count,
    seconds: sequentialSeconds,
    callsPerSecond: count / sequentialSeconds,
    ...pick(summarize(samples, count)),
  };

  const concurrentSamples = new Float64Array(MAX_SAMPLES);
  let calls = 0;
  started = performance.now();
  deadline = started + (seconds / 2) * 1000;
  const lane = async () => {
    while (performance.now() < deadline || calls === 0) {
      const before = performance.now();
      await call();
      if (calls < MAX_SAMPLES) concurrentSamples[calls] = performance.now() - before;
      calls++;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  const concurrentSeconds = (performance.now() - started) / 1000;
  const concurrent = {
    inFlight,
    calls,
    seconds: concurrentSeconds,
    callsPerSecond: calls / concurrentSeconds,
    ...pick(summarize(concurrentSamples, Math.min(calls, MAX_SAMPLES))),
  };
  const finished = waitFor(stream, 'finish');
  rpc.close();
  await finished;
  return { sequential, concurrent };
}

function pick(summary: { p50Us: number; p99Us: number }): { p50Us: number; p99Us: number } {
  return { p50Us: summary.p50Us, p99Us: summary.p99Us };
}
