import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError } from '@temporalio/client';
import { eq, or } from 'drizzle-orm';
import { instances, type InstanceRow } from '../db/schema/index.js';
import { acquireLock, releaseLock } from '../lib/locks.js';
import { yieldGeoSecondary } from '../lib/replication.js';
import { isRunRunning } from '../lib/runs.js';
import { runSearchAttributes } from '../lib/temporal.js';
import { FailureTypes, type Runbook } from '../workflows/contract.js';
import { errorMessage, failureTypeOf } from '../workflows/run-state.js';
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
 * Starts a runbook under the exclusion lock of its instance (and of every
 * instance in `locks`, taken in id order so two runs never deadlock): 409
 * naming the holder if another run has one, then starts the workflow. If
 * anything fails, the locks this request took are given back: nothing half-changed.
 */
export async function startLockedRunbook(
  deps: ApiDeps,
  input: { instance: InstanceRow; locks?: InstanceRow[]; runbook: Runbook; workflowId: string; workflowType: string; args: unknown[] },
): Promise<RunRef> {
  const toLock = [...(input.locks ?? [input.instance])].sort((a, b) => a.id.localeCompare(b.id));
  const taken: string[] = [];
  // Give back only what this request took: a re-entrant take means the run already holds it.
  const giveBack = async () => {
    for (const id of taken.reverse()) await releaseLock(deps.db, id, input.workflowId);
  };
  for (const inst of toLock) {
    // Housekeeping (a geo-secondary being made or repaired) yields to the runbook an operator asked for.
    await yieldGeoSecondary(deps.db, deps.temporal, inst.id);
    const lock = await acquireLock(deps.db, { instanceId: inst.id, workflowId: input.workflowId, runbook: input.runbook }, (id) => isRunRunning(deps.temporal, id));
    if (lock.ok) {
      if (lock.newlyAcquired) taken.push(inst.id);
      continue;
    }
    await giveBack();
    if (lock.reason === 'not_found') throw new ApiError(404, 'instance_not_found', `instance ${inst.name} does not exist`);
    throw busyError(deps, inst.name, lock.holder);
  }
  await startRun(deps, input, giveBack);
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
    const type = failureTypeOf(err);
    if (type === FailureTypes.invalidState || type === FailureTypes.instanceBusy) {
      throw new ApiError(409, 'run_refused', `run ${workflowId} refused: ${errorMessage(err)}`, { run });
    }
    if (type === FailureTypes.instanceNotFound) throw new ApiError(404, 'instance_not_found', errorMessage(err), { run });
    throw new ApiError(502, 'run_failed', `run ${workflowId} failed: ${errorMessage(err)}; see the run for details`, { run });
  } finally {
    clearTimeout(timer);
  }
}

