import { ApplicationFailure, Context } from '@temporalio/activity';
import { and, desc, eq, gt, inArray, isNull, lte, sql } from 'drizzle-orm';
import { backupCopies, backupSchedules, backups, instances, type BackupKind, type BackupRow, type BackupStatus } from '../db/schema/index.js';
import { isRunRunning } from '../lib/runs.js';
import { audit } from '../lib/audit.js';
import { BackupHeldError, backupRef, deleteBackup, liveReaders } from '../lib/backups.js';
import { BackupStore, type WrittenArchive } from '../lib/storage/backup-store.js';
import { ObjectLockedError } from '../lib/storage/blob-store.js';
import { FailureTypes } from '../workflows/contract.js';
import { callerWorkflowId, loadInstance, region, type ActivityDeps } from './deps.js';

const DAY_MS = 24 * 60 * 60 * 1000;
const HEARTBEAT_EVERY_MS = 2_000;

/** Progress a running dump reports in its heartbeats, shown by the API as the run's progress. */
export interface DumpProgress {
  phase: 'dumping' | 'verifying' | 'recording';
  bytesWritten: number;
  databaseBytes: number;
}

/** Input of beginBackup. `retentionDays` is taken from the instance's schedule for system backups. */
export interface BeginBackupInput {
  backupId: string;
  instanceId: string;
  kind: BackupKind;
  label: string | null;
  retentionDays?: number;
  /** Dump this database in this region instead of the instance's own (a failback keeps the old primary). */
  source?: { region: string; database: string };
}

/** Backup and retention activities. Each is idempotent: a retry or re-run converges on the same end state. */
export function backupActivities(deps: ActivityDeps) {
  async function getBackup(backupId: string): Promise<BackupRow> {
    const [row] = await deps.db.select().from(backups).where(eq(backups.id, backupId));
    if (!row) throw ApplicationFailure.nonRetryable(`backup ${backupId} does not exist`, FailureTypes.backupNotFound);
    return row;
  }

  /**
   * Fails a backup that is not completed and removes its objects, under the
   * row lock, so it cannot interleave with an attempt committing the archive.
   */
  async function markFailed(backupId: string, reason: string): Promise<BackupStatus | 'absent'> {
    return deps.db.transaction(async (tx) => {
      const [row] = await tx.select().from(backups).where(eq(backups.id, backupId)).for('update');
      if (!row) return 'absent';
      if (row.status === 'completed' || row.status === 'failed') return row.status;
      await tx.update(backups).set({ status: 'failed', error: reason.slice(0, 2000) }).where(eq(backups.id, row.id));
      await region(deps, row.region).backups.remove(backupRef(row));
      await audit(tx, { actor: 'system:runbook', action: 'backup.failed', instanceId: row.instanceId, subject: row.id, details: { reason: reason.slice(0, 500) } });
      return 'failed';
    });
  }

  /**
   * Copies a completed backup to the paired region's store and reads the copy
   * back; records it `verified` (and the backup good) or leaves the error on
   * the copy row and throws. A verified copy is left alone.
   */
  async function copyOffsite(row: BackupRow, onBytes: (bytes: number) => void): Promise<{ region: string; status: 'verified'; sizeBytes: number }> {
    if (row.status !== 'completed' || row.sizeBytes === null || !row.sha256) {
      throw ApplicationFailure.nonRetryable(`backup ${row.id} is ${row.status}, not completed: there is nothing to copy`, FailureTypes.invalidState);
    }
    const home = region(deps, row.region);
    const target = region(deps, home.pair);
    const [known] = await deps.db.select().from(backupCopies).where(and(eq(backupCopies.backupId, row.id), eq(backupCopies.region, target.name)));
    if (known?.status === 'verified') return { region: target.name, status: 'verified', sizeBytes: known.sizeBytes ?? row.sizeBytes };
    await deps.db
      .insert(backupCopies)
      .values({ backupId: row.id, region: target.name, storeKind: target.backups.kind, status: 'pending', attempts: 1 })
      .onConflictDoUpdate({ target: [backupCopies.backupId, backupCopies.region], set: { status: 'pending', attempts: sql`${backupCopies.attempts} + 1`, updatedAt: sql`now()` } });
    try {
      const ref = backupRef(row);
      const copied = await home.backups.copyTo(target.backups, ref, target.backups.retentionFor(row.expiresAt), onBytes);
      if (copied.sha256 !== row.sha256 || copied.sizeBytes !== row.sizeBytes) {
        throw new Error(`the copy of backup ${row.id} in region ${target.name} read back as ${copied.sizeBytes} bytes with sha256 ${copied.sha256}, not ${row.sizeBytes} bytes with ${row.sha256}; it is copied again`);
      }
      if (row.heldAt) await target.backups.setLegalHold(ref, true);
      await deps.db.transaction(async (tx) => {
        await tx.update(backupCopies).set({ status: 'verified', sizeBytes: copied.sizeBytes, sha256: copied.sha256, verifiedAt: sql`now()`, error: null, updatedAt: sql`now()` }).where(and(eq(backupCopies.backupId, row.id), eq(backupCopies.region, target.name)));
        await tx.update(backups).set({ offsiteVerifiedAt: sql`now()` }).where(eq(backups.id, row.id));
        await audit(tx, { actor: 'system:runbook', action: 'backup.copied', instanceId: row.instanceId, subject: row.id, details: { region: target.name, storeKind: target.backups.kind, sizeBytes: copied.sizeBytes } });
      });
      return { region: target.name, status: 'verified', sizeBytes: copied.sizeBytes };
    } catch (err) {
      await deps.db.update(backupCopies).set({ error: (err instanceof Error ? err.message : String(err)).slice(0, 2000), updatedAt: sql`now()` }).where(and(eq(backupCopies.backupId, row.id), eq(backupCopies.region, target.name)));
      throw err;
    }
  }

  return {
    /**
     * Records the backup as `pending` under its deterministic id and fixes its
     * object key. A retry finds the row already there and returns it unchanged.
     */
    async beginBackup(input: BeginBackupInput): Promise<{ backupId: string; objectKey: string }> {
      const [existing] = await deps.db.select().from(backups).where(eq(backups.id, input.backupId));
      if (existing) return { backupId: existing.id, objectKey: existing.objectKey };
      const inst = await loadInstance(deps, input.instanceId);
      let retentionDays = input.retentionDays;
      if (retentionDays === undefined) {
        const [policy] = await deps.db.select().from(backupSchedules).where(eq(backupSchedules.instanceId, input.instanceId));
        retentionDays = policy?.retentionDays ?? 3;
      }
      const createdAt = new Date();
      await deps.db
        .insert(backups)
        .values({
          id: input.backupId,
          instanceId: inst.id,
          instanceName: inst.name,
          region: input.source?.region ?? inst.activeRegion,
          sourceDatabase: input.source?.database ?? null,
          kind: input.kind,
          label: input.label,
          status: 'pending',
          // Keyed by the backup's own id: two backups never collide, and nobody looks for a free name.
          objectKey: BackupStore.folder(inst.name, input.backupId),
          layout: 'v2',
          edition: inst.edition,
          workflowId: callerWorkflowId(),
          createdAt,
          expiresAt: new Date(createdAt.getTime() + retentionDays * DAY_MS),
        })
        .onConflictDoNothing({ target: backups.id });
      const row = await getBackup(input.backupId);
      return { backupId: row.id, objectKey: row.objectKey };
    },

    /**
     * Has pg_dump write the archive straight into a staged file of the
     * region's blob store, then hashes and fsyncs it, writes the manifest and
     * marks the row `completed`, all under the row lock. A completed backup is
     * returned as is; a retried attempt stages its own file (removing those of
     * killed attempts, and stopping their pg_dump), so a crash never leaves two
     * archives or an orphaned partial write.
     */
    async dumpBackup(input: { backupId: string }): Promise<{ sizeBytes: number; sha256: string; objectKey: string }> {
      const ctx = Context.current();
      const row = await getBackup(input.backupId);
      if (row.status === 'completed' && row.sizeBytes !== null && row.sha256) {
        return { sizeBytes: row.sizeBytes, sha256: row.sha256, objectKey: row.objectKey };
      }
      if (row.status !== 'pending') {
        throw ApplicationFailure.nonRetryable(`backup ${row.id} is ${row.status}, not pending`, FailureTypes.invalidState);
      }
      const inst = await loadInstance(deps, row.instanceId);
      const { engine, backups: store } = region(deps, row.region);
      const database = row.sourceDatabase ?? inst.databaseName;
      if (!(await engine.databaseExists(database))) {
        throw ApplicationFailure.nonRetryable(
          `database ${database} of instance ${inst.name} does not exist in region ${row.region}; reset or re-provision the instance`,
          FailureTypes.invalidState,
        );
      }

      // Read before the dump: a lower bound of what the archive holds, so a restore warns rather than misses a possible duplicate.
      const [sequences, serverVersion, databaseBytes] = await Promise.all([engine.sequences(database), engine.serverVersion(), engine.sizeBytes(database)]);
      const progress: DumpProgress = { phase: 'dumping', bytesWritten: 0, databaseBytes };
      ctx.heartbeat(progress);
      const beat = setInterval(() => ctx.heartbeat(progress), HEARTBEAT_EVERY_MS);
      let written: WrittenArchive | undefined;
      try {
        // What killed attempts left (unfinished uploads, uncommitted archives) goes first, under the row lock: never racing a commit.
        await deps.db.transaction(async (tx) => {
          const [current] = await tx.select().from(backups).where(eq(backups.id, row.id)).for('update');
          if (current?.status === 'pending') await store.clearUncommitted(row.objectKey);
        });
        // pg_dump streams into the store (multipart upload, block list, temp file): the dump never sits whole anywhere.
        const dump = await engine.dump(database, { fence: row.objectKey });
        const stop = () => dump.kill();
        ctx.cancellationSignal.addEventListener('abort', stop);
        try {
          written = await store.writeArchive(row.objectKey, dump.stream!, {
            complete: dump.done,
            signal: ctx.cancellationSignal,
            retention: store.retentionFor(row.expiresAt),
            onProgress: (bytes) => (progress.bytesWritten = bytes),
          });
        } catch (err) {
          dump.kill();
          if (ctx.cancellationSignal.aborted) await ctx.cancelled;
          throw err;
        } finally {
          ctx.cancellationSignal.removeEventListener('abort', stop);
        }
        progress.phase = 'recording';
        ctx.heartbeat(progress);
        const archive = written;
        // The commit is fenced by the row lock: of two live attempts (a retry after a heartbeat
        // timeout, say), one commits and the other finds the row no longer pending and removes its archive.
        return await deps.db.transaction(async (tx) => {
          const [current] = await tx.select().from(backups).where(eq(backups.id, row.id)).for('update');
          if (current?.status === 'completed' && current.sizeBytes !== null && current.sha256) {
            if (current.archiveKey !== archive.archiveKey) await store.discardArchive(archive.archiveKey);
            return { sizeBytes: current.sizeBytes, sha256: current.sha256, objectKey: current.objectKey };
          }
          if (current?.status !== 'pending') {
            await store.discardArchive(archive.archiveKey);
            throw ApplicationFailure.nonRetryable(`backup ${row.id} is ${current?.status ?? 'gone'}; this attempt's archive was removed`, FailureTypes.invalidState);
          }
          // A later attempt clears what earlier ones left: this attempt's archive must still be there, whole.
          if ((await store.sizeOf(archive.archiveKey)) !== archive.sizeBytes) throw new Error(`the archive ${archive.archiveKey} was removed or changed before it was committed; the attempt is retried`);
          const ref = { layout: 'v2' as const, objectKey: row.objectKey, archiveKey: archive.archiveKey };
          const retention = store.retentionFor(row.expiresAt);
          await store.writeManifest(ref, {
            formatVersion: 2,
            backupId: row.id,
            objectKey: row.objectKey,
            archiveKey: archive.archiveKey,
            instanceId: row.instanceId,
            instance: row.instanceName,
            kind: row.kind,
            label: row.label,
            edition: row.edition,
            serverVersion,
            sizeBytes: archive.sizeBytes,
            sha256: archive.sha256,
            encryption: archive.encryption,
            sequences,
            createdAt: row.createdAt.toISOString(),
            expiresAt: row.expiresAt.toISOString(),
          }, retention);
          await tx
            .update(backups)
            .set({
              status: 'completed',
              archiveKey: archive.archiveKey,
              encryption: archive.encryption,
              sizeBytes: archive.sizeBytes,
              sha256: archive.sha256,
              sequences,
              serverVersion,
              lockedUntil: retention?.retainUntil ?? null,
              lockMode: retention?.mode ?? null,
              completedAt: sql`now()`,
              error: null,
            })
            .where(eq(backups.id, row.id));
          await audit(tx, { actor: row.kind === 'system' ? 'system:schedule' : 'system:runbook', action: 'backup.completed', instanceId: row.instanceId, subject: row.id, details: { objectKey: row.objectKey, sizeBytes: archive.sizeBytes, sha256: archive.sha256, keyId: archive.encryption?.keyId ?? null } });
          return { sizeBytes: archive.sizeBytes, sha256: archive.sha256, objectKey: row.objectKey };
        });
      } catch (err) {
        // Only this attempt's own archive: never the committed one, which another attempt may own.
        if (written) {
          const mine = written.archiveKey;
          const [current] = await deps.db.select({ archiveKey: backups.archiveKey }).from(backups).where(eq(backups.id, row.id));
          if (current?.archiveKey !== mine) await store.discardArchive(mine).catch(() => {});
        }
        throw err;
      } finally {
        clearInterval(beat);
      }
    },

    /**
     * Copies a completed backup to the paired region's store and verifies the
     * copy there (the sha256 of the bytes read back). Idempotent: a verified
     * copy is left alone; a retry writes the copy again. A held backup's copy
     * is held too. The backup counts as good (fresh) only once this succeeded.
     */
    async copyBackupOffsite(input: { backupId: string }): Promise<{ region: string; status: 'verified'; sizeBytes: number }> {
      const ctx = Context.current();
      const row = await getBackup(input.backupId);
      const progress = { phase: 'copying', bytesCopied: 0, archiveBytes: row.sizeBytes ?? 0 };
      ctx.heartbeat(progress);
      const beat = setInterval(() => ctx.heartbeat(progress), HEARTBEAT_EVERY_MS);
      try {
        return await copyOffsite(row, (b) => (progress.bytesCopied = b));
      } finally {
        clearInterval(beat);
      }
    },

    /**
     * Tries again the offsite copies that failed, or never happened (a backup
     * completed more than `graceMinutes` ago with no verified copy), oldest
     * first, at most `limit`: the fleet-wide sweep calls it, so a copy that
     * stayed failed while the paired store was down catches up once it is back.
     */
    async retryOffsiteCopies(input: { limit: number; graceMinutes?: number }): Promise<{ verified: string[]; failed: string[] }> {
      const ctx = Context.current();
      const due = await deps.db
        .select()
        .from(backups)
        .where(and(eq(backups.status, 'completed'), isNull(backups.offsiteVerifiedAt), lte(backups.completedAt, sql`now() - make_interval(mins => ${input.graceMinutes ?? 30})`)))
        .orderBy(backups.completedAt)
        .limit(input.limit);
      const verified: string[] = [];
      const failed: string[] = [];
      for (const row of due) {
        if (!deps.regions.has(row.region)) continue;
        try {
          await copyOffsite(row, (bytes) => ctx.heartbeat({ backupId: row.id, bytes }));
          verified.push(row.id);
        } catch (err) {
          failed.push(row.id);
          const reason = err instanceof Error ? err.message : String(err);
          const pair = region(deps, row.region).pair;
          await deps.db
            .update(backupCopies)
            .set({ status: 'failed', error: reason.slice(0, 2000), updatedAt: sql`now()` })
            .where(and(eq(backupCopies.backupId, row.id), eq(backupCopies.region, pair)));
        }
        ctx.heartbeat({ done: row.id });
      }
      return { verified, failed };
    },

    /**
     * Records that a backup's offsite copy stayed failed after its retries: it
     * shows on the backup, raises `backup.copy-failed`, and the instance is not
     * fresh until a copy verifies. What the copy wrote is removed (it may be partial).
     */
    async failOffsiteCopy(input: { backupId: string; reason: string }): Promise<void> {
      const row = await getBackup(input.backupId);
      const home = region(deps, row.region);
      const target = region(deps, home.pair);
      await target.backups.remove(backupRef(row)).catch(() => {});
      await deps.db.transaction(async (tx) => {
        await tx
          .insert(backupCopies)
          .values({ backupId: row.id, region: target.name, storeKind: target.backups.kind, status: 'failed', error: input.reason.slice(0, 2000) })
          .onConflictDoUpdate({ target: [backupCopies.backupId, backupCopies.region], set: { status: 'failed', error: input.reason.slice(0, 2000), updatedAt: sql`now()` } });
        await audit(tx, { actor: 'system:runbook', action: 'backup.copy-failed', instanceId: row.instanceId, subject: row.id, details: { region: target.name, reason: input.reason.slice(0, 500) } });
      });
    },

    /**
     * Marks a backup `failed` with its reason and removes anything it stored.
     * Idempotent. A backup that completed meanwhile (a late attempt committed) is
     * left alone; the returned status tells the run which happened.
     */
    async failBackup(input: { backupId: string; reason: string }): Promise<BackupStatus | 'absent'> {
      return markFailed(input.backupId, input.reason);
    },

    /** The stored outcome of a completed backup, for a run whose dump attempt was lost after it committed. */
    async completedBackup(input: { backupId: string }): Promise<{ sizeBytes: number; sha256: string; objectKey: string }> {
      const row = await getBackup(input.backupId);
      if (row.status !== 'completed' || row.sizeBytes === null || !row.sha256) {
        throw ApplicationFailure.nonRetryable(`backup ${row.id} is ${row.status}, not completed`, FailureTypes.invalidState);
      }
      return { sizeBytes: row.sizeBytes, sha256: row.sha256, objectKey: row.objectKey };
    },

    /**
     * Deletes the instance's expired backups (archive, manifest, row), each in
     * the audit trail. With keep-at-least-one (the default) the newest completed
     * system backup (or, without one, the newest backup) is kept even when expired. A deletion interrupted half way is finished by the next run,
     * and a pending backup left by a run that ended is marked failed and cleared.
     */
    async applyRetention(input: { instanceId: string }): Promise<string[]> {
      const me = callerWorkflowId();
      const pending = await deps.db.select().from(backups).where(and(eq(backups.instanceId, input.instanceId), eq(backups.status, 'pending')));
      for (const b of pending) {
        // A pending backup whose run ended (terminated, killed) is abandoned: fail it and clear its files.
        if (b.workflowId === me || (await isRunRunning(deps.temporal, b.workflowId))) continue;
        await markFailed(b.id, `abandoned: run ${b.workflowId} ended before the backup completed`);
      }
      const [policy] = await deps.db.select().from(backupSchedules).where(eq(backupSchedules.instanceId, input.instanceId));
      const [stillThere] = await deps.db.select({ id: instances.id }).from(instances).where(eq(instances.id, input.instanceId));
      // Keep-at-least-one protects a live instance; a deleted instance's backups run out on their own dates.
      const keepAtLeastOne = stillThere ? (policy?.keepAtLeastOne ?? true) : false;
      // The backup kept is the newest system backup (operators can delete on-demand ones, so they cannot be
      // what keep-at-least-one relies on); only an instance with no system backup keeps its newest on-demand one.
      const [newest] = await deps.db
        .select({ id: backups.id })
        .from(backups)
        .where(and(eq(backups.instanceId, input.instanceId), eq(backups.status, 'completed')))
        .orderBy(desc(sql`${backups.kind} = 'system'`), desc(backups.createdAt))
        .limit(1);
      const expired = await deps.db
        .select()
        .from(backups)
        .where(
          and(
            eq(backups.instanceId, input.instanceId),
            inArray(backups.status, ['completed', 'failed', 'deleting']),
            lte(backups.expiresAt, sql`now()`),
          ),
        );
      // A held backup is never removed, nor is one a live run is reading (the next sweep takes it).
      const candidates = expired.filter((b) => !(keepAtLeastOne && b.id === newest?.id) && b.heldAt === null);
      const doomed: string[] = [];
      for (const b of candidates) {
        if ((await liveReaders(deps.db, deps.temporal, b.id)).length) continue;
        try {
          await deleteBackup(deps.db, (name) => region(deps, name).backups, b, 'system:retention', 'backup.expired');
          doomed.push(b.id);
        } catch (err) {
          // A store lock that still holds (a clock ahead of the store's) or a hold set meanwhile: the next sweep tries again.
          if (!(err instanceof ObjectLockedError) && !(err instanceof BackupHeldError)) throw err;
        }
        Context.current().heartbeat({ deleted: b.id });
      }
      return doomed;
    },

    /** Deletes backups (archive, manifest, row) a run made for itself, such as the swap's temporary ones. Idempotent. */
    async deleteBackups(input: { backupIds: string[] }): Promise<void> {
      for (const id of input.backupIds) {
        const [row] = await deps.db.select().from(backups).where(eq(backups.id, id));
        if (row) await deleteBackup(deps.db, (name) => region(deps, name).backups, row, 'system:runbook');
      }
    },

    /** Ids of instances that have backups, deleted instances included, in id order after `after`, at most `limit`. */
    async listInstancesWithBackups(input: { after: string | null; limit: number }): Promise<string[]> {
      const rows = await deps.db
        .selectDistinct({ id: backups.instanceId })
        .from(backups)
        .where(input.after === null ? undefined : gt(backups.instanceId, input.after))
        .orderBy(backups.instanceId)
        .limit(input.limit);
      return rows.map((r) => r.id);
    },

    /** Records the outcome of a scheduled run on the schedule, so its last status shows a failure and its reason. */
    async recordScheduleRun(input: { instanceId: string; status: 'completed' | 'failed'; error?: string }): Promise<void> {
      await deps.db
        .update(backupSchedules)
        .set({
          lastRunAt: sql`now()`,
          lastRunStatus: input.status,
          lastRunError: input.error?.slice(0, 2000) ?? null,
          lastRunWorkflowId: callerWorkflowId(),
        })
        .where(eq(backupSchedules.instanceId, input.instanceId));
    },
  };
}
