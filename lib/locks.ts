import { and, eq, isNull, sql, type SQL } from 'drizzle-orm';
import type { Database } from '../db/client.js';
import { instances } from '../db/schema/index.js';

/** Who holds an instance. */
export interface LockHolder {
  workflowId: string;
  runbook: string;
}

/** Outcome of trying to take an instance's runbook lock. */
export type LockResult = { ok: true; newlyAcquired: boolean } | { ok: false; reason: 'not_found' } | { ok: false; reason: 'busy'; holder: LockHolder };

/**
 * A lock this young is trusted even if its run is not visible yet: the API
 * takes the lock just before it starts the run.
 */
export const LOCK_GRACE_MS = 60_000;

/**
 * Takes the instance's lock for `workflowId`. Re-entrant for the same run
 * (`newlyAcquired` false), so only the caller that took it gives it back.
 * A lock whose run has ended (crashed, terminated) is taken over, so a killed
 * run never blocks an instance for ever.
 */
export async function acquireLock(
  db: Database,
  input: { instanceId: string; workflowId: string; runbook: string },
  isRunRunning: (workflowId: string) => Promise<boolean>,
): Promise<LockResult> {
  const take = (holderCondition: SQL | undefined) =>
    db
      .update(instances)
      .set({ lockedByRun: input.workflowId, lockedRunbook: input.runbook, lockedAt: sql`now()`, updatedAt: sql`now()` })
      .where(and(eq(instances.id, input.instanceId), holderCondition))
      .returning({ id: instances.id });

  if ((await take(isNull(instances.lockedByRun))).length) return { ok: true, newlyAcquired: true };

  const [row] = await db.select().from(instances).where(eq(instances.id, input.instanceId));
  if (row?.lockedByRun === input.workflowId) return { ok: true, newlyAcquired: false };
  if (!row) return { ok: false, reason: 'not_found' };
  if (!row.lockedByRun) return acquireLock(db, input, isRunRunning);
  const holder = { workflowId: row.lockedByRun, runbook: row.lockedRunbook ?? 'unknown' };
  const young = row.lockedAt && Date.now() - row.lockedAt.getTime() < LOCK_GRACE_MS;
  if (young || (await isRunRunning(holder.workflowId))) return { ok: false, reason: 'busy', holder };
  if ((await take(eq(instances.lockedByRun, holder.workflowId))).length) return { ok: true, newlyAcquired: true };
  return acquireLock(db, input, isRunRunning);
}

/**
 * Releases the lock if `workflowId` holds it; otherwise does nothing. The
 * commit does not wait for its WAL flush: a release lost in a crash leaves a
 * lock whose run has ended, which the next taker takes over (acquireLock), so
 * a run's end never queues behind a checkpoint (a restore's or a drop's).
 */
export async function releaseLock(db: Database, instanceId: string, workflowId: string): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.execute(sql`SET LOCAL synchronous_commit TO OFF`);
    await tx
      .update(instances)
      .set({ lockedByRun: null, lockedRunbook: null, lockedAt: null, updatedAt: sql`now()` })
      .where(and(eq(instances.id, instanceId), eq(instances.lockedByRun, workflowId)));
  });
}
