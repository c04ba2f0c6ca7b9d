/**
 * What the benches share: options, the API client, the PostgreSQL tools, the
 * bench databases (pgbench, incompressible, equal tables), waiting for a run
 * and reading its activity timings from Temporal. Needs the local stack (`npm start`).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import postgres from 'postgres';
import { resolvePgBinDir } from '../lib/engine/postgres.js';
import { projectRoot } from '../lib/paths.js';

/** Options every bench takes (pass them to parseArgs beside the bench's own). */
export const commonOptions = {
  runs: { type: 'string', default: '3' },
  api: { type: 'string', default: process.env.BCDR_API_URL ?? 'http://127.0.0.1:8080' },
  token: { type: 'string', default: process.env.BCDR_TOKEN ?? 'dev-operator-token' },
  'data-dir': { type: 'string', default: process.env.BCDR_DATA_DIR ?? path.join(projectRoot, '.data') },
  temporal: { type: 'string', default: process.env.TEMPORAL_ADDRESS ?? '' },
  timings: { type: 'boolean', default: false },
  keep: { type: 'boolean', default: false },
} as const;

export interface CommonValues {
  runs?: string;
  api?: string;
  token?: string;
  'data-dir'?: string;
  temporal?: string;
  timings?: boolean;
  keep?: boolean;
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
export const secs = (ms: number) => ms / 1000;
export const fmt = (s: number) => s.toFixed(2);
export const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
export const gb = (bytes: number) => `${(bytes / 1e9).toFixed(2)} GB`;

const pgBin = resolvePgBinDir(process.env.PG_BIN_DIR);
export const tool = (t: string) => (pgBin ? path.join(pgBin, t) : t);

/** Runs a PostgreSQL tool with libpq settings in its environment; throws with its stderr on failure. */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${path.basename(cmd)} ${args.join(' ')} failed: ${r.stderr}`);
}

/** Like run, without blocking the event loop (so a sessionProbe keeps sampling meanwhile). */
export function runAsync(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`${path.basename(cmd)} ${args.join(' ')} failed: ${stderr}`))));
  });
}

/** One psql query, its output unaligned and trimmed. */
export function psql(env: NodeJS.ProcessEnv, sql: string): string {
  const r = spawnSync(tool('psql'), ['-v', 'ON_ERROR_STOP=1', '-tAc', sql], { env: { ...process.env, ...env }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`);
  return r.stdout.trim();
}

export type Api = (method: string, p: string, body?: unknown) => Promise<any>;

/** A JSON client of the BCDR API with the bench's bearer token. */
export function apiClient(base: string, token: string): Api {
  return async (method, p, body) => {
    const send = () =>
      fetch(`${base}${p}`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    // A kept-alive socket may have been closed by the server while a long run went on; one retry on a fresh one.
    const res = await send().catch(() => send());
    const json = await res.json();
    if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
}

/** The Temporal address: --temporal, else the port the local stack chose (`<data-dir>/ports.json`), else localhost:7233. */
function temporalAddress(v: CommonValues): string {
  if (v.temporal) return v.temporal;
  const ports = path.join(v['data-dir']!, 'ports.json');
  if (existsSync(ports)) return `127.0.0.1:${(JSON.parse(readFileSync(ports, 'utf8')) as { temporal: number }).temporal}`;
  return '127.0.0.1:7233';
}

/** Everything a bench needs to talk to the stack. */
export interface Bench {
  api: Api;
  temporal: Client;
  runs: number;
  values: CommonValues;
  /** The blob folder of a region of the local stack (`<data-dir>/blobs/<region>`). */
  blobDir(region: string): string;
  close(): Promise<void>;
}

export async function openBench(values: CommonValues): Promise<Bench> {
  const connection = await Connection.connect({ address: temporalAddress(values), connectTimeout: '10s' });
  return {
    api: apiClient(values.api!, values.token!),
    temporal: new Client({ connection, namespace: process.env.TEMPORAL_NAMESPACE ?? 'default' }),
    runs: Number(values.runs),
    values,
    blobDir: (region) => path.join(values['data-dir']!, 'blobs', region),
    close: () => connection.close(),
  };
}

/**
 * Waits for a run to end and returns its result. It awaits the workflow's
 * result through Temporal (a long poll: no polling load on the API or the
 * worker while the clock runs, and no polling delay in the figure).
 */
export async function awaitRun(b: Bench, workflowId: string): Promise<any> {
  return b.temporal.workflow.getHandle(workflowId).result();
}

/** One activity of a run, as its Temporal history shows it. */
export interface ActivityTiming {
  name: string;
  attempt: number;
  /** Scheduled → started: time in the task queue. */
  queuedMs: number;
  /** Started → completed: time in the activity. */
  runMs: number;
  /** Offset of its scheduling from the run's start. */
  atMs: number;
}

/** The run's activities and its total wall time inside Temporal, from its history. */
export async function runTimeline(b: Bench, workflowId: string): Promise<{ totalMs: number; activities: ActivityTiming[] }> {
  const history = await b.temporal.workflow.getHandle(workflowId).fetchHistory();
  const events = history.events ?? [];
  const ms = (e: (typeof events)[number]) => Number(e.eventTime!.seconds) * 1000 + Math.round((e.eventTime!.nanos ?? 0) / 1e6);
  const t0 = ms(events[0]!);
  const byId = new Map<string, { name: string; scheduled: number; started?: number; attempt: number }>();
  const out: ActivityTiming[] = [];
  for (const e of events) {
    const id = String(e.eventId);
    if (e.activityTaskScheduledEventAttributes) {
      byId.set(id, { name: e.activityTaskScheduledEventAttributes.activityType!.name!, scheduled: ms(e), attempt: 1 });
    } else if (e.activityTaskStartedEventAttributes) {
      const a = byId.get(String(e.activityTaskStartedEventAttributes.scheduledEventId))!;
      a.started = ms(e);
      a.attempt = e.activityTaskStartedEventAttributes.attempt ?? 1;
    } else {
      const done = e.activityTaskCompletedEventAttributes ?? e.activityTaskFailedEventAttributes ?? e.activityTaskTimedOutEventAttributes ?? e.activityTaskCanceledEventAttributes;
      if (done && 'scheduledEventId' in done) {
        const a = byId.get(String(done.scheduledEventId))!;
        out.push({ name: a.name, attempt: a.attempt, queuedMs: (a.started ?? ms(e)) - a.scheduled, runMs: ms(e) - (a.started ?? a.scheduled), atMs: a.scheduled - t0 });
      }
    }
  }
  return { totalMs: ms(events[events.length - 1]!) - t0, activities: out };
}

/** Prints a run's timeline: each activity's start offset, queue time and run time, and what is left for orchestration. */
export function printTimeline(t: { totalMs: number; activities: ActivityTiming[] }, indent = '    '): void {
  const inActivities = t.activities.reduce((s, a) => s + a.runMs, 0);
  for (const a of t.activities) {
    console.log(`${indent}+${String(a.atMs).padStart(6)} ms  ${a.name.padEnd(24)} queued ${String(a.queuedMs).padStart(4)} ms  ran ${String(a.runMs).padStart(6)} ms${a.attempt > 1 ? `  (attempt ${a.attempt})` : ''}`);
  }
  console.log(`${indent}in Temporal ${t.totalMs} ms, of which activities ${inActivities} ms, between them ${t.totalMs - inActivities} ms`);
}

/** libpq environment for a database of the local stack's instance endpoint. */
export function pgEnvOf(endpoint: string, database?: string): NodeJS.ProcessEnv {
  const ep = new URL(endpoint);
  return { PGHOST: ep.hostname, PGPORT: ep.port, PGUSER: decodeURIComponent(ep.username || 'postgres'), PGDATABASE: database ?? decodeURIComponent(ep.pathname.slice(1)) };
}

/** Finds a sandbox instance by name, creating it in region primary if absent. */
export async function ensureInstance(b: Bench, name: string): Promise<any> {
  const inst = await b.api('GET', `/v1/instances/${name}`).catch(() => undefined);
  return inst ?? b.api('POST', '/v1/instances', { name, type: 'sandbox', edition: 'standard', homeRegion: 'primary' });
}

/** Kinds of bench data. */
export type DataKind = 'pgbench' | 'incompressible' | 'tables';

/** The bench data sets: pgbench (scale), one table of random bytea (`mb` MB), or `tables` equal tables of `mb` MB each. */
export interface DataSpec {
  kind: DataKind;
  scale?: number;
  mb?: number;
  tables?: number;
}

export function instanceNameOf(d: DataSpec): string {
  if (d.kind === 'pgbench') return `bench-s${d.scale}`;
  if (d.kind === 'incompressible') return `bench-rand${d.mb}m`;
  return `bench-t${d.tables}x${d.mb}m`;
}

export function describeData(d: DataSpec): string {
  if (d.kind === 'pgbench') return `pgbench scale ${d.scale}`;
  if (d.kind === 'incompressible') return `one table of random bytea (${d.mb} MB of random bytes)`;
  return `${d.tables} equal tables of about ${d.mb} MB each (pgbench_accounts-like rows)`;
}

/**
 * Fills the instance's database with the data set unless it is already there
 * (a marker table records what was loaded). Returns the database size in bytes.
 */
export function ensureData(env: NodeJS.ProcessEnv, d: DataSpec): number {
  const marker = JSON.stringify(d);
  const has = psql(env, "select count(*) from pg_tables where tablename = 'bench_marker'") === '1' && psql(env, 'select spec from bench_marker') === marker;
  if (!has) {
    console.log(`loading ${describeData(d)} into ${env.PGDATABASE} ...`);
    const t = Date.now();
    if (d.kind === 'pgbench') {
      run(tool('pgbench'), ['-i', '-q', '-s', String(d.scale)], env);
    } else if (d.kind === 'incompressible') {
      // Rows of 2000 random bytes stay inline (under the TOAST threshold) and do not compress.
      const rows = Math.round((d.mb! * 1e6) / 2000);
      psql(env, 'create extension if not exists pgcrypto');
      psql(env, 'drop table if exists noise; create table noise(id int primary key, b bytea not null)');
      psql(env, 'alter table noise alter column b set storage external');
      const step = 50_000;
      for (let i = 0; i < rows; i += step) {
        psql(env, `insert into noise select g, gen_random_bytes(1024) || gen_random_bytes(976) from generate_series(${i + 1}, ${Math.min(rows, i + step)}) g`);
      }
    } else {
      // About 110 bytes a row in the heap, like pgbench_accounts; each table gets a primary key and a second index.
      const rows = Math.round((d.mb! * 1e6) / 110);
      for (let t = 1; t <= d.tables!; t++) {
        psql(env, `drop table if exists t${t}; create table t${t}(id int primary key, k int not null, v text not null)`);
        psql(env, `insert into t${t} select g, (g::bigint * 7919) % ${rows}, md5(g::text) || md5((g + ${t})::text) from generate_series(1, ${rows}) g`);
        psql(env, `create index on t${t}(k)`);
      }
    }
    psql(env, 'vacuum analyze');
    psql(env, `drop table if exists bench_marker; create table bench_marker(spec text); insert into bench_marker values ('${marker}')`);
    console.log(`  loaded in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  }
  return Number(psql(env, 'select pg_database_size(current_database())'));
}

/**
 * Watches a server's sessions (every `everyMs`) and tells when sessions whose
 * application_name starts with a prefix were first started and last seen: how
 * long a tool (pg_restore, pg_dump) really ran inside a run.
 */
export function sessionProbe(env: NodeJS.ProcessEnv, everyMs = 50) {
  const sql = postgres({ host: env.PGHOST, port: Number(env.PGPORT), user: env.PGUSER, database: 'postgres', max: 1, onnotice: () => {} });
  const seen = new Map<string, { first: number; last: number }>();
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const rows = await sql<{ app: string; pid: number; started: Date }[]>`
        SELECT application_name AS app, pid, backend_start AS started FROM pg_stat_activity WHERE application_name <> '' AND pid <> pg_backend_pid()`;
      const now = Date.now();
      for (const r of rows) {
        // One entry per session: a name can come back in a later run.
        const key = `${r.app}\u0000${r.pid}\u0000${r.started.getTime()}`;
        const s = seen.get(key);
        if (s) s.last = now;
        else seen.set(key, { first: r.started.getTime(), last: now });
      }
      await new Promise((res) => setTimeout(res, everyMs));
    }
  })();
  return {
    /** Epoch ms of the first session start and the last sighting of sessions named `prefix…` since `since`. */
    span(prefix: string, since: number): { start: number; end: number } | null {
      const hits = [...seen.entries()].filter(([key, s]) => key.startsWith(prefix) && s.first >= since).map(([, s]) => s);
      if (!hits.length) return null;
      return { start: Math.min(...hits.map((h) => h.first)), end: Math.max(...hits.map((h) => h.last)) };
    },
    async stop() {
      stopped = true;
      await loop.catch(() => {});
      await sql.end({ timeout: 5 });
    },
  };
}

/** ", of which <label> ran X s (+a s after the start, ~b s before the end)", from a probe's sightings; empty without one. */
export function spanNote(probe: ReturnType<typeof sessionProbe> | null, prefix: string, label: string, since: number, end: number): string {
  const s = probe?.span(prefix, since);
  return s ? `, of which ${label} ran ${fmt((s.end - s.start) / 1000)} s (+${fmt((s.start - since) / 1000)} s after the start, ~${fmt((end - s.end) / 1000)} s before the end)` : '';
}
