import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { restoreNames } from '../activities/names.js';
import { backupReaders, instances } from '../db/schema/index.js';
import { addReader, liveReaders, removeReader } from '../lib/backups.js';
import { backupNow, canConnect, contentChecksums, createInstance, databasesLike, openContext, runActivity, seedMixed, uniqueName, withInstanceDb, type TestContext } from './helpers.js';

/**
 * Each restore step run again after a crash at its worst moment (the real
 * activities on the real servers, as a retry would run them): each converges
 * on the same end state and never touches what its instance does not own.
 */
let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx.close();
});

async function setup(prefix: string) {
  const srcName = uniqueName(`${prefix}s`);
  const src = await createInstance(ctx, srcName);
  await seedMixed(ctx, srcName, 300);
  const atBackup = await contentChecksums(ctx, srcName);
  const { row: backup } = await backupNow(ctx, src.id, 'steps');
  const name = uniqueName(`${prefix}t`);
  const target = await createInstance(ctx, name);
  await seedMixed(ctx, name, 10);
  const targetBefore = await contentChecksums(ctx, name);
  const workflowId = `steps-${target.id}`;
  const a = ctx.activities;
  const run = <F extends (...args: any[]) => Promise<any>>(fn: F, ...args: Parameters<F>) => runActivity(workflowId, fn, ...args);
  return { backup, atBackup, target, name, targetBefore, run, a, names: restoreNames(name), engine: ctx.regions.get('primary')!.engine };
}

describe('restore steps retried after a crash', () => {
  it('a second pg_restore attempt starts its staging copy afresh, whatever the first left', async () => {
    const t = await setup('st');
    await t.run(t.a.verifyArchive, { backupId: t.backup.id });
    // A killed first attempt: a staging copy with half the data and junk in it.
    await t.engine.createDatabase(t.names.incoming, `bcdr:instance=${t.target.id}`);
    await withInstanceDb(ctx, t.names.incoming, (sql) => sql`CREATE TABLE junk (x int)`);
    const facts = await t.run(t.a.restoreToStaging, { backupId: t.backup.id, instanceId: t.target.id, jobs: 2, advanceSequences: false });
    expect(facts.databaseBytes).toBeGreaterThan(0);
    expect(await contentChecksums(ctx, t.names.incoming)).toEqual(t.atBackup);
    expect(await contentChecksums(ctx, t.name)).toEqual(t.targetBefore); // the target is untouched until the swap
    await t.run(t.a.discardStaging, { instanceId: t.target.id, backupId: t.backup.id });
    await t.run(t.a.discardStaging, { instanceId: t.target.id, backupId: t.backup.id });
    expect(await databasesLike(ctx, `${t.name}__`)).toEqual([]);
  });

  it('a swap killed after its renames, and run again, only finishes the clean-up; a third run changes nothing', async () => {
    const t = await setup('sw');
    await t.run(t.a.verifyArchive, { backupId: t.backup.id });
    await t.run(t.a.restoreToStaging, { backupId: t.backup.id, instanceId: t.target.id, jobs: 1, advanceSequences: false });
    // The crash: the rename transaction committed, the replaced copy was never dropped, the catalog never updated.
    expect(await t.engine.swapDatabases(t.names)).toBe('swapped');
    expect(await databasesLike(ctx, `${t.name}__`)).toEqual([t.names.retired]);
    await t.run(t.a.swapInRestored, { backupId: t.backup.id, instanceId: t.target.id });
    await t.run(t.a.swapInRestored, { backupId: t.backup.id, instanceId: t.target.id });
    // The replaced copy is left to the housekeeping step (its own run, after the restore), which may also run twice.
    expect(await databasesLike(ctx, `${t.name}__`)).toEqual([t.names.retired]);
    await t.run(t.a.dropRetired, { instanceId: t.target.id });
    await t.run(t.a.dropRetired, { instanceId: t.target.id });
    expect(await databasesLike(ctx, `${t.name}__`)).toEqual([]);
    const [row] = await ctx.db.select().from(instances).where(eq(instances.id, t.target.id));
    expect(row!.state).toBe('suspended');
    expect(await canConnect(ctx, t.name)).toBe(false);
    await t.run(t.a.resumeRestoredInstance, { instanceId: t.target.id });
    await t.run(t.a.resumeRestoredInstance, { instanceId: t.target.id });
    expect(await contentChecksums(ctx, t.name)).toEqual(t.atBackup);
  });

  it('never drops or swaps in a database its instance does not own', async () => {
    const t = await setup('own');
    await t.run(t.a.verifyArchive, { backupId: t.backup.id });
    // A stray database under the staging name, owned by nobody: the restore refuses to touch it.
    await withInstanceDb(ctx, 'postgres', (sql) => sql.unsafe(`CREATE DATABASE "${t.names.incoming}"`));
    await expect(t.run(t.a.restoreToStaging, { backupId: t.backup.id, instanceId: t.target.id, jobs: 1, advanceSequences: false })).rejects.toThrow(/does not belong to instance/);
    await expect(t.run(t.a.swapInRestored, { backupId: t.backup.id, instanceId: t.target.id })).rejects.toThrow(/does not belong to instance/);
    await t.run(t.a.discardStaging, { instanceId: t.target.id });
    expect(await databasesLike(ctx, `${t.name}__`)).toEqual([t.names.incoming]); // still there, untouched
    expect(await contentChecksums(ctx, t.name)).toEqual(t.targetBefore);
    await withInstanceDb(ctx, 'postgres', (sql) => sql.unsafe(`DROP DATABASE "${t.names.incoming}"`));
  });

  it('a reset killed after its drop, and run again, creates the database empty with the same owner tag', async () => {
    const t = await setup('rs');
    await t.engine.dropDatabase(t.name, `bcdr:instance=${t.target.id}`); // the crash: dropped, not yet created
    await t.run(t.a.resetDatabase, { instanceId: t.target.id });
    await t.run(t.a.resetDatabase, { instanceId: t.target.id });
    expect(await t.engine.ownerTag(t.name)).toBe(`bcdr:instance=${t.target.id}`);
    expect(await contentChecksums(ctx, t.name)).toEqual({ '(large objects)': '0:empty' });
  });

  it('a suspended database the engine opened for itself and could not close (a crash) is closed by the next engine call', async () => {
    const t = await setup('door');
    await t.engine.setConnectionsAllowed(t.name, false);
    expect(await canConnect(ctx, t.name)).toBe(false);
    // The crash: the door was opened for the engine's own session and never shut.
    await withInstanceDb(ctx, 'postgres', (sql) => sql.unsafe(`ALTER DATABASE "${t.name}" WITH ALLOW_CONNECTIONS true`));
    expect(await canConnect(ctx, t.name)).toBe(true);
    const seqs = await t.engine.sequences(t.name);
    expect(Object.keys(seqs)).toContain('public.invoice_numbers');
    expect(await canConnect(ctx, t.name)).toBe(false);
    await t.engine.setConnectionsAllowed(t.name, true);
    expect(await canConnect(ctx, t.name)).toBe(true);
  });

  it("never swaps over a database that is not the instance's own, nor a staging copy its run did not finish", async () => {
    const t = await setup('adopt');
    await t.run(t.a.verifyArchive, { backupId: t.backup.id });
    // Someone re-tagged the target's database: the restore refuses before it reads or renames anything.
    await withInstanceDb(ctx, 'postgres', (sql) => sql.unsafe(`COMMENT ON DATABASE "${t.name}" IS 'someone-else'`));
    await expect(t.run(t.a.restoreToStaging, { backupId: t.backup.id, instanceId: t.target.id, jobs: 1, advanceSequences: false })).rejects.toThrow(/does not belong to instance/);
    await expect(t.run(t.a.swapInRestored, { backupId: t.backup.id, instanceId: t.target.id })).rejects.toThrow(/does not belong to instance/);
    await withInstanceDb(ctx, 'postgres', (sql) => sql.unsafe(`COMMENT ON DATABASE "${t.name}" IS 'bcdr:instance=${t.target.id}'`));
    // A staging copy with the right tag but not filled to the end by this run is never swapped in.
    await t.run(t.a.discardStaging, { instanceId: t.target.id });
    await t.engine.createDatabase(t.names.incoming, `bcdr:instance=${t.target.id}`);
    await expect(t.run(t.a.swapInRestored, { backupId: t.backup.id, instanceId: t.target.id })).rejects.toThrow(/not filled to the end by this run/);
    expect(await contentChecksums(ctx, t.name)).toEqual(t.targetBefore);
    await t.run(t.a.discardStaging, { instanceId: t.target.id });
  });

  it("deleting an instance drops its staging and replaced copies too, so a reused name restores cleanly", async () => {
    const t = await setup('del');
    for (const n of [t.names.incoming, t.names.retired]) await t.engine.createDatabase(n, `bcdr:instance=${t.target.id}`);
    const del = await ctx.call('DELETE', `/v1/instances/${t.target.id}`);
    expect(del.status).toBe(200);
    expect(await databasesLike(ctx, t.name)).toEqual([]);
  });

  it('sweeps the archive readers of runs that ended without releasing them, and keeps those of running runs', async () => {
    const t = await setup('pin');
    await addReader(ctx.db, t.backup.id, 'restore-terminated-long-ago');
    // A run that is still going (a swap waiting for sign-off) keeps its reader.
    const prod = await createInstance(ctx, uniqueName('pinp'), { type: 'production' });
    const swap = await ctx.call('POST', '/v1/runbooks/production-restore', { body: { production: prod.id, sandbox: t.target.id, requireSignoff: true } });
    const live = swap.body.run.workflowId as string;
    await addReader(ctx.db, t.backup.id, live);
    expect(await liveReaders(ctx.db, ctx.temporal, t.backup.id)).toEqual([live]);
    const removed = await t.run(t.a.sweepStalePins);
    expect(removed).toBeGreaterThanOrEqual(1);
    const left = (await ctx.db.select().from(backupReaders).where(eq(backupReaders.backupId, t.backup.id))).map((r) => r.readerId);
    expect(left).toEqual([live]);
    await ctx.call('POST', `/v1/runs/${live}/cancel`);
    await ctx.temporal.workflow.getHandle(live).result().catch(() => {});
    await removeReader(ctx.db, t.backup.id, live);
  });
});
