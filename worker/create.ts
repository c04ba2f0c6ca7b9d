import path from 'node:path';
import { NativeConnection, Worker, type InjectedSinks } from '@temporalio/worker';
import { fileFaults } from '../activities/faults.js';
import { createActivities } from '../activities/index.js';
import { createDb } from '../db/client.js';
import type { Config } from '../lib/config.js';
import { isCompiled, projectRoot } from '../lib/paths.js';
import { ensureRegionMonitors } from '../lib/monitors.js';
import { openRegions, syncRegions } from '../lib/regions.js';
import { ensureRetentionSweepSchedule } from '../lib/schedules.js';
import { connectTemporal, ensureSearchAttributes } from '../lib/temporal.js';
import { recordRunbookEnd } from '../lib/worker-metrics.js';
import type { RunbookMetricsSinks } from '../workflows/interceptors.js';
import { activityInterceptors } from './activity-interceptors.js';

/** A worker ready to run, and how to release everything it opened. */
export interface BcdrWorker {
  worker: Worker;
  close: () => Promise<void>;
}

/** Path of the workflow entry point, from sources or from the compiled tree. */
export const workflowsPath = path.join(projectRoot, isCompiled ? 'dist/workflows/index.js' : 'workflows/index.ts');

/**
 * Workflow interceptor modules (instance id on log lines, run outcome lines, the runbook metrics sink).
 * A prebuilt bundle must be built with them: `bundleWorkflowCode({ workflowsPath, workflowInterceptorModules })`.
 */
export const workflowInterceptorModules = [path.join(projectRoot, isCompiled ? 'dist/workflows/interceptors.js' : 'workflows/interceptors.ts')];

/** Worker side of the workflow interceptors' sink: runbook outcomes and durations into the worker's metrics (never on replay). */
export const runbookMetricsSinks: InjectedSinks<RunbookMetricsSinks> = {
  runbookMetrics: {
    runEnded: { fn: (_info, runbook, outcome, durationMs) => recordRunbookEnd(runbook, outcome, durationMs), callDuringReplay: false },
  },
};

/**
 * Builds a worker for the configured Temporal namespace and task queue:
 * registers the search attributes, syncs regions into the catalog, and binds
 * activities to the catalog, the region engines and the blob stores.
 */
export async function createBcdrWorker(cfg: Config, opts: { workflowBundle?: { code: string } } = {}): Promise<BcdrWorker> {
  const { client, connection } = await connectTemporal(cfg);
  await ensureSearchAttributes(connection, cfg.TEMPORAL_NAMESPACE);
  if (cfg.FLEET_SCHEDULES) await ensureRetentionSweepSchedule(client, cfg.TEMPORAL_TASK_QUEUE, cfg.RETENTION_SWEEP_EVERY_MINUTES);
  const catalog = createDb(cfg.CATALOG_DATABASE_URL);
  await syncRegions(catalog.db, cfg);
  const regions = openRegions(cfg);
  const nativeConnection = await NativeConnection.connect({ address: cfg.TEMPORAL_ADDRESS });
  const worker = await Worker.create({
    connection: nativeConnection,
    namespace: cfg.TEMPORAL_NAMESPACE,
    taskQueue: cfg.TEMPORAL_TASK_QUEUE,
    ...(opts.workflowBundle ? { workflowBundle: opts.workflowBundle } : { workflowsPath }),
    interceptors: {
      // Ignored with a prebuilt bundle (which must have been built with them).
      ...(opts.workflowBundle ? {} : { workflowModules: workflowInterceptorModules }),
      activity: [activityInterceptors({ client })],
    },
    sinks: runbookMetricsSinks,
    // Send heartbeats (and so dump progress) to the server at least every 3 s, not 80% of the heartbeat timeout.
    maxHeartbeatThrottleInterval: '3s',
    // On SIGTERM, let running activities (a dump) finish for this long before they are cancelled and retried elsewhere.
    shutdownGraceTime: cfg.WORKER_SHUTDOWN_GRACE_SECONDS * 1000,
    activities: createActivities({
      db: catalog.db,
      regions: regions.regions,
      temporal: client,
      taskQueue: cfg.TEMPORAL_TASK_QUEUE,
      defaultBackupStartTime: cfg.DEFAULT_BACKUP_START_TIME,
      readiness: {
        rpoTargetSeconds: cfg.RPO_TARGET_SECONDS,
        backupMaxAgeHours: cfg.BACKUP_MAX_AGE_HOURS,
        refreshSeconds: 60,
        measureMaxAgeSeconds: Math.max(30, cfg.REGION_CHECK_SECONDS * 4),
      },
      scratchDir: cfg.SCRATCH_DIR,
      faults: cfg.BCDR_FAULT_FILE ? fileFaults(cfg.BCDR_FAULT_FILE) : undefined,
    }),
  });
  // After the worker exists, so the monitors' first tasks have somewhere to run.
  if (cfg.REGION_MONITORS) await ensureRegionMonitors(client, cfg);
  return {
    worker,
    close: async () => {
      await nativeConnection.close();
      await regions.close();
      await catalog.close();
      await connection.close();
    },
  };
}
