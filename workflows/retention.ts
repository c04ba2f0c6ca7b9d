import { continueAsNew, log, patched, proxyActivities } from '@temporalio/workflow';
import type * as activities from '../activities/index.js';
import { Runbooks } from './contract.js';
import { errorMessage, RunState } from './run-state.js';

const acts = proxyActivities<activities.Activities>({
  startToCloseTimeout: '30m',
  heartbeatTimeout: '1m',
  retry: { initialInterval: '5s', maximumInterval: '1m', maximumAttempts: 5 },
});

/**
 * Fleet-wide retention, on its own schedule: expires backups of every instance
 * that has any, deleted instances included, so expiry does not depend on the
 * instance's next backup succeeding. One instance failing does not stop the rest.
 */
export async function retentionSweepWorkflow(input: SweepInput = {}): Promise<SweepResult> {
  const state = new RunState(Runbooks.retentionSweep, '*');
  const pageSize = input.pageSize ?? 200;
  const ids = await state.step('list-instances', () => acts.listInstancesWithBackups({ after: input.after ?? null, limit: pageSize }));
  const expired = [...(input.expired ?? [])];
  const failed = [...(input.failed ?? [])];
  state.status.step = 'retention';
  for (const instanceId of ids) {
    try {
      expired.push(...(await acts.applyRetention({ instanceId })));
    } catch (err) {
      failed.push(instanceId);
      state.warn(`retention of ${instanceId} failed: ${errorMessage(err)}`);
      log.warn('retention failed for an instance; continuing', { instanceId, error: errorMessage(err) });
    }
  }
  const instances = (input.instances ?? 0) + ids.length;
  // Added after release: runs recorded before it replay without the step.
  if (!input.after && patched('sweep-stale-pins')) {
    // What runs that ended without cleaning up (terminated) left behind: archive pins and open sign-offs.
    try {
      await state.step('sweep-stale-pins', () => acts.sweepStalePins());
      await state.step('close-abandoned-signoffs', () => acts.closeAbandonedSignoffs());
    } catch (err) {
      state.warn(`sweeping what ended runs left behind failed: ${errorMessage(err)}`);
    }
  }
  // Added after release, like the step above: offsite copies that failed (the paired store was down) catch up.
  if (!input.after && patched('retry-offsite-copies')) {
    try {
      const copies = await state.step('retry-offsite-copies', () => acts.retryOffsiteCopies({ limit: 50 }));
      if (copies.failed.length) state.warn(`offsite copies still failing: ${copies.failed.join(', ')}`);
    } catch (err) {
      state.warn(`retrying offsite copies failed: ${errorMessage(err)}`);
    }
  }
  if (ids.length === pageSize) {
    // A fresh history per page keeps a large fleet far from Temporal's history limits. Only counts carry over.
    return continueAsNew<typeof retentionSweepWorkflow>({ pageSize, after: ids[ids.length - 1]!, instances, expired: expired.slice(-1000), failed: failed.slice(-1000) });
  }
  state.finish();
  return { instances, expired, failed };
}

/** Where a sweep resumes after continue-as-new, and what it has done so far. */
export interface SweepInput {
  pageSize?: number;
  after?: string;
  instances?: number;
  expired?: string[];
  failed?: string[];
}

/** What a sweep did: instances visited, backups expired (last 1,000) and instances whose retention failed. */
export interface SweepResult {
  instances: number;
  expired: string[];
  failed: string[];
}
