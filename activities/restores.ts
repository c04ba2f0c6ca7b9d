import { ApplicationFailure, Context } from '@temporalio/activity';
import { readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { and, eq, sql } from 'drizzle-orm';
import { backupCopies, backupReaders, backups, instances, type BackupRow } from '../db/schema/index.js';
import { addReader, backupRef, removeReader } from '../lib/backups.js';
import { KeyMismatchError, KeyUnavailableError } from '../lib/storage/keyring.js';
import { audit } from '../lib/audit.js';
import { isRunRunning } from '../lib/runs.js';
import { resumeInstance, servedBy, servingRefusal, suspendInstance } from '../lib/instances.js';
import { backupRefusal, targetRefusal } from '../lib/restore-rules.js';
import type { SequenceMarks } from '../lib/engine/types.js';
import { ArchiveIntegrityError, type BackupStore } from '../lib/storage/backup-store.js';
import { FailureTypes, type RestoreResult } from '../workflows/contract.js';
import { callerWorkflowId, loadInstance, region, type ActivityDeps } from './deps.js';
import { FaultPoints, noFaults } from './faults.js';
import { ownerTag, restoreNames } from './names.js';

/** How often a restore reads the staging copy's size and heartbeats (the SDK sends at most one heartbeat every 3 s). */
const HEARTBEAT_EVERY_MS = 1_000;

/** Progress a restore reports in its heartbeats, shown by the API as the run's progress. */
export interface RestoreProgress {
  phase: 'verifying' | 'restoring' | 'sequences';
  archiveBytes: number;
  /** Archive bytes checked so far (verifying). */
  bytesVerified: number;
  /** Size of the staging database so far: the bytes restored. */
  bytesRestored: number;
  jobs: number;
}

/** What a run needs to know about the target before it restores. */
type RestoreFacts = Pick<RestoreResult, 'sequencesBehind' | 'sequencesAdvanced' | 'databaseBytes'>;

/**
 * Restore, swap and reset activities. Each is idempotent: a retried attempt
 * starts its staging copy afresh, and the swap recognises a swap already made.
 * No activity ever drops or adopts a database its instance does not own.
 */
export function restoreActivities(deps: ActivityDeps) {
  const faults = deps.faults ?? noFaults;

  async function getBackup(backupId: string): Promise<BackupRow | undefined> {
    const [row] = await deps.db.select().from(backups).where(eq(backups.id, backupId));
    return row;
  }

  async function usableBackup(backupId: string): Promise<BackupRow> {
    const row = await getBackup(backupId);
    const refused = backupRefusal(row, backupId);
    if (refused) throw ApplicationFailure.nonRetryable(refused.message, FailureTypes.refused);
    return row!;
  }

  /** Drops `name` if it exists and belongs to the instance; refuses (non-retryable) to touch one it does not own. */
  async function dropOwned(engine: ReturnType<typeof region>['engine'], name: string, instanceId: string): Promise<void> {
    if (!(await engine.databaseExists(name))) return;
    if (!(await engine.dropDatabase(name, ownerTag(instanceId)))) {
      throw ApplicationFailure.nonRetryable(
        `database ${name} exists but does not belong to instance ${instanceId}; it was left untouched: an operator must remove or rename it`,
        FailureTypes.invalidState,
      );
    }
  }

  /** Refuses (non-retryable, before any change) when `current` exists on the server without the instance's tag. */
  async function ownCurrent(engine: ReturnType<typeof region>['engine'], name: string, instanceId: string): Promise<boolean> {
    if (!(await engine.databaseExists(name))) return false;
    const tag = await engine.ownerTag(name);
    if (tag !== ownerTag(instanceId)) {
      throw ApplicationFailure.nonRetryable(
        `database ${name} exists on this server but does not belong to instance ${instanceId} (owner: ${tag ?? 'none'}); nothing was touched: an operator must remove or rename it`,
        FailureTypes.refused,
      );
    }
    return true;
  }

  /**
   * The store to read a backup from: its home region's, or, when that store
   * cannot be reached (or lost the objects), a region holding a verified
   * offsite copy. Says which, so the run can warn.
   */
  async function readableSource(backup: BackupRow): Promise<{ store: BackupStore; region: string; offsite: boolean }> {
    const problems: string[] = [];
    const home = deps.regions.get(backup.region);
    if (home) {
      try {
        if (await home.backups.has(backup)) return { store: home.backups, region: home.name, offsite: false };
        problems.push(`region ${home.name}'s store (${home.backups.location}) no longer has it`);
      } catch (err) {
        problems.push(`region ${home.name}'s store (${home.backups.location}) cannot be reached: ${err instanceof Error ? err.message : String(err)}`.slice(0, 500));
      }
    }
    const copies = await deps.db.select().from(backupCopies).where(and(eq(backupCopies.backupId, backup.id), eq(backupCopies.status, 'verified')));
    for (const c of copies) {
      const r = deps.regions.get(c.region);
      if (!r) continue;
      try {
        if (await r.backups.has(backup)) return { store: r.backups, region: r.name, offsite: true };
        problems.push(`the offsite copy in region ${r.name} is gone`);
      } catch (err) {
        problems.push(`the offsite copy in region ${r.name} cannot be reached: ${err instanceof Error ? err.message : String(err)}`.slice(0, 500));
      }
    }
    if (!copies.length) problems.push('it has no verified offsite copy');
    throw new Error(`backup ${backup.id} cannot be read: ${problems.join('; ')}`);
  }

  /** Unwraps the archive's data key first: a missing or wrong key is refused, naming the key id, before anything is touched. */
  async function checkKey(store: BackupStore, backup: BackupRow): Promise<void> {
    if (!backup.encryption) return;
    try {
      await store.unwrap(backup.encryption);
    } catch (err) {
      if (err instanceof KeyUnavailableError || err instanceof KeyMismatchError) {
        throw ApplicationFailure.nonRetryable(`${err.message}; nothing was restored: configure key ${backup.encryption.keyId} in BACKUP_KEYS on the workers`, FailureTypes.keyUnavailable);
      }
      throw err;
    }
  }

  /** Where a parallel restore spools the archive: the worker's scratch disk, one file per run and backup. */
  function spoolFile(backupId: string): string {
    return path.join(deps.scratchDir ?? os.tmpdir(), `bcdr-spool.${callerWorkflowId()}.${backupId}`);
  }

  return {
    /**
     * Checks the restore's rules again inside the run (the API checked them
     * before starting it): the backup is completed and not expired; an
     * existing target is a sandbox of the same or a higher edition.
     */
    async checkRestore(input: { backupId: string; instanceId: string; createsInstance: boolean }): Promise<void> {
      const backup = await usableBackup(input.backupId);
      const inst = await loadInstance(deps, input.instanceId);
      if (input.createsInstance) return;
      const refused = targetRefusal(backup, inst);
      if (refused) throw ApplicationFailure.nonRetryable(refused.message, FailureTypes.refused);
      const serving = await servedBy(deps.db, inst.id);
      if (serving) throw ApplicationFailure.nonRetryable(servingRefusal(inst.name, serving.name), FailureTypes.refused);
    },

    /**
     * Pins the archive for this run and verifies it (sha256 and size against
     * the catalog and the manifest) before anything is touched.
     */
    async verifyArchive(input: { backupId: string }): Promise<{ region: string; offsite: boolean }> {
      const ctx = Context.current();
      const backup = await usableBackup(input.backupId);
      const progress: RestoreProgress = { phase: 'verifying', archiveBytes: backup.sizeBytes ?? 0, bytesVerified: 0, bytesRestored: 0, jobs: 0 };
      const beat = setInterval(() => ctx.heartbeat(progress), HEARTBEAT_EVERY_MS);
      try {
        const source = await readableSource(backup);
        await checkKey(source.store, backup);
        await addReader(deps.db, backup.id, callerWorkflowId());
        await source.store.verify(backupRef(backup), { sizeBytes: backup.sizeBytes ?? -1, sha256: backup.sha256 ?? '' }, (bytes) => (progress.bytesVerified = bytes));
        return { region: source.region, offsite: source.offsite };
      } catch (err) {
        if (err instanceof ArchiveIntegrityError) throw ApplicationFailure.nonRetryable(`${err.message}; nothing was restored`, FailureTypes.archiveIntegrity);
        throw err;
      } finally {
        clearInterval(beat);
      }
    },

    /**
     * Restores the archive into a fresh staging database on the target's
     * server (dropping a stale one a killed attempt left), compares its
     * sequences with what the target had issued, and with `advanceSequences`
     * moves them forward. The target itself is not touched.
     */
    async restoreToStaging(input: { backupId: string; instanceId: string; jobs: number; advanceSequences: boolean }): Promise<RestoreFacts> {
      const ctx = Context.current();
      const backup = await usableBackup(input.backupId);
      const inst = await loadInstance(deps, input.instanceId);
      const { engine } = region(deps, inst.activeRegion);
      const names = restoreNames(inst.databaseName);
      const progress: RestoreProgress = { phase: 'restoring', archiveBytes: backup.sizeBytes ?? 0, bytesVerified: backup.sizeBytes ?? 0, bytesRestored: 0, jobs: input.jobs };
      // Heartbeat from the start: dropping a stale multi-GB staging copy can outlast the heartbeat timeout.
      ctx.heartbeat(progress);
      let restoring = false;
      const beat = setInterval(() => {
        if (restoring) engine.sizeBytes(names.incoming).then((b) => (progress.bytesRestored = b), () => {});
        ctx.heartbeat(progress);
      }, HEARTBEAT_EVERY_MS);
      let restore: ReturnType<typeof engine.restore> | undefined;
      const onCancel = () => restore?.kill();
      ctx.cancellationSignal.addEventListener('abort', onCancel);
      try {
        // What the target had issued, read while the staging copy is prepared; both settle before either failure is reported.
        const exists = await ownCurrent(engine, names.current, inst.id);
        const [read, prepared] = await Promise.allSettled([
          exists ? engine.sequences(names.current) : Promise.resolve<SequenceMarks>({}),
          dropOwned(engine, names.incoming, inst.id).then(() => engine.createDatabase(names.incoming, ownerTag(inst.id))),
        ]);
        if (prepared.status === 'rejected') throw prepared.reason;
        if (read.status === 'rejected') throw read.reason;
        const issued = read.value;
        faults.check(FaultPoints.restoreStaging, inst.id);
        const source = await readableSource(backup);
        await checkKey(source.store, backup);
        await addReader(deps.db, backup.id, callerWorkflowId());
        const expected = { sizeBytes: backup.sizeBytes ?? -1, sha256: backup.sha256 ?? '' };
        // Serially the archive streams from the store into pg_restore; in parallel pg_restore needs a file it can seek.
        const spool = input.jobs > 1 ? spoolFile(backup.id) : null;
        try {
          if (spool) await source.store.spoolArchive(backupRef(backup), backup.encryption, expected, spool);
          restoring = true;
          restore = engine.restore(names.incoming, spool ?? (await source.store.openArchive(backupRef(backup), backup.encryption, expected)), { jobs: input.jobs });
          await restore.done;
        } catch (err) {
          restore?.kill();
          // pg_restore ended because the run was cancelled: report the cancellation, not the tool's exit.
          if (ctx.cancellationSignal.aborted) await ctx.cancelled;
          if (err instanceof ArchiveIntegrityError) throw ApplicationFailure.nonRetryable(`${err.message}; the target was not touched`, FailureTypes.archiveIntegrity);
          throw err;
        } finally {
          if (spool) await rm(spool, { force: true });
        }
        restoring = false;
        progress.phase = 'sequences';
        progress.bytesRestored = await engine.sizeBytes(names.incoming);
        ctx.heartbeat(progress);
        const restored = await engine.sequences(names.incoming);
        const sequencesBehind = Object.entries(issued)
          .filter(([name, was]) => was !== null && name in restored && (restored[name] === null || BigInt(restored[name]!) < BigInt(was)))
          .map(([name, was]) => ({ name, restored: restored[name] ?? null, issued: was! }));
        let sequencesAdvanced: string[] = [];
        if (input.advanceSequences && sequencesBehind.length) {
          sequencesAdvanced = await engine.advanceSequences(names.incoming, Object.fromEntries(sequencesBehind.map((s) => [s.name, s.issued])));
        }
        // Only a copy this run filled to the end is ever swapped in (an older attempt may have left another).
        await engine.labelRestored(names.incoming, callerWorkflowId());
        return { sequencesBehind, sequencesAdvanced, databaseBytes: progress.bytesRestored };
      } finally {
        clearInterval(beat);
        ctx.cancellationSignal.removeEventListener('abort', onCancel);
      }
    },

    /**
     * Swaps the restored staging copy in under the instance's name in one
     * transaction (ending the target's sessions first), drops the replaced
     * copy, and marks the instance `suspended`: it refuses connections until
     * resumed. A retry after the swap only finishes the clean-up.
     */
    async swapInRestored(input: { backupId: string; instanceId: string }): Promise<void> {
      const inst = await loadInstance(deps, input.instanceId);
      const { engine } = region(deps, inst.activeRegion);
      const names = restoreNames(inst.databaseName);
      const tag = ownerTag(inst.id);
      const me = callerWorkflowId();
      await ownCurrent(engine, names.current, inst.id);
      if (await engine.databaseExists(names.incoming)) {
        if ((await engine.ownerTag(names.incoming)) !== tag) {
          throw ApplicationFailure.nonRetryable(`staging database ${names.incoming} does not belong to instance ${inst.name}; nothing was swapped`, FailureTypes.stagingIncomplete);
        }
        if ((await engine.restoredBy(names.incoming)) !== me) {
          throw ApplicationFailure.nonRetryable(`staging database ${names.incoming} was not filled to the end by this run; nothing was swapped`, FailureTypes.stagingIncomplete);
        }
        // A replaced copy a killed run never dropped: the staging copy still exists, so this run has not swapped yet.
        await dropOwned(engine, names.retired, inst.id);
        // The swap begins: the staging copy closes to clients (swapDatabases closes both again before renaming).
        await engine.setConnectionsAllowed(names.incoming, false);
        faults.check(FaultPoints.swap, inst.id);
      } else if ((await engine.restoredBy(names.current)) !== me) {
        throw ApplicationFailure.nonRetryable(`the staging copy of ${inst.name} is gone and ${names.current} is not this run's restore; nothing was swapped`, FailureTypes.stagingIncomplete);
      }
      const outcome = await engine.swapDatabases(names);
      await deps.db.transaction(async (tx) => {
        await tx.update(instances).set({ state: 'suspended', updatedAt: sql`now()` }).where(eq(instances.id, inst.id));
        if (outcome === 'swapped') {
          await audit(tx, { actor: 'system:runbook', action: 'instance.restored', instanceId: inst.id, subject: input.backupId, details: { workflowId: me } });
        }
      });
    },

    /**
     * Drops the copy a swap replaced (`<name>__bcdr_retired`), only if the
     * instance owns it. Idempotent. Dropping a database makes PostgreSQL wait
     * for a checkpoint, so the restore leaves this to a run of its own.
     */
    async dropRetired(input: { instanceId: string }): Promise<void> {
      const [inst] = await deps.db.select().from(instances).where(eq(instances.id, input.instanceId));
      if (!inst) return;
      const { engine } = region(deps, inst.activeRegion);
      const retired = restoreNames(inst.databaseName).retired;
      const existed = await engine.databaseExists(retired);
      await dropOwned(engine, retired, inst.id);
      if (existed) await audit(deps.db, { actor: 'system:runbook', action: 'instance.retired-copy-dropped', instanceId: inst.id, subject: retired, details: { workflowId: callerWorkflowId() } });
    },

    /** Drops the instance's staging copy, if any (only one the instance owns), and releases the run's archive pin. Idempotent. */
    async discardStaging(input: { instanceId: string; backupId?: string }): Promise<void> {
      const [inst] = await deps.db.select().from(instances).where(eq(instances.id, input.instanceId));
      if (inst) {
        const { engine } = region(deps, inst.activeRegion);
        const names = restoreNames(inst.databaseName);
        await engine.dropDatabase(names.incoming, ownerTag(inst.id));
      }
      if (input.backupId) await releasePin(input.backupId);
    },

    /**
     * Forgets readers whose run has ended without releasing the backup (a
     * terminated run), so retention no longer waits for them. Readers of running runs stay.
     */
    async sweepStalePins(): Promise<number> {
      let removed = 0;
      for (const r of await deps.db.select().from(backupReaders)) {
        if (await isRunRunning(deps.temporal, r.readerId)) continue;
        await removeReader(deps.db, r.backupId, r.readerId);
        removed++;
      }
      // Spool files of parallel restores whose worker was killed mid-spool: `bcdr-spool.<workflowId>.<backupId>`.
      const dir = deps.scratchDir ?? os.tmpdir();
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        const [tag, workflowId, backupId, ...rest] = name.split('.');
        if (tag !== 'bcdr-spool' || !workflowId || !backupId || rest.length) continue;
        if (await isRunRunning(deps.temporal, workflowId)) continue;
        await rm(path.join(dir, name), { force: true });
        removed++;
      }
      return removed;
    },

    /** Releases the run's pin on the backup's archive. Idempotent. */
    async releaseArchive(input: { backupId: string }): Promise<void> {
      await releasePin(input.backupId);
    },

    /**
     * Reset: drops the instance's database (and any staging or replaced copy
     * it owns) and creates it again empty with the same owner tag, open for
     * connections, and marks it `active`. Sandbox only.
     */
    async resetDatabase(input: { instanceId: string; leaveSuspended?: boolean }): Promise<void> {
      const inst = await loadInstance(deps, input.instanceId);
      if (inst.type !== 'sandbox') {
        throw ApplicationFailure.nonRetryable(`instance ${inst.name} is ${inst.type}; only sandbox instances can be reset`, FailureTypes.refused);
      }
      const serving = await servedBy(deps.db, inst.id);
      if (serving) throw ApplicationFailure.nonRetryable(servingRefusal(inst.name, serving.name), FailureTypes.refused);
      const { engine } = region(deps, inst.activeRegion);
      const names = restoreNames(inst.databaseName);
      for (const name of [names.incoming, names.retired, names.current]) await dropOwned(engine, name, inst.id);
      await engine.createDatabase(names.current, ownerTag(inst.id));
      // Inside the swap production is reset while clients still know its endpoint: it stays closed, so nobody writes into an empty production.
      await engine.setConnectionsAllowed(names.current, !input.leaveSuspended);
      await deps.db.transaction(async (tx) => {
        await tx.update(instances).set({ state: input.leaveSuspended ? 'suspended' : 'active', servedBy: null, updatedAt: sql`now()` }).where(eq(instances.id, inst.id));
        await audit(tx, { actor: 'system:runbook', action: 'instance.reset', instanceId: inst.id, subject: inst.name, details: { workflowId: callerWorkflowId() } });
      });
    },

    /** Suspends an instance the calling run holds: no new connections, open sessions ended, state `suspended`. */
    async suspendHeldInstance(input: { instanceId: string }): Promise<void> {
      const inst = await loadInstance(deps, input.instanceId);
      await suspendInstance(deps.db, region(deps, inst.activeRegion), inst, 'system:runbook');
    },

    /** Resumes an instance the calling run holds: connections allowed again, state `active`. */
    async resumeRestoredInstance(input: { instanceId: string }): Promise<void> {
      const inst = await loadInstance(deps, input.instanceId);
      await resumeInstance(deps.db, region(deps, inst.activeRegion), inst, 'system:runbook');
    },
  };

  async function releasePin(backupId: string): Promise<void> {
    await removeReader(deps.db, backupId, callerWorkflowId());
    await rm(spoolFile(backupId), { force: true });
  }
}
