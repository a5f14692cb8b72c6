/**
 * The C shared-memory ring (bench/shm-ring.c in this package): built from source with the
 * machine's C compiler the first time it is needed, and run once per measurement. It forks itself
 * into a producer and a consumer.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { errorCode, XenVchanError } from '@xen-vchan/native';

const run = promisify(execFile);

/** Shipped in the package (its `files`), beside dist/: found from this module, wherever it is installed. */
export const C_SOURCE = fileURLToPath(new URL('../../bench/shm-ring.c', import.meta.url));
const FLAGS = ['-O2', '-std=c11', '-Wall'];

export interface CThroughput {
  bytes: number;
  sent: number;
  measuredBytes: number;
  seconds: number;
  verified: boolean;
  consumerNotifies: number;
  consumerSleeps: number;
}

export interface CLatency {
  roundTrips: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
  minUs: number;
  verified: boolean;
}

/**
 * The C ring could not be built or run: `code` ENOENT (no C compiler: the bench leaves the C ring
 * out and says so), ERR_C_RING_BUILD (the build failed, or the source is missing), EBADMSG (its
 * data did not verify) or ECHILD (it failed otherwise).
 */
export class CRingError extends XenVchanError {
  constructor(code: 'ENOENT' | 'ERR_C_RING_BUILD' | 'EBADMSG' | 'ECHILD', message: string) {
    super(code, message);
    this.name = 'CRingError';
  }
}

/**
 * Where the binaries go: bench/build/ beside the source when this package's folder is writable
 * (a checkout, a user's own node_modules), else the user's cache folder (a global install that
 * root owns). The results name the binary, so either way the run says which one it used.
 */
function buildDirectory(source: string): string {
  const beside = path.join(path.dirname(source), 'build');
  try {
    mkdirSync(beside, { recursive: true });
    accessSync(beside, constants.W_OK);
    return beside;
  } catch {
    const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
    const directory = path.join(cache, 'xen-vchan', 'bench');
    mkdirSync(directory, { recursive: true });
    return directory;
  }
}

/**
 * Compiles the ring unless a binary of this very source and compiler is already there; returns
 * its path. The binary's name carries a hash of both, so an edit of the source rebuilds it.
 */
export async function buildCRing(source = C_SOURCE): Promise<{ binary: string; built: boolean; compiler: string }> {
  const compiler = process.env.CC || 'cc';
  let text: Buffer;
  try {
    text = readFileSync(source);
  } catch (error) {
    throw new CRingError(
      'ERR_C_RING_BUILD',
      `cannot read the C ring's source ${source} (${errorCode(error) ?? (error as Error).message}): this installation of @xen-vchan/cli is incomplete; reinstall it, or run with --no-c-ring to leave the C ring out.`,
    );
  }
  const hash = createHash('sha256').update(text).update(compiler).update(FLAGS.join(' ')).digest('hex').slice(0, 12);
  const directory = buildDirectory(source);
  const binary = path.join(directory, `shm-ring-${hash}`);
  if (existsSync(binary)) return { binary, built: false, compiler };
  const temporary = `${binary}.${process.pid}.tmp`;
  try {
    await run(compiler, [...FLAGS, '-o', temporary, source], { timeout: 120_000 });
    renameSync(temporary, binary);
    // Builds of older sources are of no more use.
    for (const entry of readdirSync(directory)) {
      if (/^shm-ring-[0-9a-f]{12}$/.test(entry) && path.join(directory, entry) !== binary)
        rmSync(path.join(directory, entry), { force: true });
    }
  } catch (error) {
    rmSync(temporary, { force: true });
    const { stderr } = error as { stderr?: string };
    if (errorCode(error) === 'ENOENT') {
      throw new CRingError(
        'ENOENT',
        `no C compiler ("${compiler}" was not found), so the C ring rows are left out. To measure it, install one (Debian: apt-get install gcc) or set CC; --no-c-ring leaves it out without this note.`,
      );
    }
    throw new CRingError(
      'ERR_C_RING_BUILD',
      `building the C ring failed: ${compiler} ${[...FLAGS, '-o', temporary, source].join(' ')}\n${stderr ?? (error as Error).message}`,
    );
  }
  return { binary, built: true, compiler };
}

async function runC(binary: string, args: string[], seconds: number): Promise<unknown> {
  try {
    const { stdout } = await run(binary, args, { timeout: (seconds + 30) * 1000 });
    return JSON.parse(stdout);
  } catch (error) {
    const { code, stderr } = error as { code?: number | string; stderr?: string };
    // Exit status 2 is the ring's own "the data did not verify".
    const verifyFailed = code === 2;
    throw new CRingError(
      verifyFailed ? 'EBADMSG' : 'ECHILD',
      `the C ring (${path.basename(binary)} ${args.join(' ')}) failed${verifyFailed ? ': its data did not verify' : ''}: ${(stderr ?? (error as Error).message).trim()}`,
    );
  }
}

export async function cThroughput(binary: string, chunk: number, ring: number, seconds: number, spin: boolean): Promise<CThroughput> {
  return (await runC(binary, ['throughput', String(chunk), String(ring), String(seconds), spin ? 'spin' : 'wait'], seconds)) as CThroughput;
}

export async function cLatency(binary: string, size: number, ring: number, seconds: number, spin: boolean): Promise<CLatency> {
  return (await runC(binary, ['latency', String(size), String(ring), String(seconds), spin ? 'spin' : 'wait'], seconds)) as CLatency;
}
