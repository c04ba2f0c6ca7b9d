import { continueAsNew, log, proxyActivities } from '@temporalio/workflow';
import type * as activities from '../activities/index.js';
import { Runbooks, type RotateKeysInput, type RotateKeysResult } from './contract.js';
import { errorMessage, RunState } from './run-state.js';

const acts = proxyActivities<activities.Activities>({
  startToCloseTimeout: '5m',
  retry: { initialInterval: '2s', maximumInterval: '1m', maximumAttempts: 5 },
});

/** Failures kept in the result and carried over continue-as-new. */
const MAX_FAILURES = 1000;

/**
 * Key rotation: pages through the backups whose data key is wrapped under a
 * key other than the worker's active one and rewraps each under it (manifests
 * in every store holding the backup, then the catalog). Archives are never
 * re-encrypted. A backup whose key the keyring lacks is reported as failed
 * with that key id; the others go on. One page per run history (continue-as-new).
 */
export async function rotateBackupKeysWorkflow(input: RotateKeysInput): Promise<RotateKeysResult> {
  const state = new RunState(Runbooks.rotateKeys, '*', input.requestedBy);
  const pageSize = input.pageSize ?? 100;
  const page = await state.step('list-backups', () => acts.listBackupsToRewrap({ after: input.after ?? null, limit: pageSize }));
  let rewrapped = input.rewrapped ?? 0;
  let already = input.already ?? 0;
  let skipped = input.skipped ?? 0;
  let failed = input.failed ?? 0;
  const failures = [...(input.failures ?? [])];
  state.status.step = 'rewrap';
  for (const backupId of page.ids) {
    try {
      const r = await acts.rewrapBackupKey({ backupId });
      if (r.outcome === 'rewrapped') rewrapped++;
      else if (r.outcome === 'already') already++;
      else if (r.outcome === 'skipped') skipped++;
      else {
        failed++;
        failures.push({ backupId, keyId: r.fromKeyId, error: r.error ?? 'rewrap failed' });
        state.warn(`backup ${backupId} (key ${r.fromKeyId ?? 'unknown'}) was not rewrapped: ${r.error ?? 'rewrap failed'}`);
      }
    } catch (err) {
      failed++;
      failures.push({ backupId, keyId: null, error: errorMessage(err) });
      state.warn(`backup ${backupId} was not rewrapped: ${errorMessage(err)}`);
      log.warn('rewrap failed for a backup; continuing', { backupId, error: errorMessage(err) });
    }
  }
  if (page.ids.length === pageSize) {
    return continueAsNew<typeof rotateBackupKeysWorkflow>({
      requestedBy: input.requestedBy,
      pageSize,
      after: page.ids[page.ids.length - 1]!,
      rewrapped,
      already,
      skipped,
      failed,
      failures: failures.slice(-MAX_FAILURES),
    });
  }
  state.finish();
  return { activeKeyId: page.activeKeyId, rewrapped, already, skipped, failed, failures: failures.slice(-MAX_FAILURES) };
}
