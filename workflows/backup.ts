import { ActivityCancellationType, ApplicationFailure, CancellationScope, patched, proxyActivities, sleep, uuid4, workflowInfo } from '@temporalio/workflow';
import type * as activities from '../activities/index.js';
import { FailureTypes, Runbooks, type BackupResult, type DailyBackupInput, type OnDemandBackupInput } from './contract.js';
import { RunState, errorMessage } from './run-state.js';

type Acts = activities.Activities;

/** Short catalog calls: retried quickly, for a minute. */
const catalog = proxyActivities<Acts>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', maximumInterval: '10s', maximumAttempts: 6 },
});

/**
 * Data moves: long, heartbeating, a few retries (a retried dump stages its own
 * copy and the row lock lets only one attempt commit). On cancellation the
 * workflow waits for the dump to stop before it cleans up.
 */
const data = proxyActivities<Acts>({
  startToCloseTimeout: '6h',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumAttempts: 3 },
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});

/** Offsite copies: a copy that fails is retried a few times; one that stays failed is recorded and the backup stands. */
const copies = proxyActivities<Acts>({
  startToCloseTimeout: '6h',
  heartbeatTimeout: '60s',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumAttempts: 4 },
});

/** How long a scheduled backup waits for another runbook to release the instance before it gives up. */
const DAILY_LOCK_PATIENCE_MS = 60 * 60 * 1000;

/** On-demand backup runbook: a labelled backup kept `retentionDays` days. */
export async function onDemandBackupWorkflow(input: OnDemandBackupInput): Promise<BackupResult> {
  const state = new RunState(Runbooks.onDemandBackup, input.instanceId);
  await state.step('lock-instance', () => catalog.acquireInstanceLock({ instanceId: input.instanceId, runbook: Runbooks.onDemandBackup }));
  return runBackup(state, {
    instanceId: input.instanceId,
    backupId: input.backupId,
    kind: 'on_demand',
    label: input.label,
    retentionDays: input.retentionDays,
  });
}

/**
 * Daily (system) backup runbook, started by the instance's Temporal Schedule.
 * If another runbook holds the instance it waits (up to an hour) rather than
 * lose the day's backup. Its outcome, failure reason included, is recorded as
 * the schedule's last status.
 */
export async function dailyBackupWorkflow(input: DailyBackupInput): Promise<BackupResult> {
  const state = new RunState(Runbooks.dailyBackup, input.instanceId);
  try {
    await state.step('lock-instance', () => lockPatiently(state, input.instanceId, (input.lockRetrySeconds ?? 60) * 1000));
    const result = await runBackup(state, { instanceId: input.instanceId, backupId: `bk-${uuid4()}`, kind: 'system', label: null });
    await catalog.recordScheduleRun({ instanceId: input.instanceId, status: 'completed' });
    return result;
  } catch (err) {
    state.finish(err);
    await CancellationScope.nonCancellable(() =>
      catalog.recordScheduleRun({ instanceId: input.instanceId, status: 'failed', error: errorMessage(err) }),
    );
    throw err;
  }
}

/** What a backup run records about one backup. */
export interface BackupSpec {
  instanceId: string;
  backupId: string;
  kind: 'system' | 'on_demand';
  label: string | null;
  retentionDays?: number;
  /** Dump this database instead of the instance's own (the old primary a failback keeps). */
  source?: { region: string; database: string };
}

/** Runs the backup steps on an instance this run has locked, and always releases the lock. */
async function runBackup(state: RunState, b: BackupSpec): Promise<BackupResult> {
  try {
    const dumped = await takeBackup(state, b);
    const expired = await state.step('retention', () => data.applyRetention({ instanceId: b.instanceId }));
    state.finish();
    return { backupId: b.backupId, objectKey: dumped.objectKey, sizeBytes: dumped.sizeBytes, sha256: dumped.sha256, expired };
  } catch (err) {
    state.finish(err);
    throw err;
  } finally {
    await CancellationScope.nonCancellable(() => catalog.releaseInstanceLock({ instanceId: b.instanceId }));
  }
}

/**
 * Records and dumps one backup of an instance the run holds. A failed dump
 * marks the backup failed and clears its files; a lost attempt that had
 * committed counts as done. Shared with the production-restore swap (step 1).
 */
export async function takeBackup(state: RunState, b: BackupSpec, stepPrefix = ''): Promise<Awaited<ReturnType<Acts['dumpBackup']>>> {
  try {
    await state.step(`${stepPrefix}record-backup`, () => catalog.beginBackup(b));
    const dumped = await state.step(`${stepPrefix}dump`, () => data.dumpBackup({ backupId: b.backupId }));
    if (patched('offsite-copy')) await copyOffsite(state, b.backupId, stepPrefix);
    return dumped;
  } catch (err) {
    const final = await CancellationScope.nonCancellable(() => catalog.failBackup({ backupId: b.backupId, reason: errorMessage(err) }));
    // A lost attempt may still have committed the backup: then the run did its job after all.
    if (final !== 'completed' || CancellationScope.current().consideredCancelled) throw err;
    state.warn(`the dump attempt was lost (${errorMessage(err)}), but it had completed the backup`);
    return catalog.completedBackup({ backupId: b.backupId });
  }
}

/**
 * Copies the backup to the paired region's store and verifies it there. A
 * copy that stays failed does not fail the backup (it exists at home): it is
 * recorded on the backup, raises an event, and leaves the instance stale.
 */
async function copyOffsite(state: RunState, backupId: string, stepPrefix: string): Promise<void> {
  try {
    await state.step(`${stepPrefix}offsite-copy`, () => copies.copyBackupOffsite({ backupId }));
  } catch (err) {
    if (CancellationScope.current().consideredCancelled) throw err;
    state.warn(`the offsite copy failed: ${errorMessage(err)}; the backup is kept at home and the instance shows stale until a copy is verified`);
    await catalog.failOffsiteCopy({ backupId, reason: errorMessage(err) });
  }
}

/** Takes the instance lock, retrying every `retryMs` while another runbook holds it, for up to an hour. */
async function lockPatiently(state: RunState, instanceId: string, retryMs: number): Promise<void> {
  const deadline = workflowInfo().runStartTime.getTime() + DAILY_LOCK_PATIENCE_MS;
  for (;;) {
    try {
      await catalog.acquireInstanceLock({ instanceId, runbook: Runbooks.dailyBackup });
      return;
    } catch (err) {
      const busy = err instanceof Error && err.cause instanceof ApplicationFailure && err.cause.type === FailureTypes.instanceBusy;
      if (!busy || Date.now() + retryMs > deadline) throw err;
      state.warn(`waiting for the instance: ${errorMessage(err)}`);
      await sleep(retryMs);
    }
  }
}
