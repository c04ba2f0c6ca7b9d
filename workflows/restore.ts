import { ApplicationFailure, CancellationScope, ParentClosePolicy, sleep, startChild, workflowInfo } from '@temporalio/workflow';
import type * as activities from '../activities/index.js';
import { FailureTypes, Runbooks, type ResetInput, type ResetResult, type RestoreInput, type RestoreResult } from './contract.js';
import { catalog, data, ddl, untilDone } from './proxies.js';
import { runSearchAttributes } from './search-attributes.js';
import { RunState, errorMessage, failureTypeOf } from './run-state.js';

type Acts = activities.Activities;

/** Default wait between a swap and the drop of the copy it replaced. */
const DROP_RETIRED_AFTER_SECONDS = 60;

/**
 * Restore runbook: a completed backup into an existing sandbox instance, or
 * into a new instance the API recorded for this run. The target lands
 * `suspended`. A failure before the swap leaves the target as it was; a
 * failure after the swap began leaves it `failed`, to be reset; a failed
 * restore into a new instance leaves nothing behind.
 */
export async function restoreWorkflow(input: RestoreInput): Promise<RestoreResult> {
  const state = new RunState(Runbooks.restore, input.instanceId, input.requestedBy);
  const { instanceId } = input;
  try {
    await state.step('lock-instance', () => catalog.acquireInstanceLock({ instanceId, runbook: Runbooks.restore }));
    const result = await restoreSteps(state, input);
    // After the swap the new instance holds the restored data: a cancel now must not undo it.
    if (input.createsInstance) await CancellationScope.nonCancellable(() => state.step('create-backup-schedule', () => ddl.ensureBackupSchedule({ instanceId })));
    state.finish();
    return { ...result, warnings: [...state.status.warnings] };
  } catch (err) {
    state.finish(err);
    if (input.createsInstance) await removeNewInstance(instanceId, input.backupId);
    throw err;
  } finally {
    await CancellationScope.nonCancellable(() => catalog.releaseInstanceLock({ instanceId }));
  }
}

/**
 * Reset runbook (sandbox only): drops the database and creates it again empty
 * with the same owner tag, `active`; then, given a backup, restores it.
 */
export async function resetWorkflow(input: ResetInput): Promise<ResetResult> {
  const state = new RunState(Runbooks.reset, input.instanceId, input.requestedBy);
  const { instanceId } = input;
  try {
    await state.step('lock-instance', () => catalog.acquireInstanceLock({ instanceId, runbook: Runbooks.reset }));
    try {
      await CancellationScope.nonCancellable(() => state.step('reset-database', () => ddl.resetDatabase({ instanceId })));
    } catch (err) {
      if (failureTypeOf(err) !== FailureTypes.refused) await CancellationScope.nonCancellable(() => untilDone.setInstanceState({ instanceId, state: 'failed' }));
      throw err;
    }
    const restore = input.backupId
      ? await restoreSteps(state, { ...input, backupId: input.backupId, createsInstance: false })
      : undefined;
    state.finish();
    return { instanceId, state: restore ? 'suspended' : 'active', ...(restore ? { restore: { ...restore, warnings: [...state.status.warnings] } } : {}) };
  } catch (err) {
    state.finish(err);
    throw err;
  } finally {
    await CancellationScope.nonCancellable(() => catalog.releaseInstanceLock({ instanceId }));
  }
}

/**
 * The restore steps on an instance this run holds: check the rules, verify the
 * archive, pg_restore into staging, swap it in. Shared by restore, reset and
 * the production-restore swap.
 */
export async function restoreSteps(
  state: RunState,
  p: Pick<RestoreInput, 'backupId' | 'instanceId' | 'createsInstance' | 'jobs' | 'advanceSequences' | 'dropRetiredAfterSeconds'>,
  stepPrefix = '',
): Promise<RestoreResult> {
  const { backupId, instanceId } = p;
  const step = (name: string) => `${stepPrefix}${name}`;
  try {
    await state.step(step('check-rules'), () => catalog.checkRestore({ backupId, instanceId, createsInstance: p.createsInstance }));
    const source = await state.step(step('verify-archive'), () => data.verifyArchive({ backupId }));
    if (source?.offsite) state.warn(`the home store of the backup could not be read: restored from its offsite copy in region ${source.region}`);
    let facts: Awaited<ReturnType<Acts['restoreToStaging']>>;
    try {
      facts = await state.step(step('restore-staging'), () => data.restoreToStaging({ backupId, instanceId, jobs: p.jobs, advanceSequences: p.advanceSequences }));
      // A cancel that came as pg_restore finished still stops the run here, before the target is touched.
      if (CancellationScope.current().consideredCancelled) await CancellationScope.current().cancelRequested;
    } catch (err) {
      // Before the swap: the target is untouched; only the staging copy goes.
      await CancellationScope.nonCancellable(() => untilDone.discardStaging({ instanceId, backupId }));
      throw err;
    }
    try {
      // Once begun, the swap is finished even if the run is cancelled: a half-swapped instance helps nobody.
      await CancellationScope.nonCancellable(() => state.step(step('swap'), () => ddl.swapInRestored({ backupId, instanceId })));
    } catch (err) {
      if (failureTypeOf(err) === FailureTypes.stagingIncomplete) {
        // Refused before anything was renamed: the target is as it was.
        await CancellationScope.nonCancellable(() => untilDone.discardStaging({ instanceId, backupId }));
        throw err;
      }
      await CancellationScope.nonCancellable(async () => {
        await untilDone.setInstanceState({ instanceId, state: 'failed' });
        await untilDone.discardStaging({ instanceId, backupId });
      });
      throw ApplicationFailure.nonRetryable(
        `the swap failed after it began (${errorMessage(err)}); instance ${instanceId} is now failed: reset it (POST /v1/runbooks/reset) and restore again`,
        FailureTypes.invalidState,
      );
    }
    // The replaced copy is dropped by a run of its own, a little later: a DROP forces an immediate
    // checkpoint, and flushing the whole restore at once would stall every write on the server (the
    // catalog's and Temporal's too) just as the restored instance comes back. Abandoned, so it finishes
    // even as this run ends; a copy it never drops is dropped by the instance's next restore or reset.
    await CancellationScope.nonCancellable(() =>
      startChild(dropRetiredWorkflow, {
        workflowId: `${workflowInfo().workflowId}-drop-retired${stepPrefix ? `-${stepPrefix.replace(/:$/, '')}` : ''}`,
        args: [{ instanceId, afterSeconds: p.dropRetiredAfterSeconds ?? DROP_RETIRED_AFTER_SECONDS }],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        typedSearchAttributes: runSearchAttributes(instanceId, Runbooks.dropRetired),
      }),
    );
    if (facts.sequencesBehind.length && !facts.sequencesAdvanced.length) {
      const list = facts.sequencesBehind.map((s) => `${s.name} (restored ${s.restored ?? 'unused'}, had issued ${s.issued})`).join(', ');
      state.warn(`sequences run backwards after this restore: ${list}; duplicate numbers are possible: restore with advanceSequences: true, or move them past the old values before resuming`);
    }
    return {
      backupId,
      instanceId,
      state: 'suspended',
      sequencesBehind: facts.sequencesBehind,
      sequencesAdvanced: facts.sequencesAdvanced,
      databaseBytes: facts.databaseBytes,
      warnings: [...state.status.warnings],
      next: `instance ${instanceId} is suspended (it refuses connections): check it, then resume it with POST /v1/instances/${instanceId}/resume`,
    };
  } finally {
    await CancellationScope.nonCancellable(() => untilDone.releaseArchive({ backupId }));
  }
}

/** Drops the database copy a restore's swap replaced (housekeeping, started by the restore as a child run). */
export async function dropRetiredWorkflow(input: { instanceId: string; afterSeconds?: number }): Promise<void> {
  const state = new RunState(Runbooks.dropRetired, input.instanceId);
  if (input.afterSeconds) await state.step('wait', () => sleep(input.afterSeconds! * 1000));
  await state.step('drop-retired', () => untilDone.dropRetired({ instanceId: input.instanceId }));
  state.finish();
}

/** Undoes a restore into a new instance: staging, database, schedule and catalog row, so nothing is left behind. */
async function removeNewInstance(instanceId: string, backupId: string): Promise<void> {
  await CancellationScope.nonCancellable(async () => {
    await untilDone.discardStaging({ instanceId, backupId });
    await untilDone.dropInstanceDatabase({ instanceId });
    await untilDone.removeBackupSchedule({ instanceId });
    await untilDone.deleteInstanceRecord({ instanceId });
  });
}
