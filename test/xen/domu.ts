// A second guest for the two-domain tests: dom0 (where vitest runs) starts a PV domU with Xen's
// own toolstack (`xl create`), booting the dom0 kernel with the domU initramfs (setup.sh's base
// plus this checkout, see domu/image.sh), and runs commands in it through the guest's job agent
// (domu/agent.mjs), which takes them from XenStore. Only usable inside the harness's dom0.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { openXenStore, type XenStore } from '@xen-vchan/xenstore';

const run = promisify(execFile);
const harness = dirname(fileURLToPath(import.meta.url));
export const projectRoot = resolve(harness, '../..');
const consoleDir = '/tmp/xen-console';

/** What a job in the guest ended with; `output` is the tail of its stdout and stderr. */
export interface JobResult {
  code: number | null;
  signal: string | null;
  output: string;
}

function cache(): string {
  if (process.env.XEN_VCHAN_XEN_CACHE) return process.env.XEN_VCHAN_XEN_CACHE;
  const root = process.env.XEN_VCHAN_XEN_ROOT;
  if (!root) throw new Error('XEN_VCHAN_XEN_ROOT is not set: the two-domain tests run in the harness dom0 (bash test/xen/run.sh)');
  return dirname(root);
}

let toolstackReady = false;

/**
 * What a Xen host's init scripts do before `xl create` works: xen-init-dom0 (libxl's view of dom0;
 * it does nothing while /local/domain/0/domid exists, which dom0-init wrote for libxenvchan, so
 * that goes first and xen-init-dom0 writes it again) and xenconsoled, logging each guest's
 * console to a file.
 */
export async function prepareToolstack(): Promise<void> {
  // Once per boot: each test file has its own copy of this module, but dom0 has one xenconsoled.
  if (toolstackReady || existsSync('/run/xen/toolstack-ready')) return;
  for (const dir of ['/var/lib/xen', '/var/log/xen', '/run/xen', '/var/lock', consoleDir]) mkdirSync(dir, { recursive: true });
  await run('xenstore-rm', ['/local/domain/0/domid']);
  await run('xen-init-dom0', []);
  await run('xenconsoled', ['--pid-file=/run/xen/xenconsoled.pid', '--log=guest', `--log-dir=${consoleDir}`]);
  writeFileSync('/run/xen/toolstack-ready', '');
  toolstackReady = true;
}

export interface GuestOptions {
  name: string;
  memoryMiB?: number;
  vcpus?: number;
  /** More kernel command-line options for the guest (e.g. xen_privcmd.unrestricted=1). */
  kernelArgs?: string;
  /**
   * The Xen modules the guest's init loads (default: xen-evtchn, xen-gntdev, xen-gntalloc and
   * xenfs); `[]` boots it without any, for tests that load them as a user would. XenStore
   * (/dev/xen/xenbus) is built into the kernel, so the agent runs either way.
   */
  modules?: string[];
  /** How long to wait for the guest's agent to report ready (ms). */
  bootTimeout?: number;
}

/** The guest kernel's command line: the console, init.sh's module choice, then the caller's extras. */
function kernelCommandLine(options: GuestOptions): string {
  const args = ['console=hvc0', 'quiet', 'loglevel=3'];
  if (options.modules) {
    if (options.modules.some((name) => !/^[a-z0-9_-]+$/.test(name))) throw new Error(`not module names: ${options.modules.join(' ')}`);
    args.push(`xen_vchan_domu_modules=${options.modules.length > 0 ? options.modules.join(',') : 'none'}`);
  }
  if (options.kernelArgs) args.push(options.kernelArgs);
  return args.join(' ');
}

export class Guest {
  private nextJob = 1;

  private constructor(
    readonly name: string,
    readonly domid: number,
    private readonly xenstore: XenStore,
  ) {}

  /** xl create, then waits until the guest's agent is up. */
  static async start(options: GuestOptions): Promise<Guest> {
    await prepareToolstack();
    const image = `/tmp/${options.name}-initrd.cpio`;
    await run('bash', [join(harness, 'domu/image.sh'), image]);
    const config = `/tmp/${options.name}.cfg`;
    writeFileSync(
      config,
      [
        `name = "${options.name}"`,
        'type = "pv"',
        `kernel = "${join(cache(), 'images/vmlinux')}"`,
        `ramdisk = "${image}"`,
        `extra = "${kernelCommandLine(options)}"`,
        `memory = ${options.memoryMiB ?? 768}`,
        `vcpus = ${options.vcpus ?? 2}`,
        'on_poweroff = "destroy"',
        'on_crash = "destroy"',
        '',
      ].join('\n'),
    );
    await run('xl', ['create', config], { timeout: 120_000 });
    let domid: number;
    let xenstore: XenStore;
    try {
      domid = Number((await run('xl', ['domid', options.name])).stdout.trim());
      xenstore = await openXenStore({ transport: 'socket' });
    } catch (error) {
      await run('xl', ['destroy', options.name]).catch(() => {});
      throw error;
    }
    const guest = new Guest(options.name, domid, xenstore);
    try {
      await guest.waitFor('ready', options.bootTimeout ?? 120_000);
    } catch (error) {
      await guest.destroy();
      throw new Error(`${(error as Error).message}\n--- console of ${options.name}:\n${guest.console()}`);
    }
    return guest;
  }

  private get base(): string {
    return `/local/domain/${this.domid}/data/agent`;
  }

  /** Resolves with the value of data/agent/<key> once it exists. */
  private async waitFor(key: string, timeout: number): Promise<string> {
    const path = `${this.base}/${key}`;
    const watch = await this.xenstore.watch(path);
    const timer = setTimeout(() => void watch.close(), timeout);
    try {
      for await (const _event of watch) {
        const value = await this.xenstore.read(path).catch(() => null);
        if (value !== null) return value;
      }
      throw new Error(`${this.name} (domain ${this.domid}): nothing at ${path} within ${timeout} ms`);
    } finally {
      clearTimeout(timer);
      await watch.close().catch(() => {});
    }
  }

  /** Starts `argv` in the guest; `done` resolves when it ends (rejects after `timeout` ms). */
  spawn(
    argv: string[],
    options: { env?: Record<string, string>; timeout?: number } = {},
  ): { id: string; started: Promise<void>; done: Promise<JobResult>; kill: (signal?: string) => Promise<void> } {
    const id = String(this.nextJob++);
    const done = (async () => {
      const ended = this.waitFor(`done/${id}`, options.timeout ?? 600_000);
      await this.xenstore.write(`${this.base}/jobs/${id}`, JSON.stringify({ argv, env: options.env ?? {} }));
      const result = JSON.parse(await ended) as JobResult;
      return result;
    })();
    const started = this.waitFor(`started/${id}`, 60_000).then(() => {});
    // Callers await what they need; the other promise must not count as an unhandled rejection.
    started.catch(() => {});
    done.catch(() => {});
    const kill = async (signal = 'SIGKILL') => {
      await this.xenstore.write(`${this.base}/kill/${id}`, signal);
    };
    return { id, started, done, kill };
  }

  /** Runs `argv` to its end; rejects unless it exits 0, with its output in the message. */
  async run(argv: string[], options: { env?: Record<string, string>; timeout?: number } = {}): Promise<JobResult> {
    const result = await this.spawn(argv, options).done;
    if (result.code !== 0) {
      throw new Error(`${argv.join(' ')} in ${this.name} ended with ${result.signal ?? `status ${result.code}`}:\n${result.output}`);
    }
    return result;
  }

  /** Node in the guest, from the project root, with the Xen backend. */
  node(script: string, args: string[] = []): string[] {
    return ['/usr/bin/node', join(projectRoot, script), ...args];
  }

  /** What the guest printed on its console so far (xenconsoled's log). */
  console(): string {
    if (!existsSync(consoleDir)) return '';
    const file = readdirSync(consoleDir).find((name) => name.includes(this.name));
    return file ? readFileSync(join(consoleDir, file), 'utf8') : '';
  }

  /** xl destroy; resolves once Xen no longer lists the domain (not even as a dying one). */
  async destroy(): Promise<void> {
    this.xenstore.close();
    await run('xl', ['destroy', String(this.domid)]).catch(() => {});
    await waitUntilGone(this.domid, 30_000);
  }
}

/** Whether Xen still knows the domain, alive or dying (a dying one waits for its pages to be let go). */
export function domainExists(domid: number): boolean {
  const listing = execFileSync('xl', ['list'], { encoding: 'utf8' });
  return listing
    .split('\n')
    .slice(1)
    .some((line) => line.trim().split(/\s+/)[1] === String(domid));
}

export async function waitUntilGone(domid: number, timeout: number): Promise<void> {
  const deadline = Date.now() + timeout;
  while (domainExists(domid)) {
    if (Date.now() > deadline)
      throw new Error(`domain ${domid} is still listed by xl ${timeout} ms after it was destroyed (pages still mapped?)`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
