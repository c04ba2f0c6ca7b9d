import { ApplicationFailure, Context } from '@temporalio/activity';
import { and, desc, eq, gt, inArray, lte, sql } from 'drizzle-orm';
import { backupSchedules, backups, instances, type BackupKind, type BackupRow, type BackupStatus } from '../db/schema/index.js';
import { isRunRunning } from '../lib/runs.js';
import { audit } from '../lib/audit.js';
import { deleteBackup } from '../lib/backups.js';
import { BackupStore, type StagedArchive } from '../lib/storage/backup-store.js';
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
      await region(deps, row.region).backups.remove(row.objectKey);
      await audit(tx, { actor: 'system:runbook', action: 'backup.failed', instanceId: row.instanceId, subject: row.id, details: { reason: reason.slice(0, 500) } });
      return 'failed';
    });
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
      // Object names have one-second resolution: if two backups of an instance land in one second, the later takes the next free second.
      for (let shift = 0; ; shift++) {
        const objectKey = BackupStore.objectKey(inst.name, new Date(createdAt.getTime() + shift * 1000));
        try {
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
              objectKey,
              edition: inst.edition,
              workflowId: callerWorkflowId(),
              createdAt,
              expiresAt: new Date(createdAt.getTime() + retentionDays * DAY_MS),
            })
            .onConflictDoNothing({ target: backups.id });
          break;
        } catch (err) {
          const cause = (err as { cause?: { code?: string; constraint_name?: string } }).cause ?? (err as { code?: string; constraint_name?: string });
          if (shift >= 60 || cause.code !== '23505' || cause.constraint_name !== 'backups_region_object_key') throw err;
        }
      }
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
      let archive: StagedArchive | undefined;
      try {
        // pg_dump writes the file itself (no copy through the worker); progress is the file's growing size.
        archive = await store.stageArchiveFile(row.objectKey, (fd) => engine.dump(database, { fd, fence: row.objectKey }), {
          signal: ctx.cancellationSignal,
          progressEveryMs: HEARTBEAT_EVERY_MS / 2,
          onProgress: (p) => {
            if (p.phase === 'writing') progress.bytesWritten = p.bytes;
            else progress.phase = 'verifying';
          },
        });
        progress.phase = 'recording';
        ctx.heartbeat(progress);
        const staged = archive;
        // The commit is fenced by the row lock: of two live attempts (a retry after a heartbeat
        // timeout, say), one commits and the other finds the row no longer pending and discards its copy.
        return await deps.db.transaction(async (tx) => {
          const [current] = await tx.select().from(backups).where(eq(backups.id, row.id)).for('update');
          if (current?.status === 'completed' && current.sizeBytes !== null && current.sha256) {
            await staged.staged.discard();
            return { sizeBytes: current.sizeBytes, sha256: current.sha256, objectKey: current.objectKey };
          }
          if (current?.status !== 'pending') {
            await staged.staged.discard();
            throw ApplicationFailure.nonRetryable(`backup ${row.id} is ${current?.status ?? 'gone'}; this attempt's archive was discarded`, FailureTypes.invalidState);
          }
          await staged.staged.commit();
          await store.writeManifest({
            formatVersion: 1,
            backupId: row.id,
            objectKey: row.objectKey,
            instanceId: row.instanceId,
            instance: row.instanceName,
            kind: row.kind,
            label: row.label,
            edition: row.edition,
            serverVersion,
            sizeBytes: staged.sizeBytes,
            sha256: staged.sha256,
            sequences,
            createdAt: row.createdAt.toISOString(),
            expiresAt: row.expiresAt.toISOString(),
          });
          await tx
            .update(backups)
            .set({ status: 'completed', sizeBytes: staged.sizeBytes, sha256: staged.sha256, sequences, serverVersion, completedAt: sql`now()`, error: null })
            .where(eq(backups.id, row.id));
          await audit(tx, { actor: row.kind === 'system' ? 'system:schedule' : 'system:runbook', action: 'backup.completed', instanceId: row.instanceId, subject: row.id, details: { objectKey: row.objectKey, sizeBytes: staged.sizeBytes, sha256: staged.sha256 } });
          return { sizeBytes: staged.sizeBytes, sha256: staged.sha256, objectKey: row.objectKey };
        });
      } catch (err) {
        // Only this attempt's own staged copy: never the committed object, which another attempt may own.
        await archive?.staged.discard();
        throw err;
      } finally {
        clearInterval(beat);
      }
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
      const doomed = expired.filter((b) => !(keepAtLeastOne && b.id === newest?.id));
      for (const b of doomed) {
        await deps.db.update(backups).set({ status: 'deleting' }).where(eq(backups.id, b.id));
        await region(deps, b.region).backups.remove(b.objectKey);
        await deps.db.transaction(async (tx) => {
          const gone = await tx.delete(backups).where(eq(backups.id, b.id)).returning({ id: backups.id });
          if (gone.length) await audit(tx, { actor: 'system:retention', action: 'backup.expired', instanceId: b.instanceId, subject: b.id, details: { kind: b.kind, label: b.label, objectKey: b.objectKey, expiresAt: b.expiresAt.toISOString() } });
        });
        Context.current().heartbeat({ deleted: b.id });
      }
      return doomed.map((b) => b.id);
    },

    /** Deletes backups (archive, manifest, row) a run made for itself, such as the swap's temporary ones. Idempotent. */
    async deleteBackups(input: { backupIds: string[] }): Promise<void> {
      for (const id of input.backupIds) {
        const [row] = await deps.db.select().from(backups).where(eq(backups.id, id));
        if (row) await deleteBackup(deps.db, region(deps, row.region).backups, row, 'system:runbook');
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
