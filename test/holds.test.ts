import { and, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditEvents, backups, type BackupRow } from '../db/schema/index.js';
import { backupRef } from '../lib/backups.js';
import { backupNow, createInstance, openContext, runActivity, seedRows, uniqueName, type TestContext } from './helpers.js';
import { parsePrometheus, sample } from './prometheus.js';
import { APPROVER, OPERATOR, SECOND_APPROVER, SELF_APPROVER, VIEWER } from './tokens.js';

let ctx: TestContext;
let inst: { id: string; name: string };
beforeAll(async () => {
  ctx = await openContext();
  inst = await createInstance(ctx, uniqueName('hold'));
  await seedRows(ctx, inst.name, 300);
  // Only the hold keeps an expired backup here: keep-at-least-one would keep the newest anyway.
  const put = await ctx.call('PUT', `/v1/instances/${inst.id}/backup-schedule`, { body: { keepAtLeastOne: false } });
  expect(put.status).toBe(200);
});
afterAll(async () => {
  await ctx?.close();
});

const hold = (id: string, reason: unknown = 'litigation hold, case 114', token = OPERATOR) => ctx.call('POST', `/v1/backups/${id}/hold`, { token, body: { reason } });
const release = (id: string, reason: unknown = 'case closed', token = APPROVER) => ctx.call('POST', `/v1/backups/${id}/release`, { token, body: { reason } });
const rowOf = async (id: string) => (await ctx.db.select().from(backups).where(eq(backups.id, id)))[0];
const retention = () => runActivity(`retention-${inst.id}`, ctx.activities.applyRetention, { instanceId: inst.id });
/** True when a store's own retention lock (S3 Object Lock, at home or on the offsite copy) is still on a backup. */
async function storeLocked(b: BackupRow): Promise<boolean> {
  if (b.lockedUntil !== null && b.lockedUntil > new Date()) return true;
  for (const r of ctx.regions.values()) {
    if (!r.backups.blobs.enforcesLocks || !(await r.backups.keysOf(backupRef(b))).length) continue;
    const { retention } = await r.backups.lockState(backupRef(b));
    if (retention && retention.retainUntil > new Date()) return true;
  }
  return false;
}

/** Every object key of a backup, per region that holds it (home and offsite copies). */
async function objectsOf(b: BackupRow): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const [name, r] of ctx.regions) out[name] = (await r.backups.keysOf(backupRef(b))).sort();
  return out;
}

const auditOf = async (subject: string, action: string) =>
  ctx.db.select().from(auditEvents).where(and(eq(auditEvents.subject, subject), eq(auditEvents.action, action)));

describe('legal hold', () => {
  it('refuses a hold from a viewer with 403 and leaves the backup unheld', async () => {
    const { row } = await backupNow(ctx, inst.id, 'viewer tries');
    const res = await hold(row.id, 'because', VIEWER);
    expect(res.status).toBe(403);
    expect(res.body.error.message).toContain('operator');
    expect((await rowOf(row.id))!.heldAt).toBeNull();
  });

  it('holds a completed backup, shows the hold and its copies in the backup JSON, and refuses a second hold with 409', async () => {
    const { row } = await backupNow(ctx, inst.id, 'to hold');
    const res = await hold(row.id);
    expect(res.status).toBe(200);
    expect(res.body.hold).toMatchObject({ reason: 'litigation hold, case 114', by: 'olivia.operator' });
    expect(Date.parse(res.body.hold.at)).toBeGreaterThan(Date.now() - 60_000);

    const got = await ctx.call('GET', `/v1/backups/${row.id}`, { token: VIEWER });
    expect(got.status).toBe(200);
    expect(got.body.hold).toEqual(res.body.hold);
    expect(got.body.layout).toBe(row.layout);
    // Home first, then the verified offsite copy in the paired region.
    const home = ctx.regions.get(row.region)!;
    expect(got.body.copies[0]).toEqual({ region: row.region, storeKind: home.backups.blobs.kind, status: 'home', verifiedAt: null, error: null });
    expect(got.body.copies[1]).toMatchObject({ region: home.pair, status: 'verified', error: null });
    expect(Date.parse(got.body.copies[1].verifiedAt)).toBeGreaterThan(0);
    expect(got.body.offsiteVerifiedAt).not.toBeNull();
    expect(got.body.encryption === null || typeof got.body.encryption.keyId === 'string').toBe(true);
    expect(JSON.stringify(got.body)).not.toContain('wrappedKey');

    // The list carries the same copies and hold.
    const list = await ctx.call('GET', `/v1/instances/${inst.id}/backups`);
    const listed = list.body.backups.find((b: { id: string }) => b.id === row.id);
    expect(listed.copies).toEqual(got.body.copies);
    expect(listed.hold).toEqual(got.body.hold);

    const again = await hold(row.id, 'again');
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('already_held');
    expect((await rowOf(row.id))!.holdReason).toBe('litigation hold, case 114');

    const trail = await auditOf(row.id, 'backup.hold');
    expect(trail).toHaveLength(1);
    expect(trail[0]).toMatchObject({ actor: 'olivia.operator', instanceId: inst.id });
    expect(trail[0]!.details).toMatchObject({ reason: 'litigation hold, case 114' });

    // Where the store enforces holds itself (S3 Object Lock), the objects carry one in every region.
    for (const r of [home, ctx.regions.get(home.pair)!]) {
      if (r.backups.blobs.enforcesLocks) expect((await r.backups.lockState(backupRef(row))).legalHold).toBe(true);
    }
  });

  it('refuses to delete a held backup with 409 and removes nothing from any store; once released, a delete removes it from every store', async () => {
    const { row } = await backupNow(ctx, inst.id, 'held then deleted');
    expect((await hold(row.id)).status).toBe(200);
    const before = await objectsOf(row);
    expect(before[row.region]!.length).toBeGreaterThan(0);
    expect(before[ctx.regions.get(row.region)!.pair]!.length).toBeGreaterThan(0);

    const del = await ctx.call('DELETE', `/v1/backups/${row.id}`);
    expect(del.status).toBe(409);
    expect(del.body.error.code).toBe('backup_held');
    expect(del.body.error.message).toContain('legal hold');
    expect(await objectsOf(row)).toEqual(before);
    expect((await rowOf(row.id))!.status).toBe('completed');

    expect((await release(row.id)).status).toBe(200);
    // The shared stack writes no store locks (test/offsite.test.ts covers S3 Object Lock): the release alone frees it.
    expect(await storeLocked(row)).toBe(false);
    const after = await ctx.call('DELETE', `/v1/backups/${row.id}`);
    expect(after.status).toBe(200);
    expect(await rowOf(row.id)).toBeUndefined();
    for (const keys of Object.values(await objectsOf(row))) expect(keys).toEqual([]);
  });

  it('keeps an expired held backup through retention untouched, and retention removes it everywhere once released', async () => {
    const { row } = await backupNow(ctx, inst.id, 'held through retention');
    expect((await hold(row.id)).status).toBe(200);
    await ctx.db.update(backups).set({ expiresAt: sql`now() - interval '1 minute'` }).where(eq(backups.id, row.id));
    const before = await objectsOf(row);

    expect(await retention()).not.toContain(row.id);
    // Not even marked for deletion: a hold stops retention before it touches anything.
    expect((await rowOf(row.id))!).toMatchObject({ status: 'completed', holdReason: 'litigation hold, case 114' });
    expect(await objectsOf(row)).toEqual(before);

    expect((await release(row.id, 'released for expiry', SECOND_APPROVER)).status).toBe(200);
    expect(await storeLocked(row)).toBe(false);
    const expired = await retention();
    expect(expired).toContain(row.id);
    expect(await rowOf(row.id)).toBeUndefined();
    for (const keys of Object.values(await objectsOf(row))) expect(keys).toEqual([]);
  });

  it('lets only an approver other than the one who set the hold release it; the same person is refused with 403 and it stays held', async () => {
    const { row } = await backupNow(ctx, inst.id, 'four eyes');
    expect((await hold(row.id, 'audit request')).status).toBe(200);

    const byOperator = await release(row.id, 'no role', OPERATOR);
    expect(byOperator.status).toBe(403);
    expect(byOperator.body.error.message).toContain('approver');

    // The same identity with the approver role too: four eyes still refuses.
    const bySelf = await release(row.id, 'my own hold', SELF_APPROVER);
    expect(bySelf.status).toBe(403);
    expect(bySelf.body.error.code).toBe('four_eyes');
    expect(bySelf.body.error.message).toContain('olivia.operator put backup');
    expect(bySelf.body.error.message).toContain('another approver must');
    expect((await rowOf(row.id))!.heldAt).not.toBeNull();
    expect((await ctx.call('DELETE', `/v1/backups/${row.id}`)).status).toBe(409);

    const ok = await release(row.id, 'reviewed: hold no longer needed');
    expect(ok.status).toBe(200);
    expect(ok.body.hold).toBeNull();
    const now = (await rowOf(row.id))!;
    expect([now.heldAt, now.heldBy, now.holdReason]).toEqual([null, null, null]);
    const trail = await auditOf(row.id, 'backup.release');
    expect(trail).toHaveLength(1);
    expect(trail[0]).toMatchObject({ actor: 'anna.approver' });
    expect(trail[0]!.details).toMatchObject({ reason: 'reviewed: hold no longer needed', heldBy: 'olivia.operator', holdReason: 'audit request' });

    const twice = await release(row.id, 'again', SECOND_APPROVER);
    expect(twice.status).toBe(409);
    expect(twice.body.error.code).toBe('not_held');

    // Held again by the operator who also is an approver: still not theirs to release.
    expect((await hold(row.id, 'second matter', SELF_APPROVER)).status).toBe(200);
    expect((await release(row.id, 'done', SELF_APPROVER)).status).toBe(403);
    expect((await release(row.id, 'done', APPROVER)).status).toBe(200);
  });

  it('refuses to hold a backup that is not completed with 409', async () => {
    const id = `bk-failed-${uniqueName('x')}`;
    await ctx.db.insert(backups).values({
      id,
      instanceId: inst.id,
      instanceName: inst.name,
      region: 'primary',
      kind: 'on_demand',
      label: 'failed one',
      status: 'failed',
      objectKey: `backups/${inst.name}/${id}`,
      layout: 'v2',
      edition: 'standard',
      error: 'pg_dump exited with 1',
      workflowId: `on-demand-backup-${id}`,
      expiresAt: new Date(Date.now() + 86_400_000),
    });
    const res = await hold(id);
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('invalid_state');
    expect(res.body.error.message).toContain('failed');
    expect((await rowOf(id))!.heldAt).toBeNull();
    await ctx.db.delete(backups).where(eq(backups.id, id));
  });

  it('answers 404 for an unknown backup and 400 naming the field for malformed ids and hostile reasons, changing nothing', async () => {
    const { row } = await backupNow(ctx, inst.id, 'hostile input');
    expect((await hold('bk-does-not-exist')).status).toBe(404);
    expect((await hold('bk-does-not-exist')).body.error.code).toBe('backup_not_found');
    expect((await release('bk-does-not-exist')).status).toBe(404);

    for (const badId of ['x'.repeat(101), 'bk-%01evil', 'bk-%00']) {
      const res = await ctx.call('POST', `/v1/backups/${badId}/hold`, { body: { reason: 'fine' } });
      expect(res.status, badId).toBe(400);
      expect(res.body.error.issues.map((i: { field: string }) => i.field)).toContain('id');
    }

    const hostile: [string, unknown][] = [
      ['a bell', 'ring \u0007 ring'],
      ['an escape sequence', '\u001b[31mred\u001b[0m'],
      ['a NUL', 'nul\u0000byte'],
      ['a line break', 'two\nlines'],
      ['a lone surrogate', 'half \uD800 a pair'],
      ['100,000 characters', 'x'.repeat(100_000)],
      ['nothing but spaces', '   '],
      ['a number', 42],
      ['null', null],
    ];
    for (const [what, reason] of hostile) {
      for (const call of [hold, release]) {
        const res = await call(row.id, reason, call === hold ? OPERATOR : APPROVER);
        expect(res.status, what).toBe(400);
        expect(res.body.error.code, what).toBe('validation_failed');
        expect(res.body.error.issues.map((i: { field: string }) => i.field), what).toContain('reason');
      }
    }
    const missing = await ctx.call('POST', `/v1/backups/${row.id}/hold`, { body: {} });
    expect(missing.status).toBe(400);
    expect(missing.body.error.issues.map((i: { field: string }) => i.field)).toContain('reason');
    const extra = await ctx.call('POST', `/v1/backups/${row.id}/hold`, { body: { reason: 'ok', heldBy: 'someone else' } });
    expect(extra.status).toBe(400);
    const notJson = await ctx.call('POST', `/v1/backups/${row.id}/hold`, { rawBody: '{"reason": ' });
    expect(notJson.status).toBe(400);

    expect((await rowOf(row.id))!.heldAt).toBeNull();
    expect(await auditOf(row.id, 'backup.hold')).toEqual([]);
  });

  it('shows free text with control characters JSON-escaped in the backup JSON', async () => {
    const { row } = await backupNow(ctx, inst.id, 'escaping');
    // Not through the API (it refuses them): as older data or another writer could have left it.
    const odd = 'tab\there \u0007bell \u001b[31m esc \u2028 sep "quote" \\ back';
    await ctx.db.update(backups).set({ label: odd, heldAt: new Date(), heldBy: 'olivia.operator', holdReason: odd }).where(eq(backups.id, row.id));
    const res = await ctx.app.request(`/v1/backups/${row.id}`, { headers: { authorization: `Bearer ${VIEWER}` } });
    const text = await res.text();
    expect(res.status).toBe(200);
    expect(text).not.toMatch(/[\u0000-\u001f]/);
    expect(text).toContain('\\u0007');
    const body = JSON.parse(text);
    expect(body.label).toBe(odd);
    expect(body.hold.reason).toBe(odd);
    expect((await release(row.id, 'cleaning up')).status).toBe(200);
  });

  it('counts held backups and offsite copies by status in the metrics, with no backup ids in labels', async () => {
    const { row } = await backupNow(ctx, inst.id, 'metrics');
    expect((await hold(row.id)).status).toBe(200);
    const res = await ctx.app.request('/metrics', { headers: { authorization: `Bearer ${VIEWER}` } });
    const text = await res.text();
    const families = parsePrometheus(text);
    const [{ n: heldN }] = (await ctx.db.execute(sql`select count(*)::int as n from backups where held_at is not null`)) as unknown as [{ n: number }];
    expect(sample(families, 'bcdr_backups_held')).toBe(heldN);
    expect(sample(families, 'bcdr_backups_held')).toBeGreaterThanOrEqual(1);
    expect(sample(families, 'bcdr_backup_copies', { status: 'verified' })).toBeGreaterThanOrEqual(1);
    expect(sample(families, 'bcdr_backup_copies', { status: 'pending' })).toBeGreaterThanOrEqual(0);
    expect(sample(families, 'bcdr_backup_copies', { status: 'failed' })).toBeGreaterThanOrEqual(0);
    expect(text).not.toContain(row.id);
    expect((await release(row.id)).status).toBe(200);
  });
});
