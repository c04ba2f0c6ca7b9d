import { WorkflowIdConflictPolicy } from '@temporalio/common';
import type { Client } from '@temporalio/client';
import { Runbooks, workflowIds, type RegionMonitorInput } from '../workflows/contract.js';
import type { Config } from './config.js';
import { runSearchAttributes } from './temporal.js';

/** The monitor input of a region, from the configuration. */
export function monitorInput(cfg: Config, region: string): RegionMonitorInput {
  return {
    region,
    everySeconds: cfg.REGION_CHECK_SECONDS,
    outageAfter: cfg.OUTAGE_AFTER_FAILED_CHECKS,
    autoFailover: cfg.AUTO_FAILOVER,
    signoffTimeoutMinutes: cfg.FAILOVER_SIGNOFF_MINUTES,
    signoffRemindEveryMinutes: cfg.FAILOVER_REMIND_SECONDS / 60,
    concurrency: cfg.FAILOVER_CONCURRENCY,
  };
}

/**
 * Starts one region monitor per configured region, replacing a running one so
 * a changed configuration takes effect (a monitor keeps no state of its own:
 * its counts are in the catalog).
 */
export async function ensureRegionMonitors(client: Client, cfg: Config): Promise<void> {
  for (const r of cfg.REGIONS) {
    await client.workflow.start('regionMonitorWorkflow', {
      workflowId: workflowIds.regionMonitor(r.name),
      taskQueue: cfg.TEMPORAL_TASK_QUEUE,
      args: [monitorInput(cfg, r.name)],
      workflowIdConflictPolicy: WorkflowIdConflictPolicy.TERMINATE_EXISTING,
      typedSearchAttributes: runSearchAttributes(`region:${r.name}`, Runbooks.regionMonitor),
    });
  }
}
