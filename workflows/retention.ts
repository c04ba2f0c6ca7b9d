import { log, proxyActivities } from '@temporalio/workflow';
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
export async function retentionSweepWorkflow(): Promise<{ instances: number; expired: string[]; failed: string[] }> {
  const state = new RunState(Runbooks.retentionSweep, '*');
  const ids = await state.step('list-instances', () => acts.listInstancesWithBackups());
  const expired: string[] = [];
  const failed: string[] = [];
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
  state.finish();
  return { instances: ids.length, expired, failed };
}
