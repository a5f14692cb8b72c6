// XenStore permissions as xenstored applies them, with each domain in its own process.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openXenStore, type XenStore } from '@xen-vchan/xenstore';
import { inDomain } from './domains.js';

// The vchan handshake's permissions: owner 1 with no default access, domain 2 may read.
const PUBLISHED = [
  { domid: 1, access: 'none' },
  { domid: 2, access: 'read' },
] as const;

describe('xenstore permissions', () => {
  let owner: XenStore;

  beforeAll(async () => {
    owner = await openXenStore({ domid: 1 });
    await owner.write('data/vchan/2/test/ring-ref', '8');
    await owner.setPermissions('data/vchan/2/test/ring-ref', [...PUBLISHED]);
    // Let the peer walk down to it, as a real server's directory would.
    await owner.setPermissions('data/vchan', [
      { domid: 1, access: 'none' },
      { domid: 2, access: 'read' },
    ]);
  });

  afterAll(() => owner.close());

  it('lets the listed peer read but not write', async () => {
    expect(await inDomain(2, `return xs.read('/local/domain/1/data/vchan/2/test/ring-ref');`)).toBe('8');
    await expect(inDomain(2, `await xs.write('/local/domain/1/data/vchan/2/test/ring-ref', '9');`)).rejects.toMatchObject({
      code: 'EACCES',
    });
    await expect(inDomain(2, `await xs.rm('/local/domain/1/data/vchan/2/test/ring-ref');`)).rejects.toMatchObject({ code: 'EACCES' });
    expect(await owner.read('data/vchan/2/test/ring-ref')).toBe('8');
  });

  it('keeps a third domain out entirely', async () => {
    await expect(inDomain(3, `return xs.read('/local/domain/1/data/vchan/2/test/ring-ref');`)).rejects.toMatchObject({ code: 'EACCES' });
    await expect(inDomain(3, `return xs.getPermissions('/local/domain/1/data/vchan/2/test/ring-ref');`)).rejects.toMatchObject({
      code: 'EACCES',
    });
  });

  it('does not tell a domain without rights whether a node exists', async () => {
    // Domain 2 may read data/vchan, so a missing node there is ENOENT to it; to domain 3 it is EACCES.
    await expect(inDomain(2, `return xs.read('/local/domain/1/data/vchan/missing');`)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(inDomain(3, `return xs.read('/local/domain/1/data/vchan/missing');`)).rejects.toMatchObject({ code: 'EACCES' });
    // What decides is the nearest node that exists: data/vchan/2 kept the `n1` it was created with.
    await expect(inDomain(2, `return xs.read('/local/domain/1/data/vchan/2/missing');`)).rejects.toMatchObject({ code: 'EACCES' });
  });

  it('gives the first entry to everyone not listed, and the owner every right', async () => {
    await owner.write('data/open', 'anyone');
    await owner.setPermissions('data/open', [
      { domid: 1, access: 'read' },
      { domid: 4, access: 'none' },
    ]);
    expect(await inDomain(3, `return xs.read('/local/domain/1/data/open');`)).toBe('anyone');
    await expect(inDomain(4, `return xs.read('/local/domain/1/data/open');`)).rejects.toMatchObject({ code: 'EACCES' });
    await owner.write('data/open', 'still mine');
    expect(await owner.read('data/open')).toBe('still mine');
  });

  it('lets a domain with write access create below, as the owner of what it creates', async () => {
    await owner.write('data/inbox', '');
    await owner.setPermissions('data/inbox', [
      { domid: 1, access: 'none' },
      { domid: 2, access: 'both' },
    ]);
    await inDomain(2, `await xs.write('/local/domain/1/data/inbox/from-2/note', 'hello');`);
    // Created nodes inherit the parent's list, but their owner is the creator...
    const permissions = await inDomain(0, `return xs.getPermissions('/local/domain/1/data/inbox/from-2/note');`);
    expect(permissions).toEqual([
      { domid: 2, access: 'none' },
      { domid: 2, access: 'both' },
    ]);
    // ...so the domain whose home they sit in cannot even read them, as with xenstored.
    await expect(owner.read('data/inbox/from-2/note')).rejects.toMatchObject({ code: 'EACCES' });
    expect(await inDomain(2, `return xs.read('/local/domain/1/data/inbox/from-2/note');`)).toBe('hello');
  });

  it('lets only the owner (or dom0) change permissions, and only dom0 change the owner', async () => {
    await expect(
      inDomain(2, `await xs.setPermissions('/local/domain/1/data/vchan/2/test/ring-ref', [{ domid: 2, access: 'both' }]);`),
    ).rejects.toMatchObject({
      code: 'EACCES',
    });
    await expect(owner.setPermissions('data/vchan/2/test/ring-ref', [{ domid: 2, access: 'none' }])).rejects.toMatchObject({
      code: 'EPERM',
    });
    await inDomain(0, `await xs.setPermissions('/local/domain/1/data/open', [{ domid: 3, access: 'none' }]);`);
    expect(await inDomain(3, `return xs.getPermissions('/local/domain/1/data/open');`)).toEqual([{ domid: 3, access: 'none' }]);
  });

  it('refuses an owner that is no domain (ENOENT), as xenstored 4.17 does', async () => {
    await inDomain(
      0,
      `
      await xs.write('/tool/owned', '');
      await xs.setPermissions('/tool/owned', [{ domid: 0, access: 'none' }, { domid: 999, access: 'read' }]);
    `,
    );
    await expect(inDomain(0, `await xs.setPermissions('/tool/owned', [{ domid: 999, access: 'none' }]);`)).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });

  it('checks permission lists before sending them', async () => {
    await expect(owner.setPermissions('data/open', [])).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(owner.setPermissions('data/open', [{ domid: 1, access: 'all' as never }])).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
    });
    await expect(owner.setPermissions('data/open', [{ domid: 40000, access: 'read' }])).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
    });
  });

  it('limits a permission list to 5 entries for unprivileged domains, as xenstored does', async () => {
    await owner.write('data/crowded', '');
    const six = [1, 2, 3, 4, 5, 6].map((domid) => ({ domid, access: 'read' as const }));
    await expect(owner.setPermissions('data/crowded', six)).rejects.toMatchObject({ code: 'ENOSPC' });
    await owner.setPermissions('data/crowded', six.slice(0, 5));
  });
});
