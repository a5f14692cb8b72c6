// XenStore transactions: isolation, conflicts (EAGAIN), the retrying helper, and xenstored's limit.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openXenStore, type XenStore } from '@xen-vchan/xenstore';
import { inDomain } from './domains.js';

describe('xenstore transactions', () => {
  let xs: XenStore;

  beforeAll(async () => {
    xs = await openXenStore({ domid: 1 });
  });

  afterAll(() => xs.close());

  it('applies nothing until commit, then everything at once', async () => {
    const tx = await xs.startTransaction();
    await tx.write('data/tx/ring-ref', '8');
    await tx.write('data/tx/event-channel', '5');
    await tx.setPermissions('data/tx/ring-ref', [
      { domid: 1, access: 'none' },
      { domid: 2, access: 'read' },
    ]);
    expect(await tx.read('data/tx/ring-ref')).toBe('8');
    await expect(xs.read('data/tx/ring-ref')).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await tx.commit()).toBe(true);
    expect(await xs.read('data/tx/ring-ref')).toBe('8');
    expect(await xs.read('data/tx/event-channel')).toBe('5');
    expect(await xs.getPermissions('data/tx/ring-ref')).toEqual([
      { domid: 1, access: 'none' },
      { domid: 2, access: 'read' },
    ]);
  });

  it('sees a node as it was when it first touched it, and keeps that version (as xenstored 4.17)', async () => {
    await xs.write('data/pin', 'before');
    const tx = await xs.startTransaction();
    await xs.write('data/pin', 'committed before first read');
    expect(await tx.read('data/pin')).toBe('committed before first read');
    await xs.write('data/pin', 'committed after');
    expect(await tx.read('data/pin')).toBe('committed before first read');
    expect(await tx.commit()).toBe(false);
  });

  it('commits when a node changed only before the transaction first touched it', async () => {
    await xs.write('data/late', 'old');
    const tx = await xs.startTransaction();
    await tx.read('domid');
    await xs.write('data/late', 'new');
    expect(await tx.read('data/late')).toBe('new');
    await tx.write('data/late-copy', await tx.read('data/late'));
    expect(await tx.commit()).toBe(true);
    expect(await xs.read('data/late-copy')).toBe('new');
  });

  it('drops everything on abort', async () => {
    const tx = await xs.startTransaction();
    await tx.write('data/aborted', 'x');
    await tx.abort();
    await expect(xs.read('data/aborted')).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(tx.read('data/aborted')).rejects.toMatchObject({ code: 'ERR_TRANSACTION_ENDED' });
    await expect(tx.commit()).rejects.toMatchObject({ code: 'ERR_TRANSACTION_ENDED' });
    await tx.abort(); // idempotent
  });

  it('fails the commit (EAGAIN) when another process changed a node it used', async () => {
    await xs.write('data/counter', '0');
    const tx = await xs.startTransaction();
    const seen = Number(await tx.read('data/counter'));
    await inDomain(0, `await xs.write('/local/domain/1/data/counter', '100');`);
    await tx.write('data/counter', String(seen + 1));
    expect(await tx.commit()).toBe(false);
    expect(await xs.read('data/counter')).toBe('100');
  });

  it('does not conflict over nodes it never touched', async () => {
    await xs.mkdir('data/mine');
    await xs.write('data/unrelated', '');
    const tx = await xs.startTransaction();
    await tx.write('data/mine/a', '1');
    await inDomain(0, `await xs.write('/local/domain/1/data/unrelated', 'x');`);
    expect(await tx.commit()).toBe(true);
  });

  it('conflicts over a parent whose children changed, as xenstored does', async () => {
    // Creating a node rewrites its parent's child list, so two creators of siblings collide.
    const tx = await xs.startTransaction();
    await tx.write('data/mine/b', '1');
    await inDomain(0, `await xs.write('/local/domain/1/data/mine/c', 'x');`);
    expect(await tx.commit()).toBe(false);
  });

  it('transaction() runs the body again after a conflict and then succeeds', async () => {
    await xs.write('data/retried', '0');
    let runs = 0;
    const result = await xs.transaction(async (tx) => {
      runs++;
      const value = Number(await tx.read('data/retried'));
      if (runs === 1) await inDomain(0, `await xs.write('/local/domain/1/data/retried', '10');`);
      await tx.write('data/retried', String(value + 1));
      return value + 1;
    });
    expect(runs).toBe(2);
    expect(result).toBe(11);
    expect(await xs.read('data/retried')).toBe('11');
  });

  it('transaction() loses no update between concurrent processes', async () => {
    await xs.write('data/shared-counter', '0');
    const increments = (count: number) => `
      for (let i = 0; i < ${count}; i++) {
        await xs.transaction(async (tx) => {
          const value = Number(await tx.read('/local/domain/1/data/shared-counter'));
          await tx.write('/local/domain/1/data/shared-counter', String(value + 1));
        }, { attempts: 100 });
      }`;
    await Promise.all([inDomain(0, increments(25)), inDomain(0, increments(25)), inDomain(0, increments(25))]);
    expect(await xs.read('data/shared-counter')).toBe('75');
  });

  it('transaction() gives up with EAGAIN after its attempts', async () => {
    const other = await openXenStore({ domid: 1 });
    try {
      await xs.write('data/hot', '0');
      let runs = 0;
      const failure = await xs
        .transaction(
          async (tx) => {
            runs++;
            await tx.read('data/hot');
            await other.write('data/hot', String(runs));
            await tx.write('data/hot', 'lost');
          },
          { attempts: 3 },
        )
        .catch((e: unknown) => e);
      expect(runs).toBe(3);
      expect(failure).toMatchObject({ code: 'EAGAIN' });
      expect((failure as Error).message).toMatch(/conflicted 3 times/);
      expect(await xs.read('data/hot')).toBe('3');
    } finally {
      other.close();
    }
  });

  it('transaction() aborts and rethrows when the body fails', async () => {
    const failure = await xs
      .transaction(async (tx) => {
        await tx.write('data/half-done', 'x');
        await tx.read('data/not-there');
      })
      .catch((e: unknown) => e);
    expect(failure).toMatchObject({ code: 'ENOENT' });
    await expect(xs.read('data/half-done')).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('allows 10 open transactions per domain (ENOSPC beyond), freed when a connection closes', async () => {
    const outcome = await inDomain<{ opened: number; code: string; again: boolean }>(
      6,
      `
      const open = [];
      for (let i = 0; i < 10; i++) open.push(await xs.startTransaction());
      const code = await xs.startTransaction().then(() => 'none', (e) => e.code);
      await open[0].abort();
      const again = await xs.startTransaction().then(() => true);
      return { opened: open.length, code, again };
    `,
    );
    expect(outcome).toEqual({ opened: 10, code: 'ENOSPC', again: true });
    // That process exited with 10 transactions open: the simulation aborted them with its connection.
    expect(
      await inDomain(6, `const txs = []; for (let i = 0; i < 10; i++) txs.push(await xs.startTransaction()); return txs.length;`),
    ).toBe(10);
  });

  it('counts the limit per domain, across connections, and not for dom0', async () => {
    const connections = await Promise.all([openXenStore({ domid: 7 }), openXenStore({ domid: 7 })]);
    const dom0 = await openXenStore({ domid: 0 });
    try {
      for (let i = 0; i < 5; i++) await connections[0]!.startTransaction();
      for (let i = 0; i < 5; i++) await connections[1]!.startTransaction();
      await expect(connections[1]!.startTransaction()).rejects.toMatchObject({ code: 'ENOSPC' });
      for (let i = 0; i < 12; i++) await dom0.startTransaction();
    } finally {
      for (const connection of [...connections, dom0]) connection.close();
    }
  });

  it('does not nest', async () => {
    const tx = await xs.startTransaction();
    // A transaction's own requests carry its id; TRANSACTION_START with one is EBUSY in xenstored.
    await expect(
      (tx as unknown as { send(type: number, verb: string, path: string, payload: Buffer): Promise<Buffer> }).send(
        6,
        'start',
        '',
        Buffer.from('\0'),
      ),
    ).rejects.toMatchObject({ code: 'EBUSY' });
    await tx.abort();
  });
});
