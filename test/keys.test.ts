import { createHash, randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createActivities } from '../activities/index.js';
import { auditEvents, backups } from '../db/schema/index.js';
import { backupRef } from '../lib/backups.js';
import { openRegions } from '../lib/regions.js';
import { KeyUnavailableError } from '../lib/storage/keyring.js';
import { backupNow, createInstance, finishedRun, openContext, runActivity, seedRows, uniqueName, type TestContext } from './helpers.js';
import { recordHistory } from './record.js';
import { APPROVER, OPERATOR, VIEWER } from './tokens.js';

let ctx: TestContext;
let inst: { id: string; name: string };
/** The worker's keys (id → base64), as the test stack configured them. */
let configured: Record<string, string>;
const opened: { close: () => Promise<void> }[] = [];

beforeAll(async () => {
  ctx = await openContext();
  if (!ctx.cfg.BACKUP_KEYS || !ctx.cfg.BACKUP_KEY_ACTIVE) throw new Error('the test stack sets no BACKUP_KEYS / BACKUP_KEY_ACTIVE: these tests need encrypted backups');
  configured = JSON.parse(ctx.cfg.BACKUP_KEYS) as Record<string, string>;
  inst = await createInstance(ctx, uniqueName('keys'));
  await seedRows(ctx, inst.name, 500);
});
afterAll(async () => {
  for (const o of opened) await o.close();
  await ctx?.close();
});

/** Regions and activities like the worker's, over the same catalog and stores, but with this keyring. */
function withKeys(keys: Record<string, string>, active: string) {
  const env = { ...process.env, ...inject('bcdrEnv') };
  const regions = openRegions({ ...ctx.cfg, BACKUP_KEYS: JSON.stringify(keys), BACKUP_KEY_ACTIVE: active }, env);
  opened.push(regions);
  return { regions: regions.regions, activities: createActivities({ db: ctx.db, regions: regions.regions, temporal: ctx.temporal, taskQueue: ctx.cfg.TEMPORAL_TASK_QUEUE }) };
}

async function sha256Of(stream: Readable): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

const rowOf = async (id: string) => (await ctx.db.select().from(backups).where(eq(backups.id, id)))[0]!;

describe('backup keys', () => {
  it('lists the configured key ids, the active one and their use, and never any key material', async () => {
    const { row } = await backupNow(ctx, inst.id, 'listed');
    expect(row.encryption?.keyId).toBe(ctx.cfg.BACKUP_KEY_ACTIVE);
    const res = await ctx.app.request('/v1/keys', { headers: { authorization: `Bearer ${VIEWER}` } });
    expect(res.status).toBe(200);
    const text = await res.text();
    const body = JSON.parse(text);
    expect(body.activeKeyId).toBe(ctx.cfg.BACKUP_KEY_ACTIVE);
    for (const id of Object.keys(configured)) {
      expect(body.keys).toContainEqual(expect.objectContaining({ id, configured: true, active: id === ctx.cfg.BACKUP_KEY_ACTIVE }));
    }
    expect(body.keys.find((k: { id: string }) => k.id === ctx.cfg.BACKUP_KEY_ACTIVE).backups).toBeGreaterThanOrEqual(1);
    for (const b64 of Object.values(configured)) {
      expect(text).not.toContain(b64);
      expect(text).not.toContain(b64.replace(/=+$/, ''));
      expect(text).not.toContain(Buffer.from(b64, 'base64').toString('hex'));
    }
    // Nor a backup's wrapped data key, in the key list or the backup JSON.
    expect(text).not.toContain(row.encryption!.wrappedKey);
    const backup = await ctx.app.request(`/v1/backups/${row.id}`, { headers: { authorization: `Bearer ${VIEWER}` } });
    const backupText = await backup.text();
    expect(JSON.parse(backupText).encryption).toEqual({ alg: row.encryption!.alg, keyId: row.encryption!.keyId });
    expect(backupText).not.toContain(row.encryption!.wrappedKey);
    for (const b64 of Object.values(configured)) expect(backupText).not.toContain(b64);
  });

  it('refuses a key rotation from an operator or a viewer with 403 and starts nothing', async () => {
    for (const token of [OPERATOR, VIEWER]) {
      const res = await ctx.call('POST', '/v1/keys/rotate', { token });
      expect(res.status).toBe(403);
      expect(res.body.error.message).toContain('approver');
    }
    expect((await ctx.call('POST', '/v1/keys/rotate', { token: null })).status).toBe(401);
  });

  it('rewraps a backup under the new active key in the catalog and every manifest, without touching the archive, so only the new key restores it', async () => {
    const { row: before } = await backupNow(ctx, inst.id, 'to rotate');
    const keyA = ctx.cfg.BACKUP_KEY_ACTIVE!;
    expect(before.encryption?.keyId).toBe(keyA);
    const ref = backupRef(before);
    const expected = { sizeBytes: before.sizeBytes!, sha256: before.sha256! };
    const home = ctx.regions.get(before.region)!;
    const plainBefore = await sha256Of(await home.backups.openArchive(ref, before.encryption, expected));

    // A keyring where a new key B is active and A is still held (to unwrap with).
    const keyB = `rotated-${randomBytes(3).toString('hex')}`;
    const b64B = randomBytes(32).toString('base64');
    const rotated = withKeys({ ...configured, [keyB]: b64B }, keyB);
    const page = await runActivity('rotate-keys-test', rotated.activities.listBackupsToRewrap, { after: null, limit: 100_000 });
    expect(page.activeKeyId).toBe(keyB);
    expect(page.ids).toContain(before.id);

    const out = await runActivity('rotate-keys-test', rotated.activities.rewrapBackupKey, { backupId: before.id });
    expect(out).toMatchObject({ backupId: before.id, outcome: 'rewrapped', fromKeyId: keyA, toKeyId: keyB });
    expect(out.regions).toEqual(expect.arrayContaining([before.region, home.pair]));

    const after = await rowOf(before.id);
    expect(after.encryption).toMatchObject({ alg: before.encryption!.alg, keyId: keyB });
    expect(after.encryption!.wrappedKey).not.toBe(before.encryption!.wrappedKey);
    // The data is not re-encrypted: the stored archive is byte for byte the one the catalog recorded.
    expect([after.sizeBytes, after.sha256, after.archiveKey]).toEqual([before.sizeBytes, before.sha256, before.archiveKey]);
    for (const region of [before.region, home.pair]) {
      const store = ctx.regions.get(region)!.backups;
      const manifest = await store.readManifest(ref);
      expect(manifest?.encryption, region).toEqual(after.encryption);
      expect(await store.checksum(ref), region).toEqual(expected);
    }
    const trail = (await ctx.db.select().from(auditEvents).where(eq(auditEvents.subject, before.id))).filter((e) => e.action === 'backup.rekeyed');
    expect(trail).toHaveLength(1);
    expect(trail[0]!.details).toMatchObject({ fromKeyId: keyA, toKeyId: keyB });

    // Restored with only key B in the keyring: the same plaintext as before the rotation.
    const onlyB = withKeys({ [keyB]: b64B }, keyB);
    for (const region of [before.region, home.pair]) {
      const store = onlyB.regions.get(region)!.backups;
      expect(await sha256Of(await store.openArchive(ref, after.encryption, expected)), region).toBe(plainBefore);
    }
    // And key A alone no longer opens it.
    const onlyA = withKeys({ [keyA]: configured[keyA]! }, keyA);
    await expect(onlyA.regions.get(before.region)!.backups.openArchive(ref, after.encryption, expected)).rejects.toBeInstanceOf(KeyUnavailableError);

    // Idempotent: a second run finds it done and changes nothing.
    const again = await runActivity('rotate-keys-test', rotated.activities.rewrapBackupKey, { backupId: before.id });
    expect(again.outcome).toBe('already');
    expect((await rowOf(before.id)).encryption).toEqual(after.encryption);
    expect((await runActivity('rotate-keys-test', rotated.activities.listBackupsToRewrap, { after: null, limit: 100_000 })).ids).not.toContain(before.id);

    // Back under the worker's key, so the rest of the suite can restore it.
    const back = await runActivity('rotate-keys-test', withKeys({ ...configured, [keyB]: b64B }, keyA).activities.rewrapBackupKey, { backupId: before.id });
    expect(back).toMatchObject({ outcome: 'rewrapped', fromKeyId: keyB, toKeyId: keyA });
  });

  it('reports a backup whose key the keyring lacks as failed, naming the key id, without changing it', async () => {
    const { row } = await backupNow(ctx, inst.id, 'lost key');
    const keyB = `rotated-${randomBytes(3).toString('hex')}`;
    // A keyring that holds only the new key: the backup's key A is missing.
    const onlyB = withKeys({ [keyB]: randomBytes(32).toString('base64') }, keyB);
    const out = await runActivity('rotate-keys-test', onlyB.activities.rewrapBackupKey, { backupId: row.id });
    expect(out).toMatchObject({ backupId: row.id, outcome: 'failed', fromKeyId: ctx.cfg.BACKUP_KEY_ACTIVE });
    expect(out.error).toContain(ctx.cfg.BACKUP_KEY_ACTIVE);
    expect((await rowOf(row.id)).encryption).toEqual(row.encryption);
    expect((await ctx.regions.get(row.region)!.backups.readManifest(backupRef(row)))?.encryption).toEqual(row.encryption);
  });

  it('runs the rotate-keys runbook for an approver: 202 with the run, and a result counting rewrapped and failed backups (a missing key named)', async () => {
    const { row } = await backupNow(ctx, inst.id, 'ghost key');
    // As a backup taken under a key since removed from the keyring would look.
    const ghost = { ...row.encryption!, keyId: `retired-${randomBytes(3).toString('hex')}` };
    await ctx.db.update(backups).set({ encryption: ghost }).where(eq(backups.id, row.id));
    try {
      const keys = await ctx.call('GET', '/v1/keys');
      expect(keys.body.keys).toContainEqual({ id: ghost.keyId, active: false, configured: false, backups: 1 });
      expect(keys.body.toRewrap).toBeGreaterThanOrEqual(1);

      const res = await ctx.call('POST', '/v1/keys/rotate', { token: APPROVER });
      expect(res.status).toBe(202);
      expect(res.body.run.workflowId).toMatch(/^rotate-keys-[0-9a-f-]{36}$/);
      expect(res.body.run).toMatchObject({ runbook: 'rotate-keys', links: { run: `/v1/runs/${encodeURIComponent(res.body.run.workflowId)}` } });
      expect(res.body.run.url).toContain(res.body.run.workflowId);
      const run = await finishedRun(ctx, res.body.run.workflowId);
      expect(run.status).toBe('completed');
      expect(run.runbook).toBe('rotate-keys');
      await recordHistory(ctx, res.body.run.workflowId, 'rotate-keys');
      expect(run.requestedBy).toBe('anna.approver');
      expect(run.result).toMatchObject({ activeKeyId: ctx.cfg.BACKUP_KEY_ACTIVE });
      expect(run.result.rewrapped).toBeGreaterThanOrEqual(0);
      expect(run.result.failed).toBeGreaterThanOrEqual(1);
      expect(run.result.failures).toContainEqual(expect.objectContaining({ backupId: row.id, keyId: ghost.keyId }));
      expect(run.warnings.join('\n')).toContain(ghost.keyId);
      expect((await rowOf(row.id)).encryption).toEqual(ghost);
      const started = (await ctx.db.select().from(auditEvents).where(eq(auditEvents.action, 'keys.rotate.start'))).find((e) => (e.details as { workflowId?: string }).workflowId === res.body.run.workflowId);
      expect(started?.actor).toBe('anna.approver');
    } finally {
      await ctx.db.update(backups).set({ encryption: row.encryption }).where(eq(backups.id, row.id));
    }
  });
});
