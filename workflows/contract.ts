import { defineQuery } from '@temporalio/workflow';

/** Runbook names: the `Runbook` search attribute of every run, and the API's vocabulary. */
export const Runbooks = {
  provisionInstance: 'provision-instance',
  deleteInstance: 'delete-instance',
  onDemandBackup: 'on-demand-backup',
  dailyBackup: 'daily-backup',
  retentionSweep: 'retention-sweep',
} as const;
export type Runbook = (typeof Runbooks)[keyof typeof Runbooks];

/** Failure types raised as non-retryable ApplicationFailures; the API maps them to HTTP statuses. */
export const FailureTypes = {
  instanceNotFound: 'InstanceNotFound',
  instanceBusy: 'InstanceBusy',
  backupNotFound: 'BackupNotFound',
  invalidState: 'InvalidState',
} as const;
export type FailureType = (typeof FailureTypes)[keyof typeof FailureTypes];

/** What a run says about itself while it runs and after it ends. */
export interface RunStatus {
  runbook: Runbook;
  instanceId: string;
  step: string;
  stepsDone: string[];
  warnings: string[];
  error?: string;
}

/** Returns the run's current step, finished steps and warnings. */
export const runStatusQuery = defineQuery<RunStatus>('runStatus');

/** Input of the on-demand backup runbook. `backupId` is chosen by the caller so it can be returned at once. */
export interface OnDemandBackupInput {
  instanceId: string;
  backupId: string;
  label: string;
  retentionDays: number;
  requestedBy: string;
}

/** Input of the daily (system) backup runbook, started by the instance's Temporal Schedule. */
export interface DailyBackupInput {
  instanceId: string;
  /** How often to retry the instance lock while another runbook holds it (default 60 s). */
  lockRetrySeconds?: number;
}

/** Result of a backup runbook. */
export interface BackupResult {
  backupId: string;
  objectKey: string;
  sizeBytes: number;
  sha256: string;
  expired: string[];
}

/** Input of the provisioning and deletion runbooks. */
export interface InstanceRunInput {
  instanceId: string;
  requestedBy: string;
}

/** Workflow ids: deterministic where the caller knows the subject, so a repeated start is refused, not doubled. */
export const workflowIds = {
  onDemandBackup: (backupId: string) => `on-demand-backup-${backupId}`,
  provisionInstance: (instanceId: string) => `provision-instance-${instanceId}`,
  deleteInstance: (instanceId: string) => `delete-instance-${instanceId}`,
} as const;
