import { ApplicationFailure, WorkflowExecutionAlreadyStartedError, WorkflowFailedError } from '@temporalio/client';
import { eq, or } from 'drizzle-orm';
import { instances, type InstanceRow } from '../db/schema/index.js';
import { acquireLock, releaseLock } from '../lib/locks.js';
import { isRunRunning } from '../lib/runs.js';
import { runSearchAttributes } from '../lib/temporal.js';
import { FailureTypes, type Runbook } from '../workflows/contract.js';
import { errorMessage } from '../workflows/run-state.js';
import { uiLink, type ApiDeps } from './deps.js';
import { ApiError } from './errors.js';

/** Finds an instance by id or by name; 404 naming it otherwise. */
export async function findInstance(deps: ApiDeps, idOrName: string): Promise<InstanceRow> {
  // An id match wins over a name match; names that look like ids are refused at creation anyway.
  const rows = await deps.db
    .select()
    .from(instances)
    .where(or(eq(instances.id, idOrName), eq(instances.name, idOrName)));
  const row = rows.find((r) => r.id === idOrName) ?? rows[0];
  if (!row) throw new ApiError(404, 'instance_not_found', `instance ${idOrName} does not exist`);
  return row;
}

/** A started run, as the API returns it. */
export interface RunRef {
  workflowId: string;
  runbook: string;
  url: string;
  links: Record<string, string>;
}

/** The 409 for an instance another run holds, naming that run. */
export function busyError(deps: ApiDeps, instanceName: string, holder: { workflowId: string; runbook: string }): ApiError {
  return new ApiError(
    409,
    'instance_busy',
    `instance ${instanceName} is busy: run ${holder.workflowId} (${holder.runbook}) is acting on it; wait for it to end or cancel it`,
    { run: { ...holder, url: uiLink(deps, holder.workflowId) } },
  );
}

export function runRef(deps: ApiDeps, workflowId: string, runbook: string): RunRef {
  return { workflowId, runbook, url: uiLink(deps, workflowId), links: { run: `/v1/runs/${encodeURIComponent(workflowId)}` } };
}

/**
 * Starts a runbook on an instance under its exclusion lock: takes the lock for
 * the new run (409 naming the holder if another run has it), then starts the
 * workflow. If the start fails, the lock is given back: nothing half-changed.
 */
export async function startLockedRunbook(
  deps: ApiDeps,
  input: { instance: InstanceRow; runbook: Runbook; workflowId: string; workflowType: string; args: unknown[] },
): Promise<RunRef> {
  const lock = await acquireLock(
    deps.db,
    { instanceId: input.instance.id, workflowId: input.workflowId, runbook: input.runbook },
    (id) => isRunRunning(deps.temporal, id),
  );
  if (!lock.ok && lock.reason === 'not_found') throw new ApiError(404, 'instance_not_found', `instance ${input.instance.name} does not exist`);
  if (!lock.ok && lock.reason === 'busy') throw busyError(deps, input.instance.name, lock.holder);
  // Give the lock back on a failed start only if this request took it: a re-entrant take means the run holds it.
  await startRun(deps, input, async () => {
    if (lock.newlyAcquired) await releaseLock(deps.db, input.instance.id, input.workflowId);
  });
  return runRef(deps, input.workflowId, input.runbook);
}

/** Starts a workflow with the run search attributes; on failure calls `undo` and answers 409 or 503. */
export async function startRun(
  deps: ApiDeps,
  input: { instance: Pick<InstanceRow, 'id' | 'name'>; runbook: Runbook; workflowId: string; workflowType: string; args: unknown[] },
  undo: () => Promise<unknown>,
): Promise<void> {
  try {
    // A bounded wait: with Temporal down the client would otherwise retry for a long time while the caller hangs.
    await deps.temporal.withDeadline(Date.now() + (deps.startDeadlineMs ?? 10_000), () =>
      deps.temporal.workflow.start(input.workflowType, {
        workflowId: input.workflowId,
        taskQueue: deps.cfg.TEMPORAL_TASK_QUEUE,
        args: input.args,
        typedSearchAttributes: runSearchAttributes(input.instance.id, input.runbook),
      }),
    );
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) {
      // The run exists; `undo` gives back only what this request took (a closing run re-takes its lock if it needs it).
      await undo();
      throw new ApiError(409, 'run_exists', `run ${input.workflowId} is already running; follow it at ${uiLink(deps, input.workflowId)}`, {
        run: { workflowId: input.workflowId, runbook: input.runbook, url: uiLink(deps, input.workflowId) },
      });
    }
    await undo();
    throw new ApiError(503, 'temporal_unavailable', `could not start the ${input.runbook} run: ${errorMessage(err)}; nothing was changed, retry when Temporal is reachable`);
  }
}

/**
 * Waits up to `ms` for a run's outcome. Returns 'completed', 'running' (still
 * going; answer 202), or throws a 4xx/5xx ApiError carrying the run's own failure.
 */
export async function awaitRun(deps: ApiDeps, workflowId: string, runbook: Runbook, ms: number): Promise<'completed' | 'running'> {
  const handle = deps.temporal.workflow.getHandle(workflowId);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'running'>((resolve) => (timer = setTimeout(() => resolve('running'), ms)));
  try {
    return await Promise.race([handle.result().then(() => 'completed' as const), timeout]);
  } catch (err) {
    if (!(err instanceof WorkflowFailedError)) return 'running'; // lost sight of the run, not its outcome: answer 202 and let the caller follow it
    const run = { workflowId, runbook, url: uiLink(deps, workflowId) };
    const type = failureType(err);
    if (type === FailureTypes.invalidState || type === FailureTypes.instanceBusy) {
      throw new ApiError(409, 'run_refused', `run ${workflowId} refused: ${errorMessage(err)}`, { run });
    }
    if (type === FailureTypes.instanceNotFound) throw new ApiError(404, 'instance_not_found', errorMessage(err), { run });
    throw new ApiError(502, 'run_failed', `run ${workflowId} failed: ${errorMessage(err)}; see the run for details`, { run });
  } finally {
    clearTimeout(timer);
  }
}

/** The ApplicationFailure type at the root of a workflow failure, if any. */
function failureType(err: unknown): string | undefined {
  let e: unknown = err;
  let type: string | undefined;
  while (e && typeof e === 'object') {
    if (e instanceof ApplicationFailure && e.type) type = e.type;
    e = (e as { cause?: unknown }).cause;
  }
  return type;
}
