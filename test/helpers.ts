import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { inject } from 'vitest';
import type { Client, Connection } from '@temporalio/client';
import { eq } from 'drizzle-orm';
import postgres from 'postgres';
import type { RegionHandles } from '../activities/deps.js';
import { createActivities } from '../activities/index.js';
import { createApp } from '../api/app.js';
import type { ApiDeps } from '../api/deps.js';
import { createDb, type Database } from '../db/client.js';
import { backups, type BackupRow } from '../db/schema/index.js';
import { backupRef } from '../lib/backups.js';
import { loadConfig, type Config } from '../lib/config.js';
import { openRegions } from '../lib/regions.js';
import { connectTemporal } from '../lib/temporal.js';
import { OPERATOR } from './tokens.js';

/** Live handles on the servers the global setup started, plus the API app. */
export interface TestContext {
  cfg: Config;
  db: Database;
  temporal: Client;
  connection: Connection;
  regions: Map<string, RegionHandles>;
  app: ReturnType<typeof createApp>;
  /** The dependencies the app was built with, to build a variant of it. */
  deps(): ApiDeps;
  /** The real activities, bound to the same catalog, regions and Temporal client as the worker's. */
  activities: ReturnType<typeof createActivities>;
  /** Calls the API in-process with a bearer token (operator unless told otherwise; null for none). */
  call(method: string, path: string, opts?: { token?: string | null; body?: unknown; rawBody?: string }): Promise<{ status: number; body: any }>;
  close(): Promise<void>;
}

export async function openContext(cfg: Config = loadConfig(inject('bcdrEnv'))): Promise<TestContext> {
  const catalog = createDb(cfg.CATALOG_DATABASE_URL, { max: 4 });
  const { client, connection } = await connectTemporal(cfg);
  const regions = openRegions(cfg);
  const deps: ApiDeps = { cfg, db: catalog.db, temporal: client, temporalConnection: connection, regions: regions.regions, syncWaitMs: 120_000 };
  const app = createApp(deps);
  return {
    deps: () => deps,
    activities: createActivities({ db: catalog.db, regions: regions.regions, temporal: client, taskQueue: cfg.TEMPORAL_TASK_QUEUE }),
    cfg,
    db: catalog.db,
    temporal: client,
    connection,
    regions: regions.regions,
    app,
    call: (method, path, opts = {}) => callApp(app, method, path, opts),
    async close() {
      await regions.close();
      await catalog.close();
      await connection.close();
    },
  };
}

/** A fresh instance name, so tests never share state. */
export const uniqueName = (prefix: string) => `${prefix}-${randomBytes(3).toString('hex')}`;

/** Calls `app` in-process with a bearer token (operator unless told otherwise; null for none); the body parsed when it is JSON. */
export async function callApp(app: ReturnType<typeof createApp>, method: string, path: string, opts: { token?: string | null; body?: unknown; rawBody?: string } = {}): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {};
  const token = opts.token === undefined ? OPERATOR : opts.token;
  if (token) headers.authorization = `Bearer ${token}`;
  let body: string | undefined;
  if (opts.rawBody !== undefined || opts.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = opts.rawBody ?? JSON.stringify(opts.body);
  }
  const res = await app.request(path, { method, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, body: parsed };
}

/** Creates an instance through the API and returns its body; fails the test unless it is provisioned. */
export async function createInstance(ctx: TestContext, name: string, extra: Partial<{ type: string; edition: string; homeRegion: string }> = {}) {
  const res = await ctx.call('POST', '/v1/instances', { body: { name, type: 'sandbox', edition: 'standard', homeRegion: 'primary', ...extra } });
  if (res.status !== 201) throw new Error(`create instance ${name}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body as { id: string; name: string; endpoint: string; [k: string]: unknown };
}

/** Runs SQL on an instance's database in its region. */
export async function withInstanceDb<T>(ctx: TestContext, dbName: string, fn: (sql: postgres.Sql) => Promise<T>, region = 'primary'): Promise<T> {
  const r = ctx.cfg.REGIONS.find((x) => x.name === region)!;
  const u = new URL(r.postgresUrl);
  u.pathname = `/${dbName}`;
  const sql = postgres(u.toString(), { max: 1, onnotice: () => {}, fetch_types: false });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** Fills an instance database with real rows: a table with a serial key and 5,000 rows. */
export async function seedRows(ctx: TestContext, dbName: string, rows = 5000): Promise<void> {
  await withInstanceDb(ctx, dbName, async (sql) => {
    await sql`create table if not exists orders (id serial primary key, customer text not null, amount numeric(12,2) not null, created_at timestamptz default now())`;
    await sql`insert into orders (customer, amount) select 'customer-' || g, (g % 1000) + 0.99 from generate_series(1, ${rows}) g`;
  });
}

/** Starts an on-demand backup through the API and waits for its run; returns the backup row. */
export async function backupNow(ctx: TestContext, instance: string, label = 'test backup') {
  const res = await ctx.call('POST', `/v1/instances/${instance}/backups`, { body: { label } });
  if (res.status !== 202) throw new Error(`backup ${instance}: ${res.status} ${JSON.stringify(res.body)}`);
  await ctx.temporal.workflow.getHandle(res.body.run.workflowId).result();
  const [row] = await ctx.db.select().from(backups).where(eq(backups.id, res.body.backupId));
  return { row: row!, response: res.body as { backupId: string; run: { workflowId: string; url: string } } };
}

/** Runs a real activity function outside a worker, as if scheduled by workflow `workflowId`; returns its typed result. */
export function runActivity<F extends (...args: any[]) => Promise<any>>(workflowId: string, fn: F, ...args: Parameters<F>): ReturnType<F> {
  return activityEnv(workflowId).run(fn, ...args) as ReturnType<F>;
}

/** A real activity context outside a worker, as if scheduled by workflow `workflowId`; expected failures are not logged. */
export function activityEnv(workflowId: string): MockActivityEnvironment {
  return new MockActivityEnvironment({ workflowExecution: { workflowId, runId: 'test-run' } }, { logger: new DefaultLogger('ERROR') });
}

/**
 * Per-table content checksums of a database: an md5 over each table's rows in
 * a fixed order (not just row counts), plus one over every large object.
 */
export async function contentChecksums(ctx: TestContext, dbName: string, region = 'primary'): Promise<Record<string, string>> {
  return withInstanceDb(
    ctx,
    dbName,
    async (sql) => {
      const tables = await sql<{ t: string }[]>`
        SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables
        WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`;
      const out: Record<string, string> = {};
      for (const { t } of tables) {
        const [row] = await sql.unsafe<{ n: string; h: string | null }[]>(`SELECT count(*)::text AS n, md5(string_agg(x::text, '|' ORDER BY x::text)) AS h FROM ${t} x`);
        out[t] = `${row!.n}:${row!.h ?? 'empty'}`;
      }
      const [lo] = await sql<{ n: string; h: string | null }[]>`
        SELECT count(*)::text AS n, md5(string_agg(m.oid::text || ':' || encode(lo_get(m.oid), 'hex'), '|' ORDER BY m.oid)) AS h FROM pg_largeobject_metadata m`;
      out['(large objects)'] = `${lo!.n}:${lo!.h ?? 'empty'}`;
      return out;
    },
    region,
  );
}

/** Fills a database with awkward content: a keyed table, a table without a primary key, bytea, a large object, a sequence in use. */
export async function seedMixed(ctx: TestContext, dbName: string, rows = 2000, region = 'primary'): Promise<void> {
  await withInstanceDb(
    ctx,
    dbName,
    async (sql) => {
      await sql`CREATE TABLE IF NOT EXISTS invoices (id bigserial PRIMARY KEY, number bigint NOT NULL, note text, payload bytea)`;
      await sql`CREATE SEQUENCE IF NOT EXISTS invoice_numbers START 1000`;
      await sql`CREATE TABLE IF NOT EXISTS events_log (at timestamptz NOT NULL, kind text, body jsonb)`; // no primary key
      await sql`CREATE TABLE IF NOT EXISTS documents (name text PRIMARY KEY, content oid)`;
      await sql`INSERT INTO invoices (number, note, payload)
        SELECT nextval('invoice_numbers'), 'note ' || g || E'\\twith tab, ''quote'' and ünïcode', decode(md5(g::text), 'hex') || '\\x00ff'::bytea
        FROM generate_series(1, ${rows}) g`;
      await sql`INSERT INTO events_log SELECT now() - g * interval '1 minute', 'kind-' || (g % 7), jsonb_build_object('g', g) FROM generate_series(1, ${rows}) g`;
      await sql`INSERT INTO events_log VALUES ('2026-01-01T00:00:00Z', 'dup', '{}'), ('2026-01-01T00:00:00Z', 'dup', '{}')`;
      await sql`INSERT INTO documents VALUES ('doc-' || ${rows}, lo_from_bytea(0, decode(repeat('ab01', 5000), 'hex')))`;
    },
    region,
  );
}

/** True when a client can open a session on the database (false when it refuses connections, as a suspended instance does). */
export async function canConnect(ctx: TestContext, dbName: string, region = 'primary'): Promise<boolean> {
  try {
    await withInstanceDb(ctx, dbName, async (sql) => sql`SELECT 1`, region);
    return true;
  } catch {
    return false;
  }
}

/** Waits for a run to end and returns the API's view of it. */
export async function finishedRun(ctx: TestContext, workflowId: string): Promise<any> {
  await ctx.temporal.workflow.getHandle(workflowId).result().catch(() => {});
  return (await ctx.call('GET', `/v1/runs/${workflowId}`)).body;
}

/** Arms a test-only fault hook in the worker's activity layer (see activities/faults.ts). */
export function armFault(ctx: TestContext, point: string, instanceId: string, times: number): void {
  const file = ctx.cfg.BCDR_FAULT_FILE!;
  const armed = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8') || '{}') as Record<string, number>) : {};
  armed[`${point}:${instanceId}`] = times;
  writeFileSync(file, JSON.stringify(armed));
}

/** Databases on a region's server whose names start with `prefix` (staging and replaced copies included). */
export async function databasesLike(ctx: TestContext, prefix: string, region = 'primary'): Promise<string[]> {
  return withInstanceDb(
    ctx,
    'postgres',
    async (sql) => (await sql<{ datname: string }[]>`SELECT datname FROM pg_database WHERE starts_with(datname, ${prefix}) ORDER BY 1`).map((r) => r.datname),
    region,
  );
}

/**
 * The databases left on a region's server whose names start with `prefix`,
 * once the restore's housekeeping run (drop-retired, started as the restore
 * ends) has had up to a minute to drop the replaced copy.
 */
export async function leftovers(ctx: TestContext, prefix: string, region = 'primary'): Promise<string[]> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const found = await databasesLike(ctx, prefix, region);
    if (!found.length || Date.now() > deadline) return found;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Polls `check` until it returns a truthy value, or throws naming `what` (with the last error) after `ms`. */
export async function eventually<T>(what: string, check: () => Promise<T | null | undefined | false>, ms = 90_000): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms / 1000} s${last ? `: ${String(last)}` : ''}`);
    await sleep(250);
  }
}

/**
 * A real worker process (worker/main.ts) with `env`, on a task queue of its
 * own, so a test can SIGKILL it without touching the suite's worker. It is
 * added to `spawned` for the test's clean-up.
 */
export async function startWorkerProcess(env: Record<string, string>, spawned: ChildProcess[]): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(import.meta.dirname, '..', 'worker', 'main.ts')], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  spawned.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  for (const deadline = Date.now() + 60_000; !out.includes('worker polling'); await sleep(100)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`worker did not start: ${out}`);
  }
  return child;
}

/** The plain `pg_dump` archive of a backup, decrypted from its region's store into a temp file (for `pg_restore --list` and the like). */
export async function plainArchive(regions: Map<string, RegionHandles>, b: BackupRow): Promise<string> {
  const file = path.join(os.tmpdir(), `bcdr-plain-${b.id}.dump`);
  const store = regions.get(b.region)!.backups;
  await pipeline(await store.openArchive(backupRef(b), b.encryption, { sizeBytes: b.sizeBytes!, sha256: b.sha256! }), createWriteStream(file));
  return file;
}
