import { performance } from 'node:perf_hooks';
import { CancelledFailure, type Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import { LRUCache } from 'lru-cache';
import { InstanceIdKey } from '../lib/temporal.js';
import { recordDump, recordRestore } from '../lib/worker-metrics.js';

/** The `instanceId` of an activity's input, when it has one. */
function instanceIdOfInput(arg: unknown): string | undefined {
  if (arg && typeof arg === 'object' && 'instanceId' in arg) {
    const id = (arg as { instanceId: unknown }).instanceId;
    if (typeof id === 'string' && id) return id;
  }
  return undefined;
}

/**
 * The `InstanceId` search attribute of a workflow run, asked of Temporal once per
 * run (cached, misses too) for activities whose input names no instance (a dump
 * takes only its backup id). Bounded wait: a slow answer only costs the field.
 */
export function instanceIdLookup(client: Client | undefined): (workflowId: string, runId: string) => Promise<string | undefined> {
  const cache = new LRUCache<string, { id: string | null }>({ max: 2_000, ttl: 3_600_000 });
  return async (workflowId, runId) => {
    if (!client) return undefined;
    const key = `${workflowId}/${runId}`;
    const hit = cache.get(key);
    if (hit) return hit.id ?? undefined;
    try {
      const d = await client.withDeadline(Date.now() + 2_000, () => client.workflow.getHandle(workflowId, runId).describe());
      const id = d.typedSearchAttributes.get(InstanceIdKey) ?? null;
      cache.set(key, { id });
      return id ?? undefined;
    } catch {
      return undefined;
    }
  };
}

/** Runbooks whose activities repeat every few seconds for ever (the region monitors). */
const routineWorkflowTypes = new Set(['regionMonitorWorkflow']);

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Activity interceptors: every activity log line carries the instance id; each
 * execution logs at info that it started, completed (with its duration) or
 * failed; and the dump and restore activities feed the worker's metrics
 * (backup size, dump and restore throughput).
 */
export function activityInterceptors(opts: { client?: Client }): ActivityInterceptorsFactory {
  const lookup = instanceIdLookup(opts.client);
  return (ctx: Context) => {
    let instanceId: string | undefined;
    // The last heartbeat: a dump that heartbeats did the work itself (a completed backup returned as is does not).
    let lastBeat: unknown;
    const anyCtx = ctx as unknown as { heartbeatFn?: (details?: unknown) => void };
    const beat = anyCtx.heartbeatFn;
    if (typeof beat === 'function') {
      anyCtx.heartbeatFn = (details?: unknown) => {
        lastBeat = details ?? lastBeat ?? true;
        beat(details);
      };
    }
    return {
      inbound: {
        async execute(input, next) {
          const info = ctx.info;
          instanceId = instanceIdOfInput(input.args[0]);
          if (!instanceId && info.workflowExecution) instanceId = await lookup(info.workflowExecution.workflowId, info.workflowExecution.runId);
          const started = performance.now();
          // The region monitors' checks run every few seconds, forever: their routine lines are debug, their failures are not.
          const routine = routineWorkflowTypes.has(info.workflowType ?? '');
          const say = routine ? ctx.log.debug.bind(ctx.log) : ctx.log.info.bind(ctx.log);
          say('activity started');
          try {
            const result = await next(input);
            const durationMs = Math.round(performance.now() - started);
            say(`activity completed (${durationMs} ms)`, { durationMs });
            observe(info.activityType, result, durationMs, lastBeat, typeof beat === 'function');
            return result;
          } catch (err) {
            const durationMs = Math.round(performance.now() - started);
            const cancelled = err instanceof CancelledFailure || ctx.cancellationSignal.aborted;
            ctx.log.info(`activity ${cancelled ? 'cancelled' : 'failed'}: ${errorText(err)}`, { durationMs });
            throw err;
          }
        },
      },
      outbound: {
        getLogAttributes(input, next) {
          return next(instanceId ? { ...input, instanceId } : input);
        },
      },
    };
  };
}

/** Metrics from the results of the dump and restore activities. */
function observe(activityType: string, result: unknown, durationMs: number, lastBeat: unknown, canTellWork: boolean): void {
  if (!result || typeof result !== 'object') return;
  if (activityType === 'dumpBackup') {
    // Only a dump this attempt performed: a backup already completed is returned without a heartbeat.
    if (canTellWork && lastBeat === undefined) return;
    const size = (result as { sizeBytes?: unknown }).sizeBytes;
    if (typeof size === 'number') recordDump(size, durationMs);
  } else if (activityType === 'restoreToStaging') {
    const archive = lastBeat && typeof lastBeat === 'object' ? (lastBeat as { archiveBytes?: unknown }).archiveBytes : undefined;
    const restored = (result as { databaseBytes?: unknown }).databaseBytes;
    const bytes = typeof archive === 'number' && archive > 0 ? archive : typeof restored === 'number' ? restored : undefined;
    if (bytes !== undefined) recordRestore(bytes, durationMs);
  }
}
