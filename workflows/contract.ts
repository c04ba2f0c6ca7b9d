import { defineQuery, defineSignal } from '@temporalio/workflow';

/** Runbook names: the `Runbook` search attribute of every run, and the API's vocabulary. */
export const Runbooks = {
  provisionInstance: 'provision-instance',
  deleteInstance: 'delete-instance',
  onDemandBackup: 'on-demand-backup',
  dailyBackup: 'daily-backup',
  retentionSweep: 'retention-sweep',
  restore: 'restore',
  reset: 'reset',
  productionRestore: 'production-restore',
  /** Housekeeping after a restore's swap: drops the replaced copy, off the restore's critical path. */
  dropRetired: 'drop-retired',
  /** Creates or repairs an instance's geo-secondary (started by provisioning and by the region monitor). */
  geoSecondary: 'geo-secondary',
  regionMonitor: 'region-monitor',
  regionFailover: 'region-failover',
  failback: 'failback',
  /** Rewraps every backup's data key under the active backup key (key rotation); archives are not re-encrypted. */
  rotateKeys: 'rotate-keys',
} as const;
export type Runbook = (typeof Runbooks)[keyof typeof Runbooks];

/** Failure types raised as non-retryable ApplicationFailures; the API maps them to HTTP statuses. */
export const FailureTypes = {
  instanceNotFound: 'InstanceNotFound',
  instanceBusy: 'InstanceBusy',
  backupNotFound: 'BackupNotFound',
  invalidState: 'InvalidState',
  /** A request breaks a rule (production target, lower edition, unusable backup): nothing was changed. */
  refused: 'Refused',
  /** The archive's bytes differ from its catalog record or manifest: nothing was restored. */
  archiveIntegrity: 'ArchiveIntegrity',
  /** The staging copy is not one this run filled to the end: nothing was swapped, the target is untouched. */
  stagingIncomplete: 'StagingIncomplete',
  /** The key an archive was encrypted under is missing or wrong: nothing was restored. */
  keyUnavailable: 'KeyUnavailable',
  /** A backup on legal hold, or under a store's retention lock, cannot be removed. */
  backupLocked: 'BackupLocked',
  /** A test-only fault hook fired (see activities/faults.ts). */
  injectedFault: 'InjectedFault',
} as const;
export type FailureType = (typeof FailureTypes)[keyof typeof FailureTypes];

/** What a run is waiting for, shown while it waits: a sign-off or a maintenance window. */
export interface RunWait {
  kind: 'signoff' | 'window';
  /** When the wait ends on its own: the sign-off deadline, or the window's start. */
  until: string;
  detail: string;
}

/** What a run says about itself while it runs and after it ends. */
export interface RunStatus {
  runbook: Runbook;
  instanceId: string;
  step: string;
  stepsDone: string[];
  warnings: string[];
  error?: string;
  /** Who started the run (runbooks that can wait for sign-off). */
  requestedBy?: string;
  waiting?: RunWait;
  /** Runbooks over many instances (failover, failback): where each instance stands. */
  instances?: Record<string, InstanceProgress>;
}

/** One instance's progress inside a multi-instance run. */
export interface InstanceProgress {
  name: string;
  step: string;
  stepsDone: string[];
  error?: string;
  /** What it could lose (failover) or lost (failback), and its RTO, once known. */
  facts?: Record<string, unknown>;
}

/** An approver's decision, sent by the API as `signOffSignal` after it checked role and four eyes. */
export interface SignOffDecision {
  gate: string;
  decision: 'approve' | 'reject';
  statement: string;
  by: string;
  at: string;
}

/** Delivers a sign-off decision to a run waiting at a gate. */
export const signOffSignal = defineSignal<[SignOffDecision]>('signOff');

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

/** Input of the restore runbook: a completed backup into an existing sandbox, or into a new instance the API just recorded. */
export interface RestoreInput {
  backupId: string;
  instanceId: string;
  /** True when the API created the target's catalog row for this run: a failure removes it again. */
  createsInstance: boolean;
  /** pg_restore parallel jobs (1 = serial). */
  jobs: number;
  /** Move sequences past what the target had issued, so no number is issued twice. */
  advanceSequences: boolean;
  /** How long after the swap the replaced copy is dropped (default 60 s; see dropRetiredWorkflow). */
  dropRetiredAfterSeconds?: number;
  requestedBy: string;
}

/** What a restore did, returned by the restore runbook and each restore inside the swap. */
export interface RestoreResult {
  backupId: string;
  instanceId: string;
  state: 'suspended';
  /** Sequences whose restored value is behind what the target had issued: duplicates are possible. */
  sequencesBehind: { name: string; restored: string | null; issued: string }[];
  /** Sequences moved forward (advanceSequences). */
  sequencesAdvanced: string[];
  databaseBytes: number;
  warnings: string[];
  next: string;
}

/** Input of the reset runbook (sandbox only): empty the database, then optionally restore a backup. */
export interface ResetInput {
  instanceId: string;
  backupId?: string;
  jobs: number;
  advanceSequences: boolean;
  dropRetiredAfterSeconds?: number;
  requestedBy: string;
}

/** Result of the reset runbook. */
export interface ResetResult {
  instanceId: string;
  state: 'active' | 'suspended';
  restore?: RestoreResult;
}

/** Input of the production-restore swap. */
export interface ProductionRestoreInput {
  productionId: string;
  sandboxId: string;
  /** A completed backup of production to restore; without one, the swap's own step-1 backup of production. */
  backupId?: string;
  /** Start of the maintenance window (ISO time): nothing is touched before it. */
  notBefore?: string;
  /** Wait for an approver's written sign-off before production is touched. */
  requireSignoff: boolean;
  signoffTimeoutMinutes: number;
  /** How often a reminder is audited while the sign-off waits (default 15 minutes). */
  signoffRemindEveryMinutes?: number;
  /** Delete the step-1 backups once production is back. */
  deleteTemporaryBackups: boolean;
  jobs: number;
  advanceSequences: boolean;
  dropRetiredAfterSeconds?: number;
  requestedBy: string;
}

/** How a swap ended. `degraded`: production could not be restored; the sandbox copy serves its endpoint. */
export interface ProductionRestoreResult {
  outcome: 'completed' | 'degraded' | 'rejected' | 'expired';
  productionId: string;
  sandboxId: string;
  backupId?: string;
  temporaryBackups: { production?: string; sandbox?: string; deleted: boolean };
  warnings: string[];
  next?: string;
}

/** Input of the region monitor: one per region, started by the worker. */
export interface RegionMonitorInput {
  region: string;
  everySeconds: number;
  /** Consecutive failed checks that declare an outage. */
  outageAfter: number;
  /** Start a failover when an outage is declared (it still waits for sign-off when data can be lost). */
  autoFailover: boolean;
  signoffTimeoutMinutes: number;
  signoffRemindEveryMinutes?: number;
  concurrency: number;
  /** Checks done by earlier runs of this monitor (continue-as-new). */
  checksBefore?: number;
}

/** Input of the region failover runbook. */
export interface RegionFailoverInput {
  region: string;
  requestedBy: string;
  reason: string;
  /** When the outage was declared (the monitor's time); else the run's start. */
  declaredAt?: string;
  /** `auto`: a planned switchover when the primary answers, else unplanned. `unplanned` never touches the primary. */
  mode: 'auto' | 'unplanned';
  signoffTimeoutMinutes: number;
  signoffRemindEveryMinutes?: number;
  /** Instances promoted at once. */
  concurrency: number;
  /** How long a planned switchover waits for zero lag before it asks for sign-off instead. */
  drainTimeoutSeconds?: number;
  /** How long to wait for another run to release an instance before leaving it out. */
  lockWaitSeconds?: number;
}

/** How a failover ended, per instance. */
export interface RegionFailoverResult {
  outcome: 'completed' | 'partial' | 'aborted' | 'expired' | 'nothing-to-do';
  region: string;
  kind: 'planned' | 'unplanned';
  declaredAt: string;
  signedOffAt: string | null;
  signedOffBy?: string;
  instances: Record<string, { name: string; promoted: boolean; region?: string; database?: string; rtoFromDeclaredSeconds?: number; rtoFromSignoffSeconds?: number | null; estimate?: unknown; error?: string }>;
  skipped: { instanceId: string; name: string; reason: string }[];
  warnings: string[];
}

/** Input of the failback runbook. */
export interface FailbackInput {
  region: string;
  instanceIds?: string[];
  requestedBy: string;
  concurrency: number;
  /** Longest the switch may keep writes blocked waiting for the last bytes. */
  switchTimeoutSeconds?: number;
}

/** How a failback ended, per instance. */
export interface FailbackResult {
  outcome: 'completed' | 'partial' | 'nothing-to-do';
  region: string;
  instances: Record<string, { name: string; done: boolean; oldPrimaryBackupId?: string | null; measuredLoss?: unknown; writeBlockedSeconds?: number; error?: string }>;
  warnings: string[];
}

/** Input of the key rotation runbook; the rest is where a run resumes after continue-as-new, and what it has done so far. */
export interface RotateKeysInput {
  requestedBy: string;
  /** Backups listed per page (one page per run history; default 100). */
  pageSize?: number;
  after?: string;
  rewrapped?: number;
  already?: number;
  skipped?: number;
  failed?: number;
  failures?: { backupId: string; keyId: string | null; error: string }[];
}

/** How a key rotation ended: how many backups were rewrapped, and which failed (with the key id they are under). */
export interface RotateKeysResult {
  activeKeyId: string | null;
  rewrapped: number;
  already: number;
  skipped: number;
  failed: number;
  /** The failed backups (the last 1,000). */
  failures: { backupId: string; keyId: string | null; error: string }[];
}

/** Workflow ids: deterministic where the caller knows the subject, so a repeated start is refused, not doubled. */
export const workflowIds = {
  onDemandBackup: (backupId: string) => `on-demand-backup-${backupId}`,
  provisionInstance: (instanceId: string) => `provision-instance-${instanceId}`,
  deleteInstance: (instanceId: string) => `delete-instance-${instanceId}`,
  restore: (instanceName: string, suffix: string) => `restore-${instanceName}-${suffix}`,
  reset: (instanceName: string, suffix: string) => `reset-${instanceName}-${suffix}`,
  productionRestore: (productionName: string, suffix: string) => `production-restore-${productionName}-${suffix}`,
  geoSecondary: (instanceId: string) => `geo-secondary-${instanceId}`,
  regionMonitor: (region: string) => `region-monitor-${region}`,
  regionFailover: (region: string, suffix: string) => `region-failover-${region}-${suffix}`,
  failback: (region: string, suffix: string) => `failback-${region}-${suffix}`,
  rotateKeys: (id: string) => `rotate-keys-${id}`,
} as const;
