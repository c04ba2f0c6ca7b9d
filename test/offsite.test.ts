import { type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DeleteObjectCommand, GetObjectCommand, ListMultipartUploadsCommand, ListObjectVersionsCommand } from '@aws-sdk/client-s3';
import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { migrateCatalog } from '../db/migrate.js';
import { backupCopies, backups, instances as instancesTable } from '../db/schema/index.js';
import { backupRef } from '../lib/backups.js';
import { loadConfig, type Config } from '../lib/config.js';
import { BackupStore } from '../lib/storage/backup-store.js';
import { createContainer, startAzurite, type AzuriteServer } from '../scripts/lib/azurite.js';
import { createBucket, ensureVersitygw, s3ClientFor, startS3Server, type S3Server } from '../scripts/lib/s3-server.js';
import { ensureDatabase, freePort, startCluster, stopChild, type PgCluster } from '../scripts/lib/services.js';
import { ensurePostgres } from '../scripts/lib/tools.js';
import { backupNow, contentChecksums, createInstance, eventually, finishedRun, openContext, runActivity, seedMixed, startWorkerProcess, uniqueName, withInstanceDb, type TestContext } from './helpers.js';
import { APPROVER } from './tokens.js';

/**
 * Backups that outlive their region, on servers of this file's own: region
 * `north` (PostgreSQL + a real S3 server, versitygw) paired with `south`
 * (PostgreSQL + Azurite), and `vault` (S3 with Object Lock) paired with
 * `depot` (a folder). Its own catalog, task queue and worker process, so the
 * tests can stop a store, a server, or kill the worker mid-upload.
 */
let ctx: TestContext;
let cfg: Config;
let env: Record<string, string>;
let root: string;
let north: PgCluster;
let south: PgCluster;
let s3: S3Server;
let s3Port: number;
let azurite: AzuriteServer;
let worker: ChildProcess;
const children: ChildProcess[] = [];
const pgBin = ensurePostgres();
const versitygw = ensureVersitygw();
const keys = { k0: randomBytes(32).toString('base64'), k1: randomBytes(32).toString('base64') };
const workerLog: string[] = [];

async function startS3() {
  s3 = await startS3Server({ bin: versitygw, port: s3Port, dataDir: path.join(root, 's3'), logFile: path.join(root, 's3.log'), accessKey: 'offsite', secretKey: 'offsite-secret-key' });
}

async function spawnWorker(): Promise<ChildProcess> {
  const child = await startWorkerProcess(env, children);
  child.stdout!.on('data', (d: Buffer) => workerLog.push(d.toString()));
  child.stderr!.on('data', (d: Buffer) => workerLog.push(d.toString()));
  return child;
}

/** Resident memory of a process now (VmRSS) and at its peak so far (VmHWM), in MB. */
const rssMb = (pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS') => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

beforeAll(async () => {
  const shared = inject('bcdrEnv');
  root = mkdtempSync(path.join(os.tmpdir(), 'bcdr-offsite-'));
  chmodSync(root, 0o755);
  s3Port = await freePort();
  [north, south, , azurite] = await Promise.all([
    startCluster({ name: 'north', pgBin, dataDir: path.join(root, 'north'), port: await freePort() }),
    startCluster({ name: 'south', pgBin, dataDir: path.join(root, 'south'), port: await freePort() }),
    startS3(),
    startAzurite({ port: await freePort(), dataDir: path.join(root, 'azurite'), logFile: path.join(root, 'azurite.log') }),
  ]);
  await createBucket(s3, 'north', { objectLock: false });
  await createBucket(s3, 'vault', { objectLock: true });
  await createContainer(azurite.connectionString, 'south');
  const catalogUrl = await ensureDatabase(new URL('/postgres', shared.CATALOG_DATABASE_URL).toString(), `bcdr_offsite_${Date.now()}`);
  await migrateCatalog(catalogUrl);
  const secrets = { OFFS3_ACCESS_KEY_ID: s3.accessKey, OFFS3_SECRET_ACCESS_KEY: s3.secretKey, OFFAZ: azurite.connectionString };
  Object.assign(process.env, secrets);
  env = {
    ...shared,
    ...secrets,
    CATALOG_DATABASE_URL: catalogUrl,
    TEMPORAL_TASK_QUEUE: 'bcdr-offsite-test',
    BACKUP_KEYS: JSON.stringify(keys),
    BACKUP_KEY_ACTIVE: 'k1',
    REGIONS: JSON.stringify([
      { name: 'north', pair: 'south', postgresUrl: north.url, store: { kind: 's3', endpoint: s3.endpoint, bucket: 'north', prefix: 'bcdr', forcePathStyle: true, credentialsEnv: 'OFFS3' } },
      { name: 'south', pair: 'north', postgresUrl: south.url, store: { kind: 'azure', connectionStringEnv: 'OFFAZ', container: 'south', prefix: 'bcdr' } },
      { name: 'vault', pair: 'depot', postgresUrl: north.url, store: { kind: 's3', endpoint: s3.endpoint, bucket: 'vault', forcePathStyle: true, credentialsEnv: 'OFFS3', objectLock: { mode: 'GOVERNANCE' } } },
      { name: 'depot', pair: 'vault', postgresUrl: south.url, store: { kind: 'fs', dir: path.join(root, 'depot') } },
    ]),
    REGION_MONITORS: 'false',
    FLEET_SCHEDULES: 'false',
    WORKER_METRICS_PORT: '0',
    LOG_LEVEL: 'debug',
  };
  cfg = loadConfig(env);
  worker = await spawnWorker();
  ctx = await openContext(cfg);
}, 240_000);

afterAll(async () => {
  await ctx?.close();
  await Promise.all(children.map((c) => stopChild(c, 10_000)));
  await Promise.allSettled([north?.stop(), south?.stop(), s3?.stop(), azurite?.stop()]);
  if (!process.env.KEEP_TEST_DATA) rmSync(root, { recursive: true, force: true });
});

/** Restores `backupId` into a new instance and waits; returns the run and the new instance. */
async function restoreNew(backupId: string, region: string, name = uniqueName('rst')) {
  const res = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId, target: { newInstance: { name, edition: 'standard', region } } } });
  expect(res.status, JSON.stringify(res.body)).toBe(202);
  const run = await finishedRun(ctx, res.body.run.workflowId);
  return { run, name, instanceId: res.body.instanceId as string | undefined };
}

async function resumeByName(name: string) {
  const inst = (await ctx.call('GET', `/v1/instances/${name}`)).body;
  const r = await ctx.call('POST', `/v1/instances/${inst.id}/resume`);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
}

const s3Client = () => s3ClientFor(s3);

/**
 * Fills a table `blobs` of instance `name` (region north) with `mb` MiB of 1 KiB random rows, 64 MiB
 * per statement: pg_dump's compression cannot shrink them, so the archive is as large as the data.
 */
async function fillRandom(name: string, mb: number): Promise<void> {
  await withInstanceDb(
    ctx,
    name,
    async (sql) => {
      await sql`create extension if not exists pgcrypto`;
      await sql`create table blobs (id int primary key, b bytea)`;
      for (let i = 0; i < mb; i += 64) {
        await sql`insert into blobs select g, gen_random_bytes(1024) from generate_series(${i * 1024}::int, ${Math.min(i + 64, mb) * 1024 - 1}::int) g`;
      }
    },
    'north',
  );
}

describe('object stores', () => {
  it('uploads a 1 GB incompressible dump to S3 with the worker’s memory bounded, and copies it offsite to Azure', async () => {
    const mb = Number(process.env.BCDR_TEST_BIG_MB ?? 1024);
    const name = uniqueName('big');
    const inst = await createInstance(ctx, name, { homeRegion: 'north' });
    await fillRandom(name, mb);
    const before = rssMb(worker.pid!);
    const startPeak = rssMb(worker.pid!, 'VmHWM');
    // Sampled while the dump streams and the copy runs: the worker's resident memory during this backup.
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, rssMb(worker.pid!))), 200);
    const started = Date.now();
    const { row } = await backupNow(ctx, inst.id, 'big').finally(() => clearInterval(sampler));
    const seconds = (Date.now() - started) / 1000;
    console.log(`1 GB test: ${mb} MB of random rows, archive ${(row.sizeBytes! / 2 ** 20).toFixed(0)} MiB, backup + offsite copy ${seconds.toFixed(1)} s, worker RSS ${before.toFixed(0)} MB before, ${peak.toFixed(0)} MB at most during it (process peak before it, from bundling the workflows at start: ${startPeak.toFixed(0)} MB)`);
    expect(row.status).toBe('completed');
    expect(row.sizeBytes!).toBeGreaterThan(mb * 0.9 * 2 ** 20);
    // A generous ceiling: the dump streams through in parts of 8 MiB; the figure is in the closing note.
    expect(peak).toBeLessThan(700);
    const [copy] = await ctx.db.select().from(backupCopies).where(eq(backupCopies.backupId, row.id));
    expect(copy).toMatchObject({ region: 'south', storeKind: 'azure', status: 'verified', sha256: row.sha256 });
    // The bytes in S3 are not the dump: no archive magic, nothing in clear.
    const head = await s3Client().send(new GetObjectCommand({ Bucket: 'north', Key: `bcdr/${row.archiveKey}`, Range: 'bytes=0-65535' }));
    const first = Buffer.from(await head.Body!.transformToByteArray());
    expect(first.subarray(0, 8).toString('latin1')).toBe('BCDRENC1');
    expect(first.includes(Buffer.from('PGDMP'))).toBe(false);
    expect(first.includes(Buffer.from('CREATE TABLE'))).toBe(false);
    await ctx.call('DELETE', `/v1/instances/${inst.id}`);
  }, 900_000);

  it('restores through S3 and through Azure with every table equal, and the backup shows its verified copy', async () => {
    for (const home of ['north', 'south']) {
      const name = uniqueName(`rt${home}`);
      const inst = await createInstance(ctx, name, { homeRegion: home });
      await seedMixed(ctx, name, 2000, home);
      const before = await contentChecksums(ctx, name, home);
      const { row } = await backupNow(ctx, inst.id, `round trip ${home}`);
      expect(row.offsiteVerifiedAt).not.toBeNull();
      const dto = (await ctx.call('GET', `/v1/backups/${row.id}`)).body;
      expect(JSON.stringify(dto)).not.toContain(row.encryption!.wrappedKey);
      const { run, name: restored } = await restoreNew(row.id, home);
      expect(run.status, JSON.stringify(run)).toBe('completed');
      expect(run.warnings.join(' ')).not.toMatch(/offsite/);
      await resumeByName(restored);
      expect(await contentChecksums(ctx, restored, home)).toEqual(before);
    }
  });

  it('restores from the offsite copy by itself when the home store cannot be reached', async () => {
    const name = uniqueName('away');
    const inst = await createInstance(ctx, name, { homeRegion: 'north' });
    await seedMixed(ctx, name, 1000, 'north');
    const before = await contentChecksums(ctx, name, 'north');
    const { row } = await backupNow(ctx, inst.id, 'offsite');
    await s3.stop();
    try {
      const { run, name: restored } = await restoreNew(row.id, 'north');
      expect(run.status, JSON.stringify(run)).toBe('completed');
      expect(run.warnings.join(' ')).toMatch(/offsite copy in region south/);
      await resumeByName(restored);
      expect(await contentChecksums(ctx, restored, 'north')).toEqual(before);
    } finally {
      await startS3();
    }
  });

  it('restores into the paired region from the offsite copy after the home region’s server and store are both gone', async () => {
    const name = uniqueName('lost');
    const inst = await createInstance(ctx, name, { homeRegion: 'north' });
    await seedMixed(ctx, name, 1000, 'north');
    const before = await contentChecksums(ctx, name, 'north');
    const { row } = await backupNow(ctx, inst.id, 'before the region is lost');
    await Promise.all([north.stop(), s3.stop()]);
    try {
      const { run, name: restored } = await restoreNew(row.id, 'south');
      expect(run.status, JSON.stringify(run)).toBe('completed');
      await resumeByName(restored);
      expect(await contentChecksums(ctx, restored, 'south')).toEqual(before);
    } finally {
      await Promise.all([startS3(), startCluster({ name: 'north', pgBin, dataDir: north.dataDir, port: north.port })]);
    }
  });

  it('expires a backup everywhere: retention removes the home objects and every copy', async () => {
    const name = uniqueName('exp');
    const inst = await createInstance(ctx, name, { homeRegion: 'north' });
    const { row: old } = await backupNow(ctx, inst.id, 'old');
    const ref = backupRef(old);
    expect(await ctx.regions.get('north')!.backups.keysOf(ref)).toHaveLength(2);
    expect(await ctx.regions.get('south')!.backups.keysOf(ref)).toHaveLength(2);
    await ctx.db.update(backups).set({ expiresAt: new Date(Date.now() - 60_000) }).where(eq(backups.id, old.id));
    await backupNow(ctx, inst.id, 'new'); // its run applies retention
    expect(await ctx.db.select().from(backups).where(eq(backups.id, old.id))).toEqual([]);
    expect(await ctx.regions.get('north')!.backups.keysOf(ref)).toEqual([]);
    expect(await ctx.regions.get('south')!.backups.keysOf(ref)).toEqual([]);
  });
});

describe('a failed offsite copy', () => {
  it('is retried, then shows on the backup, raises an event and leaves the instance stale until a later copy verifies', async () => {
    const name = uniqueName('nocopy');
    const inst = await createInstance(ctx, name, { homeRegion: 'south' });
    await seedMixed(ctx, name, 100, 'south');
    // Old enough that without a good backup it is stale.
    await ctx.db.update(instancesTable).set({ createdAt: new Date(Date.now() - 30 * 3600_000) }).where(eq(instancesTable.id, inst.id));
    await s3.stop(); // the paired region's store (north, S3) is down
    let row;
    try {
      const res = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: { label: 'no copy' } });
      const run = await finishedRun(ctx, res.body.run.workflowId);
      expect(run.status, JSON.stringify(run)).toBe('completed');
      expect(run.warnings.join(' ')).toMatch(/offsite copy failed/);
      [row] = await ctx.db.select().from(backups).where(eq(backups.id, res.body.backupId));
      expect(row!.status).toBe('completed');
      expect(row!.offsiteVerifiedAt).toBeNull();
      const dto = (await ctx.call('GET', `/v1/backups/${row!.id}`)).body;
      expect(dto.copies).toContainEqual(expect.objectContaining({ region: 'north', status: 'failed' }));
      const [copy] = await ctx.db.select().from(backupCopies).where(eq(backupCopies.backupId, row!.id));
      expect(copy!.attempts).toBeGreaterThanOrEqual(4);
      const events = await ctx.call('GET', `/v1/audit?instance=${inst.id}&action=backup.copy-failed`);
      expect(events.body.events).toHaveLength(1);
      expect((await ctx.call('GET', `/v1/instances/${inst.id}`)).body.stale).toBe(true);
    } finally {
      await startS3();
    }
    const retried = await runActivity('retry-copies-test', ctx.activities.retryOffsiteCopies, { limit: 50, graceMinutes: 0 });
    expect(retried.verified).toContain(row!.id);
    const [copy] = await ctx.db.select().from(backupCopies).where(eq(backupCopies.backupId, row!.id));
    expect(copy).toMatchObject({ status: 'verified', sha256: row!.sha256 });
    const after = (await ctx.call('GET', `/v1/instances/${inst.id}`)).body;
    expect(after.stale).toBe(false);
  });
});

describe('encryption', () => {
  it('refuses a restore whose key is missing or wrong before the target is touched, naming the key id', async () => {
    const name = uniqueName('key');
    const inst = await createInstance(ctx, name, { homeRegion: 'north' });
    await seedMixed(ctx, name, 200, 'north');
    const { row } = await backupNow(ctx, inst.id, 'keyed');
    expect(row.encryption!.keyId).toBe('k1');
    const target = uniqueName('ktgt');
    const tgt = await createInstance(ctx, target, { homeRegion: 'north' });
    await seedMixed(ctx, target, 50, 'north');
    const untouched = await contentChecksums(ctx, target, 'north');
    for (const keyId of ['k-gone', 'k0']) {
      await ctx.db.update(backups).set({ encryption: { ...row.encryption!, keyId } }).where(eq(backups.id, row.id));
      const res = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: row.id, target: { instance: tgt.id } } });
      expect(res.status, JSON.stringify(res.body)).toBe(202);
      const run = await finishedRun(ctx, res.body.run.workflowId);
      expect(run.status).toBe('failed');
      expect(run.error).toContain(`backup key "${keyId}"`);
      expect(run.error).toMatch(/nothing was restored/);
      expect(await contentChecksums(ctx, target, 'north')).toEqual(untouched);
      expect((await ctx.call('GET', `/v1/instances/${tgt.id}`)).body.state).toBe('active');
    }
    await ctx.db.update(backups).set({ encryption: row.encryption }).where(eq(backups.id, row.id));
  });

  it('fails a restore of a flipped or truncated object before the target is touched', async () => {
    const name = uniqueName('tamper');
    const inst = await createInstance(ctx, name, { homeRegion: 'depot' });
    await seedMixed(ctx, name, 500, 'depot');
    const { row } = await backupNow(ctx, inst.id, 'tampered');
    const file = path.join(root, 'depot', row.archiveKey!);
    const good = readFileSync(file);
    const target = uniqueName('ttgt');
    const tgt = await createInstance(ctx, target, { homeRegion: 'depot' });
    await seedMixed(ctx, target, 20, 'depot');
    const untouched = await contentChecksums(ctx, target, 'depot');
    const { writeFileSync } = await import('node:fs');
    const flipped = Buffer.from(good);
    flipped[good.length >> 1]! ^= 0x10;
    for (const bad of [flipped, good.subarray(0, good.length - 1000)]) {
      writeFileSync(file, bad);
      const res = await ctx.call('POST', '/v1/runbooks/restore', { body: { backupId: row.id, target: { instance: tgt.id } } });
      const run = await finishedRun(ctx, res.body.run.workflowId);
      expect(run.status).toBe('failed');
      expect(run.error).toMatch(/failed verification/);
      expect(await contentChecksums(ctx, target, 'depot')).toEqual(untouched);
    }
    writeFileSync(file, good);
  });

  it('never writes a key into a log line or a workflow history', async () => {
    const { historyToJSON } = await import('@temporalio/common/lib/proto-utils.js');
    const rows = await ctx.db.select().from(backups);
    expect(rows.length).toBeGreaterThan(3);
    const secrets = Object.values(keys).flatMap((b64) => [b64, Buffer.from(b64, 'base64').toString('hex')]);
    const texts = [workerLog.join('')];
    for (const r of rows.slice(0, 8)) {
      const h = historyToJSON(await ctx.temporal.workflow.getHandle(r.workflowId).fetchHistory());
      texts.push(h, ...[...h.matchAll(/"data":\s*"([A-Za-z0-9+/=]+)"/g)].map((m) => Buffer.from(m[1]!, 'base64').toString('utf8')));
    }
    for (const t of texts) for (const s of [...secrets, s3.secretKey, 'Eby8vdM02xNOcqFl']) expect(t).not.toContain(s);
  });
});

describe('immutability', () => {
  it('writes archives under an S3 Object Lock until expiry: a direct delete of the version is refused, and so is the API’s', async () => {
    const name = uniqueName('lock');
    const inst = await createInstance(ctx, name, { homeRegion: 'vault' });
    await seedMixed(ctx, name, 100, 'vault');
    const { row } = await backupNow(ctx, inst.id, 'locked');
    expect(row.lockedUntil?.getTime()).toBe(row.expiresAt.getTime());
    expect(row.lockMode).toBe('GOVERNANCE');
    const client = s3Client();
    const versions = await client.send(new ListObjectVersionsCommand({ Bucket: 'vault', Prefix: row.archiveKey! }));
    const version = versions.Versions![0]!;
    await expect(client.send(new DeleteObjectCommand({ Bucket: 'vault', Key: row.archiveKey!, VersionId: version.VersionId }))).rejects.toThrow(/lock|Access Denied/i);
    const del = await ctx.call('DELETE', `/v1/backups/${row.id}`);
    expect(del.status).toBe(409);
    expect(JSON.stringify(del.body)).toMatch(/retention lock/);
    expect(await ctx.regions.get('vault')!.backups.keysOf(backupRef(row))).toHaveLength(2);
    const [still] = await ctx.db.select().from(backups).where(eq(backups.id, row.id));
    expect(still!.status).toBe('completed');
  });

  it('keeps a held backup through retention and delete, everywhere, until a second person releases it', async () => {
    const name = uniqueName('held');
    const inst = await createInstance(ctx, name, { homeRegion: 'north' });
    const { row } = await backupNow(ctx, inst.id, 'evidence');
    const hold = await ctx.call('POST', `/v1/backups/${row.id}/hold`, { body: { reason: 'legal: case 42' } });
    expect(hold.status, JSON.stringify(hold.body)).toBe(200);
    await ctx.db.update(backups).set({ expiresAt: new Date(Date.now() - 60_000) }).where(eq(backups.id, row.id));
    await backupNow(ctx, inst.id, 'next'); // retention runs and must leave it
    expect((await ctx.db.select().from(backups).where(eq(backups.id, row.id)))[0]?.status).toBe('completed');
    expect(await ctx.regions.get('south')!.backups.keysOf(backupRef(row))).toHaveLength(2);
    expect((await ctx.call('DELETE', `/v1/backups/${row.id}`)).status).toBe(409);
    const release = await ctx.call('POST', `/v1/backups/${row.id}/release`, { token: APPROVER, body: { reason: 'case closed' } });
    expect(release.status, JSON.stringify(release.body)).toBe(200);
    expect((await ctx.call('DELETE', `/v1/backups/${row.id}`)).status).toBe(200);
    expect(await ctx.regions.get('south')!.backups.keysOf(backupRef(row))).toEqual([]);
  });
});

describe('a worker killed mid-upload', () => {
  it('leaves no visible object and no unfinished upload, and the retry makes one good backup', async () => {
    const name = uniqueName('kill');
    const inst = await createInstance(ctx, name, { homeRegion: 'north' });
    await fillRandom(name, 200);
    const res = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: { label: 'killed' } });
    expect(res.status).toBe(202);
    const folder = BackupStore.folder(name, res.body.backupId);
    const client = s3Client();
    await eventually('the upload is under way', async () => {
      const up = await client.send(new ListMultipartUploadsCommand({ Bucket: 'north', Prefix: `bcdr/${folder}/` }));
      return (up.Uploads?.length ?? 0) > 0;
    }, 60_000);
    worker.kill('SIGKILL');
    await sleep(500);
    expect(await ctx.regions.get('north')!.backups.list(`${folder}/`)).toEqual([]);
    worker = await spawnWorker();
    await ctx.temporal.workflow.getHandle(res.body.run.workflowId).result();
    const [row] = await ctx.db.select().from(backups).where(and(eq(backups.id, res.body.backupId)));
    expect(row!.status).toBe('completed');
    const keysLeft = (await ctx.regions.get('north')!.backups.list(`${folder}/`)).map((o) => o.key).sort();
    expect(keysLeft).toEqual([row!.archiveKey, `${folder}/manifest.json`].sort());
    const up = await client.send(new ListMultipartUploadsCommand({ Bucket: 'north', Prefix: `bcdr/${folder}/` }));
    expect(up.Uploads ?? []).toEqual([]);
    expect(await ctx.regions.get('north')!.backups.checksum(backupRef(row!))).toEqual({ sizeBytes: row!.sizeBytes, sha256: row!.sha256 });
  });
});
