import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import postgres from 'postgres';
import { migrateCatalog } from '../../db/migrate.js';
import { isRoot } from './tools.js';
import type { StoreConfig } from '../../lib/storage/store-config.js';
import { createBucket, startS3Server, type S3Server } from './s3-server.js';
import { createContainer, startAzurite, type AzuriteServer } from './azurite.js';

/** A port the OS says is free right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** True when nothing listens on `port` on loopback. */
export async function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** Polls `check` until it returns true or `timeoutMs` passes; throws naming `what`. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} was not ready after ${Math.round(timeoutMs / 1000)} s`);
    await sleep(250);
  }
}

/** A running Temporal dev server. */
export interface TemporalServer {
  address: string;
  uiUrl: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/**
 * Starts `temporal server start-dev` with the `InstanceId` and `Runbook`
 * search attributes and waits until its frontend answers. `dbFile` makes it
 * persistent (SQLite); without it the server is in memory.
 */
export async function startTemporal(opts: {
  cli: string;
  port: number;
  uiPort: number;
  dbFile?: string;
  logFile: string;
  timeoutMs?: number;
  /** Called as soon as the process exists, before readiness, so a caller can stop it whatever happens next. */
  onSpawn?: (child: ChildProcess) => void;
}): Promise<TemporalServer> {
  const args = [
    'server', 'start-dev',
    '--ip', '127.0.0.1',
    '--port', String(opts.port),
    '--ui-port', String(opts.uiPort),
    '--search-attribute', 'InstanceId=Keyword',
    '--search-attribute', 'Runbook=Keyword',
    '--log-level', 'warn',
  ];
  if (opts.dbFile) {
    mkdirSync(path.dirname(opts.dbFile), { recursive: true });
    args.push('--db-filename', opts.dbFile);
  }
  mkdirSync(path.dirname(opts.logFile), { recursive: true });
  const log = createWriteStream(opts.logFile, { flags: 'a' });
  const child = spawn(opts.cli, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  opts.onSpawn?.(child);
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  let exited: string | undefined;
  child.once('exit', (code, sig) => (exited = `exited with ${sig ?? code}`));
  const address = `127.0.0.1:${opts.port}`;
  try {
    await waitFor(
      `Temporal dev server on ${address}`,
      async () => {
        if (exited) throw new Error(`Temporal dev server ${exited}; see ${opts.logFile}`);
        const conn = await Connection.connect({ address, connectTimeout: '1s' });
        try {
          await conn.workflowService.getSystemInfo({});
          const sa = await conn.operatorService.listSearchAttributes({ namespace: 'default' });
          return 'InstanceId' in (sa.customAttributes ?? {});
        } finally {
          await conn.close();
        }
      },
      opts.timeoutMs ?? 60_000,
    );
  } catch (err) {
    child.kill('SIGKILL');
    if (exited) throw new Error(`Temporal dev server ${exited}; see ${opts.logFile}`);
    throw err;
  }
  return {
    address,
    uiUrl: `http://127.0.0.1:${opts.uiPort}`,
    child,
    stop: () => stopChild(child, 15_000),
  };
}

/** Sends SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
export async function stopChild(child: ChildProcess, graceMs: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}

/** Runs a PostgreSQL server binary as the `postgres` user when we are root (PostgreSQL refuses to run as root). */
function pgRun(pgBin: string, tool: string, args: string[]): { status: number | null; out: string } {
  const bin = path.join(pgBin, tool);
  const r = isRoot()
    ? spawnSync('runuser', ['-u', 'postgres', '--', bin, ...args], { encoding: 'utf8' })
    : spawnSync(bin, args, { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim() };
}

/** A PostgreSQL cluster this project created and runs. */
export interface PgCluster {
  name: string;
  port: number;
  dataDir: string;
  /** Admin URL (user postgres, trust auth on loopback). */
  url: string;
  stop(): Promise<void>;
}

/**
 * Creates (first time) and starts a PostgreSQL cluster in `dataDir` on
 * `port`, listening on loopback only, with `wal_level=logical` so logical
 * replication can be set up between regions.
 */
export async function startCluster(opts: {
  name: string;
  pgBin: string;
  dataDir: string;
  port: number;
  /** How many geo-secondaries the cluster serves or holds (replication slots, senders and workers); default 120. */
  maxReplicas?: number;
  /** Called once the server process is up, before readiness, with how to stop it. */
  onStart?: (stop: () => Promise<void>) => void;
}): Promise<PgCluster> {
  const { name, pgBin, dataDir, port } = opts;
  mkdirSync(dataDir, { recursive: true });
  if (isRoot()) {
    spawnSync('chown', ['-R', 'postgres:postgres', dataDir]);
    if (spawnSync('runuser', ['-u', 'postgres', '--', 'test', '-w', dataDir]).status !== 0) {
      throw new Error(`the postgres user cannot write ${dataDir}: every folder above it must be searchable (chmod o+x)`);
    }
  }
  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    const r = pgRun(pgBin, 'initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--locale=C', '--no-sync']);
    if (r.status !== 0) throw new Error(`initdb for ${name} failed:\n${r.out}`);
  }
  if (pgRun(pgBin, 'pg_ctl', ['status', '-D', dataDir]).status === 0) {
    pgRun(pgBin, 'pg_ctl', ['stop', '-D', dataDir, '-m', 'fast', '-w']);
  }
  const options = [
    `-p ${port}`,
    '-c listen_addresses=127.0.0.1',
    `-c unix_socket_directories=${dataDir}`,
    '-c wal_level=logical',
    // One geo-secondary per production instance: a slot and a walsender on the publishing side, an apply
    // worker (plus table-sync workers while seeding) on the subscribing side. Both roles on every cluster.
    `-c max_replication_slots=${opts.maxReplicas ?? 120}`,
    `-c max_wal_senders=${opts.maxReplicas ?? 120}`,
    `-c max_logical_replication_workers=${(opts.maxReplicas ?? 120) + 8}`,
    `-c max_worker_processes=${(opts.maxReplicas ?? 120) + 16}`,
    '-c max_sync_workers_per_subscription=2',
    // Subscribers confirm what they applied every second, so lag and caught-up times are measured to the second.
    '-c wal_receiver_status_interval=1s',
    '-c max_connections=400',
    '-c fsync=on',
  ].join(' ');
  const start = pgRun(pgBin, 'pg_ctl', ['start', '-D', dataDir, '-w', '-t', '60', '-l', path.join(dataDir, 'server.log'), '-o', options]);
  if (start.status !== 0) throw new Error(`PostgreSQL cluster ${name} did not start on port ${port}:\n${start.out}\nSee ${path.join(dataDir, 'server.log')}`);
  const stop = async () => {
    pgRun(pgBin, 'pg_ctl', ['stop', '-D', dataDir, '-m', 'fast', '-w']);
  };
  opts.onStart?.(stop);
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  await waitFor(`PostgreSQL ${name}`, async () => {
    const sql = postgres(url, { max: 1, connect_timeout: 2, onnotice: () => {} });
    try {
      await sql`select 1`;
      return true;
    } finally {
      await sql.end({ timeout: 1 });
    }
  }, 30_000);
  return {
    name,
    port,
    dataDir,
    url,
    stop,
  };
}

/** Creates database `name` on the cluster at `adminUrl` if it does not exist; returns its URL. */
export async function ensureDatabase(adminUrl: string, name: string): Promise<string> {
  const sql = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    const rows = await sql`select 1 from pg_database where datname = ${name}`;
    if (!rows.length) await sql`create database ${sql(name)}`;
  } finally {
    await sql.end({ timeout: 5 });
  }
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

/**
 * Creates and migrates the catalog database on the local catalog cluster and
 * returns the worker/API environment for a local stack: Temporal, the catalog,
 * and regions `primary` and `secondary` (paired) with blob stores under `blobRoot`.
 */
export async function prepareLocalStack(opts: {
  temporal: TemporalServer;
  catalog: PgCluster;
  primary: PgCluster;
  secondary: PgCluster;
  pgBin: string;
  blobRoot: string;
  taskQueue: string;
  /** The regions' stores (default: folders under blobRoot), and the environment they need (credentials, keys). */
  stores?: LocalStores;
}): Promise<Record<string, string>> {
  const catalogUrl = await ensureDatabase(opts.catalog.url, 'bcdr_catalog');
  await migrateCatalog(catalogUrl);
  return {
    CATALOG_DATABASE_URL: catalogUrl,
    TEMPORAL_ADDRESS: opts.temporal.address,
    TEMPORAL_NAMESPACE: 'default',
    TEMPORAL_TASK_QUEUE: opts.taskQueue,
    TEMPORAL_UI_URL: opts.temporal.uiUrl,
    PG_BIN_DIR: opts.pgBin,
    ...(opts.stores?.env ?? {}),
    REGIONS: JSON.stringify([
      { name: 'primary', pair: 'secondary', postgresUrl: opts.primary.url, store: opts.stores?.primary ?? { kind: 'fs', dir: path.join(opts.blobRoot, 'primary') } },
      { name: 'secondary', pair: 'primary', postgresUrl: opts.secondary.url, store: opts.stores?.secondary ?? { kind: 'fs', dir: path.join(opts.blobRoot, 'secondary') } },
    ]),
  };
}

/** The object stores of a local stack and what the worker needs to reach them. */
export interface LocalStores {
  primary: StoreConfig;
  secondary: StoreConfig;
  /** Environment for the worker and the API: S3 credentials, the backup keyring, the Azure connection string. */
  env: Record<string, string>;
  /** The servers, to stop (or, in tests, to stop and start again). */
  s3: S3Server;
  azurite: AzuriteServer;
  /** Stops both servers. */
  stop(): Promise<void>;
}

/**
 * Starts the local stack's object stores: versitygw (S3, with Object Lock)
 * and Azurite (Azure Blob), both real servers from the package registries,
 * creates a bucket and a container, and returns the default regions' stores:
 * `primary` on the filesystem, `secondary` on S3 (a bucket with Object Lock
 * enabled; locks are written only with `objectLock`), so offsite copies cross
 * store kinds. Azurite is up for regions put on Azure (`azureStore`). A fresh
 * backup keyring is made the first time, kept in `dataDir/backup-keys.json`.
 */
export async function startLocalStores(opts: {
  dataDir: string;
  blobRoot: string;
  logDir: string;
  versitygw: string;
  /** Write region secondary's objects under an S3 Object Lock until each backup expires (then deletes before expiry get 409). */
  objectLock?: boolean;
  onSpawn?: (child: ChildProcess) => void;
}): Promise<LocalStores> {
  const [s3Port, azPort] = await Promise.all([freePort(), freePort()]);
  const keysFile = path.join(opts.dataDir, 'backup-keys.json');
  mkdirSync(opts.dataDir, { recursive: true });
  if (!existsSync(keysFile)) {
    writeFileSync(keysFile, JSON.stringify({ active: 'local-1', keys: { 'local-1': randomBytes(32).toString('base64') }, s3Secret: randomBytes(18).toString('base64url') }), { mode: 0o600 });
  }
  const saved = JSON.parse(readFileSync(keysFile, 'utf8')) as { active: string; keys: Record<string, string>; s3Secret: string };
  const [s3, azurite] = await Promise.all([
    startS3Server({ bin: opts.versitygw, port: s3Port, dataDir: path.join(opts.dataDir, 's3'), logFile: path.join(opts.logDir, 'versitygw.log'), accessKey: 'bcdrlocal', secretKey: saved.s3Secret, onSpawn: opts.onSpawn }),
    startAzurite({ port: azPort, dataDir: path.join(opts.dataDir, 'azurite'), logFile: path.join(opts.logDir, 'azurite.log'), onSpawn: opts.onSpawn }),
  ]);
  await createBucket(s3, 'bcdr-secondary', { objectLock: true });
  const objectLock = opts.objectLock ? { objectLock: { mode: 'GOVERNANCE' as const } } : {};
  await createContainer(azurite.connectionString, 'bcdr-backups');
  return {
    primary: { kind: 'fs', dir: path.join(opts.blobRoot, 'primary') },
    secondary: { kind: 's3', endpoint: s3.endpoint, bucket: 'bcdr-secondary', region: s3.region, prefix: '', forcePathStyle: true, credentialsEnv: 'BCDR_S3', ...objectLock },
    env: {
      BCDR_S3_ACCESS_KEY_ID: s3.accessKey,
      BCDR_S3_SECRET_ACCESS_KEY: s3.secretKey,
      BCDR_AZURE_CONNECTION_STRING: azurite.connectionString,
      BACKUP_KEYS: JSON.stringify(saved.keys),
      BACKUP_KEY_ACTIVE: saved.active,
    },
    s3,
    azurite,
    stop: async () => {
      await Promise.all([s3.stop(), azurite.stop()]);
    },
  };
}

/** A store on the local Azurite's container, under `prefix` (the connection string stays in the environment). */
export function azureStore(prefix: string): StoreConfig {
  return { kind: 'azure', connectionStringEnv: 'BCDR_AZURE_CONNECTION_STRING', container: 'bcdr-backups', prefix };
}
