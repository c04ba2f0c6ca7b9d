/**
 * Region failover and failback of N production instances under continuous
 * writes: RPO (writes lost), RTO (outage declared → serving, sign-off →
 * serving) and the failback's write-blocked interval.
 *
 *   npx tsx bench/failover.ts          # N = 10, then N = 50
 *   npx tsx bench/failover.ts 3 10     # any list of N (npm run bench:failover -- 3 10)
 *
 * Like test/failover.test.ts, each N gets a fresh environment in a temp dir:
 * a Temporal dev server, a catalog cluster, region clusters east and west
 * (paired), a worker in this process and the API called in-process. N
 * production instances are made in east with a `writes` table, streaming to
 * west. One writer per instance inserts a row at a time; after ~3 s east is
 * killed (`pg_ctl stop -m immediate`). The region monitor declares the outage
 * and starts the failover; the bench signs it off at once and waits until all
 * serve from west. East comes back and the failback brings everyone home
 * while writers write on the promoted secondaries. Waits are bounded (outage
 * declared: 10 min; each run: 10 min, then terminated and reported with the
 * step each instance was in); a failed N is reported and the next N runs.
 * KEEP_BENCH_DATA=1 keeps the temp dir.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from '@temporalio/client';
import { bundleWorkflowCode, DefaultLogger, Runtime } from '@temporalio/worker';
import { eq } from 'drizzle-orm';
import postgres from 'postgres';
import { createApp } from '../api/app.js';
import { createDb } from '../db/client.js';
import { migrateCatalog } from '../db/migrate.js';
import { failovers } from '../db/schema/index.js';
import { loadConfig } from '../lib/config.js';
import { openRegions } from '../lib/regions.js';
import { connectTemporal } from '../lib/temporal.js';
import { ensureDatabase, freePort, startCluster, startTemporal, type PgCluster } from '../scripts/lib/services.js';
import { ensurePostgres, ensureTemporalCli } from '../scripts/lib/tools.js';
import { createBcdrWorker, workflowsPath } from '../worker/create.js';
import type { FailbackResult, RegionFailoverResult } from '../workflows/contract.js';
import { connectInstance } from '../client/index.js';
import { fmt, median } from './lib.js';

const OPERATOR = 'bench-operator-token';
const APPROVER = 'bench-approver-token';
const TARGET_RPO_SECONDS = 1;
const TARGET_RTO_SIGNOFF_SECONDS = 30; // for 50 instances

const ns = process.argv.slice(2).map(Number);
if (ns.some((n) => !Number.isInteger(n) || n < 1)) throw new Error('usage: npx tsx bench/failover.ts [N...] (positive integers)');
if (!ns.length) ns.push(10, 50);

const elapsed = (t0: number) => (performance.now() - t0) / 1000;
const log = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

/** Polls `check` every 250 ms until it returns something truthy; throws after `ms` with the last error seen. */
async function eventually<T>(what: string, check: () => Promise<T | null | undefined | false>, ms: number): Promise<T> {
  let last: unknown;
  for (const deadline = Date.now() + ms; Date.now() < deadline; await sleep(250)) {
    const v = await check().catch((err: unknown) => void (last = err));
    if (v) return v;
  }
  throw new Error(`${what} did not happen within ${ms / 1000} s${last ? `: ${String(last)}` : ''}`);
}

const dbUrl = (cluster: PgCluster, db: string) => Object.assign(new URL(cluster.url), { pathname: `/${db}` }).toString();

async function onDb<T>(url: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 5 });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 2 });
  }
}

const idsIn = (url: string) => onDb(url, async (sql) => new Set((await sql<{ id: string }[]>`select id from writes`).map((r) => Number(r.id))));

/** Inserts one row at a time into `writes` (5 ms apart), recording each id whose commit it saw and when; stops on the first error. */
function startWriter(url: string) {
  const committed = new Map<number, number>(); // id → epoch ms of the acknowledged commit
  let stop = false;
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 3, idle_timeout: 0 });
  const done = (async () => {
    while (!stop) {
      try {
        const [row] = await sql<{ id: string }[]>`insert into writes (note) values ('w') returning id`;
        committed.set(Number(row!.id), Date.now());
      } catch {
        return;
      }
      await sleep(5);
    }
  })();
  return {
    committed,
    async stop() {
      stop = true;
      await done;
      await sql.end({ timeout: 1 }).catch(() => {});
    },
  };
}
type Writer = ReturnType<typeof startWriter>;

/** Committed ids (and their commit times) a writer saw that `have` lacks. */
const lostOf = (w: Writer, have: Set<number>) => [...w.committed].filter(([id]) => !have.has(id)).map(([, at]) => at);
const span = (times: number[]) => (times.length ? (Math.max(...times) - Math.min(...times)) / 1000 : 0);
const RUN_TIMEOUT_MS = 600_000;
// Over the instances that have the figure (the others are listed as not promoted / not failed back).
const fin = (xs: number[]) => xs.filter(Number.isFinite);
const max = (xs: number[]) => (fin(xs).length ? Math.max(...fin(xs)) : NaN);
const med = (xs: number[]) => (fin(xs).length ? median(fin(xs)) : NaN);

/** A run's result, or null (the run terminated, with the steps its instances were in) when it takes longer than `ms`. */
async function awaitRun<T>(client: Client, workflowId: string, ms = RUN_TIMEOUT_MS): Promise<{ result: T | null; stuck: string }> {
  const h = client.workflow.getHandle(workflowId);
  const result = await Promise.race([h.result() as Promise<T>, sleep(ms).then(() => null)]);
  if (result !== null) return { result, stuck: '' };
  const status = await h.query<{ step: string; instances?: Record<string, { name: string; step: string }> }>('runStatus').catch(() => null);
  const steps: Record<string, string[]> = {};
  for (const i of Object.values(status?.instances ?? {})) (steps[i.step] ??= []).push(i.name);
  await h.terminate(`bench: did not end within ${ms / 1000} s`).catch(() => {});
  return { result: null, stuck: `${workflowId} did not end within ${ms / 1000} s; run step ${status?.step}; instances by step: ${JSON.stringify(steps)}` };
}

// Once per process: Temporal's own log at ERROR (an outage makes the worker's activities fail on purpose), one workflow bundle for every N.
Runtime.install({ logger: new DefaultLogger('ERROR') });
const pgBin = ensurePostgres();
const cli = ensureTemporalCli();
const workflowBundle = await bundleWorkflowCode({ workflowsPath, logger: new DefaultLogger('ERROR') });

/** One fresh environment and one failover + failback of `n` instances; returns the figures. */
async function benchOnce(n: number) {
  const root = mkdtempSync(path.join(os.tmpdir(), `bcdr-bench-failover-${n}-`));
  chmodSync(root, 0o755); // the postgres user must reach the data dirs
  const cleanup: (() => Promise<unknown>)[] = [];
  const writers: Writer[] = []; // every writer started, for cleanup
  const writeTo = (url: string) => writers[writers.push(startWriter(url)) - 1]!;
  try {
    // --- environment: Temporal, catalog, east and west, worker, API ---
    let t = performance.now();
    const [tPort, uiPort, cPort, ePort, wPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
    const maxReplicas = n + 20;
    const [temporal, catalog, east0, west] = await Promise.all([
      startTemporal({ cli, port: tPort, uiPort, logFile: path.join(root, 'temporal.log'), timeoutMs: 120_000 }),
      startCluster({ name: 'catalog', pgBin, dataDir: path.join(root, 'catalog'), port: cPort }),
      startCluster({ name: 'east', pgBin, dataDir: path.join(root, 'east'), port: ePort, maxReplicas }),
      startCluster({ name: 'west', pgBin, dataDir: path.join(root, 'west'), port: wPort, maxReplicas }),
    ]);
    let east = east0;
    cleanup.push(() => temporal.stop(), () => catalog.stop(), () => east.stop(), () => west.stop());
    const catalogUrl = await ensureDatabase(catalog.url, 'bcdr_catalog');
    await migrateCatalog(catalogUrl);
    const cfg = loadConfig({
      ...{ CATALOG_DATABASE_URL: catalogUrl, PG_BIN_DIR: pgBin },
      ...{ TEMPORAL_ADDRESS: temporal.address, TEMPORAL_UI_URL: temporal.uiUrl, TEMPORAL_TASK_QUEUE: 'bcdr-bench' },
      REGIONS: JSON.stringify([
        { name: 'east', pair: 'west', postgresUrl: east.url, blobDir: path.join(root, 'blobs', 'east') },
        { name: 'west', pair: 'east', postgresUrl: west.url, blobDir: path.join(root, 'blobs', 'west') },
      ]),
      ...{ REGION_CHECK_SECONDS: '1', OUTAGE_AFTER_FAILED_CHECKS: '3', AUTO_FAILOVER: 'true', FAILOVER_CONCURRENCY: '16' },
      API_TOKENS: JSON.stringify([
        { token: OPERATOR, identity: 'bench.operator', roles: ['operator'] },
        { token: APPROVER, identity: 'bench.approver', roles: ['approver'] },
      ]),
      ...{ DROP_RETIRED_AFTER_SECONDS: '0', WORKER_SHUTDOWN_GRACE_SECONDS: '5' },
      // No scheduled backup fires during the bench.
      DEFAULT_BACKUP_START_TIME: new Date(Date.now() + 12 * 3600_000).toISOString().slice(11, 16),
    });
    const worker = await createBcdrWorker(cfg, { workflowBundle });
    const running = worker.worker.run();
    cleanup.push(async () => {
      // Bounded: an activity that never heartbeats (a hung check) cannot be cancelled, and shutdown waits for it.
      worker.worker.shutdown();
      if (await Promise.race([running.then(() => true, () => true), sleep(30_000).then(() => false)])) await worker.close();
      else console.warn('worker: activities still running 30 s after shutdown (stuck); left behind');
    });
    const db = createDb(cfg.CATALOG_DATABASE_URL, { max: 4 });
    const { client, connection } = await connectTemporal(cfg);
    const regions = openRegions(cfg);
    cleanup.push(() => regions.close(), () => db.close(), () => connection.close());
    const app = createApp({ cfg, db: db.db, temporal: client, temporalConnection: connection, regions: regions.regions, syncWaitMs: 300_000 });
    /** Calls the API in-process; throws unless the status is one of `ok`. */
    const call = async (method: string, p: string, body?: unknown, token = OPERATOR, ok = [200, 201, 202]): Promise<any> => {
      const headers: Record<string, string> = { authorization: `Bearer ${token}` };
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await app.request(p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const json: unknown = await res.json();
      if (!ok.includes(res.status)) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
      return json;
    };
    log(`N=${n}: environment up in ${fmt(elapsed(t))} s (${root}; Temporal UI ${temporal.uiUrl})`);

    // --- N production instances in east, each with a `writes` table streaming to west ---
    t = performance.now();
    const instances: { id: string; name: string }[] = [];
    for (let i = 0; i < n; i += 5) {
      const batch = Array.from({ length: Math.min(5, n - i) }, (_, k) => `fo-${String(i + k).padStart(3, '0')}`);
      for (const inst of await Promise.all(batch.map((name) => call('POST', '/v1/instances', { name, type: 'production', edition: 'standard', homeRegion: 'east' }, OPERATOR, [201])))) {
        instances.push({ id: inst.id, name: inst.name });
        await onDb(dbUrl(east, inst.name), (sql) => sql`create table writes (id bigserial primary key, note text)`);
      }
    }
    await eventually('every geo-secondary streams the writes table', async () => {
      for (const i of instances) {
        const d = await call('GET', `/v1/instances/${i.id}`);
        if (d.replication?.state !== 'streaming' || d.replication.drift) return false;
        if (!(await onDb(dbUrl(west, i.name), async (sql) => (await sql`select to_regclass('public.writes') as t`)[0]!.t))) return false;
      }
      return true;
    }, 120_000 + n * 10_000);
    log(`N=${n}: ${n} instances created and streaming in ${fmt(elapsed(t))} s`);

    // --- clients that follow the switch: one per instance on the multi-host URI, one on the client helper ---
    const multiHost = await Promise.all(instances.map(async (i) => (await call('GET', `/v1/instances/${i.id}/endpoint`)).multiHost as string));
    const apps = await Promise.all(
      instances.map((i) =>
        connectInstance({
          api: 'http://bench.local',
          token: OPERATOR,
          instance: i.id,
          waitForSwitchMs: 600_000,
          postgres: { max: 1, connect_timeout: 2, onnotice: () => {} },
          fetch: ((url: string | URL | Request, init?: RequestInit) => app.request(String(url), init)) as typeof fetch,
        }),
      ),
    );
    cleanup.push(() => Promise.all(apps.map((a) => a.close())));
    await Promise.all(apps.map((a) => a.run((sql) => sql`select 1`)));

    // --- failover: writers on east, east killed, the monitor declares the outage, approve, wait until all serve ---
    const foWriters = instances.map((i) => writeTo(dbUrl(east, i.name)));
    await sleep(3000);
    const killedAt = Date.now();
    const kill = spawnSync('runuser', ['-u', 'postgres', '--', path.join(pgBin, 'pg_ctl'), 'stop', '-D', east.dataDir, '-m', 'immediate', '-w'], { encoding: 'utf8' });
    if (kill.status !== 0) throw new Error(`could not kill east: ${kill.stderr}`);
    await Promise.all(foWriters.map((w) => w.stop()));
    // From now on each client keeps trying to write: the multi-host prober with a fresh connection every 50 ms, the helper's one
    // call waiting for the switch. A success before the sign-off would be a write on a side that must not take one.
    const probers = multiHost.map((uri) => firstWriteThrough(uri));
    const helperWrites = apps.map((a) => a.run((sql) => sql`insert into writes (note) values ('helper')`, { retrySafe: true }).then(() => performance.now(), () => NaN));
    log(`N=${n}: east killed after ${foWriters.reduce((s, w) => s + w.committed.size, 0)} writes; waiting for the monitor's failover`);
    const pending = await eventually('the monitor-started failover waiting for sign-off', async () => {
      const list = (await call('GET', '/v1/signoffs?status=pending')).signoffs as { workflowId: string }[];
      return list.find((s) => s.workflowId.startsWith('region-failover-east-outage-'));
    }, 600_000);
    const askedAt = Date.now();
    const signoffT = performance.now();
    await call('POST', `/v1/runs/${pending.workflowId}/signoff`, { decision: 'approve', statement: 'bench' }, APPROVER);
    const { result: fo, stuck } = await awaitRun<RegionFailoverResult>(client, pending.workflowId);
    if (!fo) throw new Error(stuck);
    const failoverRunSeconds = elapsed(signoffT);
    if (fo.outcome !== 'completed') console.warn(`failover ended ${fo.outcome}: ${JSON.stringify(fo)}`);
    const foInst = instances.map((i) => fo.instances[i.id]);
    const notPromoted = instances.filter((_, k) => !foInst[k]?.promoted).map((i) => i.name);
    const rtoDeclared = foInst.map((r) => r?.rtoFromDeclaredSeconds ?? NaN);
    const rtoSignoff = foInst.map((r) => r?.rtoFromSignoffSeconds ?? NaN);
    // Writer-counted loss: ids a writer saw committed on east that the promoted secondary lacks.
    const writerLost: number[][] = [];
    for (const [k, i] of instances.entries()) {
      if (foInst[k]?.promoted) writerLost.push(lostOf(foWriters[k]!, await idsIn((await call('GET', `/v1/instances/${i.id}/endpoint`)).endpoint)));
    }
    log(`N=${n}: failover ${fo.outcome} ${fmt(failoverRunSeconds)} s after sign-off; outage declared ${fmt((Date.parse(fo.declaredAt) - killedAt) / 1000)} s after the kill`);
    const within = <T>(p: Promise<T>, fallback: T) => Promise.race([p, sleep(60_000).then(() => fallback)]);
    const mhAt = await Promise.all(probers.map((pr) => within(pr.done, NaN)));
    probers.forEach((pr) => pr.stop());
    const helperAt = await Promise.all(helperWrites.map((h) => within(h, NaN)));
    const sinceSignoff = (ts: number[]) => ts.map((x) => (x - signoffT) / 1000);
    const clients = { multiHost: sinceSignoff(mhAt), helper: sinceSignoff(helperAt) };
    log(`N=${n}: first write after sign-off through the multi-host URI max ${fmt(max(clients.multiHost))} s, through the helper max ${fmt(max(clients.helper))} s`);

    // --- failback: east back, writers on the promoted secondaries, failback, writers stopped ---
    t = performance.now();
    east = await startCluster({ name: 'east', pgBin, dataDir: east.dataDir, port: ePort, maxReplicas });
    await eventually('east healthy again', async () => ((await call('GET', '/v1/regions')).regions as { name: string; health: string }[]).find((r) => r.name === 'east')?.health === 'healthy', 60_000);
    const eastBackSeconds = elapsed(t);
    const fbWriters = await Promise.all(instances.map(async (i) => writeTo((await call('GET', `/v1/instances/${i.id}/endpoint`)).endpoint)));
    await sleep(2000);
    const fbT = performance.now();
    const started = await call('POST', '/v1/runbooks/failback', { region: 'east' });
    const fbRun = await awaitRun<FailbackResult>(client, started.run.workflowId);
    const [fb, failbackRunSeconds] = [fbRun.result, elapsed(fbT)];
    await Promise.all(fbWriters.map((w) => w.stop()));
    if (fbRun.stuck) console.warn(`failback: ${fbRun.stuck}`);
    else if (fb?.outcome !== 'completed') console.warn(`failback ended ${fb?.outcome}: ${JSON.stringify(fb)}`);
    // The failovers rows: the measured loss (filled by the failback), and the figures of a failback that did not end.
    const rows = new Map((await db.db.select().from(failovers).where(eq(failovers.workflowId, pending.workflowId))).map((r) => [r.instanceId, r]));
    const home = instances.filter((i) => (fb ? fb.instances[i.id]?.done : rows.get(i.id)?.status === 'failed_back'));
    const blocked = home.map((i) => fb?.instances[i.id]?.writeBlockedSeconds ?? rows.get(i.id)?.writeBlockedSeconds ?? NaN);
    // Nothing written on the secondary may be missing at home after the failback.
    let failbackLost = 0;
    for (const i of home) failbackLost += lostOf(fbWriters[instances.indexOf(i)]!, await idsIn(dbUrl(east, i.name))).length;
    log(`N=${n}: failback ${fb?.outcome ?? 'did not end'} in ${fmt(failbackRunSeconds)} s (east restarted and healthy in ${fmt(eastBackSeconds)} s)`);

    // --- RPO as the catalog measured it (failovers.measured), over the instances it measured ---
    const measured = instances.map((i) => rows.get(i.id)?.measured ?? null);
    const firsts = measured.flatMap((m) => (m?.firstLostAt ? [Date.parse(m.firstLostAt)] : []));
    const lasts = measured.flatMap((m) => (m?.lastLostAt ? [Date.parse(m.lastLostAt)] : []));
    return {
      n,
      writes: foWriters.reduce((s, w) => s + w.committed.size, 0),
      signoffAskedAfterKillSeconds: (askedAt - killedAt) / 1000,
      detectSeconds: (Date.parse(fo.declaredAt) - killedAt) / 1000,
      rpo: {
        // seconds: from the first to the last lost commit over the whole run; unmeasured: instances the failback did not measure.
        catalog: {
          rows: measured.reduce((s, m) => s + (m?.rows ?? 0), 0),
          seconds: firsts.length ? (Math.max(...lasts) - Math.min(...firsts)) / 1000 : 0,
          maxInstanceSeconds: max(measured.map((m) => m?.seconds ?? 0)),
          unmeasured: n - measured.filter(Boolean).length,
        },
        writers: { rows: writerLost.reduce((s, l) => s + l.length, 0), seconds: span(writerLost.flat()), maxInstanceRows: max(writerLost.map((l) => l.length)) },
      },
      rto: { fromDeclaredMaxSeconds: max(rtoDeclared), fromSignoffMaxSeconds: max(rtoSignoff), failoverRunSeconds, notPromoted },
      // Seconds from sign-off to each instance's first successful write (NaN: none within a minute; negative: a write before sign-off).
      firstWrite: {
        multiHostMaxSeconds: max(clients.multiHost),
        multiHostMedianSeconds: med(clients.multiHost),
        helperMaxSeconds: max(clients.helper),
        helperMedianSeconds: med(clients.helper),
        beforeSignoff: [...clients.multiHost, ...clients.helper].filter((x) => x < 0).length,
        // Clients with no successful write within a minute of the failover's end.
        multiHostMissing: clients.multiHost.filter((x) => !Number.isFinite(x)).length,
        helperMissing: clients.helper.filter((x) => !Number.isFinite(x)).length,
      },
      failback: { outcome: fb?.outcome ?? 'did not end', writeBlockedMaxSeconds: max(blocked), writeBlockedMedianSeconds: med(blocked), runSeconds: failbackRunSeconds },
      failbackDetail: { notDone: instances.filter((i) => !home.includes(i)).map((i) => i.name), writesLost: failbackLost, stuck: fbRun.stuck },
    };
  } finally {
    await Promise.all(writers.map((w) => w.stop()));
    for (const c of cleanup.reverse()) await c().catch((err: unknown) => console.error(`cleanup: ${String(err)}`));
    if (!process.env.KEEP_BENCH_DATA) rmSync(root, { recursive: true, force: true });
  }
}
type Figures = Awaited<ReturnType<typeof benchOnce>>;

/** Tries an insert through `uri` on a fresh connection every 50 ms until one succeeds; `done` resolves with when. */
function firstWriteThrough(uri: string) {
  let stopped = false;
  const done = (async () => {
    while (!stopped) {
      const sql = postgres(uri, { max: 1, connect_timeout: 2, onnotice: () => {}, fetch_types: false });
      try {
        // Bounded per attempt: a postgres.js connect that finds no writable host may hang rather than fail.
        const ok = await Promise.race([sql`insert into writes (note) values ('multi-host')`.then(() => true), sleep(3000).then(() => false)]);
        if (ok) return performance.now();
      } catch {
        /* not writable yet */
      } finally {
        void sql.end({ timeout: 1 }).catch(() => {});
      }
      await sleep(50);
    }
    return NaN;
  })();
  return { done, stop: () => (stopped = true) };
}

console.log(`machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown cpu'}), ${fmt(os.totalmem() / 1e9)} GB`);
console.log(`command: npx tsx bench/failover.ts ${process.argv.slice(2).join(' ')}`.trimEnd());
const results: (Figures | { n: number; error: string })[] = [];
for (const n of ns) {
  // A failed N is reported with its error; the next N still runs in an environment of its own.
  results.push(await benchOnce(n).catch((err: unknown) => ({ n, error: err instanceof Error ? err.message : String(err) })));
}

const ok = (pass: boolean) => (pass ? 'ok' : 'MISSED');
const widths = [5, 6, 8, 9, 16, 18, 20, 22, 18, 29, 12];
const line = (cells: string[]) => console.log(cells.map((c, k) => c.padStart(widths[k]!)).join(' | '));
console.log(`\ntargets: RPO <= ${TARGET_RPO_SECONDS} s of writes; RTO from sign-off <= ${TARGET_RTO_SIGNOFF_SECONDS} s for 50 instances`);
console.log('detect = kill -> outage declared; lost = writes lost at the failover, catalog measured / counted by the writers; span = first to last lost commit');
line(['N', 'writes', 'detect s', 'lost rows', 'lost span s', 'RTO declared max s', 'RTO sign-off max s', 'write multi-host max s', 'write helper max s', 'failback blocked max/median s', 'failback s']);
for (const r of results) {
  if ('error' in r) {
    console.log(`${String(r.n).padStart(5)} | FAILED: ${r.error}`);
    continue;
  }
  const { rpo, rto, failback: fb, failbackDetail: fd } = r;
  line([
    String(r.n), String(r.writes), fmt(r.detectSeconds), `${rpo.catalog.rows}/${rpo.writers.rows}`,
    `${fmt(rpo.catalog.seconds)}/${fmt(rpo.writers.seconds)} ${ok(Math.max(rpo.catalog.seconds, rpo.writers.seconds) <= TARGET_RPO_SECONDS)}`,
    fmt(rto.fromDeclaredMaxSeconds), `${fmt(rto.fromSignoffMaxSeconds)} ${r.n >= 50 ? ok(rto.fromSignoffMaxSeconds <= TARGET_RTO_SIGNOFF_SECONDS) : '(target@50)'}`,
    fmt(r.firstWrite.multiHostMaxSeconds), fmt(r.firstWrite.helperMaxSeconds),
    `${fmt(fb.writeBlockedMaxSeconds)}/${fmt(fb.writeBlockedMedianSeconds)}`, `${fmt(fb.runSeconds)}${fb.outcome === 'completed' ? '' : ` ${fb.outcome}`}`,
  ]);
  if (rto.notPromoted.length) console.log(`      not promoted: ${rto.notPromoted.join(', ')}`);
  if (r.firstWrite.multiHostMissing || r.firstWrite.helperMissing) console.log(`      no write within a minute: ${r.firstWrite.multiHostMissing} multi-host client(s), ${r.firstWrite.helperMissing} helper client(s)`);
  if (r.firstWrite.beforeSignoff) console.log(`      ${r.firstWrite.beforeSignoff} client write(s) succeeded before the sign-off: a side took writes it must not`);
  if (fd.notDone.length) console.log(`      not failed back (${fd.notDone.length}): ${fd.notDone.join(', ')}`);
  if (fd.stuck) console.log(`      ${fd.stuck}`);
  if (rpo.catalog.unmeasured) console.log(`      ${rpo.catalog.unmeasured} instance(s) without a measured loss in the catalog`);
  if (fd.writesLost) console.log(`      ${fd.writesLost} writes made on the secondary are missing at home after the failback`);
}
const json = { machine: { cores: os.cpus().length }, targets: { rpoSeconds: TARGET_RPO_SECONDS, rtoFromSignoffSeconds: TARGET_RTO_SIGNOFF_SECONDS, atInstances: 50 }, results };
// Numbers to the millisecond (NaN, a figure no instance had, prints as null).
console.log(`\n${JSON.stringify(json, (_k, v: unknown) => (typeof v === 'number' ? Math.round(v * 1000) / 1000 : v), 2)}`);
process.exit(results.some((r) => 'error' in r) ? 1 : 0);
