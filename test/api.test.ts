import { count, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditEvents, backups, instances } from '../db/schema/index.js';
import { backupNow, createInstance, openContext, uniqueName, type TestContext } from './helpers.js';
import { SELF_APPROVER, VIEWER } from './tokens.js';

let ctx: TestContext;
let inst: { id: string; name: string };
beforeAll(async () => {
  ctx = await openContext();
  inst = await createInstance(ctx, uniqueName('api'));
});
afterAll(async () => {
  await ctx.close();
});

const instanceCount = async () => (await ctx.db.select({ n: count() }).from(instances))[0]!.n;

describe('access', () => {
  it('answers health checks without a token', async () => {
    expect((await ctx.call('GET', '/healthz', { token: null })).status).toBe(200);
    const ready = await ctx.call('GET', '/readyz', { token: null });
    expect(ready.body).toEqual({ status: 'ready', checks: { catalog: true, temporal: true } });
  });

  it('refuses a request without a token with 401', async () => {
    const res = await ctx.call('GET', '/v1/instances', { token: null });
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe('unauthorized');
  });

  it('refuses an unknown token with 401', async () => {
    expect((await ctx.call('GET', '/v1/instances', { token: 'not-a-real-token' })).status).toBe(401);
  });

  it('lets a viewer read but refuses a viewer starting a backup with 403', async () => {
    expect((await ctx.call('GET', `/v1/instances/${inst.id}`, { token: VIEWER })).status).toBe(200);
    const res = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { token: VIEWER, body: { label: 'nope' } });
    expect(res.status).toBe(403);
    expect(res.body.error.message).toMatch(/operator/);
    const rows = await ctx.db.select().from(backups).where(eq(backups.instanceId, inst.id));
    expect(rows).toEqual([]);
  });

  it('says who a token belongs to (GET /v1/me), and 401 without one', async () => {
    expect((await ctx.call('GET', '/v1/me', { token: VIEWER })).body).toEqual({ identity: 'victor.viewer', roles: ['viewer'] });
    expect((await ctx.call('GET', '/v1/me', { token: SELF_APPROVER })).body).toEqual({ identity: 'olivia.operator', roles: ['operator', 'approver'] });
    expect((await ctx.call('GET', '/v1/me', { token: null })).status).toBe(401);
  });

  it('serves the OpenAPI document and the docs page without a token', async () => {
    const doc = await ctx.call('GET', '/openapi.json', { token: null });
    expect(doc.status).toBe(200);
    expect(Object.keys(doc.body.paths)).toEqual(expect.arrayContaining(['/v1/instances', '/v1/instances/{id}/backups', '/v1/backups/{id}', '/v1/runs/{id}']));
    const docs = await ctx.app.request('/docs');
    expect(docs.status).toBe(200);
    expect(await docs.text()).toContain('/openapi.json');
    const bundle = await ctx.app.request('/docs/assets/swagger-ui-bundle.js');
    expect(bundle.status).toBe(200);
    expect((await bundle.arrayBuffer()).byteLength).toBeGreaterThan(100_000); // served locally, no CDN
    expect((await ctx.app.request('/docs/assets/..%2Fpackage.json')).status).toBe(404);
    expect((await ctx.app.request('/docs/assets/constructor')).status).toBe(404);
  });
});

describe('bad input', () => {
  it('refuses a bad instance name with 400 naming the field, and creates nothing', async () => {
    const before = await instanceCount();
    const res = await ctx.call('POST', '/v1/instances', { body: { name: 'Bad_Name', type: 'sandbox', edition: 'basic', homeRegion: 'primary' } });
    expect(res.status).toBe(400);
    expect(res.body.error.issues).toEqual([expect.objectContaining({ field: 'name' })]);
    expect(await instanceCount()).toBe(before);
  });

  it('refuses an unknown region and an unknown edition, naming each field', async () => {
    const region = await ctx.call('POST', '/v1/instances', { body: { name: uniqueName('x'), type: 'sandbox', edition: 'basic', homeRegion: 'mars' } });
    expect(region.status).toBe(400);
    expect(region.body.error.issues[0]).toMatchObject({ field: 'homeRegion', rule: expect.stringContaining('primary') });
    const edition = await ctx.call('POST', '/v1/instances', { body: { name: uniqueName('x'), type: 'sandbox', edition: 'gold', homeRegion: 'primary' } });
    expect(edition.status).toBe(400);
    expect(edition.body.error.issues[0].field).toBe('edition');
  });

  it('refuses a taken name with 409', async () => {
    const res = await ctx.call('POST', '/v1/instances', { body: { name: inst.name, type: 'sandbox', edition: 'basic', homeRegion: 'primary' } });
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('name_taken');
  });

  it('refuses a backup without a label, or with a bad retention, naming the field', async () => {
    const noLabel = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: {} });
    expect(noLabel.status).toBe(400);
    expect(noLabel.body.error.issues[0].field).toBe('label');
    const zero = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: { label: 'x', retentionDays: 0 } });
    expect(zero.status).toBe(400);
    expect(zero.body.error.issues[0].field).toBe('retentionDays');
  });

  it('refuses malformed JSON with 400', async () => {
    const res = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { rawBody: '{"label": ' });
    expect(res.status).toBe(400);
    expect(res.body.error.message).toMatch(/JSON/i);
  });

  it('refuses a schedule whose retention is not greater than its interval, and changes nothing', async () => {
    const res = await ctx.call('PUT', `/v1/instances/${inst.id}/backup-schedule`, { body: { intervalDays: 3, retentionDays: 3 } });
    expect(res.status).toBe(400);
    expect(res.body.error.issues[0]).toMatchObject({ field: 'retentionDays', rule: expect.stringContaining('greater than intervalDays') });
    const after = await ctx.call('GET', `/v1/instances/${inst.id}/backup-schedule`);
    expect(after.body).toMatchObject({ intervalDays: 1, retentionDays: 3 });
    const bad = await ctx.call('PUT', `/v1/instances/${inst.id}/backup-schedule`, { body: { startTime: '25:00' } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.issues[0].field).toBe('startTime');
  });

  it('filters runs by the same status words it reports', async () => {
    for (const status of ['running', 'completed', 'failed', 'cancelled', 'terminated', 'timed_out']) {
      expect((await ctx.call('GET', `/v1/runs?status=${status}`)).status).toBe(200);
    }
    const bad = await ctx.call('GET', '/v1/runs?status=exploded');
    expect(bad.status).toBe(400);
    expect(bad.body.error.issues[0].field).toBe('status');
  });

  it('answers 404 naming an unknown instance, backup or run', async () => {
    expect((await ctx.call('GET', '/v1/instances/nope-404')).body.error.message).toMatch(/nope-404/);
    expect((await ctx.call('GET', '/v1/backups/bk-nope')).status).toBe(404);
    expect((await ctx.call('GET', '/v1/runs/no-such-run')).status).toBe(404);
  });
});

describe('backup rules', () => {
  it('refuses to relabel or delete a system backup with 409, and allows both on an on-demand backup', async () => {
    const { row } = await backupNow(ctx, inst.id, 'first');
    await ctx.db.update(backups).set({ kind: 'system', label: null }).where(eq(backups.id, row.id)); // as the schedule would have made it
    const relabel = await ctx.call('PATCH', `/v1/backups/${row.id}`, { body: { label: 'renamed' } });
    expect(relabel.status).toBe(409);
    expect(relabel.body.error.code).toBe('system_backup');
    const del = await ctx.call('DELETE', `/v1/backups/${row.id}`);
    expect(del.status).toBe(409);
    expect((await ctx.call('GET', `/v1/backups/${row.id}`)).body.label).toBeNull();

    const { row: mine } = await backupNow(ctx, inst.id, 'second');
    const ok = await ctx.call('PATCH', `/v1/backups/${mine.id}`, { body: { label: 'renamed' } });
    expect(ok.status).toBe(200);
    expect(ok.body.label).toBe('renamed');
    const store = ctx.regions.get('primary')!.backups;
    expect((await store.keysOf(mine.objectKey)).length).toBe(2);
    const gone = await ctx.call('DELETE', `/v1/backups/${mine.id}`);
    expect(gone.status).toBe(200);
    expect(await store.keysOf(mine.objectKey)).toEqual([]);
    expect((await ctx.call('GET', `/v1/backups/${mine.id}`)).status).toBe(404);

    const trail = await ctx.db.select().from(auditEvents).where(eq(auditEvents.instanceId, inst.id));
    expect(trail.map((e) => e.action)).toEqual(expect.arrayContaining(['instance.create', 'backup.create', 'backup.relabel', 'backup.delete']));
    const byOps = trail.filter((e) => ['instance.create', 'backup.create', 'backup.relabel', 'backup.delete'].includes(e.action));
    expect(byOps.every((e) => e.actor === 'olivia.operator')).toBe(true);
    // The runbooks' own changes are in the trail too, attributed to the system.
    expect(trail.filter((e) => e.action === 'backup.completed').map((e) => e.actor)).toEqual(['system:runbook', 'system:runbook']);
  });
});

describe('nothing half-changed', () => {
  it('removes the new instance row and answers 503 when Temporal cannot start the run', async () => {
    const { Client, Connection } = await import('@temporalio/client');
    const { createApp } = await import('../api/app.js');
    const dead = Connection.lazy({ address: '127.0.0.1:1', connectTimeout: '1s' });
    const app = createApp({ ...ctx.deps(), temporal: new Client({ connection: dead }), temporalConnection: dead, startDeadlineMs: 2_000 });
    const name = uniqueName('nostart');
    const res = await app.request('/v1/instances', {
      method: 'POST',
      headers: { authorization: 'Bearer test-operator-token', 'content-type': 'application/json' },
      body: JSON.stringify({ name, type: 'sandbox', edition: 'basic', homeRegion: 'primary' }),
    });
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/nothing was changed/);
    expect(await ctx.db.select().from(instances).where(eq(instances.name, name))).toEqual([]);
    expect(await ctx.regions.get('primary')!.engine.databaseExists(name)).toBe(false);

    const backup = await app.request(`/v1/instances/${inst.id}/backups`, {
      method: 'POST',
      headers: { authorization: 'Bearer test-operator-token', 'content-type': 'application/json' },
      body: JSON.stringify({ label: 'never starts' }),
    });
    expect(backup.status).toBe(503);
    const [row] = await ctx.db.select().from(instances).where(eq(instances.id, inst.id));
    expect(row!.lockedByRun).toBeNull(); // the lock taken for the run was given back
    await dead.close().catch(() => {});
  });
});
