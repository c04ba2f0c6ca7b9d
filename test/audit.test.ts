import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditEvents } from '../db/schema/index.js';
import { createInstance, openContext, uniqueName, type TestContext } from './helpers.js';
import { APPROVER, VIEWER } from './tokens.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx.close();
});

interface AuditEventDto {
  id: number;
  at: string;
  actor: string;
  action: string;
  instanceId: string | null;
  subject: string | null;
  details: Record<string, unknown> | null;
}

const audit = (filters: Record<string, string | number>, token?: string | null) =>
  ctx.call('GET', `/v1/audit?${new URLSearchParams(Object.entries(filters).map(([k, v]) => [k, String(v)]))}`, token === undefined ? {} : { token });

/** Seven events of a fresh actor on a fresh (never created) instance id, a minute apart, the last two at the same instant. */
async function seedEvents() {
  const actor = uniqueName('auditor');
  const instanceId = `i-${randomBytes(6).toString('hex')}`;
  const base = Date.parse('2024-03-01T10:00:00.000Z');
  const at = (min: number) => new Date(base + min * 60_000);
  const rows = [0, 1, 2, 3, 4, 5, 5].map((min, i) => ({
    actor,
    action: i % 2 ? 'test.beta' : 'test.alpha',
    instanceId,
    subject: `thing-${i}`,
    at: at(min),
    details: { i },
  }));
  // One at a time, so ids grow with the order above.
  for (const r of rows) await ctx.db.insert(auditEvents).values(r);
  return { actor, instanceId, at };
}

describe('GET /v1/audit', () => {
  it('shows who created an instance, found by the instance name or id, to any role', async () => {
    const name = uniqueName('audited');
    const inst = await createInstance(ctx, name);
    for (const instance of [name, inst.id]) {
      for (const token of [VIEWER, APPROVER, undefined]) {
        const res = await audit({ instance }, token);
        expect(res.status).toBe(200);
        const events = res.body.events as AuditEventDto[];
        expect(events.length).toBeGreaterThan(0);
        expect(events.every((e) => e.instanceId === inst.id)).toBe(true);
        const created = events.find((e) => e.action === 'instance.create');
        expect(created).toMatchObject({ actor: 'olivia.operator', subject: name, instanceId: inst.id });
        expect(created!.details).toMatchObject({ name, type: 'sandbox', homeRegion: 'primary' });
        expect(res.body.nextBefore).toBeNull();
      }
    }
    const byActor = await audit({ actor: 'olivia.operator', action: 'instance.create', limit: 500 });
    expect((byActor.body.events as AuditEventDto[]).some((e) => e.subject === name)).toBe(true);
  });

  it('lists newest first, and filters by actor and action', async () => {
    const { actor, instanceId } = await seedEvents();
    const all = await audit({ actor });
    expect(all.status).toBe(200);
    const events = all.body.events as AuditEventDto[];
    expect(events.map((e) => e.subject)).toEqual(['thing-6', 'thing-5', 'thing-4', 'thing-3', 'thing-2', 'thing-1', 'thing-0']);
    for (let i = 1; i < events.length; i++) expect(Date.parse(events[i - 1]!.at)).toBeGreaterThanOrEqual(Date.parse(events[i]!.at));
    expect(events[0]).toMatchObject({ actor, instanceId, action: 'test.alpha', details: { i: 6 }, at: '2024-03-01T10:05:00.000Z' });

    const beta = await audit({ actor, action: 'test.beta' });
    expect((beta.body.events as AuditEventDto[]).map((e) => e.subject)).toEqual(['thing-5', 'thing-3', 'thing-1']);
    const byInstance = await audit({ instance: instanceId, action: 'test.alpha' });
    expect((byInstance.body.events as AuditEventDto[]).map((e) => e.subject)).toEqual(['thing-6', 'thing-4', 'thing-2', 'thing-0']);
    expect((await audit({ actor, action: 'test.gamma' })).body).toEqual({ events: [], nextBefore: null });
  });

  it('filters by time, both bounds included', async () => {
    const { actor, at } = await seedEvents();
    const res = await audit({ actor, since: at(1).toISOString(), until: at(3).toISOString() });
    expect(res.status).toBe(200);
    expect((res.body.events as AuditEventDto[]).map((e) => e.subject)).toEqual(['thing-3', 'thing-2', 'thing-1']);
    // A date alone is midnight UTC; an offset is honoured.
    expect((await audit({ actor, since: '2024-03-02' })).body.events).toEqual([]);
    const withOffset = await audit({ actor, until: '2024-03-01T12:01:00+02:00' });
    expect((withOffset.body.events as AuditEventDto[]).map((e) => e.subject)).toEqual(['thing-1', 'thing-0']);
  });

  it('pages with a cursor, without gaps or repeats, even between events at the same instant', async () => {
    const { actor } = await seedEvents();
    const seen: string[] = [];
    const pages: number[] = [];
    let before: number | null | undefined;
    do {
      const res = await audit({ actor, limit: 2, ...(before ? { before } : {}) });
      expect(res.status).toBe(200);
      const events = res.body.events as AuditEventDto[];
      pages.push(events.length);
      seen.push(...events.map((e) => e.subject!));
      before = res.body.nextBefore as number | null;
      if (before !== null) expect(before).toBe(events[events.length - 1]!.id);
    } while (before !== null && pages.length < 10);
    expect(pages).toEqual([2, 2, 2, 1]);
    expect(seen).toEqual(['thing-6', 'thing-5', 'thing-4', 'thing-3', 'thing-2', 'thing-1', 'thing-0']);

    // The first page splits the two events at the same instant: the second page starts with the other one.
    const first = await audit({ actor, limit: 1 });
    const second = await audit({ actor, limit: 1, before: first.body.nextBefore });
    expect(first.body.events[0].at).toBe(second.body.events[0].at);
    expect([first.body.events[0].subject, second.body.events[0].subject]).toEqual(['thing-6', 'thing-5']);
  });

  it('finds a deleted instance by the name it had', async () => {
    const name = uniqueName('gone');
    const instanceId = `i-${randomBytes(6).toString('hex')}`;
    await ctx.db.insert(auditEvents).values([
      { actor: 'olivia.operator', action: 'instance.create', instanceId, subject: name },
      { actor: 'olivia.operator', action: 'instance.delete', instanceId, subject: name },
    ]);
    const res = await audit({ instance: name });
    expect(res.status).toBe(200);
    expect((res.body.events as AuditEventDto[]).map((e) => e.action)).toEqual(['instance.delete', 'instance.create']);
  });

  it('is in the OpenAPI document', async () => {
    const doc = await ctx.call('GET', '/openapi.json', { token: null });
    expect(doc.status).toBe(200);
    const op = doc.body.paths['/v1/audit'].get;
    expect(op.parameters.map((p: { name: string }) => p.name).sort()).toEqual(['action', 'actor', 'before', 'instance', 'limit', 'since', 'until']);
    expect(doc.body.components.schemas.AuditPage).toBeDefined();
  });

  it('needs a token', async () => {
    const none = await audit({}, null);
    expect(none.status).toBe(401);
    expect(none.body.error.code).toBe('unauthorized');
    expect((await audit({}, 'not-a-token')).status).toBe(401);
  });

  it('refuses a bad filter with 400 naming it', async () => {
    const cases: [Record<string, string | number>, string][] = [
      [{ since: 'yesterday' }, 'since'],
      [{ until: '2025-13-45T00:00:00Z' }, 'until'],
      [{ since: '2025-01-31T12:00:00' }, 'since'], // no time zone: ambiguous
      [{ since: '2025-02-01', until: '2025-01-31' }, 'until'],
      [{ limit: 0 }, 'limit'],
      [{ limit: 501 }, 'limit'],
      [{ limit: 'ten' }, 'limit'],
      [{ before: 'abc' }, 'before'],
      [{ before: '999999999999' }, 'before'],
      [{ actor: 'a\u0000b' }, 'actor'],
      [{ instance: 'x\u0007' }, 'instance'],
      [{ action: 'x'.repeat(201) }, 'action'],
    ];
    for (const [filters, field] of cases) {
      const res = await audit(filters);
      expect(res.status, JSON.stringify(filters)).toBe(400);
      expect(res.body.error.code).toBe('validation_failed');
      expect(res.body.error.issues.map((i: { field: string }) => i.field)).toContain(field);
      expect(res.body.error.message).toContain(field);
    }
  });
});
