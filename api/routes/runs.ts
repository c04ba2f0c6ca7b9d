import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { WorkflowFailedError, WorkflowNotFoundError, type WorkflowExecutionDescription, type WorkflowExecutionInfo } from '@temporalio/client';
import { eq } from 'drizzle-orm';
import { LRUCache } from 'lru-cache';
import { instances } from '../../db/schema/index.js';

const RunIdParam = z.object({ id: Ref(300).openapi({ param: { name: 'id', in: 'path' } }) });

const SignoffBody = z
  .object({
    decision: z.enum(['approve', 'reject']),
    statement: FreeText({ max: 4000, multiline: true, example: 'Checked the lag and the backup; approved for tonight.' }),
  })
  .strict()
  .openapi('SignOff');

const runErrors = errorResponses('no such run', 'conflict: the run is not running, or waits for no sign-off');
import { Runbooks, runStatusQuery, signOffSignal, type Runbook, type RunStatus, type SignOffDecision } from '../../workflows/contract.js';
import { errorMessage } from '../../workflows/run-state.js';
import type { ApiDeps, ApiEnv } from '../deps.js';
import { uiLink } from '../deps.js';
import { ApiError, ErrorSchema, json } from '../errors.js';
import { FreeText, Ref, RunRefSchema, RunSchema, type RunDto } from '../schemas.js';
import { and } from 'drizzle-orm';
import { signoffs } from '../../db/schema/index.js';
import { audit } from '../../lib/audit.js';
import { requireRole } from '../auth.js';
import { errorResponses } from '../errors.js';
import { runRef } from '../runbooks.js';
import { signoffDto, SignoffSchema } from './signoffs.js';
import { InstanceIdKey, RunbookKey } from '../../lib/temporal.js';

/** How long an open run's read is served again before it is read anew. */
const OPEN_RUN_MS = 500;
/** How often a closed run is checked to still be the newest run of its workflow id. */
const CLOSED_RUN_RECHECK_MS = 2_000;

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
          instance: FreeText({ max: 100 }).optional().openapi({ description: 'instance id or name' }),
          runbook: z.enum(Object.values(Runbooks) as [Runbook, ...Runbook[]]).optional(),
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
      request: { params: RunIdParam },
      responses: { 200: json(RunSchema, 'the run'), 401: json(ErrorSchema, 'missing or unknown token'), 404: json(ErrorSchema, 'no such run') },
    }),
    async (c) => c.json(await cachedRun(c.req.valid('param').id), 200),
  );

  /**
   * A run as last read, by workflow id. A closed run never changes: it is read
   * once (its status query makes a worker replay the whole history) and then
   * only checked, every few seconds, to still be the newest run of its id
   * (a closed id can be started again). An open run is read again at most
   * twice a second, whoever asks and however often: a fleet of consoles and
   * `bcdr runs watch` cost the workers one query per run per half second.
   */
  const runs = new LRUCache<string, { dto: RunDto; at: number }>({ max: 10_000 });
  const reads = new Map<string, Promise<RunDto>>();
  /** Bumped by `forget`: a read that started before is not kept (it may predate a sign-off or a cancel). */
  let epoch = 0;
  async function cachedRun(id: string): Promise<RunDto> {
    const hit = runs.get(id);
    if (hit && Date.now() - hit.at < (hit.dto.status === 'running' ? OPEN_RUN_MS : CLOSED_RUN_RECHECK_MS)) return hit.dto;
    let read = reads.get(id);
    if (!read) {
      const started = epoch;
      read = (async () => {
        const d = await describeRun(id);
        const closed = d.status.name !== 'RUNNING';
        const dto = closed && hit && hit.dto.runId === d.runId && hit.dto.status !== 'running' ? hit.dto : await readRun(d);
        // Not a closed run that no worker answered for: its step is unknown, so it is read again next time.
        if ((!closed || dto.step !== null) && started === epoch) runs.set(id, { dto, at: Date.now() });
        return dto;
      })();
      const mine = read;
      void mine.finally(() => {
        if (reads.get(id) === mine) reads.delete(id);
      }).catch(() => {});
      reads.set(id, mine);
    }
    return read;
  }
  /** The run changed here (a sign-off, a cancel): the next read reads it. */
  const forget = (id: string) => {
    epoch++;
    runs.delete(id);
    reads.delete(id);
  };

  /** The API's view of a run: Temporal's description, the run's own status query, its result or error, and activity progress. */
  async function readRun(d: WorkflowExecutionDescription): Promise<RunDto> {
    const handle = deps.temporal.workflow.getHandle(d.workflowId, d.runId);
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
    return {
      ...base,
      step: status?.step ?? null,
      stepsDone: status?.stepsDone ?? [],
      progress,
      warnings: status?.warnings ?? [],
      waiting: status?.waiting ?? null,
      requestedBy: status?.requestedBy ?? null,
      instances: status?.instances ?? null,
      result,
      error,
    };
  }

  /** The run's description, or 404. */
  async function describeRun(id: string): Promise<WorkflowExecutionDescription> {
    try {
      return await deps.temporal.workflow.getHandle(id).describe();
    } catch (e) {
      if (e instanceof WorkflowNotFoundError) throw new ApiError(404, 'run_not_found', `run ${id} does not exist`);
      throw e;
    }
  }

  app.openapi(
    createRoute({
      method: 'post',
      path: '/{id}/signoff',
      tags: ['runs'],
      summary: "Approve or reject, with a written statement, a run waiting for sign-off (approver role; never the run's own requester)",
      middleware: [requireRole('approver')] as const,
      request: { params: RunIdParam, body: { content: { 'application/json': { schema: SignoffBody } }, required: true } },
      responses: {
        200: json(z.object({ signoff: SignoffSchema }), 'the run took the decision'),
        202: json(z.object({ signoff: SignoffSchema }), 'decision sent; the run has not recorded it yet'),
        ...runErrors,
      },
    }),
    async (c) => {
      const id = c.req.valid('param').id;
      const body = c.req.valid('json');
      const me = c.get('principal').identity;
      const d = await describeRun(id);
      const [pending] = await deps.db.select().from(signoffs).where(and(eq(signoffs.workflowId, id), eq(signoffs.status, 'pending')));
      if (!pending || d.status.name !== 'RUNNING') throw new ApiError(409, 'no_pending_signoff', `run ${id} is not waiting for sign-off`);
      if (pending.requestedBy === me) {
        throw new ApiError(403, 'four_eyes', `${me} started run ${id} and cannot sign it off: another approver must (four eyes)`);
      }
      const gate = pending.id.slice(id.length + 1);
      const decision: SignOffDecision = { gate, decision: body.decision, statement: body.statement, by: me, at: new Date().toISOString() };
      await deps.temporal.workflow.getHandle(id).signal(signOffSignal, decision);
      forget(id);
      await audit(deps.db, { actor: me, action: 'signoff.sent', instanceId: pending.instanceIds[0] ?? null, subject: pending.id, details: { decision: body.decision, statement: body.statement } });
      // The run records the decision in a moment; answer with it when it has.
      const deadline = Date.now() + 5_000;
      for (;;) {
        const [row] = await deps.db.select().from(signoffs).where(eq(signoffs.id, pending.id));
        if (row && row.status !== 'pending') return c.json({ signoff: signoffDto(deps, row) }, 200);
        if (Date.now() > deadline) return c.json({ signoff: signoffDto(deps, row ?? pending) }, 202);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/{id}/cancel',
      tags: ['runs'],
      summary: 'Cancel a running run: it cleans up what it started and gives its instances back',
      middleware: [requireRole('operator')] as const,
      request: { params: RunIdParam },
      responses: { 202: json(z.object({ cancelled: z.string(), run: RunRefSchema }), 'cancellation requested; follow the run'), ...runErrors },
    }),
    async (c) => {
      const id = c.req.valid('param').id;
      const d = await describeRun(id);
      if (d.status.name !== 'RUNNING') throw new ApiError(409, 'run_not_running', `run ${id} is ${d.status.name.toLowerCase()}, not running: nothing to cancel`);
      await deps.temporal.workflow.getHandle(id).cancel();
      forget(id);
      const runbook = d.typedSearchAttributes.get(RunbookKey) ?? 'unknown';
      await audit(deps.db, { actor: c.get('principal').identity, action: 'run.cancel', instanceId: d.typedSearchAttributes.get(InstanceIdKey) ?? null, subject: id, details: { runbook } });
      return c.json({ cancelled: id, run: runRef(deps, id, runbook) }, 202);
    },
  );

  return app;
}
