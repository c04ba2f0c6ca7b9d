import { CancellationScope, proxyActivities, uuid4 } from '@temporalio/workflow';
import type * as activities from '../activities/index.js';
import { Runbooks, type BackupResult, type DailyBackupInput, type OnDemandBackupInput } from './contract.js';
import { RunState, errorMessage } from './run-state.js';

type Acts = activities.Activities;

/** Short catalog calls: retried quickly, for a minute. */
const catalog = proxyActivities<Acts>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', maximumInterval: '10s', maximumAttempts: 6 },
});

/** Data moves: long, heartbeating, a few retries (a retried dump overwrites its own archive). */
const data = proxyActivities<Acts>({
  startToCloseTimeout: '6h',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumAttempts: 3 },
});

/** On-demand backup runbook: a labelled backup kept `retentionDays` days. */
export async function onDemandBackupWorkflow(input: OnDemandBackupInput): Promise<BackupResult> {
  return runBackup(new RunState(Runbooks.onDemandBackup, input.instanceId), {
    instanceId: input.instanceId,
    backupId: input.backupId,
    kind: 'on_demand',
    label: input.label,
    retentionDays: input.retentionDays,
  });
}

/**
 * Daily (system) backup runbook, started by the instance's Temporal Schedule.
 * Its outcome, failure reason included, is recorded as the schedule's last status.
 */
export async function dailyBackupWorkflow(input: DailyBackupInput): Promise<BackupResult> {
  const state = new RunState(Runbooks.dailyBackup, input.instanceId);
  try {
    const result = await runBackup(state, { instanceId: input.instanceId, backupId: `bk-${uuid4()}`, kind: 'system', label: null });
    await catalog.recordScheduleRun({ instanceId: input.instanceId, status: 'completed' });
    return result;
  } catch (err) {
    await CancellationScope.nonCancellable(() =>
      catalog.recordScheduleRun({ instanceId: input.instanceId, status: 'failed', error: errorMessage(err) }),
    );
    throw err;
  }
}

async function runBackup(
  state: RunState,
  b: { instanceId: string; backupId: string; kind: 'system' | 'on_demand'; label: string | null; retentionDays?: number },
): Promise<BackupResult> {
  await state.step('lock-instance', () => catalog.acquireInstanceLock({ instanceId: b.instanceId, runbook: state.status.runbook }));
  try {
    await state.step('record-backup', () => catalog.beginBackup(b));
    let dumped: Awaited<ReturnType<Acts['dumpBackup']>>;
    try {
      dumped = await state.step('dump', () => data.dumpBackup({ backupId: b.backupId }));
    } catch (err) {
      await CancellationScope.nonCancellable(() => catalog.failBackup({ backupId: b.backupId, reason: errorMessage(err) }));
      throw err;
    }
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
