import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { backups } from '../db/schema/index.js';
import { backupRef } from '../lib/backups.js';
import { BackupStore } from '../lib/storage/backup-store.js';
import { activityEnv, createInstance, openContext, runActivity, uniqueName, type TestContext } from './helpers.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx.close();
});

/** Region primary keeps its backups in a folder: where a dump's unfinished upload shows. */
const blobDir = () => {
  const store = ctx.cfg.REGIONS.find((r) => r.name === 'primary')!.store;
  if (store.kind !== 'fs') throw new Error('these tests expect region primary on the filesystem');
  return store.dir;
};

/** The unfinished upload (a hidden `.partial` file) in a backup's folder, if any. */
function partialIn(objectKey: string): string | undefined {
  const dir = path.join(blobDir(), objectKey);
  if (!existsSync(dir)) return undefined;
  const f = readdirSync(dir).find((n) => n.startsWith('.') && n.endsWith('.partial'));
  return f && path.join(dir, f);
}


function pgbenchInit(db: string, scale: number) {
  const url = new URL(ctx.cfg.REGIONS[0]!.postgresUrl);
  const r = spawnSync(`${ctx.cfg.PG_BIN_DIR}/pgbench`, ['-i', '-q', '-s', String(scale), '-h', url.hostname, '-p', url.port, '-U', 'postgres', db], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
}

async function prepare(prefix: string, scale: number) {
  const name = uniqueName(prefix);
  const inst = await createInstance(ctx, name);
  pgbenchInit(name, scale);
  const backupId = `bk-${name}`;
  const workflowId = `test-${name}`;
  const begun = await runActivity(workflowId, ctx.activities.beginBackup, { backupId, instanceId: inst.id, kind: 'on_demand' as const, label: 'retry test' });
  return { name, inst, backupId, workflowId, objectKey: begun.objectKey };
}

/** Checks the end state every retry must reach: one completed backup, its archive and manifest, nothing else. */
async function expectExactlyOneCompleted(instanceId: string, name: string, objectKey: string) {
  const rows = await ctx.db.select().from(backups).where(eq(backups.instanceId, instanceId));
  expect(rows).toHaveLength(1);
  expect(rows[0]!.status).toBe('completed');
  const store = ctx.regions.get('primary')!.backups;
  const ref = backupRef(rows[0]!);
  expect(ref.objectKey).toBe(objectKey);
  expect((await store.list(`${objectKey}/`)).map((o) => o.key).sort()).toEqual([rows[0]!.archiveKey, BackupStore.manifestKey(ref)].sort());
  expect(await store.blobs.listIncomplete(`backups/${name}/`)).toEqual([]);
  const actual = await store.checksum(ref);
  expect(actual.sha256).toBe(rows[0]!.sha256);
  expect(actual.sizeBytes).toBe(rows[0]!.sizeBytes);
  const manifest = await store.readManifest(ref);
  expect(manifest?.sha256).toBe(rows[0]!.sha256);
}

describe('dump retries', () => {
  it('ends with exactly one completed backup and no leftovers when the dumping process is killed part way and retried', async () => {
    const { name, inst, backupId, workflowId, objectKey } = await prepare('killed', 10);
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, 'fixtures', 'dump-child.ts'), backupId, workflowId], {
      env: { ...process.env, BCDR_TEST_ENV: JSON.stringify(inject('bcdrEnv')) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));

    // Wait until the archive is part written, then kill the process outright, as a crashed worker.
    const partial = () => partialIn(objectKey);
    const deadline = Date.now() + 60_000;
    let killedMidway = false;
    while (Date.now() < deadline && child.exitCode === null) {
      const p = partial();
      if (p && statSync(p).size > 64 * 1024) {
        child.kill('SIGKILL');
        killedMidway = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    await exited;
    expect(killedMidway, `dump finished before it could be killed: ${stderr}`).toBe(true);
    // The kill left a partial write behind and the backup still pending: the state a retry must repair.
    expect(partial()).toBeDefined();
    expect(await ctx.regions.get('primary')!.backups.list(`${objectKey}/`)).toEqual([]);
    const [pending] = await ctx.db.select().from(backups).where(eq(backups.id, backupId));
    expect(pending!.status).toBe('pending');

    const result = await runActivity(workflowId, ctx.activities.dumpBackup, { backupId });
    expect(result.objectKey).toBe(objectKey);
    await expectExactlyOneCompleted(inst.id, name, objectKey);

    // A further retry after success is a no-op returning the same backup.
    const again = await runActivity(workflowId, ctx.activities.dumpBackup, { backupId });
    expect(again).toEqual(result);
    await expectExactlyOneCompleted(inst.id, name, objectKey);
  });

  it('leaves nothing stored when a dump is cancelled part way, and a retry then completes', async () => {
    const { name, inst, backupId, workflowId, objectKey } = await prepare('cancelled', 10);
    const env = activityEnv(workflowId);
    const running = env.run(ctx.activities.dumpBackup, { backupId });
    running.catch(() => {});
    // Cancel once the archive is part written, as Temporal does when the run is cancelled mid-dump.
    const deadline = Date.now() + 60_000;
    let cancelledMidway = false;
    while (Date.now() < deadline) {
      const p = partialIn(objectKey);
      if (p && statSync(p).size > 64 * 1024) {
        env.cancel();
        cancelledMidway = true;
        break;
      }
      if ((await ctx.regions.get('primary')!.backups.list(`${objectKey}/`)).length) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(cancelledMidway, 'dump finished before it could be cancelled').toBe(true);
    await expect(running).rejects.toThrow();
    const store = ctx.regions.get('primary')!.backups;
    expect(await store.keysOf(objectKey)).toEqual([]);
    const [row] = await ctx.db.select().from(backups).where(eq(backups.id, backupId));
    expect(row!.status).toBe('pending');

    await runActivity(workflowId, ctx.activities.dumpBackup, { backupId });
    await expectExactlyOneCompleted(inst.id, name, objectKey);
  });

  it('lets only one of two concurrent attempts commit, leaving one consistent backup', async () => {
    // As after a heartbeat timeout: Temporal starts attempt 2 while attempt 1 is still alive.
    const { name, inst, backupId, workflowId, objectKey } = await prepare('twice', 3);
    const results = await Promise.allSettled([
      runActivity(workflowId, ctx.activities.dumpBackup, { backupId }),
      runActivity(workflowId, ctx.activities.dumpBackup, { backupId }),
    ]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    expect(ok.length).toBeGreaterThanOrEqual(1);
    // Whichever attempts succeeded report the one committed archive; the catalog, manifest and bytes agree.
    const [row] = await ctx.db.select().from(backups).where(eq(backups.id, backupId));
    for (const r of ok) expect((r as PromiseFulfilledResult<{ sha256: string }>).value.sha256).toBe(row!.sha256);
    await expectExactlyOneCompleted(inst.id, name, objectKey);
  });

  it('discards a late attempt whose backup was already failed by the run, leaving nothing behind', async () => {
    const { backupId, workflowId, objectKey } = await prepare('late', 1);
    await runActivity(workflowId, ctx.activities.failBackup, { backupId, reason: 'run cancelled' });
    await expect(runActivity(workflowId, ctx.activities.dumpBackup, { backupId })).rejects.toThrow(/is failed/);
    expect(await ctx.regions.get('primary')!.backups.keysOf(objectKey)).toEqual([]);
    const [row] = await ctx.db.select().from(backups).where(eq(backups.id, backupId));
    expect(row).toMatchObject({ status: 'failed', error: 'run cancelled' });
  });

  it('marks a failed backup failed with its reason and removes anything stored', async () => {
    const { backupId, workflowId, objectKey, name } = await prepare('failing', 1);
    await ctx.regions.get('primary')!.engine.dropDatabase(name);
    await expect(runActivity(workflowId, ctx.activities.dumpBackup, { backupId })).rejects.toThrow(/does not exist/);
    await runActivity(workflowId, ctx.activities.failBackup, { backupId, reason: 'database vanished' });
    const [row] = await ctx.db.select().from(backups).where(eq(backups.id, backupId));
    expect(row).toMatchObject({ status: 'failed', error: 'database vanished' });
    expect(await ctx.regions.get('primary')!.backups.keysOf(objectKey)).toEqual([]);
  });
});
