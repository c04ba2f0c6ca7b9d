import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backups, instances, backupSchedules } from '../db/schema/index.js';
import {
  backupNow,
  canConnect,
  contentChecksums,
  createInstance,
  databasesLike,
  finishedRun,
  openContext,
  seedMixed,
  uniqueName,
  withInstanceDb,
  type TestContext,
} from './helpers.js';
import { recordHistory } from './record.js';
import { VIEWER } from './tokens.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx.close();
});

const instanceRow = async (id: string) => (await ctx.db.select().from(instances).where(eq(instances.id, id)))[0];

/** A source instance with awkward content and a completed backup of it; returns the backup and the content at backup time. */
async function sourceWithBackup(prefix: string, extra: Partial<{ type: string; edition: string }> = {}) {
  const name = uniqueName(prefix);
  const inst = await createInstance(ctx, name, extra);
  await seedMixed(ctx, name);
  const before = await contentChecksums(ctx, name);
  const { row } = await backupNow(ctx, inst.id, `${prefix} source`);
  return { inst, name, backup: row, before };
}

describe('restore into an existing sandbox', () => {
  it('restores every table, bytea and large object exactly, and leaves the target suspended until resumed', async () => {
    const src = await sourceWithBackup('rsrc');
    // Changes after the backup must not come back.
    await withInstanceDb(ctx, src.name, (sql) => sql`DELETE FROM invoices WHERE id % 2 = 0`);
    const targetName = uniqueName('rtgt');
    const target = await createInstance(ctx, targetName, { edition: 'premium' });
    await withInstanceDb(ctx, targetName, (sql) => sql`CREATE TABLE stale (x int); INSERT INTO stale VALUES (1)`.simple());

    const res = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { instance: targetName } } });
    expect(res.status).toBe(202);
    expect(res.body.run.url).toContain(encodeURIComponent(res.body.run.workflowId));
    const run = await finishedRun(ctx, res.body.run.workflowId);
    expect(run).toMatchObject({ status: 'completed', runbook: 'restore', instanceId: target.id, step: 'completed' });
    expect(run.stepsDone).toEqual(['lock-instance', 'check-rules', 'verify-archive', 'restore-staging', 'swap']);
    expect(run.result).toMatchObject({ backupId: src.backup.id, instanceId: target.id, state: 'suspended', sequencesBehind: [] });
    expect(run.result.next).toMatch(/resume/);

    expect((await instanceRow(target.id))!.state).toBe('suspended');
    expect(await canConnect(ctx, targetName)).toBe(false);
    expect(await databasesLike(ctx, `${targetName}__`)).toEqual([]); // no staging or replaced copy left
    const resumed = await ctx.call('POST', `/v1/instances/${target.id}/resume`);
    expect(resumed.status).toBe(200);
    expect(resumed.body.state).toBe('active');
    expect(await canConnect(ctx, targetName)).toBe(true);
    expect(await contentChecksums(ctx, targetName)).toEqual(src.before);
    expect(src.before['public.events_log']).toMatch(/^2002:/);
    expect(src.before['(large objects)']).toMatch(/^1:/);
    await recordHistory(ctx, res.body.run.workflowId, 'restore');

    const again = await ctx.call('POST', `/v1/instances/${target.id}/resume`);
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('not_suspended');
  });
});

describe('restore into a new instance', () => {
  it('creates the instance, suspended, with the backup content and its own daily schedule', async () => {
    const src = await sourceWithBackup('nsrc');
    const name = uniqueName('fresh');
    const res = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { newInstance: { name, edition: 'standard', region: 'primary' } }, jobs: 2 } });
    expect(res.status).toBe(202);
    expect(res.body.target).toMatchObject({ name, type: 'sandbox', state: 'provisioning' });
    const run = await finishedRun(ctx, res.body.run.workflowId);
    expect(run.status).toBe('completed');
    const row = await instanceRow(res.body.target.id);
    expect(row).toMatchObject({ state: 'suspended', type: 'sandbox', lockedByRun: null });
    const [schedule] = await ctx.db.select().from(backupSchedules).where(eq(backupSchedules.instanceId, row!.id));
    expect(schedule).toBeDefined();
    await ctx.call('POST', `/v1/instances/${row!.id}/resume`);
    expect(await contentChecksums(ctx, name)).toEqual(src.before);
    await recordHistory(ctx, res.body.run.workflowId, 'restore-new-instance');

    const taken = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { newInstance: { name, edition: 'standard', region: 'primary' } } } });
    expect(taken.status).toBe(409);
    expect(taken.body.error.code).toBe('name_taken');
    expect(taken.body.error.message).toMatch(/delete it first/);
  });
});

describe('restore refusals', () => {
  it('refuses a production target (pointing to the swap), a lower edition, unusable backups and a viewer, changing nothing', async () => {
    const src = await sourceWithBackup('refsrc', { edition: 'premium' });
    const prodName = uniqueName('refprod');
    const prod = await createInstance(ctx, prodName, { type: 'production', edition: 'premium' });
    await seedMixed(ctx, prodName, 10);
    const prodBefore = await contentChecksums(ctx, prodName);
    const lowName = uniqueName('reflow');
    const low = await createInstance(ctx, lowName, { edition: 'standard' });

    const toProd = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { instance: prod.id } } });
    expect(toProd.status).toBe(409);
    expect(toProd.body.error.code).toBe('production_target');
    expect(toProd.body.error.message).toMatch(/production-restore/);
    expect(await contentChecksums(ctx, prodName)).toEqual(prodBefore);
    expect((await instanceRow(prod.id))!.state).toBe('active');

    const lower = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { instance: low.id } } });
    expect(lower.status).toBe(422);
    expect(lower.body.error.code).toBe('edition_too_low');
    const lowerNew = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { newInstance: { name: uniqueName('x'), edition: 'basic', region: 'primary' } } } });
    expect(lowerNew.status).toBe(422);

    const missing = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: 'bk-nope', target: { instance: low.id } } });
    expect(missing.status).toBe(404);
    await ctx.db.update(backups).set({ expiresAt: new Date(Date.now() - 1000) }).where(eq(backups.id, src.backup.id));
    const expired = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { newInstance: { name: uniqueName('x'), edition: 'premium', region: 'primary' } } } });
    expect(expired.status).toBe(409);
    expect(expired.body.error.code).toBe('backup_expired');
    await ctx.db.update(backups).set({ status: 'failed', error: 'disk full', expiresAt: new Date(Date.now() + 86_400_000) }).where(eq(backups.id, src.backup.id));
    const failed = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { newInstance: { name: uniqueName('x'), edition: 'premium', region: 'primary' } } } });
    expect(failed.status).toBe(409);
    expect(failed.body.error.message).toMatch(/disk full/);
    await ctx.db.update(backups).set({ status: 'pending' }).where(eq(backups.id, src.backup.id));
    expect((await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { instance: low.id } } })).status).toBe(409);

    const viewer = await ctx.call('POST', '/v1/runbooks/restore', { token: VIEWER, body: { backupId: src.backup.id, target: { instance: low.id } } });
    expect(viewer.status).toBe(403);
    const both = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { instance: low.id, newInstance: { name: 'y', edition: 'basic', region: 'primary' } } } });
    expect(both.status).toBe(400);
    expect(both.body.error.issues[0].field).toBe('target');
    const badJobs = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { instance: low.id }, jobs: 0 } });
    expect(badJobs.status).toBe(400);
    expect(badJobs.body.error.issues[0].field).toBe('jobs');
    // Nothing started on the refused targets.
    const runs = await ctx.call('GET', `/v1/runs?instance=${low.id}&runbook=restore`);
    expect(runs.body.runs).toEqual([]);
    expect(await ctx.db.select().from(instances).where(eq(instances.state, 'provisioning'))).toEqual([]);
  });
});
