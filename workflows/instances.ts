import { ActivityCancellationType, CancellationScope, log, patched, proxyActivities } from '@temporalio/workflow';
import type * as activities from '../activities/index.js';
import { Runbooks, type InstanceRunInput } from './contract.js';
import { RunState } from './run-state.js';

/** Catalog, schedule and database DDL calls: all short. */
const acts = proxyActivities<activities.Activities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', maximumInterval: '10s', maximumAttempts: 5 },
});

/** Seeding a geo-secondary: heartbeating, retried a few times (each attempt picks up where the last stopped). */
const seeding = proxyActivities<activities.Activities>({
  startToCloseTimeout: '12h',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 5 },
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});

/** Cleanup after the point of no return: idempotent, so retried until it is done rather than left half way. */
const untilDone = proxyActivities<activities.Activities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', maximumInterval: '1m' },
});

/**
 * Provisions a new instance: its database in the home region, its daily
 * backup schedule and, for production, its geo-secondary, then marks it active. On failure every completed step is
 * undone in reverse (saga), so a failed provisioning leaves nothing behind.
 */
export async function provisionInstanceWorkflow(input: InstanceRunInput): Promise<void> {
  const state = new RunState(Runbooks.provisionInstance, input.instanceId);
  const compensations: { name: string; run: () => Promise<void> }[] = [];
  try {
    const inst = await state.step('lock-instance', () => acts.acquireInstanceLock({ instanceId: input.instanceId, runbook: Runbooks.provisionInstance }));
    compensations.push({ name: 'delete-instance-record', run: () => untilDone.deleteInstanceRecord(input) });
    compensations.push({ name: 'drop-database', run: () => untilDone.dropInstanceDatabase(input) });
    await state.step('create-database', () => acts.createInstanceDatabase(input));
    compensations.push({ name: 'remove-backup-schedule', run: () => untilDone.removeBackupSchedule(input) });
    await state.step('create-backup-schedule', () => acts.ensureBackupSchedule(input));
    // Every production instance gets its geo-secondary as it is made (runs recorded before this step replay without it).
    if (patched('geo-secondary') && inst.type === 'production') {
      compensations.push({ name: 'remove-geo-secondary', run: async () => void (await untilDone.removeGeoSecondary(input)) });
      await state.step('create-geo-secondary', () => seeding.ensureGeoSecondary(input));
    }
    await state.step('activate', () => acts.setInstanceState({ instanceId: input.instanceId, state: 'active', release: true }));
    state.finish();
  } catch (err) {
    state.finish(err);
    await CancellationScope.nonCancellable(async () => {
      for (const c of compensations.reverse()) {
        try {
          await c.run();
        } catch (compErr) {
          // Undo steps retry until done; one that still fails (a permanent error) stops the undo, so the
          // catalog row is never removed while the database it names still exists. The instance is left failed.
          log.error('compensation failed; leaving the instance failed for an operator', { step: c.name, error: String(compErr) });
          await acts.setInstanceState({ instanceId: input.instanceId, state: 'failed', release: true });
          break;
        }
      }
    });
    throw err;
  }
}

/**
 * Deletes an instance: drops its database first (if that fails, nothing has
 * changed and the lock is given back), then its schedule and catalog row,
 * retried until done while the run keeps holding the instance, so no other
 * runbook starts on a half-deleted instance. Its backups stay until they expire.
 */
export async function deleteInstanceWorkflow(input: InstanceRunInput): Promise<void> {
  const state = new RunState(Runbooks.deleteInstance, input.instanceId);
  await state.step('lock-instance', () => acts.acquireInstanceLock({ instanceId: input.instanceId, runbook: Runbooks.deleteInstance }));
  try {
    // Not cancellable: a cancel must not report "nothing changed" while the DROP goes ahead anyway.
    await CancellationScope.nonCancellable(() => state.step('drop-database', () => acts.dropInstanceDatabase(input)));
  } catch (err) {
    state.finish(err);
    await CancellationScope.nonCancellable(() => acts.releaseInstanceLock({ instanceId: input.instanceId }));
    throw err;
  }
  await CancellationScope.nonCancellable(async () => {
    await state.step('remove-backup-schedule', () => untilDone.removeBackupSchedule(input));
    await state.step('delete-instance-record', () => untilDone.deleteInstanceRecord(input));
  });
  state.finish();
}
