import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import postgres from 'postgres';
import { migrateCatalog } from '../../db/migrate.js';
import { isRoot } from './tools.js';

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
    REGIONS: JSON.stringify([
      { name: 'primary', pair: 'secondary', postgresUrl: opts.primary.url, blobDir: path.join(opts.blobRoot, 'primary') },
      { name: 'secondary', pair: 'primary', postgresUrl: opts.secondary.url, blobDir: path.join(opts.blobRoot, 'secondary') },
    ]),
  };
}
