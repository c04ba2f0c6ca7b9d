import { ApplicationFailure } from '@temporalio/activity';
import { eq, sql } from 'drizzle-orm';
import { backupSchedules, instances, type InstanceRow, type InstanceState, type InstanceType } from '../db/schema/index.js';
import { audit } from '../lib/audit.js';
import { DatabaseConflictError } from '../lib/engine/types.js';
import { acquireLock, releaseLock } from '../lib/locks.js';
import { removeGeoSecondary, yieldGeoSecondary } from '../lib/replication.js';
import { isRunRunning } from '../lib/runs.js';
import { backupScheduleId, deleteBackupSchedule, upsertBackupSchedule } from '../lib/schedules.js';
import { FailureTypes, Runbooks, type Runbook } from '../workflows/contract.js';
import { callerWorkflowId, loadInstance, region, type ActivityDeps } from './deps.js';
import { ownerTag, restoreNames } from './names.js';

export { ownerTag };

/** The catalog facts a workflow needs about an instance (no secrets). */
export type InstanceSnapshot = Pick<InstanceRow, 'id' | 'name' | 'type' | 'edition' | 'homeRegion' | 'activeRegion' | 'state' | 'databaseName' | 'servedBy'>;

/** Instance lifecycle and exclusion activities. */
export function instanceActivities(deps: ActivityDeps) {
  return {
    /** Takes the instance's runbook lock for the calling run; fails non-retryably naming the run that holds it. */
    async acquireInstanceLock(input: { instanceId: string; runbook: Runbook }): Promise<InstanceSnapshot> {
      const workflowId = callerWorkflowId();
      // Housekeeping (a geo-secondary being made or repaired) yields to any runbook.
      if (input.runbook !== Runbooks.geoSecondary) await yieldGeoSecondary(deps.db, deps.temporal, input.instanceId, 20_000);
      const res = await acquireLock(deps.db, { ...input, workflowId }, (id) => isRunRunning(deps.temporal, id));
      if (!res.ok && res.reason === 'not_found') {
        throw ApplicationFailure.nonRetryable(`instance ${input.instanceId} does not exist`, FailureTypes.instanceNotFound);
      }
      if (!res.ok && res.reason === 'busy') {
        throw ApplicationFailure.nonRetryable(
          `instance ${input.instanceId} is busy: run ${res.holder.workflowId} (${res.holder.runbook}) holds it; retry when it ends`,
          FailureTypes.instanceBusy,
          res.holder,
        );
      }
      const { id, name, type, edition, homeRegion, activeRegion, state, databaseName, servedBy } = await loadInstance(deps, input.instanceId);
      return { id, name, type, edition, homeRegion, activeRegion, state, databaseName, servedBy };
    },

    /** Releases the calling run's lock on the instance, if it still holds it. */
    async releaseInstanceLock(input: { instanceId: string }): Promise<void> {
      await releaseLock(deps.db, input.instanceId, callerWorkflowId());
    },

    /** Creates the instance's database in its active region. Idempotent. */
    async createInstanceDatabase(input: { instanceId: string }): Promise<void> {
      const inst = await loadInstance(deps, input.instanceId);
      try {
        await region(deps, inst.activeRegion).engine.createDatabase(inst.databaseName, ownerTag(inst.id));
      } catch (err) {
        if (err instanceof DatabaseConflictError) throw ApplicationFailure.nonRetryable(err.message, FailureTypes.invalidState);
        throw err;
      }
    },

    /** Drops the instance's database in its active region, only if the instance owns it. Idempotent. */
    async dropInstanceDatabase(input: { instanceId: string }): Promise<void> {
      const [inst] = await deps.db.select().from(instances).where(eq(instances.id, input.instanceId));
      if (!inst) return;
      // Its geo-secondary goes first: a database with a replication slot cannot be dropped, and a forgotten slot fills the disk.
      await removeGeoSecondary(deps.db, deps.regions, inst, 'system:runbook');
      const { engine } = region(deps, inst.activeRegion);
      // Its restore's staging and replaced copies go too (they carry its tag), so none outlives it and blocks a reused name.
      const { current, incoming, retired } = restoreNames(inst.databaseName);
      for (const name of [incoming, retired, current]) await engine.dropDatabase(name, ownerTag(inst.id));
    },

    /** Creates or updates the instance's daily backup Temporal Schedule from its catalog policy (default: daily, 3 days). */
    async ensureBackupSchedule(input: { instanceId: string }): Promise<void> {
      await loadInstance(deps, input.instanceId);
      const scheduleId = backupScheduleId(input.instanceId);
      await deps.db
        .insert(backupSchedules)
        .values({ instanceId: input.instanceId, scheduleId, startTime: deps.defaultBackupStartTime ?? '02:00' })
        .onConflictDoNothing();
      const [policy] = await deps.db.select().from(backupSchedules).where(eq(backupSchedules.instanceId, input.instanceId));
      if (!policy) throw new Error(`backup schedule row of ${input.instanceId} vanished`);
      await upsertBackupSchedule(deps.temporal, deps.taskQueue, policy);
    },

    /** Deletes the instance's backup schedule from Temporal and the catalog. Idempotent. */
    async removeBackupSchedule(input: { instanceId: string }): Promise<void> {
      await deleteBackupSchedule(deps.temporal, backupScheduleId(input.instanceId));
      await deps.db.delete(backupSchedules).where(eq(backupSchedules.instanceId, input.instanceId));
    },

    /** Sets the instance's state; with `release`, then frees the calling run's lock. */
    async setInstanceState(input: { instanceId: string; state: InstanceState; release?: boolean }): Promise<void> {
      const workflowId = callerWorkflowId();
      await deps.db
        .update(instances)
        .set({ state: input.state, updatedAt: sql`now()` })
        .where(eq(instances.id, input.instanceId));
      if (input.release) await releaseLock(deps.db, input.instanceId, workflowId);
    },

    /** Switches the instance's type (the swap's steps 3 and 5), audited. Idempotent. */
    async setInstanceType(input: { instanceId: string; type: InstanceType }): Promise<void> {
      const inst = await loadInstance(deps, input.instanceId);
      if (inst.type === input.type) return;
      // A sandbox keeps no geo-secondary; a new production instance gets one from its region's monitor once it is active.
      if (input.type === 'sandbox') await removeGeoSecondary(deps.db, deps.regions, inst, 'system:runbook');
      await deps.db.transaction(async (tx) => {
        await tx.update(instances).set({ type: input.type, updatedAt: sql`now()` }).where(eq(instances.id, inst.id));
        await audit(tx, { actor: 'system:runbook', action: 'instance.type', instanceId: inst.id, subject: inst.name, details: { from: inst.type, to: input.type, workflowId: callerWorkflowId() } });
      });
    },

    /**
     * Points the instance's endpoint at another instance's database (`servedBy`),
     * or back at its own (null), and sets its state. Used when a production
     * restore fails: the sandbox copy serves production until it is repaired.
     */
    async setServedBy(input: { instanceId: string; servedBy: string | null; state: InstanceState }): Promise<void> {
      const inst = await loadInstance(deps, input.instanceId);
      const server = input.servedBy ? await loadInstance(deps, input.servedBy) : inst;
      const endpoint = region(deps, server.activeRegion).engine.endpoint(server.databaseName);
      await deps.db.transaction(async (tx) => {
        await tx.update(instances).set({ servedBy: input.servedBy, endpoint, state: input.state, updatedAt: sql`now()` }).where(eq(instances.id, inst.id));
        await audit(tx, { actor: 'system:runbook', action: input.servedBy ? 'instance.served-by' : 'instance.serves-itself', instanceId: inst.id, subject: inst.name, details: { servedBy: input.servedBy, endpoint, workflowId: callerWorkflowId() } });
      });
    },

    /** Removes the instance's catalog row (its backups stay, with their own expiry). Idempotent. */
    async deleteInstanceRecord(input: { instanceId: string }): Promise<void> {
      await deps.db.delete(backupSchedules).where(eq(backupSchedules.instanceId, input.instanceId));
      await deps.db.delete(instances).where(eq(instances.id, input.instanceId));
    },
  };
}
