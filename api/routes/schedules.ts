import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { eq, sql } from 'drizzle-orm';
import { backupSchedules, type BackupScheduleRow } from '../../db/schema/index.js';
import { audit } from '../../lib/audit.js';
import { upsertBackupSchedule } from '../../lib/schedules.js';
import { requireRole } from '../auth.js';
import type { ApiDeps, ApiEnv } from '../deps.js';
import { ApiError, badRequest, errorResponses, json } from '../errors.js';
import { busyError, findInstance } from '../runbooks.js';
import { Runbooks } from '../../workflows/contract.js';
import { ScheduleNotFoundError } from '@temporalio/client';
import { IdParam, ScheduleSchema, scheduleDto } from '../schemas.js';

const PutScheduleBody = z
  .object({
    startTime: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'must be HH:MM (UTC, 24-hour)').optional(),
    intervalDays: z.number().int('must be a whole number of days').min(1, 'must be at least 1').max(30, 'must be at most 30').optional(),
    retentionDays: z.number().int('must be a whole number of days').min(1, 'must be at least 1').max(365, 'must be at most 365').optional(),
    keepAtLeastOne: z.boolean().optional(),
    enabled: z.boolean().optional(),
  })
  .strict()
  .openapi('PutBackupSchedule', { description: 'Fields left out keep their current value. retentionDays must be greater than intervalDays.' });


/** /v1/instances/{id}/backup-schedule: the daily backup policy and its Temporal Schedule. */
export function schedulesApp(deps: ApiDeps) {
  const app = new OpenAPIHono<ApiEnv>();

  async function load(instanceId: string, name: string): Promise<BackupScheduleRow> {
    const [row] = await deps.db.select().from(backupSchedules).where(eq(backupSchedules.instanceId, instanceId));
    if (!row) throw new ApiError(404, 'schedule_not_found', `instance ${name} has no backup schedule (is it still provisioning?)`);
    return row;
  }

  async function nextRuns(scheduleId: string): Promise<Date[]> {
    try {
      const d = await deps.temporal.schedule.getHandle(scheduleId).describe();
      return d.info.nextActionTimes.slice(0, 3);
    } catch {
      return [];
    }
  }

  const errors = errorResponses('no such instance or schedule', 'a run is provisioning or deleting the instance');

  app.openapi(
    createRoute({
      method: 'get',
      path: '/{id}/backup-schedule',
      tags: ['schedules'],
      summary: 'The daily backup policy, its last run (with the failure reason if it failed) and its next runs',
      request: { params: IdParam },
      responses: { 200: json(ScheduleSchema, 'schedule'), ...errors },
    }),
    async (c) => {
      const inst = await findInstance(deps, c.req.valid('param').id);
      const row = await load(inst.id, inst.name);
      return c.json(scheduleDto(row, await nextRuns(row.scheduleId)), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'put',
      path: '/{id}/backup-schedule',
      tags: ['schedules'],
      summary: 'Change the daily backup policy: start time, interval, retention, keep-at-least-one, enabled',
      middleware: [requireRole('operator')] as const,
      request: { params: IdParam, body: { content: { 'application/json': { schema: PutScheduleBody } }, required: true } },
      responses: { 200: json(ScheduleSchema, 'updated'), ...errors },
    }),
    async (c) => {
      const inst = await findInstance(deps, c.req.valid('param').id);
      const body = c.req.valid('json');
      if (inst.lockedRunbook === Runbooks.deleteInstance || inst.lockedRunbook === Runbooks.provisionInstance) {
        throw busyError(deps, inst.name, { workflowId: inst.lockedByRun ?? 'unknown', runbook: inst.lockedRunbook });
      }
      const actor = c.get('principal').identity;
      const updated = await deps.db.transaction(async (tx) => {
        // Read, merge and validate under the row lock, so two concurrent changes never undo each other.
        const [current] = await tx.select().from(backupSchedules).where(eq(backupSchedules.instanceId, inst.id)).for('update');
        if (!current) throw new ApiError(404, 'schedule_not_found', `instance ${inst.name} has no backup schedule (is it still provisioning?)`);
        const next = { ...current, ...body };
        if (next.retentionDays <= next.intervalDays) {
          throw badRequest('retentionDays', `must be greater than intervalDays (${next.intervalDays}), or no backup would outlive the next one`);
        }
        const [row] = await tx
          .update(backupSchedules)
          .set({ startTime: next.startTime, intervalDays: next.intervalDays, retentionDays: next.retentionDays, keepAtLeastOne: next.keepAtLeastOne, enabled: next.enabled, updatedAt: sql`now()` })
          .where(eq(backupSchedules.instanceId, inst.id))
          .returning();
        await audit(tx, { actor, action: 'schedule.update', instanceId: inst.id, subject: current.scheduleId, details: { ...body } });
        try {
          // Last, inside the transaction: if Temporal refuses, the catalog change rolls back with it.
          await upsertBackupSchedule(deps.temporal, deps.cfg.TEMPORAL_TASK_QUEUE, next, { createIfMissing: false });
        } catch (e) {
          if (e instanceof ScheduleNotFoundError) {
            throw new ApiError(409, 'schedule_missing', `the Temporal schedule of ${inst.name} is gone (is the instance being deleted?); nothing was changed`);
          }
          throw new ApiError(503, 'temporal_unavailable', `could not update the Temporal schedule: ${(e as Error).message}; nothing was changed`);
        }
        return row!;
      });
      return c.json(scheduleDto(updated, await nextRuns(updated.scheduleId)), 200);
    },
  );

  return app;
}
