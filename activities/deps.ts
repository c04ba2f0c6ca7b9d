import { ApplicationFailure, Context } from '@temporalio/activity';
import { eq } from 'drizzle-orm';
import type { Client } from '@temporalio/client';
import type { Database } from '../db/client.js';
import { instances, type InstanceRow } from '../db/schema/index.js';
import { FailureTypes } from '../workflows/contract.js';
import type { InstanceEngine } from '../lib/engine/types.js';
import type { BackupStore } from '../lib/storage/backup-store.js';
import type { FaultHooks } from './faults.js';

/** A region's live handles: its database engine and its backup store. */
export interface RegionHandles {
  name: string;
  pair: string;
  engine: InstanceEngine;
  backups: BackupStore;
}

/** Everything activities reach outside the workflow. Built once per worker; secrets stay here, never in workflow inputs. */
export interface ActivityDeps {
  db: Database;
  regions: Map<string, RegionHandles>;
  temporal: Client;
  taskQueue: string;
  /** Start time (UTC HH:MM) of a new instance's daily backup schedule. */
  defaultBackupStartTime?: string;
  /** Failover readiness: the default RPO target (lag, seconds), the oldest a good backup may be, how often an unchanged readiness is stored again, and how old a lag measurement may be. */
  readiness?: { rpoTargetSeconds: number; backupMaxAgeHours: number; refreshSeconds: number; measureMaxAgeSeconds: number };
  /** The worker's scratch folder (parallel restores spool archives there); the OS temp folder by default. */
  scratchDir?: string;
  /** Test-only fault hooks; never set in production. */
  faults?: FaultHooks;
}

/** The handles of `name`, or an error naming the configured regions. */
export function region(deps: Pick<ActivityDeps, 'regions'>, name: string): RegionHandles {
  const r = deps.regions.get(name);
  if (!r) throw new Error(`region ${name} is not configured (configured: ${[...deps.regions.keys()].join(', ')})`);
  return r;
}

/** The workflow id of the run that scheduled the current activity. */
export function callerWorkflowId(): string {
  const exec = Context.current().info.workflowExecution;
  if (!exec) throw new Error('this activity must be called from a workflow');
  return exec.workflowId;
}

/** The catalog row of an instance; a missing instance is a permanent failure, not one to retry. */
export async function loadInstance(deps: Pick<ActivityDeps, 'db'>, instanceId: string): Promise<InstanceRow> {
  const [row] = await deps.db.select().from(instances).where(eq(instances.id, instanceId));
  if (!row) throw ApplicationFailure.nonRetryable(`instance ${instanceId} does not exist`, FailureTypes.instanceNotFound);
  return row;
}
