import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { randomUUID } from 'node:crypto';
import { and, desc, eq, inArray } from 'drizzle-orm';
import { backupCopies, backups, type BackupCopyRow, type BackupRow } from '../../db/schema/index.js';
import { audit } from '../../lib/audit.js';
import { BackupHeldError, backupRef, deleteBackup, removalRefusal } from '../../lib/backups.js';
import type { BackupStore } from '../../lib/storage/backup-store.js';
import { ObjectLockedError } from '../../lib/storage/blob-store.js';
import { Runbooks, workflowIds, type OnDemandBackupInput } from '../../workflows/contract.js';
import { requireRole } from '../auth.js';
import type { ApiDeps, ApiEnv } from '../deps.js';
import { ApiError, ErrorSchema, errorResponses, json } from '../errors.js';
import { findInstance, startLockedRunbook } from '../runbooks.js';
import { BackupSchema, backupDto, FreeText, IdParam, RunRefSchema } from '../schemas.js';

/** One line a person writes: no control characters (PostgreSQL cannot store NUL), no lone surrogates, at most 200 characters. */
const Label = FreeText({ max: 200, example: 'before upgrade' });

const CreateBackupBody = z
  .object({
    label: Label,
    retentionDays: z.number().int('must be a whole number of days').min(1, 'must be at least 1 day').max(365, 'must be at most 365 days').default(3),
  })
  .strict()
  .openapi('CreateBackup');

const PatchBackupBody = z.object({ label: Label }).strict().openapi('RelabelBackup');

/** Why a hold is set or released: one line, kept in the audit trail. */
const HoldBody = z
  .object({ reason: FreeText({ max: 500, example: 'litigation hold, case 2026-114' }) })
  .strict()
  .openapi('BackupHoldReason');

const errors = errorResponses('no such instance or backup', 'conflict: instance busy (the run is named), wrong state, or a system backup');

/** States in which an instance can be backed up. */
const BACKUP_STATES = new Set(['active', 'suspended', 'failed_over']);

/** Backups: on-demand creation under an instance, and read, relabel, delete, hold and release by id. */
export function backupsApp(deps: ApiDeps) {
  const byInstance = new OpenAPIHono<ApiEnv>();
  const byId = new OpenAPIHono<ApiEnv>();

  byInstance.openapi(
    createRoute({
      method: 'post',
      path: '/{id}/backups',
      tags: ['backups'],
      summary: 'Take an on-demand backup (needs a label; kept 3 days unless told otherwise)',
      middleware: [requireRole('operator')] as const,
      request: { params: IdParam, body: { content: { 'application/json': { schema: CreateBackupBody } }, required: true } },
      responses: {
        202: json(z.object({ backupId: z.string(), run: RunRefSchema }), 'backup started'),
        ...errors,
      },
    }),
    async (c) => {
      const inst = await findInstance(deps, c.req.valid('param').id);
      const body = c.req.valid('json');
      if (!BACKUP_STATES.has(inst.state)) {
        throw new ApiError(409, 'invalid_state', `instance ${inst.name} is ${inst.state}; backups need it active, suspended or failed over`);
      }
      const actor = c.get('principal').identity;
      const backupId = `bk-${randomUUID()}`;
      const workflowId = workflowIds.onDemandBackup(backupId);
      const args: [OnDemandBackupInput] = [{ instanceId: inst.id, backupId, label: body.label, retentionDays: body.retentionDays, requestedBy: actor }];
      const run = await startLockedRunbook(deps, { instance: inst, runbook: Runbooks.onDemandBackup, workflowId, workflowType: 'onDemandBackupWorkflow', args });
      await audit(deps.db, { actor, action: 'backup.create', instanceId: inst.id, subject: backupId, details: { label: body.label, retentionDays: body.retentionDays, workflowId } });
      return c.json({ backupId, run }, 202);
    },
  );

  byInstance.openapi(
    createRoute({
      method: 'get',
      path: '/{id}/backups',
      tags: ['backups'],
      summary: "List an instance's backups, newest first",
      request: { params: IdParam },
      responses: { 200: json(z.object({ backups: z.array(BackupSchema) }), 'backups'), ...errors },
    }),
    async (c) => {
      const inst = await findInstance(deps, c.req.valid('param').id);
      const rows = await deps.db.select().from(backups).where(eq(backups.instanceId, inst.id)).orderBy(desc(backups.createdAt));
      const copies = await copiesOf(rows.map((r) => r.id));
      return c.json({ backups: rows.map((r) => dtoOf(r, copies.get(r.id))) }, 200);
    },
  );

  const storeKindOf = (region: string) => deps.regions.get(region)?.backups.kind ?? null;
  const dtoOf = (b: BackupRow, copies: BackupCopyRow[] = []) => backupDto(b, copies, storeKindOf);

  /** The offsite copies of these backups, in one query, by backup id. */
  async function copiesOf(ids: string[]): Promise<Map<string, BackupCopyRow[]>> {
    const out = new Map<string, BackupCopyRow[]>();
    if (!ids.length) return out;
    for (const c of await deps.db.select().from(backupCopies).where(inArray(backupCopies.backupId, ids))) {
      const list = out.get(c.backupId) ?? [];
      list.push(c);
      out.set(c.backupId, list);
    }
    return out;
  }

  async function withCopies(b: BackupRow) {
    return dtoOf(b, (await copiesOf([b.id])).get(b.id));
  }

  async function findBackup(id: string): Promise<BackupRow> {
    const [row] = await deps.db.select().from(backups).where(eq(backups.id, id));
    if (!row) throw new ApiError(404, 'backup_not_found', `backup ${id} does not exist`);
    return row;
  }

  function refuseSystem(b: BackupRow, verb: string): void {
    if (b.kind === 'system') {
      throw new ApiError(409, 'system_backup', `backup ${b.id} is a system backup; system backups can only be restored, not ${verb}`);
    }
  }

  byId.openapi(
    createRoute({
      method: 'get',
      path: '/{id}',
      tags: ['backups'],
      summary: 'Get a backup',
      request: { params: IdParam },
      responses: { 200: json(BackupSchema, 'the backup'), ...errors },
    }),
    async (c) => c.json(await withCopies(await findBackup(c.req.valid('param').id)), 200),
  );

  byId.openapi(
    createRoute({
      method: 'patch',
      path: '/{id}',
      tags: ['backups'],
      summary: 'Relabel an on-demand backup (system backups are refused with 409)',
      middleware: [requireRole('operator')] as const,
      request: { params: IdParam, body: { content: { 'application/json': { schema: PatchBackupBody } }, required: true } },
      responses: { 200: json(BackupSchema, 'relabelled'), ...errors },
    }),
    async (c) => {
      const b = await findBackup(c.req.valid('param').id);
      refuseSystem(b, 'relabelled');
      const { label } = c.req.valid('json');
      const actor = c.get('principal').identity;
      const [updated] = await deps.db.transaction(async (tx) => {
        const rows = await tx.update(backups).set({ label }).where(and(eq(backups.id, b.id), eq(backups.kind, 'on_demand'))).returning();
        await audit(tx, { actor, action: 'backup.relabel', instanceId: b.instanceId, subject: b.id, details: { from: b.label, to: label } });
        return rows;
      });
      if (!updated) throw new ApiError(404, 'backup_not_found', `backup ${b.id} does not exist`);
      return c.json(await withCopies(updated), 200);
    },
  );

  byId.openapi(
    createRoute({
      method: 'delete',
      path: '/{id}',
      tags: ['backups'],
      summary: 'Delete an on-demand backup: its archive, manifest and record (system backups are refused with 409)',
      middleware: [requireRole('operator')] as const,
      request: { params: IdParam },
      responses: { 200: json(z.object({ deleted: z.string() }), 'deleted'), ...errors },
    }),
    async (c) => {
      const b = await findBackup(c.req.valid('param').id);
      refuseSystem(b, 'deleted');
      if (b.status === 'pending') throw new ApiError(409, 'backup_in_progress', `backup ${b.id} is still being taken by run ${b.workflowId}; cancel that run or wait for it`);
      const refused = removalRefusal(b);
      if (refused) throw new ApiError(409, 'backup_held', refused);
      const storeOf = (name: string) => {
        const r = deps.regions.get(name);
        if (!r) throw new ApiError(409, 'region_unknown', `backup ${b.id} has objects in region ${name}, which is not configured; nothing was deleted`);
        return r.backups;
      };
      storeOf(b.region);
      const actor = c.get('principal').identity;
      try {
        await deleteBackup(deps.db, storeOf, b, actor);
      } catch (err) {
        if (err instanceof BackupHeldError) throw new ApiError(409, 'backup_held', err.message);
        if (err instanceof ObjectLockedError) throw new ApiError(409, 'backup_locked', `${err.message}; the backup stays (marked deleting) and retention removes it once the lock ends`);
        throw err;
      }
      return c.json({ deleted: b.id }, 200);
    },
  );

  /**
   * The stores a hold applies to: the home region's and every region with an
   * offsite copy. `required` stores must take the change (the home store and
   * verified copies); the others (a copy still being written, or one that
   * failed and may be gone) are changed where their objects are.
   */
  function holdTargets(b: BackupRow, copies: BackupCopyRow[]): { region: string; store: BackupStore; required: boolean }[] {
    const out: { region: string; store: BackupStore; required: boolean }[] = [];
    const add = (region: string, required: boolean) => {
      const r = deps.regions.get(region);
      if (r) out.push({ region, store: r.backups, required });
      else if (required) throw new ApiError(409, 'region_unknown', `backup ${b.id} has objects in region ${region}, which is not configured here; nothing was changed`);
    };
    add(b.region, true);
    for (const c of copies) if (c.region !== b.region) add(c.region, c.status === 'verified');
    return out;
  }

  /** Sets or lifts the stores' legal hold on a backup's objects; if a required store refuses, undoes what it did and answers 503. */
  async function applyStoreHold(b: BackupRow, copies: BackupCopyRow[], on: boolean): Promise<string[]> {
    const ref = backupRef(b);
    const done: { region: string; store: BackupStore }[] = [];
    for (const t of holdTargets(b, copies)) {
      try {
        await t.store.setLegalHold(ref, on);
        done.push(t);
      } catch (err) {
        if (!t.required) continue;
        // Back to how it was: a hold half set (or half lifted) must not be left behind.
        for (const d of done) await d.store.setLegalHold(ref, !on).catch(() => {});
        throw new ApiError(503, 'store_unavailable', `the store of region ${t.region} did not ${on ? 'set' : 'lift'} the legal hold on backup ${b.id}: ${err instanceof Error ? err.message : String(err)}; nothing was changed, retry`);
      }
    }
    return done.map((d) => d.region);
  }

  byId.openapi(
    createRoute({
      method: 'post',
      path: '/{id}/hold',
      tags: ['backups'],
      summary: 'Put a completed backup on legal hold: retention and delete leave it and its copies until an approver other than you releases it',
      middleware: [requireRole('operator')] as const,
      request: { params: IdParam, body: { content: { 'application/json': { schema: HoldBody } }, required: true } },
      responses: {
        200: json(BackupSchema, 'held'),
        ...errorResponses('no such backup', 'conflict: already held, or the backup is not completed'),
      },
    }),
    async (c) => {
      const id = c.req.valid('param').id;
      const { reason } = c.req.valid('json');
      const actor = c.get('principal').identity;
      const held = await deps.db.transaction(async (tx) => {
        const [b] = await tx.select().from(backups).where(eq(backups.id, id)).for('update');
        if (!b) throw new ApiError(404, 'backup_not_found', `backup ${id} does not exist`);
        if (b.heldAt) throw new ApiError(409, 'already_held', `backup ${b.id} is already on legal hold (set by ${b.heldBy ?? 'unknown'} at ${b.heldAt.toISOString()})`);
        if (b.status !== 'completed') throw new ApiError(409, 'invalid_state', `backup ${b.id} is ${b.status}; only a completed backup can be held`);
        const copies = await tx.select().from(backupCopies).where(eq(backupCopies.backupId, b.id));
        const regions = await applyStoreHold(b, copies, true);
        try {
          const [row] = await tx.update(backups).set({ heldAt: new Date(), heldBy: actor, holdReason: reason }).where(eq(backups.id, b.id)).returning();
          await audit(tx, { actor, action: 'backup.hold', instanceId: b.instanceId, subject: b.id, details: { reason, regions } });
          return { row: row!, copies };
        } catch (err) {
          for (const r of regions) await deps.regions.get(r)?.backups.setLegalHold(backupRef(b), false).catch(() => {});
          throw err;
        }
      });
      return c.json(dtoOf(held.row, held.copies), 200);
    },
  );

  byId.openapi(
    createRoute({
      method: 'post',
      path: '/{id}/release',
      tags: ['backups'],
      summary: "Release a backup's legal hold (approver; never the one who set it: four eyes)",
      middleware: [requireRole('approver')] as const,
      request: { params: IdParam, body: { content: { 'application/json': { schema: HoldBody } }, required: true } },
      responses: {
        200: json(BackupSchema, 'released'),
        ...errorResponses('no such backup', 'conflict: the backup is not on hold'),
        403: json(ErrorSchema, 'the token lacks the approver role, or its identity set the hold (four eyes)'),
      },
    }),
    async (c) => {
      const id = c.req.valid('param').id;
      const { reason } = c.req.valid('json');
      const me = c.get('principal').identity;
      const released = await deps.db.transaction(async (tx) => {
        const [b] = await tx.select().from(backups).where(eq(backups.id, id)).for('update');
        if (!b) throw new ApiError(404, 'backup_not_found', `backup ${id} does not exist`);
        if (!b.heldAt) throw new ApiError(409, 'not_held', `backup ${b.id} is not on legal hold`);
        if (b.heldBy === me) throw new ApiError(403, 'four_eyes', `${me} put backup ${b.id} on hold and cannot release it: another approver must (four eyes)`);
        const copies = await tx.select().from(backupCopies).where(eq(backupCopies.backupId, b.id));
        const regions = await applyStoreHold(b, copies, false);
        try {
          const [row] = await tx.update(backups).set({ heldAt: null, heldBy: null, holdReason: null }).where(eq(backups.id, b.id)).returning();
          await audit(tx, { actor: me, action: 'backup.release', instanceId: b.instanceId, subject: b.id, details: { reason, heldBy: b.heldBy, heldAt: b.heldAt.toISOString(), holdReason: b.holdReason, regions } });
          return { row: row!, copies };
        } catch (err) {
          for (const r of regions) await deps.regions.get(r)?.backups.setLegalHold(backupRef(b), true).catch(() => {});
          throw err;
        }
      });
      return c.json(dtoOf(released.row, released.copies), 200);
    },
  );

  return { byInstance, byId };
}
