import { spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { and, eq, inArray } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { migrateCatalog } from '../db/migrate.js';
import { auditEvents, backups, failovers, instances as instancesTable, signoffs } from '../db/schema/index.js';
import { loadConfig, type Config } from '../lib/config.js';
import { runSearchAttributes } from '../lib/temporal.js';
import type { RegionFailoverInput } from '../workflows/contract.js';
import { subscriptionName } from '../lib/replication.js';
import { ensureDatabase, freePort, startCluster, type PgCluster } from '../scripts/lib/services.js';
import { ensurePostgres } from '../scripts/lib/tools.js';
import { createBcdrWorker, type BcdrWorker } from '../worker/create.js';
import { eventually, openContext, plainArchive, startWorkerProcess, uniqueName, type TestContext } from './helpers.js';
import { readEvents } from './sse.js';
import { connectInstance } from '../client/index.js';
import { acquireLock, releaseLock } from '../lib/locks.js';
import { recordHistory } from './record.js';
import { APPROVER, SELF_APPROVER, VIEWER } from './tokens.js';

/**
 * Region failover and failback on clusters of their own (east, paired with
 * west), with their own catalog, worker and task queue, so killing east
 * disturbs nothing else in the suite.
 */
let ctx: TestContext;
let worker: BcdrWorker;
let running: Promise<void>;
let east: PgCluster;
let west: PgCluster;
let root: string;
let eastPort: number;
let env: Record<string, string>;
let cfg: Config;
const children: ChildProcess[] = [];
const pgBin = ensurePostgres();
const instances: { id: string; name: string }[] = [];


const dbUrl = (cluster: PgCluster, db: string) => {
  const u = new URL(cluster.url);
  u.pathname = `/${db}`;
  return u.toString();
};

async function onDb<T>(url: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 5, fetch_types: false });
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 2 });
  }
}

/** Inserts rows one at a time into `writes` at `url`, recording every id whose commit it saw, until stopped or the server goes. */
function startWriter(url: string) {
  const committed: number[] = [];
  let stop = false;
  const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 3, fetch_types: false });
  const done = (async () => {
    while (!stop) {
      try {
        const [row] = await sql<{ id: string }[]>`insert into writes (note) values ('w') returning id`;
        committed.push(Number(row!.id));
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

const slotNames = (cluster: PgCluster) => onDb(cluster.url, async (sql) => (await sql<{ s: string }[]>`select slot_name as s from pg_replication_slots order by 1`).map((r) => r.s));

beforeAll(async () => {
  const shared = inject('bcdrEnv');
  root = mkdtempSync(path.join(os.tmpdir(), 'bcdr-failover-'));
  chmodSync(root, 0o755);
  [eastPort] = [await freePort()];
  [east, west] = await Promise.all([
    startCluster({ name: 'east', pgBin, dataDir: path.join(root, 'east'), port: eastPort }),
    startCluster({ name: 'west', pgBin, dataDir: path.join(root, 'west'), port: await freePort() }),
  ]);
  const catalogUrl = await ensureDatabase(new URL('/postgres', shared.CATALOG_DATABASE_URL).toString(), `bcdr_failover_${Date.now()}`);
  await migrateCatalog(catalogUrl);
  env = {
    ...shared,
    CATALOG_DATABASE_URL: catalogUrl,
    TEMPORAL_TASK_QUEUE: 'bcdr-failover-test',
    REGIONS: JSON.stringify([
      { name: 'east', pair: 'west', postgresUrl: east.url, blobDir: path.join(root, 'blobs', 'east') },
      { name: 'west', pair: 'east', postgresUrl: west.url, blobDir: path.join(root, 'blobs', 'west') },
    ]),
    REGION_CHECK_SECONDS: '1',
    OUTAGE_AFTER_FAILED_CHECKS: '3',
    AUTO_FAILOVER: 'true',
    FAILOVER_REMIND_SECONDS: '2',
    BCDR_FAULT_FILE: path.join(root, 'faults.json'),
    // The fleet-wide sweep schedule belongs to the suite's worker and catalog: these workers leave it alone.
    FLEET_SCHEDULES: 'false',
  };
  cfg = loadConfig(env);
  worker = await createBcdrWorker(cfg);
  running = worker.worker.run();
  ctx = await openContext(cfg);
  for (let i = 0; i < 3; i++) {
    const name = uniqueName(`fo${i}`);
    const res = await ctx.call('POST', '/v1/instances', { body: { name, type: 'production', edition: 'standard', homeRegion: 'east' } });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    instances.push({ id: res.body.id, name });
    await onDb(dbUrl(east, name), (sql) => sql`create table writes (id bigserial primary key, note text, at timestamptz default clock_timestamp())`);
  }
  await eventually('every geo-secondary streams the writes table', async () => {
    for (const i of instances) {
      const d = (await ctx.call('GET', `/v1/instances/${i.id}`)).body;
      if (d.replication?.state !== 'streaming' || d.replication.drift) return false;
      const has = await onDb(dbUrl(west, i.name), async (sql) => (await sql`select to_regclass('public.writes') as t`)[0]!.t);
      if (!has) return false;
    }
    return true;
  });
  // A good backup each, so their failover readiness can be `ready`.
  for (const i of instances) {
    const bk = await ctx.call('POST', `/v1/instances/${i.id}/backups`, { body: { label: 'baseline' } });
    expect(bk.status, JSON.stringify(bk.body)).toBe(202);
    await ctx.temporal.workflow.getHandle(bk.body.run.workflowId).result();
  }
}, 240_000);

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await ctx?.close();
  worker?.worker.shutdown();
  await running?.catch(() => {});
  await worker?.close();
  await Promise.all([east?.stop(), west?.stop()]);
  if (!process.env.KEEP_TEST_DATA && root) rmSync(root, { recursive: true, force: true });
}, 120_000);

const runResult = async (workflowId: string) => {
  await ctx.temporal.workflow.getHandle(workflowId).result().catch(() => {});
  return (await ctx.call('GET', `/v1/runs/${workflowId}`)).body;
};

const unchanged = async () => {
  for (const i of instances) {
    const d = (await ctx.call('GET', `/v1/instances/${i.id}`)).body;
    expect(d).toMatchObject({ state: 'active', activeRegion: 'east', fencedSince: null });
    expect(d.endpoint).toContain(`:${eastPort}/${i.name}`);
    expect(d.replication.state).toBe('streaming');
  }
  await onDb(dbUrl(east, instances[0]!.name), (sql) => sql`insert into writes (note) values ('still writable')`);
};

const readinessOf = async (id: string) => (await ctx.call('GET', `/v1/instances/${id}`)).body.readiness as { state: string; reasons: string[] } | null;
const allReady = async () => {
  for (const i of instances) if ((await readinessOf(i.id))?.state !== 'ready') return false;
  return true;
};

/** What a dry run must not change: the catalog's instances, replicas, failovers and sign-offs, and both servers' databases and settings. */
async function snapshot() {
  const rows = await ctx.db.select().from(instancesTable);
  const dbs = async (c: PgCluster) =>
    onDb(c.url, (sql) => sql`select d.datname, d.datallowconn, coalesce(s.setconfig::text, '') as cfg from pg_database d left join pg_db_role_setting s on s.setdatabase = d.oid and s.setrole = 0 order by 1`);
  const subs = await onDb(dbUrl(west, instances[0]!.name), (sql) => sql`select subname, subenabled from pg_subscription order by 1`);
  return {
    instances: rows.map((r) => ({ ...r, readiness: undefined, updatedAt: undefined })).sort((a, b) => a.id.localeCompare(b.id)),
    failovers: (await ctx.db.select().from(failovers)).length,
    signoffs: (await ctx.db.select().from(signoffs)).length,
    east: await dbs(east),
    west: await dbs(west),
    subs,
    slots: await slotNames(east),
  };
}

describe('failover readiness', () => {
  it('is ready when every check passes; a dry run answers at once and changes nothing', async () => {
    await eventually('every instance ready', allReady, 60_000);
    const before = await snapshot();
    const dry = await ctx.call('POST', '/v1/runbooks/region-failover', { body: { region: 'east', dryRun: true } });
    expect(dry.status, JSON.stringify(dry.body)).toBe(200);
    expect(dry.body).toMatchObject({ dryRun: true, region: 'east', reachable: true, kind: 'planned', signoffRequired: false });
    expect(dry.body.instances.map((i: { id: string }) => i.id).sort()).toEqual(instances.map((i) => i.id).sort());
    for (const i of dry.body.instances) expect(i).toMatchObject({ readiness: { state: 'ready', reasons: [] }, couldLose: { couldLoseSeconds: 0 } });
    const unplanned = await ctx.call('POST', '/v1/runbooks/region-failover', { body: { region: 'east', dryRun: true, mode: 'unplanned' } });
    expect(unplanned.body).toMatchObject({ kind: 'unplanned', signoffRequired: true });
    for (const i of unplanned.body.instances) expect(i.couldLose.lagBytes).toEqual(expect.any(Number));
    // Bad input is refused, and a real run needs a reason.
    expect((await ctx.call('POST', '/v1/runbooks/region-failover', { body: { region: 'east' } })).body.error.message).toMatch(/reason: is required/);
    expect((await ctx.call('POST', '/v1/runbooks/region-failover', { token: VIEWER, body: { region: 'east', dryRun: true } })).status).toBe(403);
    expect((await ctx.call('POST', '/v1/runbooks/region-failover', { body: { region: 'east', dryRun: true, reason: 'x\u0000y' } })).status).toBe(400);
    expect((await ctx.call('POST', '/v1/runbooks/region-failover', { body: { region: 'east', dryRun: 'yes' } })).status).toBe(400);
    expect(await snapshot()).toEqual(before);
  }, 120_000);

  it('turns degraded when the subscription is disabled, and ready again once the monitor re-enables it', async () => {
    const victim = instances[1]!;
    const since = new Date();
    await onDb(dbUrl(west, victim.name), async (sql) => {
      await sql`set default_transaction_read_only = off`;
      await sql.unsafe(`alter subscription ${subscriptionName(victim.id, 'forward')} disable`);
    });
    const degraded = await eventually('a readiness event: degraded, subscription disabled', async () => {
      const evs = await ctx.db.select().from(auditEvents).where(and(eq(auditEvents.instanceId, victim.id), eq(auditEvents.action, 'instance.readiness')));
      return evs.find((e) => e.at >= since && (e.details as { to: string }).to === 'degraded' && JSON.stringify(e.details).includes('subscription is disabled'));
    }, 30_000);
    expect(degraded.actor).toBe('system:monitor');
    await eventually('ready again', async () => (await readinessOf(victim.id))?.state === 'ready', 60_000);
    const [sub] = await onDb(dbUrl(west, victim.name), (sql) => sql<{ e: boolean }[]>`select subenabled as e from pg_subscription`);
    expect(sub!.e).toBe(true);
  }, 120_000);

  it("turns degraded while the secondary's cluster is stopped, and ready again when it is back", async () => {
    await west.stop();
    try {
      await eventually('every instance degraded: secondary unreachable', async () => {
        for (const i of instances) if (!(await readinessOf(i.id))?.reasons.some((r) => /does not answer/.test(r))) return false;
        return true;
      }, 30_000);
      // A dry run now says so too.
      const dry = await ctx.call('POST', '/v1/runbooks/region-failover', { body: { region: 'east', dryRun: true } });
      for (const i of dry.body.instances) expect(i.readiness.state).toBe('degraded');
    } finally {
      west = await startCluster({ name: 'west', pgBin, dataDir: west.dataDir, port: Number(new URL(west.url).port) });
    }
    await eventually('every instance ready again', allReady, 90_000);
  }, 180_000);
});

describe('region failover with sign-off, and failback', () => {
  it('asks for sign-off when data can be lost: self-approval is refused, reminders come, a rejection changes nothing', async () => {
    const start = await ctx.call('POST', '/v1/runbooks/region-failover', {
      token: SELF_APPROVER,
      body: { region: 'east', mode: 'unplanned', reason: 'drill: reject', signoffRemindEveryMinutes: 0.25 },
    });
    expect(start.status, JSON.stringify(start.body)).toBe(202);
    const id = start.body.run.workflowId;
    const pending = await eventually('the sign-off request', async () => {
      const list = (await ctx.call('GET', '/v1/signoffs?status=pending')).body.signoffs as { workflowId: string; risk: Record<string, unknown> }[];
      return list.find((s) => s.workflowId === id);
    });
    // The approver sees what each instance could lose, and its readiness when the outage was declared.
    for (const i of instances) expect(pending.risk[i.name]).toMatchObject({ planned: false, couldLoseSeconds: expect.any(Number), readiness: { state: 'ready', reasons: [] } });
    const self = await ctx.call('POST', `/v1/runs/${id}/signoff`, { token: SELF_APPROVER, body: { decision: 'approve', statement: 'I started it and approve it' } });
    expect(self.status).toBe(403);
    await eventually('a reminder', async () => (await ctx.db.select().from(auditEvents).where(eq(auditEvents.action, 'signoff.reminder'))).some((a) => (a.details as { workflowId: string }).workflowId === id), 40_000);
    const rej = await ctx.call('POST', `/v1/runs/${id}/signoff`, { token: APPROVER, body: { decision: 'reject', statement: 'not a real outage' } });
    expect([200, 202]).toContain(rej.status);
    const run = await runResult(id);
    expect(run.result.outcome).toBe('aborted');
    await unchanged();
    await recordHistory(ctx, id, 'region-failover-rejected');
  }, 120_000);

  it('ends expired when nobody signs in time, changing nothing', async () => {
    const start = await ctx.call('POST', '/v1/runbooks/region-failover', { body: { region: 'east', mode: 'unplanned', reason: 'drill: expire', signoffTimeoutMinutes: 0.25 } });
    expect(start.status).toBe(202);
    const run = await runResult(start.body.run.workflowId);
    expect(run.result.outcome).toBe('expired');
    await unchanged();
    await recordHistory(ctx, start.body.run.workflowId, 'region-failover-expired');
  }, 120_000);

  it('switches over with the region reachable without sign-off and loses nothing, then fails back', async () => {
    const writers = instances.map((i) => startWriter(dbUrl(east, i.name)));
    await sleep(1500);
    const start = await ctx.call('POST', '/v1/runbooks/region-failover', { body: { region: 'east', reason: 'planned drill' } });
    expect(start.status).toBe(202);
    const run = await runResult(start.body.run.workflowId);
    expect(run.result, JSON.stringify(run)).toMatchObject({ outcome: 'completed', kind: 'planned', signedOffAt: null });
    await recordHistory(ctx, start.body.run.workflowId, 'region-failover-planned');
    await Promise.all(writers.map((w) => w.stop()));
    for (const [k, i] of instances.entries()) {
      const ep = (await ctx.call('GET', `/v1/instances/${i.id}/endpoint`)).body;
      // The alternate `<name>--s` is the database of the same name on west's server.
      expect(ep).toMatchObject({ activeRegion: 'west', failedOver: true, autoSwitchEnabled: true, alternate: { name: `${i.name}--s`, region: 'west' } });
      expect(ep.endpoint).toBe(dbUrl(west, i.name).replace(/^postgresql?:/, 'postgres:'));
      expect((await ctx.call('GET', `/v1/instances/${i.id}`)).body.fencedSince).not.toBeNull();
      const ids = await onDb(ep.endpoint, async (sql) => (await sql<{ id: string }[]>`select id from writes`).map((r) => Number(r.id)));
      const have = new Set(ids);
      expect(writers[k]!.committed.length).toBeGreaterThan(10);
      expect(writers[k]!.committed.filter((x) => !have.has(x))).toEqual([]);
    }
    expect(await slotNames(east)).toEqual([]);
    await failBack();
  }, 240_000);

  it('fences an old primary that answers before an unplanned promotion: the two sides never both take writes', async () => {
    const start = await ctx.call('POST', '/v1/runbooks/region-failover', { body: { region: 'east', mode: 'unplanned', reason: 'drill: unplanned with east up' } });
    expect(start.status).toBe(202);
    const id = start.body.run.workflowId;
    await eventually('the sign-off request', async () => ((await ctx.call('GET', '/v1/signoffs?status=pending')).body.signoffs as { workflowId: string }[]).some((x) => x.workflowId === id));
    // Until the sign-off the primary takes writes, and nothing is fenced.
    await onDb(dbUrl(east, instances[0]!.name), (sql) => sql`insert into writes (note) values ('before sign-off')`);
    const ok = await ctx.call('POST', `/v1/runs/${id}/signoff`, { token: APPROVER, body: { decision: 'approve', statement: 'drill' } });
    expect([200, 202]).toContain(ok.status);
    const run = await runResult(id);
    expect(run.result, JSON.stringify(run)).toMatchObject({ outcome: 'completed', kind: 'unplanned' });
    for (const i of instances) {
      await expect(onDb(dbUrl(east, i.name), (sql) => sql`insert into writes (note) values ('split brain')`)).rejects.toThrow(/read-only transaction/);
      const fenced = await ctx.db.select().from(auditEvents).where(and(eq(auditEvents.instanceId, i.id), eq(auditEvents.action, 'instance.fenced')));
      expect(fenced.some((a) => a.actor === 'system:runbook' && /promotion/.test((a.details as { reason: string }).reason))).toBe(true);
      const ep = (await ctx.call('GET', `/v1/instances/${i.id}/endpoint`)).body;
      // The serving side is listed first.
      expect(ep.multiHost).toContain(`@${new URL(west.url).host},`);
    }
    await failBack();
  }, 240_000);

  it('ends consistent when the worker is killed mid-promotion and a new worker takes over', async () => {
    const queue = `bcdr-failover-kill-${process.pid}`;
    const faults = env.BCDR_FAULT_FILE!;
    const armed = () => (existsSync(faults) ? (JSON.parse(readFileSync(faults, 'utf8') || '{}') as Record<string, number>) : {});
    const victim = instances[0]!;
    writeFileSync(faults, JSON.stringify({ ...armed(), [`hold:promote:${victim.id}`]: 1 }));
    const writers = instances.map((i) => startWriter(dbUrl(east, i.name)));
    await sleep(1000);
    const first = await startWorkerProcess({ ...env, TEMPORAL_TASK_QUEUE: queue, REGION_MONITORS: 'false' }, children);
    const workflowId = `region-failover-east-kill-${process.pid}`;
    const input: RegionFailoverInput = { region: 'east', requestedBy: 'olivia.operator', reason: 'kill drill', mode: 'auto', signoffTimeoutMinutes: 5, concurrency: 8 };
    const handle = await ctx.temporal.workflow.start('regionFailoverWorkflow', { workflowId, taskQueue: queue, args: [input], typedSearchAttributes: runSearchAttributes('region:east', 'region-failover') });
    // The victim's subscription is gone, its sequences not yet moved, its copy still read-only: kill the worker there.
    await eventually('the promotion held mid-way', async () => armed()[`held:promote:${victim.id}`] === 1, 60_000);
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    await Promise.all(writers.map((w) => w.stop()));
    const rest = armed();
    delete rest[`hold:promote:${victim.id}`];
    delete rest[`held:promote:${victim.id}`];
    writeFileSync(faults, JSON.stringify(rest));
    await startWorkerProcess({ ...env, TEMPORAL_TASK_QUEUE: queue, REGION_MONITORS: 'false' }, children);
    const result = await handle.result();
    expect(result).toMatchObject({ outcome: 'completed', kind: 'planned' });
    for (const [k, i] of instances.entries()) {
      const ep = (await ctx.call('GET', `/v1/instances/${i.id}/endpoint`)).body;
      expect(ep).toMatchObject({ activeRegion: 'west', failedOver: true });
      const ids = new Set(await onDb(ep.endpoint, async (sql) => (await sql<{ id: string }[]>`select id from writes`).map((r) => Number(r.id))));
      expect(writers[k]!.committed.filter((x) => !ids.has(x))).toEqual([]);
      const [row] = await onDb(ep.endpoint, (sql) => sql<{ id: string }[]>`insert into writes (note) values ('after kill') returning id`);
      expect(Number(row!.id)).toBeGreaterThan(Math.max(...writers[k]!.committed));
      const subs = await onDb(dbUrl(west, i.name), (sql) => sql`select 1 from pg_subscription`);
      expect(subs.length).toBe(0);
    }
    expect(await slotNames(east)).toEqual([]);
    await failBack();
  }, 300_000);

  it('fails over after the region dies, with sign-off, and fails back with every divergent row kept and counted', async () => {
    const writers = instances.map((i) => startWriter(dbUrl(east, i.name)));
    // A libpq client given the multi-host URI: it writes to the primary now, and to the promoted secondary later, with no change.
    const mhInst = instances[1]!;
    const mh = (await ctx.call('GET', `/v1/instances/${mhInst.id}/endpoint`)).body.multiHost as string;
    const psqlInsert = (note: string) => spawnSync(path.join(pgBin, 'psql'), [mh, '-qAtc', `insert into writes (note) values ('${note}') returning inet_server_port()`], { encoding: 'utf8' });
    const before = psqlInsert('mh-before');
    expect(before.stderr).toBe('');
    expect(before.stdout.trim()).toBe(String(eastPort));
    // An application on the client helper, connected to the primary now.
    const helperInst = instances[2]!;
    const app = await connectInstance({
      api: 'http://bcdr.test',
      token: VIEWER,
      instance: helperInst.name,
      waitForSwitchMs: 240_000,
      postgres: { max: 1, connect_timeout: 3, onnotice: () => {} },
      fetch: ((url: string | URL | Request, init?: RequestInit) => ctx.app.request(String(url), init)) as typeof fetch,
    });
    expect(app.autoSwitchEnabled).toBe(true);
    const appEvents: string[] = [];
    app.on('EndpointSwitchRequired', () => appEvents.push('EndpointSwitchRequired'));
    app.on('EndpointSwitched', () => appEvents.push('EndpointSwitched'));
    await app.run((sql) => sql`select 1`);
    await sleep(2000);
    // The first instance's replication falls behind before the region dies: its walsender on east is frozen, so the
    // writes of its last second are committed on east and never sent. They are lost at the failover, and found again at the failback.
    const lagging = instances[0]!;
    const [sender] = await onDb(east.url, (sql) => sql<{ pid: number }[]>`select pid from pg_stat_replication where application_name = ${subscriptionName(lagging.id, 'forward')}`);
    expect(sender).toBeDefined();
    process.kill(sender!.pid, 'SIGSTOP');
    await sleep(1000);
    process.kill(sender!.pid, 'SIGKILL');
    await killEast();
    await Promise.all(writers.map((w) => w.stop()));
    // The application writes during the outage: the call fails on the dead primary, waits for the switch, and is retried once there.
    const appInsert = app.run((sql) => sql<{ id: string }[]>`insert into writes (note) values ('helper') returning id`, { retrySafe: true });
    // The monitor declares the outage and starts the failover itself; it waits for sign-off.
    const run = await eventually('the monitor-started failover waiting for sign-off', async () => {
      const list = (await ctx.call('GET', '/v1/signoffs?status=pending')).body.signoffs as { workflowId: string }[];
      return list.find((s) => s.workflowId.startsWith('region-failover-east-outage-'));
    }, 150_000);
    const regions = (await ctx.call('GET', '/v1/regions')).body.regions as { name: string; health: string; monitor: { health: string } }[];
    expect(regions.find((r) => r.name === 'east')).toMatchObject({ health: 'unreachable', monitor: { health: 'outage' } });
    const ok = await ctx.call('POST', `/v1/runs/${run.workflowId}/signoff`, { token: APPROVER, body: { decision: 'approve', statement: 'east is gone; promote west' } });
    expect([200, 202]).toContain(ok.status);
    const signedAt = Date.now();
    // The same multi-host URI: the first write that succeeds lands on the promoted secondary.
    let after = psqlInsert('mh-after');
    while (after.status !== 0 && Date.now() - signedAt < 60_000) {
      await sleep(100);
      after = psqlInsert('mh-after');
    }
    expect(after.stderr).toBe('');
    expect(after.stdout.trim()).toBe(new URL(west.url).port);
    console.log(`first write through the multi-host URI ${((Date.now() - signedAt) / 1000).toFixed(2)} s after sign-off`);
    const [appRow] = await appInsert;
    console.log(`first write through the client helper ${((Date.now() - signedAt) / 1000).toFixed(2)} s after sign-off (its call began before the sign-off)`);
    expect(appEvents).toEqual(['EndpointSwitchRequired', 'EndpointSwitched']);
    expect(app.endpoint).toContain(`:${new URL(west.url).port}/${helperInst.name}`);
    expect(await onDb(dbUrl(west, helperInst.name), (sql) => sql`select id from writes where note = 'helper'`)).toEqual([{ id: appRow!.id }]);
    await app.close();
    const done = await runResult(run.workflowId);
    expect(done.result, JSON.stringify(done)).toMatchObject({ outcome: 'completed', kind: 'unplanned', signedOffBy: 'anna.approver' });
    await recordHistory(ctx, run.workflowId, 'region-failover-unplanned');
    const lostBefore: number[][] = [];
    for (const [k, i] of instances.entries()) {
      const inst = done.result.instances[i.id];
      expect(inst.promoted).toBe(true);
      expect(inst.rtoFromSignoffSeconds).toBeLessThan(60);
      const ep = (await ctx.call('GET', `/v1/instances/${i.id}/endpoint`)).body;
      expect(ep).toMatchObject({ activeRegion: 'west', failedOver: true });
      const have = new Set(await onDb(ep.endpoint, async (sql) => (await sql<{ id: string }[]>`select id from writes`).map((r) => Number(r.id))));
      const missing = writers[k]!.committed.filter((x) => !have.has(x));
      lostBefore.push(missing);
      if (k === 0) expect(missing.length).toBeGreaterThan(0);
      // Only the newest writes, those still in flight when the region died, may be missing: never one older than a write that arrived.
      const committed = writers[k]!.committed;
      expect(missing).toEqual(committed.slice(committed.length - missing.length));
      expect(missing.length).toBeLessThan(400);
      // A sequence-backed insert never reuses a number issued before the outage.
      const [row] = await onDb(ep.endpoint, (sql) => sql<{ id: string }[]>`insert into writes (note) values ('after failover') returning id`);
      expect(Number(row!.id)).toBeGreaterThan(Math.max(...writers[k]!.committed));
      const switched = await ctx.db.select().from(auditEvents).where(and(eq(auditEvents.instanceId, i.id), inArray(auditEvents.action, ['EndpointSwitchRequired', 'EndpointSwitched'])));
      expect(switched.map((a) => a.action)).toEqual(expect.arrayContaining(['EndpointSwitchRequired', 'EndpointSwitched']));
    }
    // Clients watching the event stream see both endpoint events.
    const seen = await readEvents(ctx, `/v1/events?instance=${instances[0]!.id}`, { until: (e) => e.event === 'EndpointSwitched' });
    expect(seen.map((e) => e.event)).toEqual(expect.arrayContaining(['EndpointSwitchRequired', 'EndpointSwitched']));
    // Limited mode: maintenance is refused; backups run in the secondary region.
    const first = instances[0]!;
    const sbx = await ctx.call('POST', '/v1/instances', { body: { name: uniqueName('fo-sbx'), type: 'sandbox', edition: 'premium', homeRegion: 'west' } });
    expect(sbx.status).toBe(201);
    const swap = await ctx.call('POST', '/v1/runbooks/production-restore', { body: { production: first.id, sandbox: sbx.body.id } });
    expect(swap.status).toBe(409);
    expect(swap.body.error.message).toMatch(/failed_over/);
    expect((await ctx.call('POST', '/v1/runbooks/reset', { body: { instance: first.id } })).status).toBe(409);
    expect((await ctx.call('PATCH', `/v1/instances/${first.id}`, { body: { type: 'sandbox' } })).status).toBe(409);
    expect((await ctx.call('DELETE', `/v1/instances/${first.id}`)).status).toBe(409);
    const bk = await ctx.call('POST', `/v1/instances/${first.id}/backups`, { body: { label: 'while failed over' } });
    expect(bk.status).toBe(202);
    await ctx.temporal.workflow.getHandle(bk.body.run.workflowId).result();
    const [brow] = await ctx.db.select().from(backups).where(eq(backups.id, bk.body.backupId));
    expect(brow).toMatchObject({ region: 'west', status: 'completed' });

    const answeredAt = await restartEast();
    // The old primaries are fenced by the monitor as soon as east answers: a client on the old endpoint cannot write there.
    await eventually('every old primary fenced', async () => {
      for (const i of instances) if (!(await ctx.call('GET', `/v1/instances/${i.id}`)).body.fencedSince) return false;
      return true;
    }, 30_000);
    const fencedAfterSeconds = (Date.now() - answeredAt) / 1000;
    expect(fencedAfterSeconds).toBeLessThan(15);
    console.log(`old primaries fenced ${fencedAfterSeconds.toFixed(2)} s after east answered again`);
    for (const i of instances) {
      await expect(onDb(dbUrl(east, i.name), (sql) => sql`insert into writes (note) values ('split brain')`)).rejects.toThrow(/read-only transaction/);
      const fenced = await ctx.db.select().from(auditEvents).where(and(eq(auditEvents.instanceId, i.id), eq(auditEvents.action, 'instance.fenced')));
      expect(fenced.length).toBeGreaterThan(0);
      // Nothing was written on the old primary after the failover.
      const [fo] = await ctx.db.select().from(failovers).where(and(eq(failovers.instanceId, i.id), eq(failovers.workflowId, run.workflowId)));
      expect(await onDb(dbUrl(east, i.name), (sql) => sql`select count(*)::int as n from writes where at >= ${fo!.servingAt}`)).toEqual([{ n: 0 }]);
    }
    // The multi-host URI skips the fenced old primary: still the promoted secondary.
    const fencedWrite = psqlInsert('mh-fenced');
    expect(fencedWrite.stdout.trim()).toBe(new URL(west.url).port);
    await failBack('failback-after-outage');
    for (const [k, i] of instances.entries()) {
      const [fo] = await ctx.db.select().from(failovers).where(and(eq(failovers.instanceId, i.id), eq(failovers.workflowId, run.workflowId)));
      expect(fo!.status).toBe('failed_back');
      // The writer may also have had one commit in flight when east died: durable there, never acknowledged to it.
      expect(fo!.measured!.rows).toBeGreaterThanOrEqual(lostBefore[k]!.length);
      expect(fo!.measured!.rows).toBeLessThanOrEqual(lostBefore[k]!.length + 1);
      if (k === 0) expect(fo!.measured!.windowSeconds).toBeGreaterThan(0.5);
      // The divergent rows are in the backup taken first.
      const [b] = await ctx.db.select().from(backups).where(eq(backups.id, fo!.oldPrimaryBackupId!));
      expect(b).toMatchObject({ status: 'completed', region: 'east', sourceDatabase: i.name });
      const dump = spawnSync(path.join(pgBin, 'pg_restore'), ['--data-only', '--table=writes', '--file=-', await plainArchive(ctx.regions, b!)], { encoding: 'utf8' });
      expect(dump.status).toBe(0);
      const kept = new Set(dump.stdout.split('\n').filter((l) => /^\d+\t/.test(l)).map((l) => Number(l.split('\t')[0])));
      expect(lostBefore[k]!.filter((x) => !kept.has(x))).toEqual([]);
    }
    await salvage(instances[0]!, lostBefore[0]!);
  }, 360_000);
});

/** The rows the lagging instance lost are listed by key; replaying them lands them home, and a key taken meanwhile is a conflict left alone. */
async function salvage(inst: { id: string; name: string }, lost: number[]) {
  const div = await ctx.call('GET', `/v1/instances/${inst.id}/divergence`);
  expect(div.status, JSON.stringify(div.body)).toBe(200);
  expect(div.body.failover).toMatchObject({ kind: 'unplanned', measured: true });
  const table = (div.body.tables as { table: string; rows: { id: string; key: { id: string }; op: string; status: string; row: { note: string } }[] }[]).find((t) => t.table === 'public.writes')!;
  const listed = table.rows.map((r) => Number(r.key.id));
  expect(listed).toEqual(expect.arrayContaining(lost));
  expect(listed.length).toBeLessThanOrEqual(lost.length + 1);
  for (const r of table.rows) expect(r).toMatchObject({ op: 'insert', status: 'pending', row: { note: 'w' } });
  // Someone wrote a row under one of the lost keys since: replaying must not overwrite it.
  const taken = lost[0]!;
  await onDb(dbUrl(east, inst.name), (sql) => sql`insert into writes (id, note) values (${taken}, 'taken meanwhile')`);
  // A viewer sees the keys, not the tenant's values.
  const asViewer = (await ctx.call('GET', `/v1/instances/${inst.id}/divergence`, { token: VIEWER })).body;
  expect(asViewer.tables[0].rows[0]).toMatchObject({ row: null, key: expect.any(Object) });
  const url = `/v1/instances/${inst.id}/divergence/replay`;
  // A run holding the instance keeps the replay out (409 naming it).
  const holder = `salvage-test-${inst.id}`;
  expect((await acquireLock(ctx.db, { instanceId: inst.id, workflowId: holder, runbook: 'test' }, async () => true)).ok).toBe(true);
  const busy = await ctx.call('POST', url, { body: { all: true, statement: 'while held' } });
  expect(busy.status).toBe(409);
  expect(busy.body.error.message).toContain(holder);
  await releaseLock(ctx.db, inst.id, holder);
  expect((await ctx.call('POST', url, { token: VIEWER, body: { all: true, statement: 'viewer tries' } })).status).toBe(403);
  expect((await ctx.call('POST', url, { body: { all: true, statement: 'nul \u0000 inside' } })).status).toBe(400);
  expect((await ctx.call('POST', url, { body: { all: true, statement: 'x'.repeat(100_000) } })).status).toBe(400);
  expect((await ctx.call('POST', url, { body: { all: true } })).status).toBe(400);
  expect((await ctx.call('POST', url, { body: { rows: ['nope'], statement: 'unknown row' } })).body.error.message).toMatch(/not divergent rows/);
  expect((await ctx.call('GET', `/v1/instances/${inst.id}/divergence?status=bogus`)).status).toBe(400);
  const rep = await ctx.call('POST', url, { body: { all: true, statement: 'Reviewed: the writes of the last second before the outage are kept.' } });
  expect(rep.status, JSON.stringify(rep.body)).toBe(200);
  const byKey = new Map((rep.body.results as { key: { id: string }; outcome: string; existing: { note: string } | null }[]).map((r) => [Number(r.key.id), r]));
  expect(byKey.get(taken), JSON.stringify(rep.body.results.slice(0, 3))).toMatchObject({ outcome: 'conflict', existing: { note: 'taken meanwhile' } });
  for (const id of listed.filter((x) => x !== taken)) expect(byKey.get(id)?.outcome).toBe('replayed');
  const home = await onDb(dbUrl(east, inst.name), (sql) => sql<{ id: string; note: string }[]>`select id, note from writes where id in ${sql(listed)}`);
  expect(home.find((r) => Number(r.id) === taken)!.note).toBe('taken meanwhile');
  expect(home.filter((r) => r.note === 'w').map((r) => Number(r.id)).sort((a, b) => a - b)).toEqual(listed.filter((x) => x !== taken).sort((a, b) => a - b));
  // Replaying again changes nothing; the conflict stays reported.
  const again = await ctx.call('POST', url, { body: { rows: table.rows.map((r) => r.id), statement: 'again' } });
  expect(again.body.counts).toEqual({ present: listed.length - 1, conflict: 1 });
  const audited = await ctx.db.select().from(auditEvents).where(and(eq(auditEvents.instanceId, inst.id), eq(auditEvents.action, 'divergence.replayed')));
  expect(audited.map((a) => (a.details as { statement: string }).statement)).toContain('Reviewed: the writes of the last second before the outage are kept.');
}

async function killEast() {
  const { spawnSync } = await import('node:child_process');
  const r = spawnSync('runuser', ['-u', 'postgres', '--', path.join(pgBin, 'pg_ctl'), 'stop', '-D', east.dataDir, '-m', 'immediate', '-w']);
  if (r.status !== 0) throw new Error(`could not kill east: ${r.stderr}`);
}

/** Starts east again; returns when its server answered. */
async function restartEast(): Promise<number> {
  east = await startCluster({ name: 'east', pgBin, dataDir: east.dataDir, port: eastPort });
  const answeredAt = Date.now();
  await eventually('east healthy again', async () => ((await ctx.call('GET', '/v1/regions')).body.regions as { name: string; health: string }[]).find((r) => r.name === 'east')?.health === 'healthy');
  return answeredAt;
}

/** Fails back every instance and checks the episode: data equal, endpoint home, replication forward, no stray slot. */
async function failBack(record?: string) {
  // Writes keep landing on the secondary until the switch.
  const writers = await Promise.all(
    instances.map(async (i) => startWriter((await ctx.call('GET', `/v1/instances/${i.id}/endpoint`)).body.endpoint)),
  );
  await sleep(1000);
  const start = await ctx.call('POST', '/v1/runbooks/failback', { body: { region: 'east' } });
  expect(start.status, JSON.stringify(start.body)).toBe(202);
  const run = await runResult(start.body.run.workflowId);
  await Promise.all(writers.map((w) => w.stop()));
  expect(run.result, JSON.stringify(run)).toMatchObject({ outcome: 'completed' });
  if (record) await recordHistory(ctx, start.body.run.workflowId, record);
  for (const [k, i] of instances.entries()) {
    const r = run.result.instances[i.id];
    expect(r.done).toBe(true);
    expect(r.writeBlockedSeconds).toBeLessThan(30);
    const d = (await ctx.call('GET', `/v1/instances/${i.id}`)).body;
    expect(d).toMatchObject({ state: 'active', activeRegion: 'east', fencedSince: null });
    expect(d.endpoint).toContain(`:${eastPort}/${i.name}`);
    // Nothing written on the secondary is lost: every id its writer saw committed is home.
    const have = new Set(await onDb(dbUrl(east, i.name), async (sql) => (await sql<{ id: string }[]>`select id from writes`).map((x) => Number(x.id))));
    expect(writers[k]!.committed.filter((x) => !have.has(x))).toEqual([]);
    // Home takes writes, and they flow forward to the secondary again.
    const [row] = await onDb(dbUrl(east, i.name), (sql) => sql<{ id: string }[]>`insert into writes (note) values ('home again') returning id`);
    await eventually('forward replication', () => onDb(dbUrl(west, i.name), async (sql) => (await sql`select 1 from writes where id = ${row!.id}`).length > 0), 30_000);
  }
  expect(await slotNames(east)).toEqual(instances.map((i) => subscriptionName(i.id, 'forward')).sort());
  expect(await slotNames(west)).toEqual([]);
}

