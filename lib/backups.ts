import { eq, sql } from 'drizzle-orm';
import type { Database } from '../db/client.js';
import { backups, type BackupRow } from '../db/schema/index.js';
import { audit } from './audit.js';
import type { BackupStore } from './storage/backup-store.js';

/**
 * Deletes a backup: archive, manifest and row, audited as `actor`. The row is
 * marked `deleting` (and due) first, so a crash between removing the files
 * and the row leaves a row that retention finishes. Idempotent.
 */
export async function deleteBackup(db: Database, store: BackupStore, b: BackupRow, actor: string): Promise<void> {
  await db.update(backups).set({ status: 'deleting', expiresAt: sql`least(${backups.expiresAt}, now())` }).where(eq(backups.id, b.id));
  await store.remove(b.objectKey);
  await db.transaction(async (tx) => {
    const gone = await tx.delete(backups).where(eq(backups.id, b.id)).returning({ id: backups.id });
    if (gone.length) await audit(tx, { actor, action: 'backup.delete', instanceId: b.instanceId, subject: b.id, details: { label: b.label, objectKey: b.objectKey } });
  });
}
