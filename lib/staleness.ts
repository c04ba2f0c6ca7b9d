import { and, eq, isNotNull, isNull } from 'drizzle-orm';
import type { Database } from '../db/client.js';
import { instances, type InstanceRow } from '../db/schema/index.js';
import { audit } from './audit.js';

/** Whether an instance has gone too long without a good backup, as the API and the metrics show it. */
export interface Staleness {
  /** When its newest completed backup completed; null: none yet. */
  lastGoodBackupAt: string | null;
  /** Seconds since then (since the instance was created, when it has none); null while provisioning. */
  backupAgeSeconds: number | null;
  /** The threshold that applies: the instance's own, or the default. */
  staleAfterHours: number;
  stale: boolean;
}

type Row = Pick<InstanceRow, 'lastGoodBackupAt' | 'staleAfterHours' | 'createdAt' | 'state'>;

/**
 * Stale: the newest good backup (or, with none, the instance's creation) is
 * older than the instance's threshold (the default when it has none). An
 * instance still being provisioned is never stale.
 */
export function stalenessOf(r: Row, defaultHours: number, now: number = Date.now()): Staleness {
  const hours = r.staleAfterHours ?? defaultHours;
  if (r.state === 'provisioning') return { lastGoodBackupAt: null, backupAgeSeconds: null, staleAfterHours: hours, stale: false };
  const since = (r.lastGoodBackupAt ?? r.createdAt).getTime();
  const age = Math.max(0, (now - since) / 1000);
  return { lastGoodBackupAt: r.lastGoodBackupAt?.toISOString() ?? null, backupAgeSeconds: age, staleAfterHours: hours, stale: age > hours * 3600 };
}

/**
 * Marks instances that became stale (`staleSince`, audit `instance.stale`) and
 * those that are fresh again (audit `instance.fresh`), so both are events on
 * `GET /v1/events`. Each change is a conditional update and its audit in one
 * transaction: two checkers running at once send one event. Returns the
 * instance ids that changed.
 */
export async function recordStaleness(db: Database, rows: InstanceRow[], defaultHours: number, now = new Date()): Promise<{ stale: string[]; fresh: string[] }> {
  const out = { stale: [] as string[], fresh: [] as string[] };
  for (const listed of rows) {
    if (stalenessOf(listed, defaultHours, now.getTime()).stale === (listed.staleSince !== null)) continue;
    await db.transaction(async (tx) => {
      // Judged again on the row as it is now, under its lock: a backup may have completed since the list was read.
      const [inst] = await tx.select().from(instances).where(eq(instances.id, listed.id)).for('update');
      if (!inst) return;
      const s = stalenessOf(inst, defaultHours, now.getTime());
      if (s.stale === (inst.staleSince !== null)) return;
      const changed = await tx
        .update(instances)
        .set({ staleSince: s.stale ? now : null })
        .where(and(eq(instances.id, inst.id), s.stale ? isNull(instances.staleSince) : isNotNull(instances.staleSince)))
        .returning({ id: instances.id });
      if (!changed.length) return;
      const details = { lastGoodBackupAt: s.lastGoodBackupAt, staleAfterHours: s.staleAfterHours, backupAgeSeconds: Math.round(s.backupAgeSeconds ?? 0) };
      await audit(tx, { actor: 'system:monitor', action: s.stale ? 'instance.stale' : 'instance.fresh', instanceId: inst.id, subject: inst.name, details });
      (s.stale ? out.stale : out.fresh).push(inst.id);
    });
  }
  return out;
}
