// Reading and writing nodes through the client, on the simulated XenStore.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openXenStore, type XenStore } from '@xen-vchan/xenstore';
import { inDomain } from './domains.js';

describe('xenstore nodes', () => {
  let xs: XenStore;
  let dom0: XenStore;

  beforeAll(async () => {
    xs = await openXenStore({ domid: 1 });
    dom0 = await openXenStore({ domid: 0 });
  });

  afterAll(() => {
    xs.close();
    dom0.close();
  });

  it('says which transport and domain it uses', () => {
    expect(xs.transport).toBe('sim');
    expect(xs.domid).toBe(1);
  });

  it('gives each domain a home like a toolstack does, with its domid', async () => {
    expect(await xs.ownDomid()).toBe(1);
    expect(await xs.read('/local/domain/1/domid')).toBe('1');
    expect(await xs.getDomainPath(1)).toBe('/local/domain/1');
    expect(await xs.getDomainPath(42)).toBe('/local/domain/42');
    expect(await xs.directory('/local/domain/1')).toEqual(['domid', 'data']);
    // The home is dom0's and only readable by the domain; `data` is the domain's own.
    expect(await xs.getPermissions('/local/domain/1')).toEqual([
      { domid: 0, access: 'none' },
      { domid: 1, access: 'read' },
    ]);
    expect(await xs.getPermissions('data')).toEqual([{ domid: 1, access: 'none' }]);
  });

  it('writes, reads back, lists and removes', async () => {
    await xs.write('/local/domain/1/data/basics/a', 'one');
    await xs.write('/local/domain/1/data/basics/b', Buffer.from([0, 1, 2, 255]));
    expect(await xs.read('/local/domain/1/data/basics/a')).toBe('one');
    expect([...(await xs.readBytes('/local/domain/1/data/basics/b'))]).toEqual([0, 1, 2, 255]);
    expect(await xs.directory('/local/domain/1/data/basics')).toEqual(['a', 'b']);
    await xs.write('/local/domain/1/data/basics/a', '');
    expect(await xs.read('/local/domain/1/data/basics/a')).toBe('');
    await xs.rm('/local/domain/1/data/basics/a');
    expect(await xs.directory('/local/domain/1/data/basics')).toEqual(['b']);
  });

  it('creates missing ancestors on write, and mkdir leaves an existing node alone', async () => {
    await xs.write('data/deep/er/still', 'x');
    expect(await xs.read('data/deep/er')).toBe('');
    await xs.mkdir('data/deep/er');
    expect(await xs.directory('data/deep/er')).toEqual(['still']);
    await xs.mkdir('data/empty');
    expect(await xs.read('data/empty')).toBe('');
    expect(await xs.directory('data/empty')).toEqual([]);
  });

  it('removes a whole subtree; removing a missing node is fine if its parent exists', async () => {
    await xs.write('data/tree/a/b/c', '1');
    await xs.write('data/tree/d', '2');
    await xs.rm('data/tree');
    await expect(xs.read('data/tree/a/b/c')).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(xs.directory('data/tree')).rejects.toMatchObject({ code: 'ENOENT' });
    await xs.rm('data/tree');
    await expect(xs.rm('data/tree/a/b')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('resolves relative paths against /local/domain/<own domid>/', async () => {
    await xs.write('data/relative', 'mine');
    expect(await xs.read('/local/domain/1/data/relative')).toBe('mine');
    expect(await inDomain(2, `return xs.read('/local/domain/1/data/relative').catch((e) => e.code);`)).toBe('EACCES');
    // Another domain's relative path is its own home.
    expect(await inDomain(2, `await xs.write('data/relative', 'theirs'); return xs.read('/local/domain/2/data/relative');`)).toBe('theirs');
    expect(await xs.read('data/relative')).toBe('mine');
  });

  it('rejects a missing node with ENOENT and says what to do', async () => {
    const error = await xs.read('data/not-there').catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'XenVchanError', code: 'ENOENT' });
    expect((error as Error).message).toMatch(/read data\/not-there failed: ENOENT.*relative to \/local\/domain/);
  });

  it('rejects malformed paths with EINVAL, as xenstored does', async () => {
    for (const path of ['data/trailing/', 'data//double', 'data/sp ace', '/local/domain/1/data/é']) {
      await expect(xs.write(path, 'x'), path).rejects.toMatchObject({ code: 'EINVAL' });
    }
    // Even dom0 may not remove the root; a domain without rights on it hears EACCES first.
    await expect(dom0.rm('/')).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(xs.rm('/')).rejects.toMatchObject({ code: 'EACCES' });
  });

  it('refuses, before sending, what cannot be framed or is over the 4096-byte payload limit', async () => {
    await expect(xs.read('data/nul\0inside')).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    const error = await xs.write('data/big', 'x'.repeat(4096)).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'E2BIG' });
    expect((error as Error).message).toMatch(/over the 4096 bytes/);
    // Just under the limit goes through.
    const fits = 'y'.repeat(4096 - Buffer.byteLength('data/big\0'));
    await xs.write('data/big', fits);
    expect(await xs.read('data/big')).toBe(fits);
  });

  it('matches many replies in flight to their requests', async () => {
    await Promise.all(Array.from({ length: 100 }, (_, i) => xs.write(`data/many/${i}`, `value ${i}`)));
    const values = await Promise.all(Array.from({ length: 100 }, (_, i) => xs.read(`data/many/${i}`)));
    expect(values).toEqual(Array.from({ length: 100 }, (_, i) => `value ${i}`));
    expect((await xs.directory('data/many')).length).toBe(100);
  });

  it('lists a directory too long for one message, in parts as libxenstore does', async () => {
    const names = Array.from({ length: 700 }, (_, i) => `child-${String(i).padStart(5, '0')}`);
    await Promise.all(names.map((name) => dom0.write(`/tool/long/${name}`, '')));
    // About 9 KiB of names: DIRECTORY answers E2BIG, so the client reads DIRECTORY_PART replies.
    expect(await dom0.directory('/tool/long')).toEqual(names);
    const tx = await dom0.startTransaction();
    await tx.write('/tool/long/zz-in-tx', '');
    expect(await tx.directory('/tool/long')).toEqual([...names, 'zz-in-tx']);
    await tx.abort();
  });

  it('lets dom0 do anything, anywhere', async () => {
    await dom0.write('/tool/sim-test/x', 'y');
    expect(await dom0.read('/tool/sim-test/x')).toBe('y');
    expect(await dom0.read('/local/domain/1/data/relative')).toBe('mine');
    await dom0.write('/local/domain/1/data/from-dom0', 'hi');
    expect(await xs.read('data/from-dom0')).toBe('hi');
    // Nodes dom0 creates inherit their parent's permissions, owner included.
    expect(await xs.getPermissions('data/from-dom0')).toEqual([{ domid: 1, access: 'none' }]);
    await expect(xs.read('/tool/sim-test/x')).rejects.toMatchObject({ code: 'EACCES' });
  });

  it('keeps nodes after the writing process exits, while the simulation runs', async () => {
    await inDomain(3, `await xs.write('data/survives', 'still here');`);
    expect(await dom0.read('/local/domain/3/data/survives')).toBe('still here');
  });
});
