import { spawnSync } from 'node:child_process';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instances } from '../db/schema/index.js';
import { acquireLock, releaseLock } from '../lib/locks.js';
import { recordHistory } from './record.js';
import { createInstance, openContext, uniqueName, type TestContext } from './helpers.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx.close();
});

/** Fills a database with pgbench tables so a dump takes long enough to overlap another request. */
function pgbenchInit(ctx: TestContext, db: string, scale: number) {
  const url = new URL(ctx.cfg.REGIONS[0]!.postgresUrl);
  const r = spawnSync(`${ctx.cfg.PG_BIN_DIR}/pgbench`, ['-i', '-q', '-s', String(scale), '-h', url.hostname, '-p', url.port, '-U', 'postgres', db], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
}

describe('one runbook per instance', () => {
  it('refuses a conflicting runbook with 409 naming the run that holds the instance', async () => {
    const name = uniqueName('busy');
    const inst = await createInstance(ctx, name);
    pgbenchInit(ctx, name, 5);
    const first = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: { label: 'first' } });
    expect(first.status).toBe(202);
    const second = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: { label: 'second' } });
    expect(second.status).toBe(409);
    expect(second.body.error.code).toBe('instance_busy');
    expect(second.body.error.run.workflowId).toBe(first.body.run.workflowId);
    expect(second.body.error.message).toContain(first.body.run.workflowId);

    const del = await ctx.call('DELETE', `/v1/instances/${inst.id}`);
    expect(del.status).toBe(409);
    expect(del.body.error.run.workflowId).toBe(first.body.run.workflowId);

    await ctx.temporal.workflow.getHandle(first.body.run.workflowId).result();
    const [row] = await ctx.db.select().from(instances).where(eq(instances.id, inst.id));
    expect(row!.lockedByRun).toBeNull();
    const third = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: { label: 'third' } });
    expect(third.status).toBe(202);
    await ctx.temporal.workflow.getHandle(third.body.run.workflowId).result();
  });

  it('takes over the lock of a run that was terminated, so a killed run never blocks an instance', async () => {
    const name = uniqueName('stale');
    const inst = await createInstance(ctx, name);
    pgbenchInit(ctx, name, 5);
    const first = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: { label: 'doomed' } });
    // Kill the run once it has recorded its backup as pending, i.e. mid-dump.
    const deadline = Date.now() + 30_000;
    while ((await ctx.call('GET', `/v1/backups/${first.body.backupId}`)).status === 404 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await ctx.temporal.workflow.getHandle(first.body.run.workflowId).terminate('test: simulate a killed run');
    expect((await ctx.call('GET', `/v1/backups/${first.body.backupId}`)).body.status).toBe('pending');
    await ctx.db.update(instances).set({ lockedAt: new Date(Date.now() - 5 * 60_000) }).where(eq(instances.id, inst.id));
    const next = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: { label: 'after' } });
    expect(next.status).toBe(202);
    await ctx.temporal.workflow.getHandle(next.body.run.workflowId).result();
    // Retention of the next run clears what the killed run left: its backup is failed, with no files.
    const res = await ctx.call('GET', `/v1/backups/${first.body.backupId}`);
    expect(res.body.status).toBe('failed');
    expect(res.body.error).toMatch(/abandoned/);
    expect(await ctx.regions.get('primary')!.backups.keysOf(res.body.objectKey)).toEqual([]);
    expect(await ctx.regions.get('primary')!.backups.blobs.listIncomplete(`backups/${name}/`)).toEqual([]);
  });

  it('lets a scheduled backup wait for a runbook holding the instance instead of losing the day', async () => {
    const name = uniqueName('patient');
    const inst = await createInstance(ctx, name);
    pgbenchInit(ctx, name, 5);
    const first = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: { label: 'holds the lock' } });
    const daily = await ctx.temporal.workflow.start('dailyBackupWorkflow', {
      workflowId: `daily-backup-${inst.id}-test`,
      taskQueue: ctx.cfg.TEMPORAL_TASK_QUEUE,
      args: [{ instanceId: inst.id, lockRetrySeconds: 1 }],
    });
    const result = await daily.result();
    expect(result.sha256).toMatch(/^[0-9a-f]{64}$/);
    const firstRun = await ctx.temporal.workflow.getHandle(first.body.run.workflowId).describe();
    expect(firstRun.status.name).toBe('COMPLETED');
    const run = await ctx.call('GET', `/v1/runs/${daily.workflowId}`);
    expect(run.body.warnings.join(' ')).toContain(first.body.run.workflowId);
  });

  it('takes the lock once per run: a second take by the same run is not a new lock to give back', async () => {
    const inst = await createInstance(ctx, uniqueName('reentrant'));
    const input = { instanceId: inst.id, workflowId: `test-lock-${inst.id}`, runbook: 'test' };
    const never = async () => true;
    expect(await acquireLock(ctx.db, input, never)).toEqual({ ok: true, newlyAcquired: true });
    expect(await acquireLock(ctx.db, input, never)).toEqual({ ok: true, newlyAcquired: false });
    expect(await acquireLock(ctx.db, { ...input, workflowId: 'someone-else' }, never)).toMatchObject({ ok: false, reason: 'busy', holder: { workflowId: input.workflowId } });
    await releaseLock(ctx.db, inst.id, input.workflowId);
  });

  it('deletes an idle instance: its database, schedule and catalog row', async () => {
    const name = uniqueName('gone');
    const inst = await createInstance(ctx, name);
    const res = await ctx.call('DELETE', `/v1/instances/${inst.id}`);
    expect(res.status).toBe(200);
    await recordHistory(ctx, res.body.run.workflowId, 'delete-instance');
    expect(await ctx.regions.get('primary')!.engine.databaseExists(name)).toBe(false);
    expect((await ctx.call('GET', `/v1/instances/${inst.id}`)).status).toBe(404);
    await expect(ctx.temporal.schedule.getHandle(`daily-backup-${inst.id}`).describe()).rejects.toThrow();
  });
});
