import { and, eq, sql } from 'drizzle-orm';
import { signoffs, type SignoffStatus } from '../db/schema/index.js';
import { audit } from '../lib/audit.js';
import { isRunRunning } from '../lib/runs.js';
import { callerWorkflowId, type ActivityDeps } from './deps.js';

/** The catalog id of a run's sign-off gate. */
export const signoffId = (workflowId: string, gate: string) => `${workflowId}/${gate}`;

/** Sign-off activities: the catalog and audit side of a run's sign-off gate. Idempotent. */
export function signoffActivities(deps: ActivityDeps) {
  return {
    /** Records that the run waits for sign-off at `gate` (pending, with its deadline) and audits the request. */
    async openSignoff(input: {
      gate: string;
      runbook: string;
      instanceIds: string[];
      requestedBy: string;
      summary: string;
      risk?: Record<string, unknown>;
      deadline: string;
    }): Promise<void> {
      const workflowId = callerWorkflowId();
      const id = signoffId(workflowId, input.gate);
      await deps.db.transaction(async (tx) => {
        const rows = await tx
          .insert(signoffs)
          .values({
            id,
            workflowId,
            runbook: input.runbook,
            instanceIds: input.instanceIds,
            requestedBy: input.requestedBy,
            summary: input.summary,
            risk: input.risk ?? null,
            status: 'pending',
            deadline: new Date(input.deadline),
          })
          .onConflictDoNothing()
          .returning({ id: signoffs.id });
        if (rows.length) {
          await audit(tx, { actor: 'system:runbook', action: 'signoff.requested', instanceId: input.instanceIds[0] ?? null, subject: id, details: { workflowId, summary: input.summary, deadline: input.deadline, instanceIds: input.instanceIds } });
        }
      });
    },

    /** Records the gate's outcome (only while it is pending), with the approver and the written statement, and audits it. */
    async closeSignoff(input: { gate: string; status: Exclude<SignoffStatus, 'pending'>; by?: string; statement?: string; at?: string }): Promise<void> {
      const workflowId = callerWorkflowId();
      const id = signoffId(workflowId, input.gate);
      await deps.db.transaction(async (tx) => {
        const rows = await tx
          .update(signoffs)
          .set({ status: input.status, decidedBy: input.by ?? null, statement: input.statement ?? null, decidedAt: input.at ? new Date(input.at) : sql`now()` })
          .where(and(eq(signoffs.id, id), eq(signoffs.status, 'pending')))
          .returning();
        const row = rows[0];
        if (row) {
          await audit(tx, {
            actor: input.by ?? 'system:runbook',
            action: `signoff.${input.status}`,
            instanceId: row.instanceIds[0] ?? null,
            subject: id,
            details: { workflowId, statement: input.statement ?? null, instanceIds: row.instanceIds },
          });
        }
      });
    },

    /**
     * Closes, as `cancelled`, pending sign-offs whose run has ended without
     * closing them (a terminated run), so `GET /v1/signoffs?status=pending`
     * lists only what an approver can still act on. Returns how many it closed.
     */
    async closeAbandonedSignoffs(): Promise<number> {
      let closed = 0;
      for (const row of await deps.db.select().from(signoffs).where(eq(signoffs.status, 'pending'))) {
        if (await isRunRunning(deps.temporal, row.workflowId)) continue;
        await deps.db.transaction(async (tx) => {
          const done = await tx
            .update(signoffs)
            .set({ status: 'cancelled', decidedAt: sql`now()` })
            .where(and(eq(signoffs.id, row.id), eq(signoffs.status, 'pending')))
            .returning({ id: signoffs.id });
          if (done.length) {
            closed++;
            await audit(tx, { actor: 'system:retention', action: 'signoff.cancelled', instanceId: row.instanceIds[0] ?? null, subject: row.id, details: { workflowId: row.workflowId, reason: 'the run ended without a decision' } });
          }
        });
      }
      return closed;
    },

    /** Audits a reminder that the run still waits for sign-off. */
    async remindSignoff(input: { gate: string; deadline: string }): Promise<void> {
      const workflowId = callerWorkflowId();
      const id = signoffId(workflowId, input.gate);
      const [row] = await deps.db.select().from(signoffs).where(eq(signoffs.id, id));
      if (row?.status !== 'pending') return;
      await audit(deps.db, { actor: 'system:runbook', action: 'signoff.reminder', instanceId: row.instanceIds[0] ?? null, subject: id, details: { workflowId, deadline: input.deadline, summary: row.summary } });
    },
  };
}
