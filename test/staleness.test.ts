import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { auditEvents, backups, instances } from '../db/schema/index.js';
import { createApp } from '../api/app.js';
import { backupNow, callApp, createInstance, eventually, openContext, uniqueName, type TestContext } from './helpers.js';
import { parsePrometheus, sample } from './prometheus.js';
import { readEvents } from './sse.js';
import { VIEWER } from './tokens.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx.close();
});

const metrics = async (token: string | null = VIEWER) => {
  const res = await ctx.app.request('/metrics', { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
};
const auditOf = async (instanceId: string, action: string) =>
  (await ctx.db.select().from(auditEvents).where(eq(auditEvents.instanceId, instanceId))).filter((e) => e.action === action);

describe('backup staleness', () => {
  it('marks an instance stale in the API, the metrics and the event stream, and fresh again when a backup completes', async () => {
    const inst = await createInstance(ctx, uniqueName('stale'));
    const fresh = await ctx.call('GET', `/v1/instances/${inst.id}`);
    expect(fresh.body).toMatchObject({ stale: false, lastGoodBackupAt: null, staleAfterHours: 26 });
    expect(fresh.body.backupAgeSeconds).toBeLessThan(600);

    // An instance created 27 hours ago that never had a backup.
    await ctx.db.update(instances).set({ createdAt: new Date(Date.now() - 27 * 3600_000) }).where(eq(instances.id, inst.id));
    const stale = await ctx.call('GET', `/v1/instances/${inst.id}`);
    expect(stale.body).toMatchObject({ stale: true, lastGoodBackupAt: null });
    expect(stale.body.backupAgeSeconds).toBeGreaterThanOrEqual(27 * 3600);
    const staleList = await ctx.call('GET', '/v1/instances?stale=true');
    expect(staleList.status).toBe(200);
    expect(staleList.body.instances.map((i: { id: string }) => i.id)).toContain(inst.id);
    expect(staleList.body.instances.every((i: { stale: boolean }) => i.stale)).toBe(true);
    const freshList = await ctx.call('GET', '/v1/instances?stale=false');
    expect(freshList.body.instances.map((i: { id: string }) => i.id)).not.toContain(inst.id);

    let m = await metrics();
    expect(m.status).toBe(200);
    expect(m.type).toContain('text/plain');
    let families = parsePrometheus(m.text);
    expect(sample(families, 'bcdr_instance_backup_stale', { instance: inst.name })).toBe(1);
    expect(sample(families, 'bcdr_instance_last_good_backup_age_seconds', { instance: inst.name })).toBeGreaterThanOrEqual(27 * 3600);
    expect(sample(families, 'bcdr_instances_stale')).toBeGreaterThanOrEqual(1);

    // The region monitor (every 2 s in the tests) sends the event, once.
    const staleEvent = await eventually('an instance.stale event', async () => (await auditOf(inst.id, 'instance.stale'))[0]);
    expect(staleEvent.details).toMatchObject({ lastGoodBackupAt: null, staleAfterHours: 26 });
    const streamed = await readEvents(ctx, `/v1/events?instance=${inst.id}`, { until: (e) => e.event === 'instance.stale' });
    expect(streamed.find((e) => e.event === 'instance.stale')?.data).toMatchObject({ instanceId: inst.id, actor: 'system:monitor' });
    expect((await ctx.call('GET', `/v1/instances/${inst.id}`)).body.stale).toBe(true);

    // The whole list is served from memory: read it now, so the backup below must replace what it holds.
    const listed = async () => ((await ctx.call('GET', '/v1/instances')).body.instances as { id: string; stale: boolean; lastGoodBackupAt: string | null }[]).find((i) => i.id === inst.id);
    expect(await listed()).toMatchObject({ stale: true, lastGoodBackupAt: null });

    // A backup completes: fresh at once in the API and the metrics, and an instance.fresh event follows.
    // Started through another API process's app, so this app hears of it only from the catalog.
    const elsewhere = { ...ctx, app: createApp(ctx.deps()) };
    elsewhere.call = (method, path, opts = {}) => callApp(elsewhere.app, method, path, opts);
    const { row } = await backupNow(elsewhere, inst.id, 'cures staleness');
    // The worker wrote it, not this API: the catalog's notification (not the list's 5 s age limit) makes the list read it again.
    await eventually('the cached list shows the backup', async () => (await listed())?.lastGoodBackupAt === row.completedAt!.toISOString(), 2_000);
    const cured = await ctx.call('GET', `/v1/instances/${inst.id}`);
    expect(cured.body).toMatchObject({ stale: false, lastGoodBackupAt: row.completedAt!.toISOString() });
    expect(cured.body.backupAgeSeconds).toBeLessThan(120);
    m = await metrics();
    families = parsePrometheus(m.text);
    expect(sample(families, 'bcdr_instance_backup_stale', { instance: inst.name })).toBe(0);
    expect(sample(families, 'bcdr_instance_last_good_backup_age_seconds', { instance: inst.name })).toBeLessThan(120);
    await eventually('an instance.fresh event', async () => (await auditOf(inst.id, 'instance.fresh'))[0]);
    expect(await auditOf(inst.id, 'instance.stale')).toHaveLength(1);

    // Its only good backup deleted: stale again (the newest good backup follows deletions too).
    expect((await ctx.call('DELETE', `/v1/backups/${row.id}`)).status).toBe(200);
    expect((await ctx.call('GET', `/v1/instances/${inst.id}`)).body).toMatchObject({ stale: true, lastGoodBackupAt: null });
  });

  it('takes a threshold per instance, refuses bad ones with 400, and goes back to the default with null', async () => {
    const inst = await createInstance(ctx, uniqueName('thresh'));
    await backupNow(ctx, inst.id);
    // The backup completed 3 hours ago.
    await ctx.db.execute(`update backups set completed_at = now() - interval '3 hours' where instance_id = '${inst.id}'`);
    expect((await ctx.call('GET', `/v1/instances/${inst.id}`)).body).toMatchObject({ stale: false, staleAfterHours: 26 });
    const set = await ctx.call('PATCH', `/v1/instances/${inst.id}`, { body: { staleAfterHours: 2 } });
    expect(set.status).toBe(200);
    expect(set.body).toMatchObject({ stale: true, staleAfterHours: 2 });
    for (const bad of [0, -1, 1e9, 'two', true]) {
      const res = await ctx.call('PATCH', `/v1/instances/${inst.id}`, { body: { staleAfterHours: bad } });
      expect(res.status, JSON.stringify(bad)).toBe(400);
      expect(res.body.error.message).toContain('staleAfterHours');
    }
    expect((await ctx.call('PATCH', `/v1/instances/${inst.id}`, { body: { staleAfterHours: 2 }, token: VIEWER })).status).toBe(403);
    expect((await ctx.call('GET', `/v1/instances/${inst.id}`)).body.staleAfterHours).toBe(2);
    const back = await ctx.call('PATCH', `/v1/instances/${inst.id}`, { body: { staleAfterHours: null } });
    expect(back.body).toMatchObject({ stale: false, staleAfterHours: 26 });
    const bad = await ctx.call('GET', '/v1/instances?stale=maybe');
    expect(bad.status).toBe(400);
  });

  it('keeps the newest good backup right when one completes while another is deleted (two transactions at once)', async () => {
    const inst = await createInstance(ctx, uniqueName('race'));
    const row = (id: string, status: 'completed' | 'pending', completedAt: Date | null) => ({
      id,
      instanceId: inst.id,
      instanceName: inst.name,
      region: 'primary',
      kind: 'on_demand' as const,
      label: 'race',
      status,
      objectKey: `race/${id}`,
      edition: 'standard',
      workflowId: `race-${id}`,
      completedAt,
      // Good backups are the ones with a verified offsite copy.
      offsiteVerifiedAt: new Date(),
      expiresAt: new Date(Date.now() + 86_400_000),
    });
    const oldAt = new Date(Date.now() - 3 * 3600_000);
    const [oldId, newId] = [`bk-race-old-${inst.id}`, `bk-race-new-${inst.id}`];
    await ctx.db.insert(backups).values([row(oldId, 'completed', oldAt), row(newId, 'pending', null)]);
    expect((await ctx.db.select().from(instances).where(eq(instances.id, inst.id)))[0]!.lastGoodBackupAt).toEqual(oldAt);
    // A completes the new backup and holds its transaction open; B deletes the old one meanwhile, then A commits.
    const a = postgres(ctx.cfg.CATALOG_DATABASE_URL, { max: 1, onnotice: () => {} });
    const b = postgres(ctx.cfg.CATALOG_DATABASE_URL, { max: 1, onnotice: () => {} });
    try {
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let completed!: () => void;
      const done = new Promise<void>((r) => (completed = r));
      const txA = a.begin(async (sql) => {
        await sql`update backups set status = 'completed', completed_at = now() where id = ${newId}`;
        completed();
        await held;
      });
      await done;
      const deleting = b`delete from backups where id = ${oldId}`.execute(); // postgres.js sends a query only when asked
      await sleep(300); // B is now waiting for A
      release();
      await txA;
      await deleting;
    } finally {
      await a.end();
      await b.end();
    }
    const [after] = await ctx.db.select().from(instances).where(eq(instances.id, inst.id));
    const [newest] = await ctx.db.select().from(backups).where(eq(backups.id, newId));
    expect(after!.lastGoodBackupAt).toEqual(newest!.completedAt);
    expect((await ctx.call('GET', `/v1/instances/${inst.id}`)).body).toMatchObject({ stale: false, lastGoodBackupAt: newest!.completedAt!.toISOString() });
    await ctx.db.delete(backups).where(eq(backups.id, newId));
  });

  it('counts API requests by route pattern and status, never by id, and needs a token', async () => {
    expect((await metrics(null)).status).toBe(401);
    await ctx.call('GET', '/v1/runs/no-such-run-1');
    await ctx.call('GET', '/v1/runs/no-such-run-2');
    const families = parsePrometheus((await metrics()).text);
    expect(sample(families, 'bcdr_api_requests_total', { route: '/v1/runs/:id', status: '404' })).toBeGreaterThanOrEqual(2);
    const latency = families.find((f) => f.name === 'bcdr_api_request_duration_seconds');
    expect(latency?.type).toBe('HISTOGRAM');
    const text = (await metrics()).text;
    expect(text).not.toContain('no-such-run');
  });
});
