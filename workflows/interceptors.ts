/**
 * Workflow interceptors (loaded through the worker's `interceptors.workflowModules`):
 * - every workflow log line carries the run's instance id (from the input's
 *   `instanceId`, else the `InstanceId` search attribute);
 * - each run says at info level that it started and how it ended;
 * - each run's end is reported to the worker's metrics through a sink.
 *
 * Deterministic and command-free: logs and sink calls never enter the history,
 * and sinks are not called during replay. Nothing here may schedule, sleep or upsert.
 */
import {
  ContinueAsNew,
  isCancellation,
  log,
  proxySinks,
  TemporalFailure,
  workflowInfo,
  type Sinks,
  type WorkflowInterceptorsFactory,
} from '@temporalio/workflow';
import { Runbooks } from './contract.js';
import { InstanceIdKey, RunbookKey } from './search-attributes.js';

/** The sink the worker implements (see worker/create.ts) to count runbook outcomes and time runs. */
export interface RunbookMetricsSinks extends Sinks {
  runbookMetrics: {
    runEnded(runbook: string, outcome: string, durationMs: number): void;
  };
}

const { runbookMetrics } = proxySinks<RunbookMetricsSinks>();

/** Workflow type → runbook name (children started without search attributes still get their runbook). */
const runbookOfType: Record<string, string> = {
  onDemandBackupWorkflow: Runbooks.onDemandBackup,
  dailyBackupWorkflow: Runbooks.dailyBackup,
  provisionInstanceWorkflow: Runbooks.provisionInstance,
  deleteInstanceWorkflow: Runbooks.deleteInstance,
  retentionSweepWorkflow: Runbooks.retentionSweep,
  restoreWorkflow: Runbooks.restore,
  resetWorkflow: Runbooks.reset,
  dropRetiredWorkflow: Runbooks.dropRetired,
  productionRestoreWorkflow: Runbooks.productionRestore,
  geoSecondaryWorkflow: Runbooks.geoSecondary,
  regionMonitorWorkflow: Runbooks.regionMonitor,
  regionFailoverWorkflow: Runbooks.regionFailover,
  failbackWorkflow: Runbooks.failback,
};

/** Result outcomes a runbook can report besides `completed` (the swap's `degraded`, a refused sign-off, a failover's `partial`...; see contract.ts). */
const resultOutcomes = new Set(['degraded', 'rejected', 'expired', 'partial', 'aborted', 'nothing-to-do']);

function runbookOf(): string {
  const info = workflowInfo();
  return runbookOfType[info.workflowType] ?? info.typedSearchAttributes.get(RunbookKey) ?? info.workflowType;
}

function instanceIdOf(input: unknown): string | undefined {
  if (input && typeof input === 'object' && 'instanceId' in input) {
    const id = (input as { instanceId: unknown }).instanceId;
    if (typeof id === 'string' && id) return id;
  }
  const attr = workflowInfo().typedSearchAttributes.get(InstanceIdKey);
  return attr || undefined;
}

function outcomeOfResult(result: unknown): string {
  if (result && typeof result === 'object' && 'outcome' in result) {
    const o = (result as { outcome: unknown }).outcome;
    if (typeof o === 'string' && resultOutcomes.has(o)) return o;
  }
  return 'completed';
}

export const interceptors: WorkflowInterceptorsFactory = () => {
  let instanceId: string | undefined;
  return {
    inbound: [
      {
        async execute(input, next) {
          instanceId = instanceIdOf(input.args[0]);
          const runbook = runbookOf();
          const startedAt = workflowInfo().runStartTime.getTime();
          const ended = (outcome: string) => {
            // Workflow time: deterministic, the same on every replay.
            const durationMs = Math.max(0, Date.now() - startedAt);
            runbookMetrics.runEnded(runbook, outcome, durationMs);
            return durationMs;
          };
          log.info('runbook started', { runbook });
          try {
            const result = await next(input);
            const outcome = outcomeOfResult(result);
            const durationMs = ended(outcome);
            log.info(`runbook ${outcome} (${durationMs} ms)`, { runbook, outcome, durationMs });
            return result;
          } catch (err) {
            if (err instanceof ContinueAsNew) {
              ended('continued_as_new');
            } else if (isCancellation(err)) {
              const durationMs = ended('cancelled');
              log.info(`runbook cancelled (${durationMs} ms)`, { runbook, outcome: 'cancelled', durationMs });
            } else if (err instanceof TemporalFailure) {
              // Only a TemporalFailure fails the run; anything else fails the task, which is retried (the SDK logs it).
              const durationMs = ended('failed');
              log.info(`runbook failed: ${err.message}`, { runbook, outcome: 'failed', durationMs });
            }
            throw err;
          }
        },
      },
    ],
    outbound: [
      {
        getLogAttributes(input, next) {
          const id = instanceId ?? instanceIdOf(undefined);
          return next(id ? { ...input, instanceId: id } : input);
        },
      },
    ],
  };
};
