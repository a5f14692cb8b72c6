// Proves that the harness really runs vitest inside a Xen dom0 with the devices under test.
// Outside the harness (XEN_VCHAN_IN_DOM0 unset, e.g. a plain `vitest run` on the host) it fails:
// a test that needs Xen runs under the harness, it does not quietly skip.
import { execFileSync } from 'node:child_process';
import { closeSync, constants, existsSync, openSync, readFileSync, statSync } from 'node:fs';
import { beforeEach, describe, expect, it } from 'vitest';
import { requireDom0 } from './dom0.js';

describe('real Xen dom0 (harness smoke test)', () => {
  beforeEach(() => requireDom0('test/xen/smoke.test.ts'));

  it.each(['evtchn', 'gntalloc', 'gntdev'])('/dev/xen/%s is a character device', (name) => {
    const path = `/dev/xen/${name}`;
    expect(existsSync(path)).toBe(true);
    expect(statSync(path).isCharacterDevice()).toBe(true);
  });

  it('/dev/xen/evtchn opens read-write', () => {
    closeSync(openSync('/dev/xen/evtchn', constants.O_RDWR));
  });

  it('the hypervisor is Xen and we are its control domain', () => {
    const type = existsSync('/sys/hypervisor/type') ? readFileSync('/sys/hypervisor/type', 'utf8').trim() : '';
    expect(type).toBe('xen');
    expect(readFileSync('/proc/xen/capabilities', 'utf8')).toContain('control_d');
  });

  it('xenstored answers and knows dom0', () => {
    const read = (key: string) => execFileSync('xenstore-read', [key], { encoding: 'utf8' }).trim();
    expect(read('/local/domain/0/domid')).toBe('0');
    expect(read('/local/domain/0/name')).toBe('Domain-0');
  });

  it('/dev/shm is a writable tmpfs', () => {
    const mounts = readFileSync('/proc/mounts', 'utf8').split('\n');
    expect(mounts.some((line) => /^\S+ \/dev\/shm tmpfs /.test(line))).toBe(true);
  });
});
