import { ActivityCancellationType, proxyActivities } from '@temporalio/workflow';
import type * as activities from '../activities/index.js';

/**
 * The activity proxies of the restore family (restore, reset, the swap and
 * the sign-off gate), one per timeout class, so every runbook that restores
 * retries the same step the same way.
 */
type Acts = activities.Activities;

/** Catalog calls and rule checks: short, retried for a minute. */
export const catalog = proxyActivities<Acts>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', maximumInterval: '10s', maximumAttempts: 6 },
});

/**
 * Data moves (verify, pg_restore): long, heartbeating, a few retries; each
 * attempt starts its staging copy afresh. On cancellation the run waits for
 * pg_restore to stop before it cleans up.
 */
export const data = proxyActivities<Acts>({
  startToCloseTimeout: '12h',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumAttempts: 3 },
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});

/** Database DDL (swap, drop, create, reset): minutes at most, retried a few times. */
export const ddl = proxyActivities<Acts>({
  startToCloseTimeout: '10m',
  retry: { initialInterval: '2s', maximumInterval: '30s', maximumAttempts: 5 },
});

/** Clean-up and undo steps: idempotent, retried until done rather than left half way. */
export const untilDone = proxyActivities<Acts>({
  startToCloseTimeout: '10m',
  retry: { initialInterval: '1s', maximumInterval: '1m' },
});
