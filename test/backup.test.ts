import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupCopies, backups, backupSchedules } from '../db/schema/index.js';
import { backupRef } from '../lib/backups.js';
import { BackupStore } from '../lib/storage/backup-store.js';
import { backupNow, createInstance, openContext, seedRows, uniqueName, type TestContext } from './helpers.js';
import { recordHistory } from './record.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx.close();
});

const blobDir = (region: string) => {
  const store = ctx.cfg.REGIONS.find((r) => r.name === region)!.store;
  if (store.kind !== 'fs') throw new Error(`region ${region} is not on the filesystem`);
  return store.dir;
};

describe('on-demand backup', () => {
  it('produces an archive pg_restore accepts, whose sha256 matches the manifest and the catalog', async () => {
    const name = uniqueName('backup');
    const inst = await createInstance(ctx, name);
    await seedRows(ctx, name, 5000);

    const { row, response } = await backupNow(ctx, inst.id, 'before upgrade');
    expect(response.run.url).toContain(encodeURIComponent(response.run.workflowId));
    expect(row.status).toBe('completed');
    expect(row.kind).toBe('on_demand');
    expect(row.label).toBe('before upgrade');
    expect(row.objectKey).toBe(`backups/${name}/${row.id}`);
    expect(row.archiveKey).toMatch(new RegExp(`^backups/${name}/${row.id}/archive\\.[0-9a-f]{8}$`));
    expect(row.sizeBytes).toBeGreaterThan(1000);

    const archive = path.join(blobDir('primary'), row.archiveKey!);
    const bytes = readFileSync(archive);
    const sha = createHash('sha256').update(bytes).digest('hex');
    const manifest = JSON.parse(readFileSync(path.join(blobDir('primary'), BackupStore.manifestKey(row)), 'utf8'));
    expect(sha).toBe(row.sha256);
    expect(manifest.sha256).toBe(sha);
    expect(manifest.sizeBytes).toBe(bytes.length);
    expect(manifest.instance).toBe(name);
    expect(manifest.edition).toBe('standard');
    expect(manifest.serverVersion).toMatch(/^\d+/);
    expect(manifest.sequences['public.orders_id_seq']).toBe('5000');

    // Stored encrypted: no archive magic, no table data in clear; decrypted, it is an archive pg_restore reads.
    expect(bytes.subarray(0, 5).toString('latin1')).not.toBe('PGDMP');
    expect(bytes.includes(Buffer.from('orders'))).toBe(false);
    expect(row.encryption?.keyId).toBe(ctx.cfg.BACKUP_KEY_ACTIVE);
    expect(manifest.encryption).toEqual(row.encryption);
    const plain = path.join(os.tmpdir(), `${row.id}.dump`);
    await pipeline(await ctx.regions.get('primary')!.backups.openArchive(backupRef(row), row.encryption, { sizeBytes: row.sizeBytes!, sha256: row.sha256! }), createWriteStream(plain));
    expect(readFileSync(plain).subarray(0, 5).toString('latin1')).toBe('PGDMP');
    const list = spawnSync(path.join(ctx.cfg.PG_BIN_DIR!, 'pg_restore'), ['--list', plain], { encoding: 'utf8' });
    rmSync(plain, { force: true });
    expect(list.status).toBe(0);
    expect(list.stdout).toMatch(/TABLE DATA public orders/);

    const api = await ctx.call('GET', `/v1/backups/${row.id}`, { token: 'test-viewer-token' });
    expect(api.status).toBe(200);
    expect(api.body).toMatchObject({ status: 'completed', sha256: sha, sizeBytes: bytes.length });

    const run = await ctx.call('GET', `/v1/runs/${response.run.workflowId}`);
    expect(run.body).toMatchObject({ status: 'completed', runbook: 'on-demand-backup', instanceId: inst.id, step: 'completed' });
    expect(run.body.stepsDone).toEqual(['lock-instance', 'record-backup', 'dump', 'offsite-copy', 'retention']);
    // The offsite copy in the paired region (another store kind) is verified, and the instance counts it as a good backup.
    const copy = await ctx.db.select().from(backupCopies).where(eq(backupCopies.backupId, row.id));
    expect(copy).toMatchObject([{ region: 'secondary', status: 'verified', sha256: row.sha256, sizeBytes: row.sizeBytes }]);
    expect(await ctx.regions.get('secondary')!.backups.checksum(backupRef(row))).toEqual({ sizeBytes: row.sizeBytes, sha256: row.sha256 });
    await recordHistory(ctx, response.run.workflowId, 'on-demand-backup');
    // Secrets never reach a workflow history: the live one holds no connection string or token.
    const { historyToJSON } = await import('@temporalio/common/lib/proto-utils.js');
    const history = historyToJSON(await ctx.temporal.workflow.getHandle(response.run.workflowId).fetchHistory());
    const decoded = [history, ...[...history.matchAll(/"data":\s*"([A-Za-z0-9+/=]+)"/g)].map((m) => Buffer.from(m[1]!, 'base64').toString('utf8'))];
    for (const text of decoded) {
      expect(text).not.toMatch(/postgres(ql)?:\/\//);
      expect(text).not.toContain('test-operator-token');
    }

    const inUi = await ctx.call('GET', `/v1/runs?instance=${inst.id}`);
    expect(inUi.body.runs.map((r: { workflowId: string }) => r.workflowId)).toContain(response.run.workflowId);
  });
});

describe('progress', () => {
  it('shows the current step and dump progress while a backup runs', async () => {
    const name = uniqueName('progress');
    const inst = await createInstance(ctx, name);
    const url = new URL(ctx.cfg.REGIONS[0]!.postgresUrl);
    const init = spawnSync(path.join(ctx.cfg.PG_BIN_DIR!, 'pgbench'), ['-i', '-q', '-s', '20', '-h', url.hostname, '-p', url.port, '-U', 'postgres', name], { encoding: 'utf8' });
    expect(init.status).toBe(0);
    const res = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: { label: 'watched' } });
    const seen: { step: string; progress: { phase: string; bytesWritten: number; databaseBytes: number } | null }[] = [];
    for (;;) {
      const run = await ctx.call('GET', `/v1/runs/${res.body.run.workflowId}`);
      if (run.body.status !== 'running') break;
      seen.push({ step: run.body.step, progress: run.body.progress });
      await new Promise((r) => setTimeout(r, 50));
    }
    const during = seen.filter((s) => s.step === 'dump' && s.progress);
    expect(during.length).toBeGreaterThan(0);
    expect(during[0]!.progress).toMatchObject({ phase: 'dumping', databaseBytes: expect.any(Number) });
    expect(during[0]!.progress!.databaseBytes).toBeGreaterThan(100_000_000);
    const result = await ctx.temporal.workflow.getHandle(res.body.run.workflowId).result();
    expect(result.sizeBytes).toBeGreaterThan(0);
  });
});

describe('daily backup schedule', () => {
  it('is created with the instance: daily, retained 3 days, keep-at-least-one', async () => {
    const inst = await createInstance(ctx, uniqueName('sched'));
    const res = await ctx.call('GET', `/v1/instances/${inst.id}/backup-schedule`);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ intervalDays: 1, retentionDays: 3, keepAtLeastOne: true, enabled: true, lastRun: null });
    expect(res.body.nextRuns.length).toBeGreaterThan(0);
    const desc = await ctx.temporal.schedule.getHandle(res.body.scheduleId).describe();
    expect(desc.policies.overlap).toBe('SKIP');
    expect(desc.spec.intervals?.[0]?.every).toBe(86_400_000);
  });

  it('produces a system backup when the schedule fires, and records it as the last status', async () => {
    const name = uniqueName('daily');
    const inst = await createInstance(ctx, name);
    await seedRows(ctx, name, 100);
    const [policy] = await ctx.db.select().from(backupSchedules).where(eq(backupSchedules.instanceId, inst.id));
    await ctx.temporal.schedule.getHandle(policy!.scheduleId).trigger();
    const row = await waitForBackup(inst.id, 'system', ['completed', 'failed']);
    expect(row.status).toBe('completed');
    expect(row.label).toBeNull();
    expect(row.sha256).toMatch(/^[0-9a-f]{64}$/);
    const sched = await waitForLastRun(inst.id);
    expect(sched.body.lastRun).toMatchObject({ status: 'completed', error: null });
    await recordHistory(ctx, sched.body.lastRun.workflowId, 'daily-backup');
    const runs = await ctx.call('GET', `/v1/runs?instance=${inst.id}&runbook=daily-backup`);
    expect(runs.body.runs.length).toBe(1);
  });

  it('shows a failed scheduled backup as failed with its reason on the schedule', async () => {
    const name = uniqueName('dailyfail');
    const inst = await createInstance(ctx, name);
    await ctx.regions.get('primary')!.engine.dropDatabase(name); // the tenant database is gone under us
    const [policy] = await ctx.db.select().from(backupSchedules).where(eq(backupSchedules.instanceId, inst.id));
    await ctx.temporal.schedule.getHandle(policy!.scheduleId).trigger();
    const sched = await waitForLastRun(inst.id);
    expect(sched.body.lastRun.status).toBe('failed');
    expect(sched.body.lastRun.error).toMatch(/does not exist/);
    const [row] = await ctx.db.select().from(backups).where(eq(backups.instanceId, inst.id));
    expect(row).toMatchObject({ kind: 'system', status: 'failed' });
    expect(row!.error).toMatch(/does not exist/);
    const store = ctx.regions.get('primary')!.backups;
    expect(await store.keysOf(row!.objectKey)).toEqual([]);
    await recordHistory(ctx, sched.body.lastRun.workflowId, 'daily-backup-failed');
  });

  it('applies a changed policy to the Temporal schedule', async () => {
    const inst = await createInstance(ctx, uniqueName('policy'));
    const res = await ctx.call('PUT', `/v1/instances/${inst.id}/backup-schedule`, {
      body: { startTime: '03:30', intervalDays: 2, retentionDays: 7, keepAtLeastOne: false, enabled: false },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ startTime: '03:30', intervalDays: 2, retentionDays: 7, keepAtLeastOne: false, enabled: false });
    const desc = await ctx.temporal.schedule.getHandle(res.body.scheduleId).describe();
    expect(desc.state.paused).toBe(true);
    expect(desc.spec.intervals?.[0]).toMatchObject({ every: 2 * 86_400_000, offset: (3 * 60 + 30) * 60_000 });
  });
});

async function waitForBackup(instanceId: string, kind: 'system' | 'on_demand', statuses: string[]) {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const rows = await ctx.db.select().from(backups).where(and(eq(backups.instanceId, instanceId), eq(backups.kind, kind)));
    const done = rows.find((r) => statuses.includes(r.status));
    if (done) return done;
    if (Date.now() > deadline) throw new Error(`no ${kind} backup of ${instanceId} reached ${statuses.join('/')}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function waitForLastRun(instanceId: string) {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const res = await ctx.call('GET', `/v1/instances/${instanceId}/backup-schedule`);
    if (res.body.lastRun) return res;
    if (Date.now() > deadline) throw new Error(`schedule of ${instanceId} recorded no run`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
