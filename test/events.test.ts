import { desc } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditEvents } from '../db/schema/index.js';
import { createInstance, openContext, uniqueName, type TestContext } from './helpers.js';
import { readEvents } from './sse.js';
import { OPERATOR, VIEWER } from './tokens.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx?.close();
});

describe('GET /v1/events', () => {
  it('streams audit events live, and resumes after Last-Event-ID', async () => {
    const [latest] = await ctx.db.select({ id: auditEvents.id }).from(auditEvents).orderBy(desc(auditEvents.id)).limit(1);
    const from = String(latest?.id ?? 0);
    const name = uniqueName('events');
    const inst = await createInstance(ctx, name);
    const events = await readEvents(ctx, '/v1/events', { token: VIEWER, lastEventId: from, until: (e) => e.event === 'instance.create' && e.data.instanceId === inst.id });
    expect(events[0]).toMatchObject({ event: 'ready' });
    const created = events.find((e) => e.event === 'instance.create' && e.data.instanceId === inst.id);
    expect(created).toBeDefined();
    expect(Number(created!.id)).toBeGreaterThan(Number(from));
    expect(created!.data).toMatchObject({ action: 'instance.create', subject: name, actor: 'olivia.operator' });
    // Every event after the given id, in order, none twice.
    const ids = events.filter((e) => e.id).map((e) => Number(e.id));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids).size).toBe(ids.length);

    // Resuming after that event skips it and everything before it.
    await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: { label: 'after resume' } });
    const resumed = await readEvents(ctx, `/v1/events?instance=${inst.id}`, { lastEventId: created!.id!, until: (e) => e.event === 'backup.create' });
    const resumedIds = resumed.filter((e) => e.id).map((e) => Number(e.id));
    expect(resumedIds.length).toBeGreaterThan(0);
    expect(Math.min(...resumedIds)).toBeGreaterThan(Number(created!.id));
    expect(resumed.filter((e) => e.id).every((e) => e.data.instanceId === inst.id)).toBe(true);
  }, 60_000);

  it('refuses a bad Last-Event-ID with 400 and a missing token with 401', async () => {
    for (const id of ['abc', '-1', '9'.repeat(40)]) {
      const bad = await ctx.app.request('/v1/events', { headers: { authorization: `Bearer ${OPERATOR}`, 'last-event-id': id } });
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/Last-Event-ID/);
    }
    const ctl = await ctx.call('GET', '/v1/events?after=1%00');
    expect(ctl.status).toBe(400);
    const huge = await ctx.call('GET', `/v1/events?instance=${'x'.repeat(500)}`);
    expect(huge.status).toBe(400);
    expect((await ctx.call('GET', '/v1/events', { token: null })).status).toBe(401);
  });
});

describe('GET /v1/regions', () => {
  it('shows each region, its pair and its health with latency, and what its monitor saw', async () => {
    const res = await ctx.call('GET', '/v1/regions', { token: VIEWER });
    expect(res.status).toBe(200);
    const byName = Object.fromEntries((res.body.regions as { name: string; monitor: { health: string } }[]).map((r) => [r.name, r]));
    expect(byName.primary).toMatchObject({ pair: 'secondary', health: 'healthy', latencyMs: expect.any(Number) });
    expect(byName.secondary).toMatchObject({ pair: 'primary', health: 'healthy' });
    expect(byName.primary!.monitor.health).toMatch(/healthy|unknown/);
  });
});
