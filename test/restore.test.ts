import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backups, instances, backupSchedules } from '../db/schema/index.js';
import { FaultPoints } from '../activities/faults.js';
import { BackupStore } from '../lib/storage/backup-store.js';
import {
  armFault,
  backupNow,
  canConnect,
  contentChecksums,
  createInstance,
  databasesLike,
  leftovers,
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
    expect(await leftovers(ctx, `${targetName}__`)).toEqual([]); // no staging or replaced copy left
    const resumed = await ctx.call('POST', `/v1/instances/${target.id}/resume`);
    expect(resumed.status).toBe(200);
    expect(resumed.body.state).toBe('active');
    expect(await canConnect(ctx, targetName)).toBe(true);
    expect(await contentChecksums(ctx, targetName)).toEqual(src.before);
    expect(src.before['public.events_log']).toMatch(/^2002:/);
    expect(src.before['(large objects)']).toMatch(/^1:/);
    await recordHistory(ctx, res.body.run.workflowId, 'restore');
    // The replaced copy was dropped by a housekeeping run of its own, findable by instance and runbook.
    const housekeeping = await ctx.call('GET', `/v1/runs?instance=${target.id}&runbook=drop-retired`);
    expect(housekeeping.body.runs).toEqual([expect.objectContaining({ workflowId: `${res.body.run.workflowId}-drop-retired`, status: 'completed' })]);
    await recordHistory(ctx, `${res.body.run.workflowId}-drop-retired`, 'drop-retired');
    const trail = (await ctx.call('GET', `/v1/audit?instance=${target.id}`)).body.events.map((e: { action: string }) => e.action);
    expect(trail).toEqual(expect.arrayContaining(['restore.start', 'instance.restored', 'instance.retired-copy-dropped', 'instance.resume']));

    const again = await ctx.call('POST', `/v1/instances/${target.id}/resume`);
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('not_suspended');
  });
});

describe('long instance names', () => {
  it('restores into a 50-character instance name, whose staging names PostgreSQL would otherwise cut at 63 bytes', async () => {
    const src = await sourceWithBackup('lsrc');
    const name = `l${'o'.repeat(42)}-${Math.random().toString(16).slice(2, 8)}`.slice(0, 50);
    expect(name).toHaveLength(50);
    const target = await createInstance(ctx, name);
    const res = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { instance: target.id } } });
    expect((await finishedRun(ctx, res.body.run.workflowId)).status).toBe('completed');
    await ctx.call('POST', `/v1/instances/${target.id}/resume`);
    expect(await contentChecksums(ctx, name)).toEqual(src.before);
    // The staging and replaced copies had shortened names (30 characters, a digest, the suffix); none is left.
    expect(await leftovers(ctx, `${name.slice(0, 30)}_`)).toEqual([]);
    expect(await databasesLike(ctx, name.slice(0, 30))).toEqual([name]);
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

    // The server's own databases and stray ones are never taken over.
    const reserved = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { newInstance: { name: 'template1', edition: 'standard', region: 'primary' } } } });
    expect(reserved.status).toBe(400);
    const strayName = uniqueName('stray');
    await withInstanceDb(ctx, 'postgres', (sql) => sql.unsafe(`CREATE DATABASE "${strayName}"`));
    const stray = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { newInstance: { name: strayName, edition: 'standard', region: 'primary' } } } });
    expect(stray.status).toBe(409);
    expect(stray.body.error.code).toBe('database_exists');
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

describe('restore failures', () => {
  it('refuses a corrupt archive before the target is touched: its data and state are unchanged and no staging copy is left', async () => {
    const src = await sourceWithBackup('corrupt');
    const home = ctx.cfg.REGIONS.find((r) => r.name === src.backup.region)!.store;
    if (home.kind !== 'fs') throw new Error('this test flips a byte of a backup in a filesystem store');
    const file = path.join(home.dir, src.backup.archiveKey!);
    const bytes = readFileSync(file);
    const at = Math.floor(bytes.length / 2);
    bytes.writeUInt8(bytes.readUInt8(at) ^ 0x01, at); // one flipped bit, same size
    writeFileSync(file, bytes);
    const targetName = uniqueName('ctgt');
    const target = await createInstance(ctx, targetName);
    await seedMixed(ctx, targetName, 50);
    const before = await contentChecksums(ctx, targetName);

    const res = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { instance: target.id } } });
    expect(res.status).toBe(202);
    const run = await finishedRun(ctx, res.body.run.workflowId);
    expect(run.status).toBe('failed');
    expect(run.error).toMatch(/failed verification: its sha256 is [0-9a-f]{64}, the catalog recorded/);
    expect(run.stepsDone).not.toContain('restore-staging');
    expect((await instanceRow(target.id))).toMatchObject({ state: 'active', lockedByRun: null });
    expect(await canConnect(ctx, targetName)).toBe(true);
    expect(await contentChecksums(ctx, targetName)).toEqual(before);
    expect(await leftovers(ctx, `${targetName}__`)).toEqual([]);
    await recordHistory(ctx, res.body.run.workflowId, 'restore-corrupt-archive');

    // Into a new instance, the same failure leaves no instance row and no database behind.
    const name = uniqueName('cnew');
    const fresh = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { newInstance: { name, edition: 'standard', region: 'primary' } } } });
    expect(fresh.status).toBe(202);
    expect((await finishedRun(ctx, fresh.body.run.workflowId)).status).toBe('failed');
    expect(await instanceRow(fresh.body.target.id)).toBeUndefined();
    expect(await databasesLike(ctx, name)).toEqual([]);
    expect(await ctx.db.select().from(backupSchedules).where(eq(backupSchedules.instanceId, fresh.body.target.id))).toEqual([]);
  });

  it('cancelled during pg_restore, drops the staging copy and leaves the target as it was', async () => {
    const name = uniqueName('bigsrc');
    const inst = await createInstance(ctx, name);
    pgbench(name, 50);
    const { row: backup } = await backupNow(ctx, inst.id, 'big');
    const targetName = uniqueName('cantgt');
    const target = await createInstance(ctx, targetName);
    await seedMixed(ctx, targetName, 20);
    const before = await contentChecksums(ctx, targetName);

    const res = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: backup.id, target: { instance: target.id } } });
    const id = res.body.run.workflowId;
    let seen: any;
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(100)) {
      seen = (await ctx.call('GET', `/v1/runs/${id}`)).body;
      if (seen.status !== 'running' || (seen.step === 'restore-staging' && seen.progress?.phase === 'restoring' && seen.progress.bytesRestored > 0)) break;
    }
    expect(seen, `the restore should still be running: ${JSON.stringify(seen)}`).toMatchObject({ status: 'running' });
    expect(seen.progress).toMatchObject({ phase: 'restoring', archiveBytes: backup.sizeBytes, jobs: 1 });
    expect(seen.progress.bytesRestored).toBeGreaterThan(0);
    expect((await databasesLike(ctx, `${targetName}__`))).toEqual([`${targetName}__bcdr_restore`]);
    const cancel = await ctx.call('POST', `/v1/runs/${id}/cancel`);
    expect(cancel.status).toBe(202);
    const run = await finishedRun(ctx, id);
    expect(run.status, JSON.stringify(run)).toBe('cancelled');
    expect(await leftovers(ctx, `${targetName}__`)).toEqual([]);
    expect(await instanceRow(target.id)).toMatchObject({ state: 'active', lockedByRun: null });
    expect(await contentChecksums(ctx, targetName)).toEqual(before);
    expect((await ctx.call('POST', `/v1/runs/${id}/cancel`)).status).toBe(409);
    const audit = await ctx.call('GET', `/v1/audit?instance=${target.id}&action=run.cancel`);
    expect(audit.body.events.map((e: { subject: string }) => e.subject)).toContain(id);
  });
});

describe('control numbers', () => {
  it('warns when sequences would run backwards, and advanceSequences moves them past the old values', async () => {
    const src = await sourceWithBackup('seqsrc');
    const targetName = uniqueName('seqtgt');
    const target = await createInstance(ctx, targetName);
    const first = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { instance: target.id } } });
    expect((await finishedRun(ctx, first.body.run.workflowId)).result.sequencesBehind).toEqual([]);
    await ctx.call('POST', `/v1/instances/${target.id}/resume`);
    // The restored target issues more numbers after the backup was taken.
    const issued = await withInstanceDb(ctx, targetName, async (sql) => {
      await sql`INSERT INTO invoices (number) SELECT nextval('invoice_numbers') FROM generate_series(1, 100)`;
      const [r] = await sql<{ n: string }[]>`SELECT last_value::text AS n FROM invoice_numbers`;
      return r!.n;
    });

    const again = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { instance: target.id } } });
    const warned = await finishedRun(ctx, again.body.run.workflowId);
    expect(warned.status).toBe('completed');
    expect(warned.warnings.join(' ')).toMatch(/sequences run backwards.*public\.invoice_numbers.*duplicate numbers are possible/);
    expect(warned.result.warnings).toEqual(warned.warnings);
    expect(warned.result.sequencesBehind).toEqual(
      expect.arrayContaining([{ name: 'public.invoice_numbers', restored: String(Number(issued) - 100), issued }, expect.objectContaining({ name: 'public.invoices_id_seq' })]),
    );
    await recordHistory(ctx, again.body.run.workflowId, 'restore-sequence-warning');

    // Put the higher values back, then restore with advanceSequences: the next number is past everything issued before.
    await ctx.call('POST', `/v1/instances/${target.id}/resume`);
    await withInstanceDb(ctx, targetName, (sql) => sql`SELECT setval('invoice_numbers', ${issued}::bigint)`);
    const advanced = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { instance: target.id }, advanceSequences: true } });
    const run = await finishedRun(ctx, advanced.body.run.workflowId);
    expect(run.status).toBe('completed');
    expect(run.warnings).toEqual([]);
    expect(run.result.sequencesAdvanced).toContain('public.invoice_numbers');
    await ctx.call('POST', `/v1/instances/${target.id}/resume`);
    const next = await withInstanceDb(ctx, targetName, async (sql) => (await sql<{ n: string }[]>`SELECT nextval('invoice_numbers')::text AS n`)[0]!.n);
    expect(BigInt(next)).toBeGreaterThan(BigInt(issued));
    // The data itself is the backup's.
    const after = await contentChecksums(ctx, targetName);
    expect(after['public.invoices']).toBe(src.before['public.invoices']);
  });
});

describe('reset', () => {
  it('is refused for production, empties a sandbox and leaves it active, and restores again when given a backup', async () => {
    const prod = await createInstance(ctx, uniqueName('rprod'), { type: 'production' });
    const refused = await ctx.call('POST', '/v1/runbooks/reset', { body: { instance: prod.id } });
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('production_target');

    const src = await sourceWithBackup('rsrc2');
    const name = uniqueName('rsbx');
    const sbx = await createInstance(ctx, name);
    await seedMixed(ctx, name, 30);
    // A failed state (a restore whose swap failed) is what reset is for.
    await ctx.db.update(instances).set({ state: 'failed' }).where(eq(instances.id, sbx.id));
    const reset = await ctx.call('POST', '/v1/runbooks/reset', { body: { instance: name } });
    expect(reset.status).toBe(202);
    const run = await finishedRun(ctx, reset.body.run.workflowId);
    expect(run).toMatchObject({ status: 'completed', result: { instanceId: sbx.id, state: 'active' } });
    expect(await instanceRow(sbx.id)).toMatchObject({ state: 'active', lockedByRun: null });
    const empty = await contentChecksums(ctx, name);
    expect(empty).toEqual({ '(large objects)': '0:empty' });
    expect(await ctx.regions.get('primary')!.engine.ownerTag(name)).toBe(`bcdr:instance=${sbx.id}`);
    await recordHistory(ctx, reset.body.run.workflowId, 'reset');

    const withBackup = await ctx.call('POST', '/v1/runbooks/reset', { body: { instance: name, backupId: src.backup.id } });
    const restored = await finishedRun(ctx, withBackup.body.run.workflowId);
    expect(restored).toMatchObject({ status: 'completed', result: { state: 'suspended', restore: { backupId: src.backup.id } } });
    await ctx.call('POST', `/v1/instances/${sbx.id}/resume`);
    expect(await contentChecksums(ctx, name)).toEqual(src.before);
    await recordHistory(ctx, withBackup.body.run.workflowId, 'reset-with-restore');
  });
});

function pgbench(db: string, scale: number) {
  const url = new URL(ctx.cfg.REGIONS[0]!.postgresUrl);
  const r = spawnSync(`${ctx.cfg.PG_BIN_DIR}/pgbench`, ['-i', '-q', '-s', String(scale), '-h', url.hostname, '-p', url.port, '-U', 'postgres', db], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
}

describe('a swap that fails after it began', () => {
  it('leaves the target failed with no staging copy, says to reset it, and a reset with the backup repairs it', async () => {
    const src = await sourceWithBackup('swf');
    const targetName = uniqueName('swft');
    const target = await createInstance(ctx, targetName);
    armFault(ctx, FaultPoints.swap, target.id, 1);
    const res = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: src.backup.id, target: { instance: target.id } } });
    const run = await finishedRun(ctx, res.body.run.workflowId);
    expect(run.status).toBe('failed');
    expect(run.error).toMatch(/the swap failed after it began .*is now failed: reset it \(POST \/v1\/runbooks\/reset\)/);
    expect(await instanceRow(target.id)).toMatchObject({ state: 'failed', lockedByRun: null });
    expect(await leftovers(ctx, `${targetName}__`)).toEqual([]);
    // The API refuses nothing but production; a failed sandbox is reset and restored in one run.
    const reset = await ctx.call('POST', '/v1/runbooks/reset', { body: { instance: target.id, backupId: src.backup.id } });
    expect((await finishedRun(ctx, reset.body.run.workflowId)).status).toBe('completed');
    await ctx.call('POST', `/v1/instances/${target.id}/resume`);
    expect(await contentChecksums(ctx, targetName)).toEqual(src.before);
  });
});

describe('OpenAPI document', () => {
  it('lists every new route with its errors', async () => {
    const doc = (await ctx.call('GET', '/openapi.json', { token: null })).body;
    const codes = (p: string, m: string) => Object.keys(doc.paths[p]?.[m]?.responses ?? {});
    expect(codes('/v1/runbooks/restore', 'post')).toEqual(expect.arrayContaining(['202', '400', '401', '403', '404', '409', '422', '503']));
    expect(codes('/v1/runbooks/reset', 'post')).toEqual(expect.arrayContaining(['202', '409', '422']));
    expect(codes('/v1/runbooks/production-restore', 'post')).toEqual(expect.arrayContaining(['202', '409', '422']));
    expect(codes('/v1/runs/{id}/signoff', 'post')).toEqual(expect.arrayContaining(['200', '202', '403', '404', '409']));
    expect(codes('/v1/runs/{id}/cancel', 'post')).toEqual(expect.arrayContaining(['202', '404', '409']));
    expect(codes('/v1/instances/{id}', 'patch')).toEqual(expect.arrayContaining(['200', '409', '422']));
    expect(codes('/v1/instances/{id}/resume', 'post')).toEqual(expect.arrayContaining(['200', '409']));
    expect(codes('/v1/signoffs', 'get')).toContain('200');
    expect(codes('/v1/audit', 'get')).toContain('200');
  });
});

describe('backups taken before object storage', () => {
  it('still restores an archive stored the old way: a flat <instance>-<yyyymmdd>-<hhmmss> name, its manifest beside it, in clear', async () => {
    const name = uniqueName('legacy');
    const inst = await createInstance(ctx, name);
    await seedMixed(ctx, name, 300);
    const before = await contentChecksums(ctx, name);
    // Written exactly as the filesystem store of 0.5 did: `pg_dump -Fc` into `<dir>/<key>`, the manifest as `<key>.manifest.json`.
    const home = ctx.cfg.REGIONS.find((r) => r.name === 'primary')!.store;
    if (home.kind !== 'fs') throw new Error('region primary is expected on the filesystem');
    const createdAt = new Date(Date.now() - 3600_000);
    const objectKey = BackupStore.legacyObjectKey(name, createdAt);
    const file = path.join(home.dir, objectKey);
    const url = new URL(ctx.cfg.REGIONS.find((r) => r.name === 'primary')!.postgresUrl);
    const dump = spawnSync(path.join(ctx.cfg.PG_BIN_DIR!, 'pg_dump'), ['--format=custom', '--no-publications', '--no-subscriptions', '-h', url.hostname, '-p', url.port, '-U', 'postgres', '-f', file, name], { encoding: 'utf8' });
    expect(dump.status, dump.stderr).toBe(0);
    const bytes = readFileSync(file);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(path.join(home.dir, `${objectKey}.manifest.json`), JSON.stringify({ formatVersion: 1, backupId: `bk-${name}`, objectKey, instanceId: inst.id, instance: name, kind: 'on_demand', label: 'old', edition: 'standard', serverVersion: '15', sizeBytes: bytes.length, sha256, sequences: {}, createdAt: createdAt.toISOString(), expiresAt: new Date(Date.now() + 86_400_000).toISOString() }));
    await ctx.db.insert(backups).values({
      id: `bk-${name}`, instanceId: inst.id, instanceName: name, region: 'primary', kind: 'on_demand', label: 'old', status: 'completed', objectKey, layout: 'flat',
      edition: 'standard', serverVersion: '15', sizeBytes: bytes.length, sha256, sequences: {}, workflowId: `legacy-${name}`, createdAt, completedAt: createdAt, expiresAt: new Date(Date.now() + 86_400_000),
    });
    const targetName = uniqueName('legtgt');
    const res = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: `bk-${name}`, target: { newInstance: { name: targetName, edition: 'standard', region: 'primary' } } } });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    const run = await finishedRun(ctx, res.body.run.workflowId);
    expect(run.status, JSON.stringify(run)).toBe('completed');
    const target = (await ctx.call('GET', `/v1/instances/${targetName}`)).body;
    await ctx.call('POST', `/v1/instances/${target.id}/resume`);
    expect(await contentChecksums(ctx, targetName)).toEqual(before);
    // Deleting it removes both old-style files.
    expect((await ctx.call('DELETE', `/v1/backups/bk-${name}`)).status).toBe(200);
    expect(await ctx.regions.get('primary')!.backups.keysOf({ layout: 'flat', objectKey })).toEqual([]);
  });
});
