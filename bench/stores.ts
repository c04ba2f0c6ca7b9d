/**
 * Object stores against the raw PostgreSQL tools, each figure with its
 * baseline measured in the same run, alternating baseline and subject, medians
 * of `--runs` rounds:
 *
 *   1. backup to the filesystem store ÷ raw `pg_dump -Fc` to a local file (pgbench);
 *   2. backup to S3 and to Azure ÷ raw `pg_dump -Fc` (pgbench, and incompressible data);
 *   3. restore from S3 ÷ `createdb` + raw `pg_restore` from a local file (same database);
 *   4. encrypted ÷ unencrypted backup of incompressible data (both to a folder);
 *   5. the worker's peak RSS during the incompressible upload to S3, and the
 *      offsite copies' throughput (archive bytes ÷ the copy step's time).
 *
 *   npm run bench:stores -- --scale 70 --mb 1024 --runs 3
 *   npx tsx bench/stores.ts --scale 5 --mb 100 --runs 1        (a quick smoke run)
 *
 * Self-contained (no `npm start`): it starts its own Temporal dev server (in
 * memory), two PostgreSQL clusters `a` and `b`, a versitygw S3 server, Azurite,
 * a catalog (on `a`), a worker process (worker/main.ts) and the API in-process
 * (api/app.ts), in a temporary folder removed at the end. Regions, paired two
 * by two, each pair on two servers:
 *
 *   fsr   (server a, a folder, encrypted)   ⇄  s3r (server b, S3, encrypted)
 *   plain (server a, a folder, in clear)    ⇄  azr (server b, Azure, encrypted)
 *
 * A backup's time is taken from the API request to the run's end (awaited
 * through Temporal), and its steps from the run's history: the dump step
 * (`dumpBackup`: pg_dump streamed through the encryption into the store) is
 * what the ratios compare with raw pg_dump; the whole run also holds the
 * offsite copy (`copyBackupOffsite`: copied to the paired region's store and
 * read back to verify it) and retention. Before each timed operation (not
 * counted) the disks are synced and both servers checkpointed. The worker is
 * restarted just before each incompressible backup to S3, so the peak it
 * reports is that backup's own: VmRSS of /proc/<pid>/status sampled every
 * 100 ms inside the dump step, and VmHWM after the run (which also holds the
 * worker's start-up, when it bundles the workflows; shown beside it).
 *
 * Options: --scale (pgbench scale; default 70 ≈ 1 GB), --mb (MB of random
 * bytea rows made with pgcrypto's gen_random_bytes; default 1024), --runs
 * (default 3), --out (also write the table to bench/results/stores-<date>.md),
 * --timings (print each run's activity timings), --keep (keep the temporary
 * folder: servers' data and logs).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { eq } from 'drizzle-orm';
import { ownerTag } from '../activities/names.js';
import { createApp } from '../api/app.js';
import type { ApiDeps } from '../api/deps.js';
import { createDb } from '../db/client.js';
import { migrateCatalog } from '../db/migrate.js';
import { backupCopies } from '../db/schema/index.js';
import { loadConfig } from '../lib/config.js';
import { initLogging } from '../lib/log.js';
import { projectRoot } from '../lib/paths.js';
import { openRegions } from '../lib/regions.js';
import { connectTemporal } from '../lib/temporal.js';
import { createContainer, startAzurite } from '../scripts/lib/azurite.js';
import { createBucket, ensureVersitygw, startS3Server } from '../scripts/lib/s3-server.js';
import { ensureDatabase, freePort, startCluster, startTemporal, stopChild, type PgCluster } from '../scripts/lib/services.js';
import { ensurePostgres, ensureTemporalCli } from '../scripts/lib/tools.js';
import { awaitRun, describeData, ensureData, fmt, gb, mb, median, pgEnvOf, printTimeline, psql, run, runAsync, runTimeline, tool, type Api, type Bench, type DataSpec } from './lib.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    scale: { type: 'string', default: '70' },
    mb: { type: 'string', default: '1024' },
    out: { type: 'boolean', default: false },
    timings: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
});
const runs = Number(values.runs);
const pgbenchSpec: DataSpec = { kind: 'pgbench', scale: Number(values.scale) };
const randSpec: DataSpec = { kind: 'incompressible', mb: Number(values.mb) };
if (!(runs >= 1) || !(pgbenchSpec.scale! >= 1) || !(randSpec.mb! >= 1)) throw new Error('--runs, --scale and --mb must be positive numbers');
const commandLine = `npx tsx bench/stores.ts ${process.argv.slice(2).join(' ')}`.trim();

const TOKEN = 'bench-stores-operator-token';
const TASK_QUEUE = 'bcdr-bench-stores';

/** What is stopped at the end, last started first. */
const cleanups: { what: string; fn: () => Promise<unknown> }[] = [];
const onCleanup = (what: string, fn: () => Promise<unknown>) => cleanups.push({ what, fn });
/** The worker process running now, for the clean-up. */
let currentWorker: ChildProcess | undefined;

/** An instance of the bench, with the libpq environment of its database. */
interface Inst {
  id: string;
  name: string;
  region: string;
  env: NodeJS.ProcessEnv;
  bytes: number;
}

/** The running bench stack. */
interface Stack {
  root: string;
  a: PgCluster;
  b: PgCluster;
  env: Record<string, string>;
  bench: Bench;
  api: Api;
  catalog: ReturnType<typeof createDb>;
  worker: ChildProcess;
  workerStarts: number;
}

/** Starts a worker process (worker/main.ts) with the bench's environment and waits until it polls. */
async function startWorker(s: Pick<Stack, 'root' | 'env' | 'workerStarts'>): Promise<ChildProcess> {
  const log = path.join(s.root, `worker-${s.workerStarts}.log`);
  const out = createWriteStream(log);
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(projectRoot, 'worker', 'main.ts')], {
    cwd: projectRoot,
    env: { ...process.env, ...s.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let head = '';
  const take = (d: Buffer) => {
    out.write(d);
    if (head.length < 1_000_000) head += d.toString();
  };
  child.stdout!.on('data', take);
  child.stderr!.on('data', take);
  for (const deadline = Date.now() + 120_000; !head.includes('worker polling'); await sleep(100)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`the worker did not start (see ${log}):\n${head.slice(-3000)}`);
  }
  return child;
}

/** Stops the current worker (gracefully) and starts a fresh one, so its peak RSS starts from zero. */
async function restartWorker(s: Stack): Promise<void> {
  await stopChild(s.worker, 30_000);
  currentWorker = undefined;
  s.workerStarts++;
  s.worker = await startWorker(s);
  currentWorker = s.worker;
}

async function startStack(): Promise<Stack> {
  const root = mkdtempSync(path.join(os.tmpdir(), 'bcdr-bench-stores-'));
  chmodSync(root, 0o755); // the postgres user must reach the clusters' folders when we are root
  onCleanup('temporary folder', async () => {
    if (values.keep) console.log(`kept ${root}`);
    else rmSync(root, { recursive: true, force: true });
  });
  const pgBin = ensurePostgres();
  const cli = ensureTemporalCli();
  const versitygw = ensureVersitygw();
  const [tPort, uiPort, aPort, bPort, s3Port, azPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);
  const s3Secret = randomBytes(18).toString('base64url');
  const t = Date.now();
  const [temporal, a, b, s3, azurite] = await Promise.all([
    startTemporal({ cli, port: tPort, uiPort, logFile: path.join(root, 'temporal.log'), timeoutMs: 120_000, onSpawn: (c) => onCleanup('Temporal', () => stopChild(c, 15_000)) }),
    startCluster({ name: 'a', pgBin, dataDir: path.join(root, 'pg-a'), port: aPort, maxReplicas: 4, onStart: (stop) => onCleanup('PostgreSQL a', stop) }),
    startCluster({ name: 'b', pgBin, dataDir: path.join(root, 'pg-b'), port: bPort, maxReplicas: 4, onStart: (stop) => onCleanup('PostgreSQL b', stop) }),
    startS3Server({ bin: versitygw, port: s3Port, dataDir: path.join(root, 's3'), logFile: path.join(root, 's3.log'), accessKey: 'bench', secretKey: s3Secret, onSpawn: (c) => onCleanup('versitygw', () => stopChild(c, 10_000)) }),
    startAzurite({ port: azPort, dataDir: path.join(root, 'azurite'), logFile: path.join(root, 'azurite.log'), onSpawn: (c) => onCleanup('Azurite', () => stopChild(c, 10_000)) }),
  ]);
  await createBucket(s3, 's3r', { objectLock: false });
  await createContainer(azurite.connectionString, 'azr');
  const catalogUrl = await ensureDatabase(a.url, 'bcdr_catalog');
  await migrateCatalog(catalogUrl);
  const env: Record<string, string> = {
    CATALOG_DATABASE_URL: catalogUrl,
    TEMPORAL_ADDRESS: temporal.address,
    TEMPORAL_NAMESPACE: 'default',
    TEMPORAL_TASK_QUEUE: TASK_QUEUE,
    TEMPORAL_UI_URL: temporal.uiUrl,
    PG_BIN_DIR: pgBin,
    BENCHS3_ACCESS_KEY_ID: s3.accessKey,
    BENCHS3_SECRET_ACCESS_KEY: s3.secretKey,
    BENCHAZ: azurite.connectionString,
    BACKUP_KEYS: JSON.stringify({ bench: randomBytes(32).toString('base64') }),
    BACKUP_KEY_ACTIVE: 'bench',
    REGIONS: JSON.stringify([
      { name: 'fsr', pair: 's3r', postgresUrl: a.url, store: { kind: 'fs', dir: path.join(root, 'blobs', 'fsr') } },
      { name: 's3r', pair: 'fsr', postgresUrl: b.url, store: { kind: 's3', endpoint: s3.endpoint, region: s3.region, bucket: 's3r', forcePathStyle: true, credentialsEnv: 'BENCHS3' } },
      { name: 'plain', pair: 'azr', postgresUrl: a.url, store: { kind: 'fs', dir: path.join(root, 'blobs', 'plain') }, encryption: false },
      { name: 'azr', pair: 'plain', postgresUrl: b.url, store: { kind: 'azure', connectionStringEnv: 'BENCHAZ', container: 'azr' } },
    ]),
    API_TOKENS: JSON.stringify([{ token: TOKEN, identity: 'bench', roles: ['operator'] }]),
    REGION_MONITORS: 'false',
    FLEET_SCHEDULES: 'false',
    WORKER_METRICS_PORT: '0',
    // The restore's replaced copy is dropped at once (not counted; the bench waits for it between runs).
    DROP_RETIRED_AFTER_SECONDS: '0',
    // No scheduled backup fires during the bench.
    DEFAULT_BACKUP_START_TIME: new Date(Date.now() + 12 * 3600_000).toISOString().slice(11, 16),
    SCRATCH_DIR: path.join(root, 'scratch'),
    LOG_LEVEL: 'info',
  };
  mkdirSync(env.SCRATCH_DIR!, { recursive: true });
  const stack = { root, env, workerStarts: 0 };
  const worker = await startWorker(stack);
  currentWorker = worker;
  onCleanup('worker', () => (currentWorker ? stopChild(currentWorker, 30_000) : Promise.resolve()));

  // The API in-process, quiet but for warnings; its stores reach S3 and Azurite with the same environment.
  const cfg = loadConfig({ ...env, LOG_LEVEL: 'warn' });
  initLogging(cfg, 'bench-api');
  const catalog = createDb(cfg.CATALOG_DATABASE_URL, { max: 4 });
  const { client, connection } = await connectTemporal(cfg);
  const regions = openRegions(cfg, { ...process.env, ...env });
  onCleanup('API', async () => {
    await regions.close();
    await catalog.close();
    await connection.close();
  });
  const deps: ApiDeps = { cfg, db: catalog.db, temporal: client, temporalConnection: connection, regions: regions.regions, syncWaitMs: 120_000 };
  const app = createApp(deps);
  const api: Api = async (method, p, body) => {
    const res = await app.request(p, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const json: unknown = text ? JSON.parse(text) : null;
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text}`);
    return json;
  };
  const bench: Bench = { api, temporal: client, runs, values: {}, blobDir: (r) => path.join(root, 'blobs', r), close: async () => {} };
  const s: Stack = { root, a, b, env, bench, api, catalog, worker, workerStarts: 0 };
  console.log(`stack ready in ${((Date.now() - t) / 1000).toFixed(1)} s (in ${root}): Temporal ${temporal.address}, PostgreSQL a :${a.port} and b :${b.port}, S3 ${s3.endpoint}, Azurite :${azPort}`);
  return s;
}

/** libpq environment for a database on a cluster. */
const pgEnvAt = (c: PgCluster, database: string): NodeJS.ProcessEnv => pgEnvOf(c.url, database);

/**
 * Creates a sandbox instance in `region` through the API and fills its
 * database: loaded (ensureData), or copied from `cloneOf` on the same server
 * (CREATE DATABASE … TEMPLATE, the instance's owner tag put back); left
 * empty without a data set (a restore target).
 */
async function makeInstance(s: Stack, name: string, region: string, spec: DataSpec | null, cloneOf?: Inst): Promise<Inst> {
  const body = (await s.api('POST', '/v1/instances', { name, type: 'sandbox', edition: 'standard', homeRegion: region })) as { id: string; endpoint: string };
  const env = pgEnvOf(body.endpoint, name);
  if (cloneOf) {
    const admin = { ...env, PGDATABASE: 'postgres' };
    const t = Date.now();
    psql(admin, `select pg_terminate_backend(pid) from pg_stat_activity where datname in ('${cloneOf.name}', '${name}') and pid <> pg_backend_pid()`);
    psql(admin, `drop database "${name}" with (force)`);
    psql(admin, `create database "${name}" template "${cloneOf.name}"`);
    psql(admin, `comment on database "${name}" is '${ownerTag(body.id)}'`);
    console.log(`copied ${cloneOf.name} into ${name} in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  }
  const bytes = spec ? ensureData(env, spec) : 0;
  return { id: body.id, name, region, env, bytes };
}

/** Not counted: what earlier operations left dirty goes to disk, on both servers. */
function settle(s: Stack): void {
  spawnSync('sync');
  for (const c of [s.a, s.b]) psql(pgEnvAt(c, 'postgres'), 'CHECKPOINT');
  spawnSync('sync');
}

/** Raw `pg_dump -Fc` of an instance's database to a local file; seconds and the archive's size. */
async function rawDump(s: Stack, inst: Inst, file: string): Promise<{ secs: number; bytes: number }> {
  settle(s);
  const t = performance.now();
  await runAsync(tool('pg_dump'), ['-Fc', '-f', file], { ...inst.env, PGAPPNAME: 'bench-raw-dump' });
  const secs = (performance.now() - t) / 1000;
  return { secs, bytes: statSync(file).size };
}

/** One backup run as measured. */
interface BackupRun {
  backupId: string;
  workflowId: string;
  /** API request → run done. */
  totalSecs: number;
  /** The dump step (pg_dump → encryption → store) and the offsite copy step, from the run's history. */
  dumpSecs: number;
  copySecs: number;
  /** Epoch ms of the dump step's start and end (for the RSS samples). */
  dumpWindow: [number, number];
  archiveBytes: number;
  copyRegion: string;
}

/** Takes an on-demand backup through the API and reads its steps' times from the run's history. */
async function backupRun(s: Stack, inst: Inst, label: string): Promise<BackupRun> {
  settle(s);
  const t = performance.now();
  const started = (await s.api('POST', `/v1/instances/${inst.id}/backups`, { label, retentionDays: 1 })) as { backupId: string; run: { workflowId: string } };
  const result = (await awaitRun(s.bench, started.run.workflowId)) as { sizeBytes: number };
  const totalSecs = (performance.now() - t) / 1000;
  const handle = s.bench.temporal.workflow.getHandle(started.run.workflowId);
  const timeline = await runTimeline(s.bench, started.run.workflowId);
  if (values.timings) {
    console.log(`    ${label}:`);
    printTimeline(timeline, '      ');
  }
  const step = (name: string) => {
    const a = timeline.activities.filter((x) => x.name === name);
    if (a.length !== 1) throw new Error(`run ${started.run.workflowId} has ${a.length} ${name} steps, not one`);
    if (a[0]!.attempt > 1) console.warn(`    warning: ${name} of ${label} took ${a[0]!.attempt} attempts`);
    return a[0]!;
  };
  const dump = step('dumpBackup');
  const copy = step('copyBackupOffsite');
  const [row] = await s.catalog.db.select().from(backupCopies).where(eq(backupCopies.backupId, started.backupId));
  if (row?.status !== 'verified') throw new Error(`the offsite copy of ${label} is ${row?.status ?? 'missing'}: ${row?.error ?? ''}`);
  const t0 = (await handle.describe()).startTime.getTime();
  const dumpStart = t0 + dump.atMs + dump.queuedMs;
  return {
    backupId: started.backupId,
    workflowId: started.run.workflowId,
    totalSecs,
    dumpSecs: dump.runMs / 1000,
    copySecs: copy.runMs / 1000,
    dumpWindow: [dumpStart, dumpStart + dump.runMs],
    archiveBytes: result.sizeBytes,
    copyRegion: row.region,
  };
}

const deleteBackup = (s: Stack, id: string) => s.api('DELETE', `/v1/backups/${id}`);

/** VmRSS of a process sampled every 100 ms, with its VmHWM (peak since it started). */
function rssSampler(pid: number) {
  const field = (name: string) => {
    const m = new RegExp(`${name}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  };
  const samples: { at: number; bytes: number }[] = [];
  const timer = setInterval(() => {
    try {
      samples.push({ at: Date.now(), bytes: field('VmRSS') });
    } catch {
      /* the process is gone */
    }
  }, 100);
  return {
    hwm: () => field('VmHWM'),
    rss: () => field('VmRSS'),
    /** The largest sample within [from, to]. */
    peakWithin: (from: number, to: number) => Math.max(0, ...samples.filter((x) => x.at >= from && x.at <= to).map((x) => x.bytes)),
    stop: () => clearInterval(timer),
  };
}

/** Restore runbook of `backupId` into `target`, from a quiet server; seconds and the step times. */
async function restoreRun(s: Stack, backupId: string, target: Inst): Promise<{ totalSecs: number; steps: Record<string, number>; databaseBytes: number }> {
  await settleRestore(s, target);
  const t = performance.now();
  const started = (await s.api('POST', '/v1/runbooks/restore', { backupId, target: { instance: target.id }, jobs: 1 })) as { run: { workflowId: string } };
  const result = (await awaitRun(s.bench, started.run.workflowId)) as { databaseBytes: number };
  const totalSecs = (performance.now() - t) / 1000;
  const timeline = await runTimeline(s.bench, started.run.workflowId);
  if (values.timings) {
    console.log('    restore from S3:');
    printTimeline(timeline, '      ');
  }
  const steps: Record<string, number> = {};
  for (const a of timeline.activities) steps[a.name] = (steps[a.name] ?? 0) + a.runMs / 1000;
  return { totalSecs, steps, databaseBytes: result.databaseBytes };
}

/** Waits until the previous restore's replaced copy is dropped on the target's server, then settles (not counted). */
async function settleRestore(s: Stack, target: Inst): Promise<void> {
  const admin = { ...target.env, PGDATABASE: 'postgres' };
  for (const deadline = Date.now() + 600_000; Number(psql(admin, `select count(*) from pg_database where datname like '%\\_\\_bcdr\\_retired'`)) > 0; ) {
    if (Date.now() > deadline) throw new Error('a replaced copy was never dropped');
    await sleep(500);
  }
  settle(s);
}

/** createdb + raw pg_restore of a local archive file on the target's server; seconds and the restored size. */
async function rawRestore(s: Stack, target: Inst, file: string): Promise<{ secs: number; databaseBytes: number }> {
  const admin = { ...target.env, PGDATABASE: 'postgres' };
  const db = 'bench_raw_restore';
  run(tool('dropdb'), ['--if-exists', '--force', db], admin);
  settle(s);
  const t = performance.now();
  await runAsync(tool('createdb'), [db], admin);
  await runAsync(tool('pg_restore'), ['--exit-on-error', `--dbname=${db}`, file], { ...admin, PGAPPNAME: 'bench-raw-restore' });
  const secs = (performance.now() - t) / 1000;
  const databaseBytes = Number(psql(admin, `select pg_database_size('${db}')`));
  run(tool('dropdb'), ['--if-exists', '--force', db], admin);
  return { secs, databaseBytes };
}

/** Every measured series, by key: seconds (or bytes, or MB/s) per run. */
const series = new Map<string, number[]>();
const put = (key: string, v: number) => series.set(key, [...(series.get(key) ?? []), v]);
const med = (key: string) => {
  const xs = series.get(key);
  if (!xs?.length) throw new Error(`no measurements of ${key}`);
  return median(xs);
};
const list = (key: string, f: (x: number) => string = fmt) => (series.get(key) ?? []).map(f).join(' ');

/** The worker's memory around the incompressible backup to S3, in bytes. */
interface Rss {
  /** VmRSS of the fresh worker just before the backup, and its VmHWM then (its start-up's peak: bundling the workflows). */
  idle: number;
  startHwm: number;
  /** The largest VmRSS sampled during the dump step (the upload). */
  dumpPeak: number;
  /** VmHWM after the whole run. */
  hwm: number;
}

/** Records a backup run under `key`: run, dump and copy times, archive size, copy throughput. */
function putBackup(key: string, r: BackupRun): void {
  put(`${key}.total`, r.totalSecs);
  put(`${key}.dump`, r.dumpSecs);
  put(`${key}.copy`, r.copySecs);
  put(`${key}.bytes`, r.archiveBytes);
  put(`${key}.copyMBps`, r.archiveBytes / 1e6 / r.copySecs);
}

async function main(): Promise<void> {
  const s = await startStack();
  const onSignal = () => {
    console.error('interrupted: stopping the servers ...');
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  console.log(`loading data: ${describeData(pgbenchSpec)} and ${describeData(randSpec)}, each on both servers ...`);
  const fsrPg = await makeInstance(s, 'fs-pgbench', 'fsr', pgbenchSpec);
  const s3rPg = await makeInstance(s, 's3-pgbench', 's3r', pgbenchSpec);
  const azrPg = await makeInstance(s, 'az-pgbench', 'azr', pgbenchSpec, s3rPg);
  const fsrRand = await makeInstance(s, 'fs-rand', 'fsr', randSpec);
  const plainRand = await makeInstance(s, 'plain-rand', 'plain', randSpec, fsrRand);
  const s3rRand = await makeInstance(s, 's3-rand', 's3r', randSpec);
  const azrRand = await makeInstance(s, 'az-rand', 'azr', randSpec, s3rRand);
  const target = await makeInstance(s, 's3-restore-target', 's3r', null);
  for (const i of [fsrPg, s3rPg, azrPg, fsrRand, plainRand, s3rRand, azrRand]) console.log(`  ${i.name.padEnd(12)} region ${i.region.padEnd(5)} database ${gb(i.bytes)}`);

  const dumps = path.join(s.root, 'raw');
  mkdirSync(dumps, { recursive: true });
  const rawFile = (n: string) => path.join(dumps, `${n}.dump`);
  const rss: Rss[] = [];
  const benchStarted = Date.now();
  for (let i = 0; i < runs; i++) {
    const round = `run ${i + 1}/${runs}`;
    // Order of the two subjects of a pair alternates from run to run, so neither always goes first.
    const pair = <T>(x: T, y: T): [T, T] => (i % 2 === 0 ? [x, y] : [y, x]);

    // 1. The filesystem store (server a), pgbench.
    const rawA = await rawDump(s, fsrPg, rawFile('a-pgbench'));
    rmSync(rawFile('a-pgbench'));
    put('raw.a.pgbench', rawA.secs);
    put('raw.a.pgbench.bytes', rawA.bytes);
    const fsPg = await backupRun(s, fsrPg, `${round} fs pgbench`);
    putBackup('fsr.pgbench', fsPg);
    await deleteBackup(s, fsPg.backupId);
    console.log(`${round}: pgbench on a: pg_dump -Fc ${fmt(rawA.secs)} s; backup to fs: run ${fmt(fsPg.totalSecs)} s, dump ${fmt(fsPg.dumpSecs)} s, copy to S3 ${fmt(fsPg.copySecs)} s`);

    // 2. S3 and Azure (server b), pgbench; 3. restore from S3 of the same database, against pg_restore of the raw file.
    const rawB = await rawDump(s, s3rPg, rawFile('b-pgbench'));
    put('raw.b.pgbench', rawB.secs);
    put('raw.b.pgbench.bytes', rawB.bytes);
    let s3Pg: BackupRun | undefined;
    for (const which of pair('s3', 'az')) {
      const r = await backupRun(s, which === 's3' ? s3rPg : azrPg, `${round} ${which} pgbench`);
      putBackup(`${which}r.pgbench`, r);
      if (which === 's3') s3Pg = r;
      else await deleteBackup(s, r.backupId);
    }
    console.log(`${round}: pgbench on b: pg_dump -Fc ${fmt(rawB.secs)} s; backup to S3: run ${list('s3r.pgbench.total').split(' ').at(-1)} s, dump ${fmt(s3Pg!.dumpSecs)} s; to Azure: run ${list('azr.pgbench.total').split(' ').at(-1)} s, dump ${list('azr.pgbench.dump').split(' ').at(-1)} s`);
    const restore = await restoreRun(s, s3Pg!.backupId, target);
    put('restore.s3', restore.totalSecs);
    for (const [name, secs] of Object.entries(restore.steps)) put(`restore.s3.step.${name}`, secs);
    put('restore.s3.bytes', restore.databaseBytes);
    const rawR = await rawRestore(s, target, rawFile('b-pgbench'));
    put('raw.restore', rawR.secs);
    put('raw.restore.bytes', rawR.databaseBytes);
    await deleteBackup(s, s3Pg!.backupId);
    rmSync(rawFile('b-pgbench'));
    console.log(`${round}: restore from S3 ${fmt(restore.totalSecs)} s; createdb + pg_restore ${fmt(rawR.secs)} s`);

    // 2. S3 and Azure (server b), incompressible; 5. the worker's peak RSS during the upload to S3.
    const rawBr = await rawDump(s, s3rRand, rawFile('b-rand'));
    rmSync(rawFile('b-rand'));
    put('raw.b.rand', rawBr.secs);
    put('raw.b.rand.bytes', rawBr.bytes);
    for (const which of pair('s3', 'az')) {
      if (which === 's3') {
        await restartWorker(s);
        const sampler = rssSampler(s.worker.pid!);
        const idle = sampler.rss();
        const startHwm = sampler.hwm();
        const r = await backupRun(s, s3rRand, `${round} s3 incompressible`);
        const hwm = sampler.hwm();
        sampler.stop();
        rss.push({ idle, startHwm, dumpPeak: sampler.peakWithin(...r.dumpWindow), hwm });
        putBackup('s3r.rand', r);
        await deleteBackup(s, r.backupId);
      } else {
        const r = await backupRun(s, azrRand, `${round} az incompressible`);
        putBackup('azr.rand', r);
        await deleteBackup(s, r.backupId);
      }
    }
    const last = rss.at(-1)!;
    console.log(`${round}: incompressible on b: pg_dump -Fc ${fmt(rawBr.secs)} s; backup to S3: dump ${list('s3r.rand.dump').split(' ').at(-1)} s (worker RSS ${mb(last.idle)} before, ${mb(last.dumpPeak)} peak sampled in the dump, VmHWM ${mb(last.startHwm)} → ${mb(last.hwm)}); to Azure: dump ${list('azr.rand.dump').split(' ').at(-1)} s`);

    // 4. Encryption's cost (server a, both to a folder), incompressible: one against the other.
    for (const which of pair('enc', 'plain')) {
      const r = await backupRun(s, which === 'enc' ? fsrRand : plainRand, `${round} ${which} incompressible`);
      putBackup(which === 'enc' ? 'fsr.rand' : 'plain.rand', r);
      await deleteBackup(s, r.backupId);
    }
    console.log(`${round}: incompressible on a: encrypted dump ${list('fsr.rand.dump').split(' ').at(-1)} s, unencrypted ${list('plain.rand.dump').split(' ').at(-1)} s (${((Date.now() - benchStarted) / 60_000).toFixed(1)} min so far)`);
  }

  const table = report(fsrPg, fsrRand, rss);
  console.log(`\n${table}`);
  if (values.out) {
    const file = path.join(projectRoot, 'bench', 'results', `stores-${new Date().toISOString().slice(0, 10)}.md`);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, `${table}\n`);
    console.log(`written to ${path.relative(projectRoot, file)}`);
  }
}

/** The markdown report: the command line, the set-up, the figures, then each backup's steps. */
function report(pgInst: Inst, randInst: Inst, rss: Rss[]): string {
  const x = (num: number, den: number) => `${(num / den).toFixed(2)}×`;
  const ratioRow = (n: string, what: string, subj: string, base: string) =>
    `| ${n} | ${what} | ${fmt(med(subj))} s | ${fmt(med(base))} s | ${x(med(subj), med(base))} | ${list(subj)} / ${list(base)} |`;
  const MB = (b: number) => (b / 1e6).toFixed(0);
  const pgVersion = psql(pgInst.env, 'show server_version');
  const lines = [
    `\`${commandLine}\``,
    '',
    `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${os.cpus().length} cores, PostgreSQL ${pgVersion}, ${runs} run${runs > 1 ? 's' : ''} each (baseline and subject alternating; medians). ` +
      `pgbench scale ${pgbenchSpec.scale}: database ${gb(pgInst.bytes)}, pg_dump -Fc archive ${mb(med('raw.b.pgbench.bytes'))}; ` +
      `incompressible: ${randSpec.mb} MB of random bytea rows (pgcrypto gen_random_bytes): database ${gb(randInst.bytes)}, archive ${mb(med('raw.b.rand.bytes'))}. ` +
      'Regions: fsr (server a, folder, encrypted) ⇄ s3r (server b, versitygw S3, encrypted); plain (server a, folder, unencrypted) ⇄ azr (server b, Azurite, encrypted). ' +
      '"Dump step" is the dumpBackup activity (pg_dump → encryption → store) from the run\'s Temporal history; "whole run" is API request → run done, offsite copy and retention included.',
    '',
    '| # | Figure | Subject | Baseline | Ratio | Runs (subject / baseline) |',
    '|---|---|---|---|---|---|',
    ratioRow('1', `backup to the filesystem store (fsr), pgbench s${pgbenchSpec.scale}: dump step ÷ pg_dump -Fc to a local file (server a)`, 'fsr.pgbench.dump', 'raw.a.pgbench'),
    ratioRow('1', '… whole run (with the offsite copy to S3) ÷ pg_dump -Fc', 'fsr.pgbench.total', 'raw.a.pgbench'),
    ratioRow('2', `backup to S3 (s3r), pgbench s${pgbenchSpec.scale}: dump step ÷ pg_dump -Fc (server b)`, 's3r.pgbench.dump', 'raw.b.pgbench'),
    ratioRow('2', '… whole run (with the offsite copy to a folder) ÷ pg_dump -Fc', 's3r.pgbench.total', 'raw.b.pgbench'),
    ratioRow('2', `backup to Azure (azr), pgbench s${pgbenchSpec.scale}: dump step ÷ pg_dump -Fc (server b)`, 'azr.pgbench.dump', 'raw.b.pgbench'),
    ratioRow('2', '… whole run (with the offsite copy to a folder) ÷ pg_dump -Fc', 'azr.pgbench.total', 'raw.b.pgbench'),
    ratioRow('2', `backup to S3 (s3r), ${randSpec.mb} MB incompressible: dump step ÷ pg_dump -Fc (server b)`, 's3r.rand.dump', 'raw.b.rand'),
    ratioRow('2', '… whole run (with the offsite copy to a folder) ÷ pg_dump -Fc', 's3r.rand.total', 'raw.b.rand'),
    ratioRow('2', `backup to Azure (azr), ${randSpec.mb} MB incompressible: dump step ÷ pg_dump -Fc (server b)`, 'azr.rand.dump', 'raw.b.rand'),
    ratioRow('2', '… whole run (with the offsite copy to a folder) ÷ pg_dump -Fc', 'azr.rand.total', 'raw.b.rand'),
    ratioRow('3', `restore from S3 (runbook, API→done), pgbench s${pgbenchSpec.scale} ÷ createdb + pg_restore from a local file of the same database`, 'restore.s3', 'raw.restore'),
    ratioRow('4', `encryption: encrypted (fsr) ÷ unencrypted (plain) backup, ${randSpec.mb} MB incompressible, both to a folder: dump step`, 'fsr.rand.dump', 'plain.rand.dump'),
    ratioRow('4', '… whole run (encrypted copied to S3, unencrypted to Azure: not alike)', 'fsr.rand.total', 'plain.rand.total'),
    `| 5 | peak worker RSS during the ${randSpec.mb} MB upload to S3 (fresh worker; largest VmRSS sampled every 100 ms in the dump step; baseline: VmRSS just before) | ${MB(median(rss.map((r) => r.dumpPeak)))} MB | ${MB(median(rss.map((r) => r.idle)))} MB | | ${rss.map((r) => MB(r.dumpPeak)).join(' ')} / ${rss.map((r) => MB(r.idle)).join(' ')} MB |`,
    `| 5 | … VmHWM after the whole run (dump, copy from S3 to a folder, retention; the worker's start-up included; baseline: VmHWM before the backup) | ${MB(median(rss.map((r) => r.hwm)))} MB | ${MB(median(rss.map((r) => r.startHwm)))} MB | | ${rss.map((r) => MB(r.hwm)).join(' ')} / ${rss.map((r) => MB(r.startHwm)).join(' ')} MB |`,
    `| 5 | offsite copy throughput, ${randSpec.mb} MB incompressible, S3 → folder (archive ÷ copy step, read-back verification included) | ${med('s3r.rand.copyMBps').toFixed(0)} MB/s | | | ${list('s3r.rand.copyMBps', (v) => v.toFixed(0))} MB/s |`,
    `| 5 | … Azure → folder | ${med('azr.rand.copyMBps').toFixed(0)} MB/s | | | ${list('azr.rand.copyMBps', (v) => v.toFixed(0))} MB/s |`,
    `| 5 | … folder → S3 | ${med('fsr.rand.copyMBps').toFixed(0)} MB/s | | | ${list('fsr.rand.copyMBps', (v) => v.toFixed(0))} MB/s |`,
    `| 5 | … folder (unencrypted) → Azure | ${med('plain.rand.copyMBps').toFixed(0)} MB/s | | | ${list('plain.rand.copyMBps', (v) => v.toFixed(0))} MB/s |`,
    '',
    'Each backup, medians (s): whole run, dump step, offsite copy step; archive in the store; copy throughput.',
    '',
    '| Backup | Copied to | Whole run | Dump step | Copy step | Archive | Copy MB/s |',
    '|---|---|---|---|---|---|---|',
  ];
  const backupsSeen: [string, string, string][] = [
    ['fsr.pgbench', `fs (encrypted), pgbench s${pgbenchSpec.scale}`, 'S3'],
    ['s3r.pgbench', `S3, pgbench s${pgbenchSpec.scale}`, 'folder'],
    ['azr.pgbench', `Azure, pgbench s${pgbenchSpec.scale}`, 'folder'],
    ['s3r.rand', `S3, ${randSpec.mb} MB incompressible`, 'folder'],
    ['azr.rand', `Azure, ${randSpec.mb} MB incompressible`, 'folder'],
    ['fsr.rand', `fs (encrypted), ${randSpec.mb} MB incompressible`, 'S3'],
    ['plain.rand', `fs (unencrypted), ${randSpec.mb} MB incompressible`, 'Azure'],
  ];
  for (const [k, what, to] of backupsSeen) {
    lines.push(`| ${what} | ${to} | ${fmt(med(`${k}.total`))} | ${fmt(med(`${k}.dump`))} | ${fmt(med(`${k}.copy`))} | ${mb(med(`${k}.bytes`))} | ${med(`${k}.copyMBps`).toFixed(0)} |`);
  }
  const steps = [...series.keys()].filter((k) => k.startsWith('restore.s3.step.')).map((k) => `${k.slice('restore.s3.step.'.length)} ${fmt(med(k))} s`);
  lines.push('', `Restore from S3, steps (medians): ${steps.join(', ')}; restored ${gb(med('restore.s3.bytes'))} (pg_restore: ${gb(med('raw.restore.bytes'))}).`);
  return lines.join('\n');
}

let cleaning: Promise<void> | undefined;
/** Stops everything the bench started, last first; safe to call twice. */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const c of cleanups.reverse()) {
      await c.fn().catch((err: unknown) => console.error(`could not stop ${c.what}: ${String(err)}`));
    }
  })();
  return cleaning;
}

main()
  .then(() => cleanup())
  .then(() => process.exit(0))
  .catch(async (err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err);
    await cleanup();
    process.exit(1);
  });
