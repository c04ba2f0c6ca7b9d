import { ApplicationFailure } from '@temporalio/activity';
import { and, eq, gt, isNotNull, sql } from 'drizzle-orm';
import { backupCopies, backups, type BackupEncryption } from '../db/schema/index.js';
import { audit } from '../lib/audit.js';
import { backupRef } from '../lib/backups.js';
import { KeyringError, rewrap, type Keyring, type WrappedKey } from '../lib/storage/keyring.js';
import { FailureTypes } from '../workflows/contract.js';
import { region, type ActivityDeps, type RegionHandles } from './deps.js';

/**
 * The worker's keyring. Every region's BackupStore is built with the same
 * keyring (lib/regions.ts openRegions), so the first region's is the one.
 */
export function keyringOf(regions: Map<string, RegionHandles>): Keyring {
  const first = regions.values().next().value;
  if (!first) throw new Error('no region is configured: there is no keyring');
  return first.backups.opts.keyring;
}

/** A page of backups to rewrap, and the key they move to. */
export interface RewrapPage {
  /** The keyring's active key id: what every backup is rewrapped under (null: the keyring is empty). */
  activeKeyId: string | null;
  /** Completed, encrypted backups whose data key is wrapped under another key, in id order. */
  ids: string[];
}

/** What rewrapping one backup did. */
export interface RewrapOutcome {
  backupId: string;
  /** rewrapped: now under the active key; already: it was; skipped: nothing to rewrap (gone, not completed, in clear); failed: a key problem (see error). */
  outcome: 'rewrapped' | 'already' | 'skipped' | 'failed';
  /** The key it was under. */
  fromKeyId: string | null;
  /** The key it is under now (the active key, once rewrapped). */
  toKeyId: string | null;
  /** Regions whose manifest now names the new key. */
  regions?: string[];
  error?: string;
}

/**
 * Key rotation activities: list what is not under the active key, and rewrap
 * one backup's data key under it. The archive itself is never re-encrypted:
 * only the wrapped data key in the manifests and the catalog changes.
 */
export function keyActivities(deps: ActivityDeps) {
  const keyring = () => keyringOf(deps.regions);

  return {
    /**
     * Completed, encrypted backups whose key id is not the active one, in id
     * order after `after`, at most `limit`.
     */
    async listBackupsToRewrap(input: { after: string | null; limit: number }): Promise<RewrapPage> {
      const activeKeyId = keyring().activeKeyId;
      if (activeKeyId === null) return { activeKeyId, ids: [] };
      const rows = await deps.db
        .select({ id: backups.id })
        .from(backups)
        .where(
          and(
            eq(backups.status, 'completed'),
            isNotNull(backups.encryption),
            sql`${backups.encryption}->>'keyId' IS DISTINCT FROM ${activeKeyId}`,
            input.after === null ? undefined : gt(backups.id, input.after),
          ),
        )
        .orderBy(backups.id)
        .limit(input.limit);
      return { activeKeyId, ids: rows.map((r) => r.id) };
    },

    /**
     * Rewraps a backup's data key under the keyring's active key: unwrap with
     * the key it names, wrap with the active one, rewrite the manifest in the
     * home store and in every region with a verified copy (a copy still being
     * written, too, where it is there), then the catalog row, audited as
     * `backup.rekeyed`. Under the row lock, so it never interleaves with a
     * delete, a hold or another rotation. Idempotent: a backup already under
     * the active key is left alone; a crash half way is redone from the
     * row's wrapped key (any wrapping of the same data key decrypts the archive).
     * A key the keyring lacks (or that does not match) is reported as
     * `failed`, naming the key id, not retried.
     */
    async rewrapBackupKey(input: { backupId: string }): Promise<RewrapOutcome> {
      const kr = keyring();
      const toKeyId = kr.activeKeyId;
      if (toKeyId === null) throw ApplicationFailure.nonRetryable('the keyring is empty: there is no active backup key to rewrap under (BACKUP_KEY_ACTIVE)', FailureTypes.keyUnavailable);
      return deps.db.transaction(async (tx): Promise<RewrapOutcome> => {
        const [row] = await tx.select().from(backups).where(eq(backups.id, input.backupId)).for('update');
        if (!row) return { backupId: input.backupId, outcome: 'skipped', fromKeyId: null, toKeyId: null, error: 'the backup no longer exists' };
        const enc = row.encryption;
        if (!enc) return { backupId: row.id, outcome: 'skipped', fromKeyId: null, toKeyId: null, error: 'the archive is stored in clear' };
        if (enc.keyId === toKeyId) return { backupId: row.id, outcome: 'already', fromKeyId: enc.keyId, toKeyId };
        if (row.status !== 'completed') return { backupId: row.id, outcome: 'skipped', fromKeyId: enc.keyId, toKeyId: null, error: `the backup is ${row.status}` };
        let wrapped: WrappedKey;
        try {
          wrapped = await rewrap(kr, { alg: 'A256GCM', keyId: enc.keyId, wrapped: enc.wrappedKey }, toKeyId);
        } catch (err) {
          if (err instanceof KeyringError) return { backupId: row.id, outcome: 'failed', fromKeyId: enc.keyId, toKeyId: null, error: err.message };
          throw err;
        }
        const next: BackupEncryption = { alg: enc.alg, keyId: wrapped.keyId, wrappedKey: wrapped.wrapped };
        const ref = backupRef(row);
        const copies = await tx.select().from(backupCopies).where(eq(backupCopies.backupId, row.id));
        const targets: { name: string; required: boolean }[] = [{ name: row.region, required: true }];
        for (const c of copies) if (c.region !== row.region && c.status !== 'failed') targets.push({ name: c.region, required: c.status === 'verified' });
        const done: string[] = [];
        for (const t of targets) {
          try {
            const store = region(deps, t.name).backups;
            await store.updateManifest(ref, { encryption: next }, store.retentionFor(row.expiresAt));
            // A held backup's new manifest (a new version, in a versioned bucket) is held as well.
            if (row.heldAt) await store.setLegalHold(ref, true);
            done.push(t.name);
          } catch (err) {
            if (t.required) throw err;
          }
        }
        await tx.update(backups).set({ encryption: next }).where(eq(backups.id, row.id));
        await audit(tx, { actor: 'system:runbook', action: 'backup.rekeyed', instanceId: row.instanceId, subject: row.id, details: { fromKeyId: enc.keyId, toKeyId: next.keyId, regions: done } });
        return { backupId: row.id, outcome: 'rewrapped', fromKeyId: enc.keyId, toKeyId: next.keyId, regions: done };
      });
    },
  };
}
