import { index, jsonb, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/** Where a sign-off stands: waiting, or the decision that ended the wait. */
export const SignoffStatuses = ['pending', 'approved', 'rejected', 'expired', 'cancelled'] as const;
export type SignoffStatus = (typeof SignoffStatuses)[number];

/**
 * A human sign-off a run waits for before it may lose or replace data. One row
 * per gate of a run (`id` = `<workflowId>/<gate>`). The four-eyes rule: the
 * approver is never `requestedBy`. The written statement is kept here, in the
 * audit trail and in the run's history.
 */
export const signoffs = pgTable(
  'signoffs',
  {
    id: text('id').primaryKey(),
    workflowId: text('workflow_id').notNull(),
    runbook: text('runbook').notNull(),
    instanceIds: jsonb('instance_ids').$type<string[]>().notNull(),
    requestedBy: text('requested_by').notNull(),
    /** What the approver is asked to allow, in one sentence. */
    summary: text('summary').notNull(),
    /** What each instance could lose, when the runbook can say (failover lag, say). */
    risk: jsonb('risk').$type<Record<string, unknown>>(),
    status: text('status', { enum: SignoffStatuses }).notNull(),
    deadline: timestamp('deadline', { withTimezone: true }).notNull(),
    decidedBy: text('decided_by'),
    statement: text('statement'),
    decidedAt: timestamp('decided_at', { withTimezone: true }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('signoffs_status_created').on(t.status, t.createdAt), index('signoffs_workflow').on(t.workflowId)],
);
export type SignoffRow = typeof signoffs.$inferSelect;
