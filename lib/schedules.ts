import { ScheduleAlreadyRunning, ScheduleNotFoundError, ScheduleOverlapPolicy, type Client, type ScheduleOptions } from '@temporalio/client';
import type { Duration } from '@temporalio/common';
import { Runbooks, type DailyBackupInput } from '../workflows/contract.js';
import { runSearchAttributes } from './temporal.js';

/** The backup policy fields that shape the Temporal Schedule. */
export interface SchedulePolicy {
  instanceId: string;
  scheduleId: string;
  startTime: string;
  intervalDays: number;
  enabled: boolean;
}

/** The Temporal Schedule id of an instance's daily backup. */
export const backupScheduleId = (instanceId: string) => `daily-backup-${instanceId}`;

/**
 * Every `intervalDays` days at `startTime` (UTC, HH:MM). Temporal phases
 * intervals from the Unix epoch, so the start time is the offset into the day.
 */
function spec(policy: SchedulePolicy): ScheduleOptions['spec'] {
  const [hh, mm] = policy.startTime.split(':').map(Number);
  return { intervals: [{ every: `${policy.intervalDays}d`, offset: `${(hh ?? 0) * 60 + (mm ?? 0)}m` }] };
}

function action(policy: SchedulePolicy, taskQueue: string): ScheduleOptions['action'] {
  const input: DailyBackupInput = { instanceId: policy.instanceId };
  return {
    type: 'startWorkflow',
    workflowType: 'dailyBackupWorkflow',
    workflowId: `daily-backup-${policy.instanceId}`,
    taskQueue,
    args: [input],
    typedSearchAttributes: runSearchAttributes(policy.instanceId, Runbooks.dailyBackup),
  };
}

/** What a schedule should be: its spec and action, and optionally its paused state and creation-time settings. */
interface DesiredSchedule {
  spec: ScheduleOptions['spec'];
  action: ScheduleOptions['action'];
  paused?: boolean;
  note: string;
  catchupWindow?: Duration;
}

/**
 * Updates schedule `scheduleId` to `desired` (overlap SKIP), creating it when
 * missing unless `createIfMissing` is false (then ScheduleNotFoundError
 * propagates). A create that loses a race to another caller counts as done.
 */
async function putSchedule(client: Client, scheduleId: string, desired: DesiredSchedule, createIfMissing = true): Promise<void> {
  try {
    await client.schedule.getHandle(scheduleId).update((prev) => ({
      ...prev,
      spec: desired.spec,
      action: desired.action,
      policies: { ...prev.policies, overlap: ScheduleOverlapPolicy.SKIP },
      state: desired.paused === undefined ? prev.state : { ...prev.state, paused: desired.paused },
    }));
  } catch (err) {
    if (!(err instanceof ScheduleNotFoundError) || !createIfMissing) throw err;
    try {
      await client.schedule.create({
        scheduleId,
        spec: desired.spec,
        action: desired.action,
        policies: { overlap: ScheduleOverlapPolicy.SKIP, ...(desired.catchupWindow ? { catchupWindow: desired.catchupWindow } : {}) },
        state: { paused: desired.paused ?? false, note: desired.note },
      });
    } catch (createErr) {
      if (!(createErr instanceof ScheduleAlreadyRunning)) throw createErr; // another caller created it first
    }
  }
}

/**
 * Creates or updates the instance's backup schedule to match `policy`. Idempotent.
 * With `createIfMissing: false` a missing schedule is an error (ScheduleNotFoundError),
 * so a policy change racing an instance deletion never resurrects its schedule.
 */
export async function upsertBackupSchedule(client: Client, taskQueue: string, policy: SchedulePolicy, opts: { createIfMissing?: boolean } = {}): Promise<void> {
  await putSchedule(
    client,
    policy.scheduleId,
    { spec: spec(policy), action: action(policy, taskQueue), paused: !policy.enabled, note: `daily backup of instance ${policy.instanceId}`, catchupWindow: '1h' },
    opts.createIfMissing ?? true,
  );
}

/** Deletes the instance's backup schedule; does nothing when it is already gone. */
export async function deleteBackupSchedule(client: Client, scheduleId: string): Promise<void> {
  try {
    await client.schedule.getHandle(scheduleId).delete();
  } catch (err) {
    if (!(err instanceof ScheduleNotFoundError)) throw err;
  }
}

/** The id of the fleet-wide retention sweep schedule. */
export const retentionSweepScheduleId = 'retention-sweep';

/**
 * Creates (or re-times) the schedule that applies retention to every instance
 * with backups, deleted instances included, so expiry never depends on a
 * successful backup run. Idempotent; every worker calls it at start.
 */
export async function ensureRetentionSweepSchedule(client: Client, taskQueue: string, everyMinutes: number): Promise<void> {
  await putSchedule(client, retentionSweepScheduleId, {
    spec: { intervals: [{ every: `${everyMinutes}m` }] },
    action: {
      type: 'startWorkflow',
      workflowType: 'retentionSweepWorkflow',
      workflowId: retentionSweepScheduleId,
      taskQueue,
      args: [],
      typedSearchAttributes: runSearchAttributes('*', Runbooks.retentionSweep),
    },
    note: 'expires backups of every instance',
  });
}
