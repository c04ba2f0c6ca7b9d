import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { WorkflowFailedError, WorkflowNotFoundError, type WorkflowExecutionDescription, type WorkflowExecutionInfo } from '@temporalio/client';
import { eq } from 'drizzle-orm';
import { instances } from '../../db/schema/index.js';
import { runStatusQuery, type RunStatus } from '../../workflows/contract.js';
import { errorMessage } from '../../workflows/run-state.js';
import type { ApiDeps, ApiEnv } from '../deps.js';
import { uiLink } from '../deps.js';
import { ApiError, ErrorSchema, json } from '../errors.js';
import { RunSchema, type RunDto } from '../schemas.js';
import { InstanceIdKey, RunbookKey } from '../../lib/temporal.js';

/** Run statuses as the API reports them (the SDK's names, lower-cased) → the visibility query's spelling. */
const Statuses = {
  running: 'Running',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Canceled',
  terminated: 'Terminated',
  timed_out: 'TimedOut',
  continued_as_new: 'ContinuedAsNew',
} as const;


const quote = (s: string) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

/** The fields of a run that Temporal's visibility gives for a listed or described execution. */
function summary(deps: ApiDeps, d: Omit<WorkflowExecutionInfo, 'raw'>) {
  return {
    workflowId: d.workflowId,
    runId: d.runId,
    runbook: d.typedSearchAttributes.get(RunbookKey) ?? null,
    instanceId: d.typedSearchAttributes.get(InstanceIdKey) ?? null,
    status: d.status.name.toLowerCase(),
    startTime: d.startTime.toISOString(),
    closeTime: d.closeTime?.toISOString() ?? null,
    url: uiLink(deps, d.workflowId),
  };
}

/** /v1/runs: runbook runs, read from Temporal (the source of truth for runs). */
export function runsApp(deps: ApiDeps) {
  const app = new OpenAPIHono<ApiEnv>();

  app.openapi(
    createRoute({
      method: 'get',
      path: '/',
      tags: ['runs'],
      summary: 'List runs, newest first, filtered by instance, runbook and status',
      request: {
        query: z.object({
          instance: z.string().max(100).optional().openapi({ description: 'instance id or name' }),
          runbook: z.string().max(100).optional(),
          status: z.enum(Object.keys(Statuses) as [keyof typeof Statuses]).optional(),
          limit: z.coerce.number().int().min(1, 'must be at least 1').max(200, 'must be at most 200').default(50),
        }),
      },
      responses: {
        200: json(z.object({ runs: z.array(RunSchema.pick({ workflowId: true, runId: true, runbook: true, instanceId: true, status: true, startTime: true, closeTime: true, url: true })) }), 'runs'),
        400: json(ErrorSchema, 'bad filter'),
        401: json(ErrorSchema, 'missing or unknown token'),
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      const clauses = ['Runbook IS NOT NULL'];
      if (q.instance) {
        // Accept an instance name too: runs are tagged with the instance id.
        const [byName] = await deps.db.select({ id: instances.id }).from(instances).where(eq(instances.name, q.instance));
        clauses.push(`InstanceId = ${quote(byName?.id ?? q.instance)}`);
      }
      if (q.runbook) clauses.push(`Runbook = ${quote(q.runbook)}`);
      if (q.status) clauses.push(`ExecutionStatus = ${quote(Statuses[q.status])}`);
      const runs = [];
      for await (const wf of deps.temporal.workflow.list({ query: clauses.join(' AND '), pageSize: q.limit })) {
        runs.push(summary(deps, wf));
        if (runs.length >= q.limit) break;
      }
      return c.json({ runs }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/{id}',
      tags: ['runs'],
      summary: 'One run: status, current step, progress, warnings, result, and its Temporal UI link',
      request: { params: z.object({ id: z.string().min(1).max(300).openapi({ param: { name: 'id', in: 'path' } }) }) },
      responses: { 200: json(RunSchema, 'the run'), 401: json(ErrorSchema, 'missing or unknown token'), 404: json(ErrorSchema, 'no such run') },
    }),
    async (c) => {
      const id = c.req.valid('param').id;
      const handle = deps.temporal.workflow.getHandle(id);
      let d: WorkflowExecutionDescription;
      try {
        d = await handle.describe();
      } catch (e) {
        if (e instanceof WorkflowNotFoundError) throw new ApiError(404, 'run_not_found', `run ${id} does not exist`);
        throw e;
      }
      let status: RunStatus | null = null;
      try {
        status = await handle.query(runStatusQuery);
      } catch {
        status = null; // no worker to answer right now; the rest still comes from Temporal
      }
      const base = summary(deps, d);
      let result: unknown = null;
      let error: string | null = status?.error ?? null;
      if (base.status === 'completed') result = await handle.result();
      if (base.status === 'failed' && !error) {
        try {
          await handle.result();
        } catch (e) {
          error = e instanceof WorkflowFailedError ? errorMessage(e) : String(e);
        }
      }
      const pending = d.raw.pendingActivities?.find((a) => a.heartbeatDetails?.payloads?.length);
      let progress: unknown = null;
      if (pending?.heartbeatDetails?.payloads?.[0]) {
        progress = deps.temporal.options.loadedDataConverter.payloadConverter.fromPayload(pending.heartbeatDetails.payloads[0]);
      }
      const dto: RunDto = {
        ...base,
        step: status?.step ?? null,
        stepsDone: status?.stepsDone ?? [],
        progress,
        warnings: status?.warnings ?? [],
        result,
        error,
      };
      return c.json(dto, 200);
    },
  );

  return app;
}
