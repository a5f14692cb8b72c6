// The commands of docs/real-xen.md, run as its reader would: vitest runs in dom0 and starts two PV
// guests (test/xen/domu.ts). Guest A boots without the Xen modules, so the test loads them the way
// the page says; guest B boots as usual. The example (examples/two-guests/) runs dom0 -> A and
// A -> B, and no process here has XEN_VCHAN_BACKEND set: the default backend must find Xen itself.
// Needs the harness: bash test/xen/run.sh test/xen/two-guests.test.ts
//
// The tests run in order: each loads or sets up what the next needs, as the page does.
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'vitest';
import { inDom0, requireDom0 } from './dom0.js';
import { Guest, projectRoot, type JobResult } from './domu.js';
import { xenstoreHas } from './polling.js';

/** Two guests beside dom0 in the harness's QEMU, as in guests.test.ts. */
const GUEST_MIB = 448;
const SERVER_SCRIPT = 'examples/two-guests/server.mjs';
const CLIENT_SCRIPT = 'examples/two-guests/client.mjs';
/** The devices the page's udev rule hands to the group, by their names under /dev. */
const RULE_DEVICES = ['xen/evtchn', 'xen/gntalloc', 'xen/gntdev', 'xen/xenbus'];

let bare: Guest | undefined;
let other: Guest | undefined;

/** argv for the guest's agent with XEN_VCHAN_BACKEND taken out of the environment it passes on. */
function withoutBackend(argv: string[]): string[] {
  return ['env', '-u', 'XEN_VCHAN_BACKEND', ...argv];
}

/** A shell command in a guest (busybox sh). */
function sh(script: string): string[] {
  return ['/bin/sh', '-c', script];
}

/** A process in dom0 without XEN_VCHAN_BACKEND (run.sh sets it for vitest), ended like a guest job. */
function runInDom0(argv: string[]): Promise<JobResult> {
  const env = { ...process.env };
  delete env.XEN_VCHAN_BACKEND;
  const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk: Buffer) => (output = (output + chunk.toString('utf8')).slice(-20_000));
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, output })));
}

/** What one half of the example reported: the sha256 of what it sent and of what it received. */
function exampleOutcome(job: JobResult, where: string): { sent: string; received: string } {
  const sent = /sent +(\d+) bytes, sha256 ([0-9a-f]{64})/.exec(job.output);
  const received = /received +(\d+) bytes, sha256 ([0-9a-f]{64})/.exec(job.output);
  if (job.code !== 0 || !sent || !received || !/: OK, what domain \d+ sent arrived intact/.test(job.output)) {
    throw new Error(`${where} ended with ${job.signal ?? `status ${job.code}`}:\n${job.output}`);
  }
  expect(Number(sent[1])).toBe(4 * 2 ** 20);
  expect(Number(received[1])).toBe(4 * 2 ** 20);
  return { sent: sent[2]!, received: received[2]! };
}

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const consoles = [bare, other].map((guest) => (guest ? `--- console of ${guest.name} (tail):\n${guest.console().slice(-3000)}` : ''));
      reject(new Error(`${what}: no outcome within ${ms} ms\n${consoles.join('\n')}`));
    }, ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The guest's /dev/xen, by name. */
async function devicesOf(guest: Guest): Promise<string[]> {
  const job = await guest.run(['ls', '/dev/xen']);
  return job.output.split(/\s+/).filter(Boolean).sort();
}

describe('docs/real-xen.md, checked in dom0 and two guests', () => {
  beforeAll(async () => {
    if (!inDom0) return; // beforeEach fails each test with the reason
    [bare, other] = await Promise.all([
      Guest.start({ name: 'vchan-doc-bare', memoryMiB: GUEST_MIB, modules: [] }),
      Guest.start({ name: 'vchan-doc-other', memoryMiB: GUEST_MIB }),
    ]);
  }, 240_000);
  afterAll(async () => {
    await Promise.all([bare?.destroy(), other?.destroy()]);
  }, 120_000);
  beforeEach(() => requireDom0('test/xen/two-guests.test.ts'));

  test('domain ids: `xl list` in dom0 and `xenstore-read domid` in each guest agree', async () => {
    const listing = execFileSync('xl', ['list'], { encoding: 'utf8' });
    for (const guest of [bare!, other!]) {
      expect(listing).toMatch(new RegExp(`^${guest.name}\\s+${guest.domid}\\s`, 'm'));
      const job = await guest.run(['xenstore-read', 'domid']);
      expect(job.output.trim()).toBe(String(guest.domid));
    }
  });

  test('with only xen-evtchn and xen-gntdev loaded, the example client in the guest reaches the example server in dom0', async () => {
    // Booted bare: XenStore's device is built into the kernel, the three others are modules.
    const before = await devicesOf(bare!);
    expect(before).toContain('xenbus');
    for (const module of ['evtchn', 'gntalloc', 'gntdev']) expect(before).not.toContain(module);
    await bare!.run(['modprobe', '-a', 'xen-evtchn', 'xen-gntdev']);
    const devices = await devicesOf(bare!);
    expect(devices).toEqual(expect.arrayContaining(['evtchn', 'gntdev', 'xenbus']));
    expect(devices).not.toContain('gntalloc');

    const name = 'dom0-serves';
    const server = runInDom0([process.execPath, join(projectRoot, SERVER_SCRIPT), String(bare!.domid), name]);
    const client = bare!.spawn(withoutBackend(bare!.node(CLIENT_SCRIPT, ['0', name])), { timeout: 120_000 });
    const [fromServer, fromClient] = await within(
      Promise.all([
        server.then((job) => exampleOutcome(job, 'server.mjs in dom0')),
        client.done.then((job) => exampleOutcome(job, 'client.mjs in the guest')),
      ]),
      90_000,
      'the example, dom0 serving the guest',
    );
    expect(fromClient.received).toBe(fromServer.sent);
    expect(fromServer.received).toBe(fromClient.sent);
    expect(await xenstoreHas(`/local/domain/0/data/vchan/${bare!.domid}/${name}/ring-ref`)).toBe(false);
  });

  test('without xen-gntalloc, createServer with the default backend fails with ENOENT naming `modprobe xen-gntalloc`', async () => {
    const name = 'no-gntalloc';
    const attempt = [
      "import { createServer } from '@xen-vchan/vchan';",
      'try {',
      `  await createServer({ domid: 0, name: '${name}' }).listen();`,
      "  console.log(JSON.stringify({ listening: 'a server published without /dev/xen/gntalloc' }));",
      '} catch (error) {',
      '  console.log(JSON.stringify({ code: error.code, message: error.message }));',
      '}',
      'process.exit(0);',
    ].join('\n');
    const job = await bare!.run(withoutBackend(['/usr/bin/node', '--input-type=module', '-e', attempt]), { timeout: 60_000 });
    const outcome = JSON.parse(job.output.trim().split('\n').at(-1)!) as { code?: string; message?: string; listening?: string };
    expect(outcome.listening).toBeUndefined();
    expect(outcome.code).toBe('ENOENT');
    expect(outcome.message).toContain('modprobe xen-gntalloc');
    // Nothing was published in the real XenStore for a server that never shared its pages.
    expect(await xenstoreHas(`/local/domain/${bare!.domid}/data/vchan/0/${name}/ring-ref`)).toBe(false);
  });

  test("the page's modprobe line loads the rest; the udev rule's device names are the kernel's", async () => {
    await bare!.run(['modprobe', '-a', 'xen-evtchn', 'xen-gntdev', 'xen-gntalloc']);
    expect(await devicesOf(bare!)).toEqual(expect.arrayContaining(['evtchn', 'gntalloc', 'gntdev', 'xenbus']));
    // udev matches KERNEL against the device's name, which sysfs spells with "!" for "/".
    const job = await bare!.run(sh('for d in /sys/class/misc/xen!*; do grep ^DEVNAME= "$d/uevent"; done'));
    const names = job.output
      .split('\n')
      .filter((line) => line.startsWith('DEVNAME='))
      .map((line) => line.slice('DEVNAME='.length).trim());
    expect(names).toEqual(expect.arrayContaining(RULE_DEVICES));
  });

  test("a non-root user: refused with EACCES until the devices are its group's (what the udev rule does), then serves guest B", async () => {
    // What `groupadd xen && useradd -G xen alice` would write (busybox has neither).
    await bare!.run(
      sh(
        [
          "echo 'alice:x:1000:1000::/tmp:/bin/sh' >> /etc/passwd",
          "echo 'alice:x:1000:' >> /etc/group",
          "echo 'xen:x:990:alice' >> /etc/group",
        ].join(' && '),
      ),
    );
    const asAlice = (argv: string[]) => withoutBackend(['su', 'alice', '-s', '/bin/sh', '-c', 'exec "$@"', 'alice', ...argv]);
    const server = (name: string) => asAlice(bare!.node(SERVER_SCRIPT, [String(other!.domid), name]));

    // The kernel creates the nodes root's alone (0600); the library says what to do about it.
    const modes = await bare!.run(['stat', '-c', '%a %U %G %n', ...RULE_DEVICES.map((device) => `/dev/${device}`)]);
    for (const line of modes.output.trim().split('\n')) expect(line).toMatch(/^600 root root /);
    const refused = await bare!.spawn(server('before-rule'), { timeout: 60_000 }).done;
    expect(refused.code).not.toBe(0);
    expect(refused.output).toMatch(/EACCES|EPERM/);
    expect(refused.output).toContain('udev rule');

    // What the rule's GROUP="xen", MODE="0660" does to each node when it appears.
    const nodes = RULE_DEVICES.map((device) => `/dev/${device}`).join(' ');
    await bare!.run(sh(`chgrp xen ${nodes} && chmod 0660 ${nodes}`));

    const name = 'alice-serves';
    const serving = bare!.spawn(server(name), { timeout: 120_000 });
    const client = other!.spawn(withoutBackend(other!.node(CLIENT_SCRIPT, [String(bare!.domid), name])), { timeout: 120_000 });
    const [fromServer, fromClient] = await within(
      Promise.all([
        serving.done.then((job) => exampleOutcome(job, 'server.mjs as alice in guest A')),
        client.done.then((job) => exampleOutcome(job, 'client.mjs in guest B')),
      ]),
      90_000,
      'the example, guest A serving guest B',
    );
    expect(fromClient.received).toBe(fromServer.sent);
    expect(fromServer.received).toBe(fromClient.sent);
    const whoami = await bare!.run(asAlice(['id']));
    expect(whoami.output).toMatch(/uid=1000\(alice\).*groups=.*990\(xen\)/);
  });
});
