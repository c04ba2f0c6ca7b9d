import { bigserial, index, jsonb, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/** The audit trail: every change, who made it and when. Append-only. */
export const auditEvents = pgTable(
  'audit_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    at: timestamp('at', { withTimezone: true }).notNull().defaultNow(),
    actor: text('actor').notNull(),
    action: text('action').notNull(),
    instanceId: text('instance_id'),
    subject: text('subject'),
    details: jsonb('details').$type<Record<string, unknown>>(),
  },
  (t) => [index('audit_instance_at').on(t.instanceId, t.at), index('audit_actor_at').on(t.actor, t.at)],
);
export type AuditEventRow = typeof auditEvents.$inferSelect;
