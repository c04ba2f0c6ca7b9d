import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { randomUUID } from 'node:crypto';
import { and, desc, eq } from 'drizzle-orm';
import { backups, type BackupRow } from '../../db/schema/index.js';
import { audit } from '../../lib/audit.js';
import { BackupHeldError, deleteBackup, removalRefusal } from '../../lib/backups.js';
import { ObjectLockedError } from '../../lib/storage/blob-store.js';
import { Runbooks, workflowIds, type OnDemandBackupInput } from '../../workflows/contract.js';
import { requireRole } from '../auth.js';
import type { ApiDeps, ApiEnv } from '../deps.js';
import { ApiError, errorResponses, json } from '../errors.js';
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

const errors = errorResponses('no such instance or backup', 'conflict: instance busy (the run is named), wrong state, or a system backup');

/** States in which an instance can be backed up. */
const BACKUP_STATES = new Set(['active', 'suspended', 'failed_over']);

/** Backups: on-demand creation under an instance, and read, relabel, delete by id. */
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
      return c.json({ backups: rows.map(backupDto) }, 200);
    },
  );

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
    async (c) => c.json(backupDto(await findBackup(c.req.valid('param').id)), 200),
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
      return c.json(backupDto(updated), 200);
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

  return { byInstance, byId };
}
