import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { instances } from '../db/schema/index.js';
import { ensureRetentionSweepSchedule } from '../lib/schedules.js';
import { runSearchAttributes } from '../lib/temporal.js';
import type { RestoreInput } from '../workflows/contract.js';
import { backupNow, contentChecksums, createInstance, eventually, leftovers, openContext, seedMixed, startWorkerProcess, uniqueName, type TestContext } from './helpers.js';

let ctx: TestContext;
const workers: ChildProcess[] = [];
const queue = `restore-kill-${process.pid}`;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  for (const w of workers) w.kill('SIGKILL');
  // The worker processes re-pointed the (paused) fleet sweep at their own queue; point it back.
  await ensureRetentionSweepSchedule(ctx.temporal, ctx.cfg.TEMPORAL_TASK_QUEUE, ctx.cfg.RETENTION_SWEEP_EVERY_MINUTES);
  await ctx.close();
});

const startWorker = () => startWorkerProcess({ ...inject('bcdrEnv'), TEMPORAL_TASK_QUEUE: queue }, workers);

const restoreProcesses = (db: string) =>
  spawnSync('pgrep', ['-f', `pg_restore .*--dbname=${db}`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);

describe('worker killed mid-restore', () => {
  // jobs 1 streams the archive from the store into pg_restore; jobs 2 spools it to a file that pg_restore -j reads.
  it.each([1, 2])('with jobs %i, finishes on a new worker with no staging copy or spool file left, the target restored, and no other instance touched', async (jobs) => {
    const srcName = uniqueName('ksrc');
    const src = await createInstance(ctx, srcName);
    const url = new URL(ctx.cfg.REGIONS[0]!.postgresUrl);
    const init = spawnSync(`${ctx.cfg.PG_BIN_DIR}/pgbench`, ['-i', '-q', '-s', '30', '-h', url.hostname, '-p', url.port, '-U', 'postgres', srcName], { encoding: 'utf8' });
    expect(init.status).toBe(0);
    const { row: backup } = await backupNow(ctx, src.id, 'kill test');
    const atBackup = await contentChecksums(ctx, srcName);
    const targetName = uniqueName('ktgt');
    const target = await createInstance(ctx, targetName);
    await seedMixed(ctx, targetName, 20);
    const bystanderName = uniqueName('kby');
    await createInstance(ctx, bystanderName);
    await seedMixed(ctx, bystanderName, 20);
    const bystander = await contentChecksums(ctx, bystanderName);

    const first = await startWorker();
    const workflowId = `restore-kill-${target.id}-${jobs}`;
    const input: RestoreInput = { backupId: backup.id, instanceId: target.id, createsInstance: false, jobs, advanceSequences: false, dropRetiredAfterSeconds: 0, requestedBy: 'olivia.operator' };
    const handle = await ctx.temporal.workflow.start('restoreWorkflow', { workflowId, taskQueue: queue, args: [input], typedSearchAttributes: runSearchAttributes(target.id, 'restore') });

    // Kill the worker while pg_restore is filling the staging copy.
    const staging = `${targetName}__bcdr_restore`;
    const engine = ctx.regions.get('primary')!.engine;
    for (const deadline = Date.now() + 60_000; ; await sleep(100)) {
      if ((await engine.databaseExists(staging)) && (await engine.sizeBytes(staging)) > 30_000_000) break;
      if (Date.now() > deadline) throw new Error('pg_restore never got going');
    }
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    if (jobs > 1) {
      // Reading its spool file, the orphaned pg_restore goes on: the retry must cope with it.
      expect(restoreProcesses(staging).length).toBeGreaterThan(0);
    } else {
      // Streamed, it loses its input with the worker and stops: a short archive never restores to the end.
      await eventually('the streamed pg_restore ends with its worker', async () => restoreProcesses(staging).length === 0, 30_000);
    }

    await startWorker();
    await handle.result();
    const run = (await ctx.call('GET', `/v1/runs/${workflowId}`)).body;
    expect(run.status).toBe('completed');
    expect(run.stepsDone).toEqual(['lock-instance', 'check-rules', 'verify-archive', 'restore-staging', 'swap']);
    expect(await leftovers(ctx, `${targetName}__`)).toEqual([]);
    expect(restoreProcesses(staging)).toEqual([]);
    expect(existsSync(path.join(os.tmpdir(), `bcdr-spool.${workflowId}.${backup.id}`))).toBe(false);
    const [row] = await ctx.db.select().from(instances).where(eq(instances.id, target.id));
    expect(row).toMatchObject({ state: 'suspended', lockedByRun: null });
    await ctx.call('POST', `/v1/instances/${target.id}/resume`);
    expect(await contentChecksums(ctx, targetName)).toEqual(atBackup);
    expect(await contentChecksums(ctx, bystanderName)).toEqual(bystander);
    expect(await contentChecksums(ctx, srcName)).toEqual(atBackup);
  });
});
