import type { Client } from '@temporalio/client';
import { and, eq, sql } from 'drizzle-orm';
import type { Database } from '../db/client.js';
import { backupCopies, backupReaders, backups, type BackupRow } from '../db/schema/index.js';
import { audit } from './audit.js';
import { isRunRunning } from './runs.js';
import type { BackupRef, BackupStore } from './storage/backup-store.js';

/** A backup on legal hold, or under a store retention lock until a later date: it cannot be removed yet. */
export class BackupHeldError extends Error {}

/** Where a backup row's objects are. */
export function backupRef(b: Pick<BackupRow, 'layout' | 'objectKey' | 'archiveKey'>): BackupRef {
  return { layout: b.layout, objectKey: b.objectKey, archiveKey: b.archiveKey };
}

/** Why a backup cannot be removed now (legal hold, store lock), or null. */
export function removalRefusal(b: Pick<BackupRow, 'id' | 'heldAt' | 'heldBy' | 'holdReason' | 'lockedUntil' | 'lockMode'>, now = new Date()): string | null {
  if (b.heldAt) return `backup ${b.id} is on legal hold (set by ${b.heldBy ?? 'unknown'}: ${(b.holdReason ?? '').slice(0, 200)}); an approver other than the one who set it must release it first`;
  if (b.lockedUntil && b.lockedUntil > now) return `backup ${b.id} is under a ${b.lockMode ?? ''} retention lock of its store until ${b.lockedUntil.toISOString()}; it cannot be removed before then`;
  return null;
}

/**
 * Deletes a backup everywhere (its copies in other regions' stores, then its
 * home objects, then the row), audited as `actor`. Refused with
 * BackupHeldError before anything changes when the backup is held or locked.
 * The row is marked `deleting` (and due) first, so a crash half way leaves a
 * row that retention finishes. Idempotent.
 */
export async function deleteBackup(db: Database, storeOf: (region: string) => BackupStore, b: BackupRow, actor: string, action = 'backup.delete'): Promise<void> {
  const refused = removalRefusal(b);
  if (refused) throw new BackupHeldError(refused);
  const copies = await db.select().from(backupCopies).where(eq(backupCopies.backupId, b.id));
  // A copy in a store that locks objects until the backup's expiry cannot go before then: refuse before anything changes.
  const locked = copies.find((c) => c.status !== 'failed' && storeOf(c.region).locksInStore && b.expiresAt > new Date());
  if (locked) throw new BackupHeldError(`backup ${b.id} has a copy in region ${locked.region} whose store locks it until ${b.expiresAt.toISOString()}; it cannot be removed before then`);
  const marked = await db
    .update(backups)
    .set({ status: 'deleting', expiresAt: sql`least(${backups.expiresAt}, now())` })
    .where(and(eq(backups.id, b.id), sql`${backups.heldAt} IS NULL`))
    .returning({ id: backups.id });
  if (!marked.length) {
    const [now] = await db.select().from(backups).where(eq(backups.id, b.id));
    if (!now) return;
    throw new BackupHeldError(removalRefusal(now) ?? `backup ${b.id} changed while it was being deleted`);
  }
  const ref = backupRef(b);
  for (const c of copies) await storeOf(c.region).remove(ref);
  await storeOf(b.region).remove(ref);
  await db.transaction(async (tx) => {
    const gone = await tx.delete(backups).where(eq(backups.id, b.id)).returning({ id: backups.id });
    await tx.delete(backupReaders).where(eq(backupReaders.backupId, b.id));
    if (gone.length) {
      await audit(tx, { actor, action, instanceId: b.instanceId, subject: b.id, details: { kind: b.kind, label: b.label, objectKey: b.objectKey, expiresAt: b.expiresAt.toISOString(), copies: copies.map((c) => c.region) } });
    }
  });
}

/** Runs reading a backup right now (restores streaming or spooling it). */
export async function liveReaders(db: Database, temporal: Client, backupId: string): Promise<string[]> {
  const rows = await db.select().from(backupReaders).where(eq(backupReaders.backupId, backupId));
  const live: string[] = [];
  for (const r of rows) if (await isRunRunning(temporal, r.readerId)) live.push(r.readerId);
  return live;
}

/** Records that run `readerId` reads a backup, so retention leaves it alone meanwhile. Idempotent. */
export async function addReader(db: Database, backupId: string, readerId: string): Promise<void> {
  await db.insert(backupReaders).values({ backupId, readerId }).onConflictDoNothing();
}

/** Forgets a reader. Idempotent. */
export async function removeReader(db: Database, backupId: string, readerId: string): Promise<void> {
  await db.delete(backupReaders).where(and(eq(backupReaders.backupId, backupId), eq(backupReaders.readerId, readerId)));
}
