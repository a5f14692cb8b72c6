/**
 * The CLI pipeline rows: a file sent by one process and received by another into /dev/null,
 * `vchan listen -s < file` into `vchan connect -r > /dev/null` (two simulated domains, or this
 * domain to itself on Xen), against the same shape through a Unix socket: two small Node scripts
 * using stream.pipeline (bench/unix-pipe-send.mjs and unix-pipe-receive.mjs, shipped beside
 * shm-ring.c) and, when it is installed, socat. The rate is the file's bytes over the wall time from
 * the first spawn until both processes have exited: process start-up counts, as it does for a user.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, existsSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { XenVchanError } from '@xen-vchan/native';
import { Pattern, PERIOD } from './pattern.js';
import { formatSize, MiB, pipelineLabel as transportLabel, type PipelineTransport, type RowCollector } from './results.js';

const VCHAN_BIN = fileURLToPath(new URL('../../bin/vchan.js', import.meta.url));
const SEND_SCRIPT = fileURLToPath(new URL('../../bench/unix-pipe-send.mjs', import.meta.url));
const RECEIVE_SCRIPT = fileURLToPath(new URL('../../bench/unix-pipe-receive.mjs', import.meta.url));

/** How a pipeline's two processes are started; where the vchan's domains come from. */
export interface PipelineSetup {
  /** The environment of both processes (the run's simulation, its backend). */
  env: NodeJS.ProcessEnv;
  /** The listening process's domain and the connecting one's (the same on Xen, to itself). */
  listenerDomid: number;
  connectorDomid: number;
  /** Simulation: each process says which domain it plays. */
  sim: boolean;
}

/** socat's path when it is installed, else null. */
export function findSocat(): string | null {
  for (const directory of (process.env.PATH ?? '').split(':')) {
    if (!directory) continue;
    const candidate = path.join(directory, 'socat');
    if (existsSync(candidate)) return candidate;
  }
  return null;
}

interface Side {
  command: string;
  args: string[];
}

export class PipelineFiles {
  readonly directory: string;
  private counter = 0;

  constructor() {
    this.directory = mkdtempSync(path.join(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), `xen-vchan-bench-pipe-${process.pid}-`));
  }

  /** A file of `bytes` bytes of the bench's random pattern, and its SHA-256. */
  makeInput(name: string, bytes: number): { file: string; sha256: string } {
    const file = path.join(this.directory, name);
    const pattern = new Pattern(0, (Math.random() * 0xffffffff) >>> 0 || 1).bytes.subarray(0, PERIOD);
    const hash = createHash('sha256');
    const fd = openSync(file, 'w');
    try {
      for (let written = 0; written < bytes; ) {
        const piece = pattern.subarray(0, Math.min(PERIOD, bytes - written));
        writeSync(fd, piece);
        hash.update(piece);
        written += piece.length;
      }
    } finally {
      closeSync(fd);
    }
    return { file, sha256: hash.digest('hex') };
  }

  fresh(prefix: string): string {
    return `${prefix}-${process.pid}-${++this.counter}`;
  }

  remove(): void {
    rmSync(this.directory, { recursive: true, force: true });
  }
}

/** The two sides of `transport`'s pipeline, the sender reading stdin, the receiver writing stdout. */
function sides(transport: PipelineTransport, setup: PipelineSetup, files: PipelineFiles, socat: string | null): [Side, Side] {
  switch (transport) {
    case 'vchan': {
      const name = files.fresh('bench-pipe');
      const domid = (id: number) => (setup.sim ? ['--sim-domid', String(id)] : []);
      return [
        {
          command: process.execPath,
          args: [VCHAN_BIN, 'listen', '-s', '-d', String(setup.connectorDomid), '-n', name, ...domid(setup.listenerDomid)],
        },
        {
          command: process.execPath,
          args: [VCHAN_BIN, 'connect', '-r', '-d', String(setup.listenerDomid), '-n', name, ...domid(setup.connectorDomid)],
        },
      ];
    }
    case 'unix': {
      const socket = path.join(files.directory, `${files.fresh('sock')}`);
      return [
        { command: process.execPath, args: [SEND_SCRIPT, socket] },
        { command: process.execPath, args: [RECEIVE_SCRIPT, socket] },
      ];
    }
    case 'socat': {
      const socket = path.join(files.directory, `${files.fresh('sock')}`);
      return [
        { command: socat!, args: ['-u', '-b', '65536', 'STDIN', `UNIX-LISTEN:${socket}`] },
        { command: socat!, args: ['-u', '-b', '65536', `UNIX-CONNECT:${socket},retry=1000,interval=0.005`, 'STDOUT'] },
      ];
    }
  }
}

function run(
  side: Side,
  input: number | 'ignore',
  output: number | 'ignore',
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(side.command, side.args, { stdio: [input, output, 'pipe'], env });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      if (stderr.length < 4096) stderr += text;
    });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stderr }));
  });
}

/**
 * One pipeline run: `input` into the sender's stdin, the receiver's stdout into `output` (a path,
 * /dev/null for a measurement). Resolves with the wall time from the first spawn until both have
 * exited; a process that fails fails the run.
 */
export async function runPipeline(
  transport: PipelineTransport,
  setup: PipelineSetup,
  files: PipelineFiles,
  socat: string | null,
  input: string,
  output: string,
): Promise<number> {
  const [sender, receiver] = sides(transport, setup, files, socat);
  const inFd = openSync(input, 'r');
  const outFd = openSync(output, 'w');
  const started = performance.now();
  try {
    const outcomes = await Promise.all([run(sender, inFd, 'ignore', setup.env), run(receiver, 'ignore', outFd, setup.env)]);
    const seconds = (performance.now() - started) / 1000;
    outcomes.forEach(({ code, stderr }, index) => {
      if (code !== 0) {
        const side = index === 0 ? sender : receiver;
        throw new XenVchanError(
          'ECHILD',
          `CLI pipeline over ${transport}: ${path.basename(side.command)} ${side.args.map((arg) => path.basename(arg)).join(' ')} exited with ${code}: ${stderr.trim()}`,
        );
      }
    });
    return seconds;
  } finally {
    closeSync(inFd);
    closeSync(outFd);
  }
}

export async function sha256Of(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const piece of createReadStream(file, { highWaterMark: MiB })) hash.update(piece as Buffer);
  return hash.digest('hex');
}

/** The measured file's size and the verified round's: small with --quick. */
export function pipelineSizes(quick: boolean): { bytes: number; verifyBytes: number } {
  return quick ? { bytes: 16 * MiB, verifyBytes: 4 * MiB } : { bytes: 512 * MiB, verifyBytes: 64 * MiB };
}

/**
 * The pipeline measurements of a run: one file made for them all, first a verified round per
 * transport (into a file whose SHA-256 must match the input's), then the measured rounds into
 * /dev/null. `close()` removes the files.
 */
export class PipelineBench {
  private readonly files = new PipelineFiles();
  private input: { file: string; sha256: string } | null = null;
  /** What is measured: the vchan, the Node scripts, and socat when it is installed. */
  readonly transports: PipelineTransport[];

  constructor(
    private readonly setup: PipelineSetup,
    readonly bytes: number,
    readonly verifyBytes: number,
    private readonly socat: string | null,
    private readonly rows: RowCollector,
  ) {
    this.transports = ['vchan', 'unix', ...(socat ? (['socat'] as const) : [])];
  }

  /** One round into a file, checked byte for byte (through its SHA-256) against what was sent. */
  async verify(transport: PipelineTransport): Promise<string> {
    const { file, sha256 } = this.files.makeInput(`verify-${transport}`, this.verifyBytes);
    const output = path.join(this.files.directory, `verify-${transport}.out`);
    try {
      await runPipeline(transport, this.setup, this.files, this.socat, file, output);
      const got = await sha256Of(output);
      const size = statSync(output).size;
      if (got !== sha256 || size !== this.verifyBytes) {
        throw new XenVchanError(
          'EBADMSG',
          `CLI pipeline over ${transportLabel(transport)}: ${size} bytes came out of ${this.verifyBytes} sent, ${got === sha256 ? 'same' : 'different'} SHA-256`,
        );
      }
      return `${formatSize(this.verifyBytes)} verified`;
    } finally {
      rmSync(file, { force: true });
      rmSync(output, { force: true });
    }
  }

  async measure(transport: PipelineTransport): Promise<string> {
    this.input ??= this.files.makeInput('input', this.bytes);
    const seconds = await runPipeline(transport, this.setup, this.files, this.socat, this.input.file, '/dev/null');
    this.rows.addPipeline({ transport, bytes: this.bytes, seconds });
    return `${(this.bytes / MiB / seconds).toFixed(0)} MiB/s (${seconds.toFixed(2)} s)`;
  }

  close(): void {
    this.files.remove();
  }
}
