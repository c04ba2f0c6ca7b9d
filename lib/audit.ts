import type { Database } from '../db/client.js';
import { auditEvents } from '../db/schema/index.js';

/** One entry of the audit trail. */
export interface AuditEntry {
  actor: string;
  action: string;
  instanceId?: string | null;
  subject?: string | null;
  details?: Record<string, unknown>;
}

/** Appends an entry to the audit trail; pass a transaction to make it part of the change it records. */
export async function audit(db: Database, entry: AuditEntry): Promise<void> {
  await db.insert(auditEvents).values({
    actor: entry.actor,
    action: entry.action,
    instanceId: entry.instanceId ?? null,
    subject: entry.subject ?? null,
    details: entry.details ?? null,
  });
}
