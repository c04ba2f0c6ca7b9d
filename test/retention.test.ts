import { and, asc, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditEvents, backups } from '../db/schema/index.js';
import { recordHistory } from './record.js';
import { backupNow, createInstance, openContext, runActivity, seedRows, uniqueName, type TestContext } from './helpers.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx.close();
});

const retention = (instanceId: string) => runActivity(`retention-${instanceId}`, ctx.activities.applyRetention, { instanceId });

/** Three real backups of a fresh instance, oldest first. */
async function threeBackups(prefix: string) {
  const name = uniqueName(prefix);
  const inst = await createInstance(ctx, name);
  await seedRows(ctx, name, 200);
  for (const label of ['one', 'two', 'three']) {
    await backupNow(ctx, inst.id, label);
    await new Promise((r) => setTimeout(r, 1100)); // object names have one-second resolution
  }
  const rows = await ctx.db.select().from(backups).where(eq(backups.instanceId, inst.id)).orderBy(asc(backups.createdAt));
  return { inst, name, rows };
}

const expireAll = (instanceId: string) => ctx.db.update(backups).set({ expiresAt: sql`now() - interval '1 minute'` }).where(eq(backups.instanceId, instanceId));
const storedKeys = async (name: string) => (await ctx.regions.get('primary')!.backups.list(`backups/${name}/`)).map((o) => o.key);

describe('retention', () => {
  it('deletes only expired backups: archive, manifest and record', async () => {
    const { inst, name, rows } = await threeBackups('ret');
    expect(rows).toHaveLength(3);
    await ctx.db.update(backups).set({ expiresAt: sql`now() - interval '1 minute'` }).where(eq(backups.id, rows[0]!.id));
    expect(await retention(inst.id)).toEqual([rows[0]!.id]);
    const left = await ctx.db.select().from(backups).where(eq(backups.instanceId, inst.id));
    expect(left.map((b) => b.label).sort()).toEqual(['three', 'two']);
    const keys = await storedKeys(name);
    expect(keys.some((k) => k.startsWith(rows[0]!.objectKey))).toBe(false);
    expect(keys).toHaveLength(4);
  });

  it('keeps the last backup when keep-at-least-one is set, even when every backup has expired', async () => {
    const { inst, name, rows } = await threeBackups('keep');
    await expireAll(inst.id);
    const deleted = await retention(inst.id);
    expect(deleted.sort()).toEqual([rows[0]!.id, rows[1]!.id].sort());
    const left = await ctx.db.select().from(backups).where(eq(backups.instanceId, inst.id));
    expect(left.map((b) => b.id)).toEqual([rows[2]!.id]);
    expect((await storedKeys(name)).sort()).toEqual([rows[2]!.archiveKey, `${rows[2]!.objectKey}/manifest.json`].sort());
  });

  it('keeps the newest system backup, not a newer on-demand one an operator could delete', async () => {
    const { inst, rows } = await threeBackups('keepsys');
    await ctx.db.update(backups).set({ kind: 'system', label: null }).where(eq(backups.id, rows[1]!.id)); // as the schedule made it
    await expireAll(inst.id);
    await retention(inst.id);
    const left = await ctx.db.select().from(backups).where(eq(backups.instanceId, inst.id));
    expect(left.map((b) => b.id)).toEqual([rows[1]!.id]);
  });

  it('deletes every expired backup when keep-at-least-one is off', async () => {
    const { inst, name } = await threeBackups('nokeep');
    const put = await ctx.call('PUT', `/v1/instances/${inst.id}/backup-schedule`, { body: { keepAtLeastOne: false } });
    expect(put.status).toBe(200);
    await expireAll(inst.id);
    expect(await retention(inst.id)).toHaveLength(3);
    expect(await ctx.db.select().from(backups).where(eq(backups.instanceId, inst.id))).toEqual([]);
    expect(await storedKeys(name)).toEqual([]);
  });

  it('runs as part of every backup run and reports what it expired', async () => {
    const name = uniqueName('runret');
    const inst = await createInstance(ctx, name);
    const { row: old } = await backupNow(ctx, inst.id, 'old');
    await ctx.db.update(backups).set({ expiresAt: sql`now() - interval '1 minute'` }).where(eq(backups.id, old.id));
    await new Promise((r) => setTimeout(r, 1100));
    const res = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: { label: 'new' } });
    const result = await ctx.temporal.workflow.getHandle(res.body.run.workflowId).result();
    expect(result.expired).toEqual([old.id]);
    expect((await ctx.call('GET', `/v1/backups/${old.id}`)).status).toBe(404);
  });
});

describe('retention sweep', () => {
  it('expires backups of a deleted instance on the fleet-wide schedule: keep-at-least-one ends with the instance', async () => {
    const name = uniqueName('sweep');
    const inst = await createInstance(ctx, name);
    const { row: older } = await backupNow(ctx, inst.id, 'older');
    await new Promise((r) => setTimeout(r, 1100));
    const { row: newer } = await backupNow(ctx, inst.id, 'newer');
    expect((await ctx.call('DELETE', `/v1/instances/${inst.id}`)).status).toBe(200);
    await expireAll(inst.id);

    const sweep = await ctx.temporal.schedule.getHandle('retention-sweep').describe();
    expect(sweep.action.type).toBe('startWorkflow');
    const result = await ctx.temporal.workflow.execute('retentionSweepWorkflow', {
      workflowId: `retention-sweep-test-${inst.id}`,
      taskQueue: ctx.cfg.TEMPORAL_TASK_QUEUE,
      args: [{ pageSize: 1 }], // one instance per run: exercises continue-as-new across pages
    });
    await recordHistory(ctx, `retention-sweep-test-${inst.id}`, 'retention-sweep');
    expect(result.expired).toEqual(expect.arrayContaining([older.id, newer.id]));
    expect(result.failed).toEqual([]);
    expect(await ctx.db.select().from(backups).where(eq(backups.instanceId, inst.id))).toEqual([]);
    expect(await storedKeys(name)).toEqual([]);
    const trail = await ctx.db.select().from(auditEvents).where(and(eq(auditEvents.subject, older.id), eq(auditEvents.action, 'backup.expired')));
    expect(trail).toHaveLength(1);
    expect(trail[0]!.actor).toBe('system:retention');
  });
});
