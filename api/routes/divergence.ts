import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { and, asc, desc, eq, inArray } from 'drizzle-orm';
import { divergentRows, DivergentRowStatuses, failovers, type DivergentRow, type FailoverRow } from '../../db/schema/index.js';
import { audit } from '../../lib/audit.js';
import { requireRole } from '../auth.js';
import type { ApiDeps, ApiEnv } from '../deps.js';
import { ApiError, badRequest, errorResponses, json } from '../errors.js';
import { randomBytes } from 'node:crypto';
import { acquireLock, releaseLock } from '../../lib/locks.js';
import { yieldGeoSecondary } from '../../lib/replication.js';
import { isRunRunning } from '../../lib/runs.js';
import { busyError, findInstance } from '../runbooks.js';
import { FreeText, Ref } from '../schemas.js';

const errors = errorResponses('no such instance, or no such failover of it', 'a run holds the instance, or it does not serve writes now');

const IdParam = z.object({ id: Ref().openapi({ param: { name: 'id', in: 'path' }, example: 'contoso' }) });

const DivergentRowSchema = z
  .object({
    id: z.string(),
    table: z.string(),
    key: z.record(z.string(), z.string().nullable()).openapi({ description: "the primary key's values (the whole row for a table without one), as text" }),
    op: z.enum(['insert', 'update', 'delete']).openapi({ description: 'insert: the secondary lacked the row; update: it held other values; delete: the old primary no longer had it' }),
    row: z.record(z.string(), z.unknown()).nullable().openapi({ description: 'the row as the old primary last had it (operators only: tenant data)' }),
    secondaryRow: z.record(z.string(), z.unknown()).nullable().openapi({ description: "the secondary's row under the key when measured" }),
    committedAt: z.string().nullable(),
    status: z.enum(DivergentRowStatuses),
    conflict: z.record(z.string(), z.unknown()).nullable().openapi({ description: 'after a replay refused for a conflict: the serving row under the key' }),
    note: z.string().nullable(),
    replayedAt: z.string().nullable(),
    replayedBy: z.string().nullable(),
  })
  .openapi('DivergentRow');

const DivergenceSchema = z
  .object({
    instanceId: z.string(),
    name: z.string(),
    failover: z
      .object({ id: z.string(), kind: z.string(), declaredAt: z.string(), measured: z.boolean(), oldPrimaryBackupId: z.string().nullable() })
      .nullable()
      .openapi({ description: 'the failover the rows come from (the latest one unless ?failover= names another)' }),
    message: z.string().nullable(),
    total: z.number(),
    tables: z.array(z.object({ table: z.string(), rows: z.array(DivergentRowSchema) })),
  })
  .openapi('Divergence');

const ReplayBody = z
  .object({
    statement: FreeText({ max: 2000, multiline: true, example: 'Reviewed with the tenant: the orders written to the old primary after 03:12 are to be kept.' }).openapi({
      description: 'why these rows are replayed (kept in the audit trail)',
    }),
    rows: z.array(Ref(200)).min(1, 'name at least one row, or use all').max(1000, 'at most 1000 rows per call').optional().openapi({ description: 'ids from GET …/divergence' }),
    all: z.boolean().optional().openapi({ description: 'every pending row of the failover (at most 1000 per call)' }),
    failover: Ref(200).optional().openapi({ description: 'the failover whose rows to replay; default: the latest' }),
  })
  .strict()
  .refine((b) => (b.rows ? !b.all : b.all === true), { path: ['rows'], message: 'name the rows to replay, or set all: true (not both)' })
  .openapi('ReplayDivergentRows');

const ReplayResultSchema = z
  .object({
    failoverId: z.string(),
    replayedInto: z.object({ region: z.string(), database: z.string() }),
    counts: z.record(z.string(), z.number()),
    results: z.array(
      z.object({
        id: z.string(),
        table: z.string(),
        key: z.record(z.string(), z.string().nullable()),
        outcome: z.enum(['replayed', 'present', 'conflict', 'skipped', 'error']).openapi({
          description: 'replayed: inserted now; present: the serving database held it already (or an earlier replay did); conflict: the key holds other values, left alone; skipped: a delete, or not pending; error: the row could not be written (see note)',
        }),
        existing: z.record(z.string(), z.unknown()).nullable(),
        note: z.string().nullable(),
      }),
    ),
  })
  .openapi('ReplayResult');

const parse = (s: string | null): Record<string, unknown> | null => (s === null ? null : (JSON.parse(s) as Record<string, unknown>));

/** A divergent row; tenant values (beyond the key) only for operators. */
const rowDto = (r: DivergentRow, values: boolean) => ({
  id: r.id,
  table: r.table,
  key: r.key,
  op: r.op,
  row: values ? parse(r.row) : null,
  secondaryRow: values ? parse(r.secondaryRow) : null,
  committedAt: r.committedAt?.toISOString() ?? null,
  status: r.status,
  conflict: values ? parse(r.conflict) : null,
  note: r.note,
  replayedAt: r.replayedAt?.toISOString() ?? null,
  replayedBy: r.replayedBy,
});

/**
 * /v1/instances/:id/divergence: salvage after an unplanned failover. The
 * failback lists the rows the old primary had that the secondary lacked or
 * held differently (from the WAL its slot kept; the same rows are in the old
 * primary's backup); an operator replays chosen ones into the serving
 * database. A replay never overwrites: a key that now holds other values is
 * reported as a conflict and left alone.
 */
export function divergenceApp(deps: ApiDeps) {
  const app = new OpenAPIHono<ApiEnv>();

  const failoverOf = async (instanceId: string, id?: string): Promise<FailoverRow | undefined> => {
    const rows = await deps.db
      .select()
      .from(failovers)
      .where(id ? and(eq(failovers.instanceId, instanceId), eq(failovers.id, id)) : eq(failovers.instanceId, instanceId))
      .orderBy(desc(failovers.declaredAt))
      .limit(1);
    return rows[0];
  };

  app.openapi(
    createRoute({
      method: 'get',
      path: '/{id}/divergence',
      tags: ['instances'],
      summary: 'Rows the old primary had that never reached the secondary (or reached it differently), per table, by key',
      request: {
        params: IdParam,
        query: z.object({
          failover: Ref(200).optional().openapi({ description: 'a failover id (GET /v1/instances/:id → lastFailover); default: the latest' }),
          status: z.enum(DivergentRowStatuses).optional(),
        }),
      },
      responses: { 200: json(DivergenceSchema, 'the divergent rows'), ...errors },
    }),
    async (c) => {
      const inst = await findInstance(deps, c.req.valid('param').id);
      const q = c.req.valid('query');
      const fo = await failoverOf(inst.id, q.failover);
      if (q.failover && !fo) throw new ApiError(404, 'not_found', `instance ${inst.name} has no failover ${q.failover}`);
      const base = { instanceId: inst.id, name: inst.name };
      if (!fo) return c.json({ ...base, failover: null, message: 'the instance never failed over: nothing diverged', total: 0, tables: [] }, 200);
      const rows = await deps.db
        .select()
        .from(divergentRows)
        .where(and(eq(divergentRows.failoverId, fo.id), ...(q.status ? [eq(divergentRows.status, q.status)] : [])))
        .orderBy(asc(divergentRows.table), asc(divergentRows.committedAt), asc(divergentRows.id))
        .limit(10_000);
      const tables = new Map<string, ReturnType<typeof rowDto>[]>();
      const values = c.get('principal').roles.includes('operator');
      for (const r of rows) tables.set(r.table, [...(tables.get(r.table) ?? []), rowDto(r, values)]);
      const message = !fo.measured
        ? 'not measured yet: the failback (POST /v1/runbooks/failback) measures it before it rebuilds the old primary'
        : fo.kind === 'planned'
          ? 'a planned switchover waits for zero lag: nothing diverged'
          : rows.length >= 10_000
            ? 'the first 10000 rows; filter by ?status='
            : null;
      return c.json(
        {
          ...base,
          failover: { id: fo.id, kind: fo.kind, declaredAt: fo.declaredAt.toISOString(), measured: !!fo.measured, oldPrimaryBackupId: fo.oldPrimaryBackupId },
          message,
          total: rows.length,
          tables: [...tables].map(([table, list]) => ({ table, rows: list })),
        },
        200,
      );
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/{id}/divergence/replay',
      tags: ['instances'],
      summary: 'Replay chosen divergent rows into the serving database (inserted only where their key is free; conflicts reported row by row, never overwritten)',
      middleware: [requireRole('operator')] as const,
      request: { params: IdParam, body: { content: { 'application/json': { schema: ReplayBody } }, required: true } },
      responses: { 200: json(ReplayResultSchema, 'what happened to each row'), ...errors },
    }),
    async (c) => {
      const found = await findInstance(deps, c.req.valid('param').id);
      const body = c.req.valid('json');
      const actor = c.get('principal').identity;
      // Held like a run for the moment it takes, so no runbook (a failback draining the serving side) starts on it half way.
      await yieldGeoSecondary(deps.db, deps.temporal, found.id);
      const holder = `divergence-replay-${found.id}-${randomBytes(4).toString('hex')}`;
      const lock = await acquireLock(deps.db, { instanceId: found.id, workflowId: holder, runbook: 'divergence-replay' }, (id) => isRunRunning(deps.temporal, id));
      if (!lock.ok) throw lock.reason === 'busy' ? busyError(deps, found.name, lock.holder) : new ApiError(404, 'instance_not_found', `instance ${found.name} does not exist`);
      try {
        return c.json(await replay(found.id, body, actor), 200);
      } finally {
        await releaseLock(deps.db, found.id, holder);
      }
    },
  );

  /** The replay itself, under the instance's lock. */
  async function replay(instanceId: string, body: z.infer<typeof ReplayBody>, actor: string): Promise<z.infer<typeof ReplayResultSchema>> {
    const inst = await findInstance(deps, instanceId);
    if (inst.state !== 'active' && inst.state !== 'failed_over') {
      throw new ApiError(409, 'not_serving', `instance ${inst.name} is ${inst.state}: rows are replayed only into a database that serves writes (active or failed_over)`);
    }
    const fo = await failoverOf(inst.id, body.failover);
    if (!fo) throw new ApiError(404, 'not_found', body.failover ? `instance ${inst.name} has no failover ${body.failover}` : `instance ${inst.name} never failed over: nothing to replay`);
    if (!fo.measured) throw new ApiError(409, 'not_measured', `failover ${fo.id} is not measured yet: the failback (POST /v1/runbooks/failback) lists the divergent rows first`);
    const wanted = body.rows
      ? await deps.db.select().from(divergentRows).where(and(eq(divergentRows.failoverId, fo.id), inArray(divergentRows.id, body.rows)))
      : await deps.db.select().from(divergentRows).where(and(eq(divergentRows.failoverId, fo.id), eq(divergentRows.status, 'pending'))).orderBy(asc(divergentRows.committedAt)).limit(1000);
    if (body.rows) {
      const unknown = body.rows.filter((id) => !wanted.some((w) => w.id === id));
      if (unknown.length) throw badRequest('rows', `${unknown.length} id(s) are not divergent rows of failover ${fo.id} (first: ${unknown[0]})`);
    }
    const region = deps.regions.get(inst.activeRegion);
    if (!region) throw new ApiError(409, 'region_unknown', `instance ${inst.name} is served from region ${inst.activeRegion}, which is not configured`);
    const keyCols = new Map<string, string[] | null>();
    const results: z.infer<typeof ReplayResultSchema>['results'] = [];
    for (const r of wanted) {
      const base = { id: r.id, table: r.table, key: r.key };
      if (r.status === 'replayed' || r.status === 'present') {
        results.push({ ...base, outcome: 'present', existing: null, note: `already ${r.status}` });
        continue;
      }
      if (r.op === 'delete' || r.row === null) {
        const note = 'a delete is not replayed: remove the row by hand if it should go';
        await deps.db.update(divergentRows).set({ status: 'skipped', note }).where(eq(divergentRows.id, r.id));
        results.push({ ...base, outcome: 'skipped', existing: null, note });
        continue;
      }
      try {
        if (!keyCols.has(r.table)) keyCols.set(r.table, await region.engine.keyColumns(inst.databaseName, r.table));
        const out = await region.engine.insertRowIfAbsent(inst.databaseName, r.table, r.row, keyCols.get(r.table) ?? null);
        const status = out.outcome === 'inserted' ? 'replayed' : out.outcome;
        const note = out.outcome === 'conflict' ? (out.existing ? 'the key now holds other values: left alone' : 'another unique constraint refuses the row: left alone') : null;
        await deps.db
          .update(divergentRows)
          .set({ status, conflict: out.outcome === 'conflict' ? out.existing : null, note, ...(status === 'replayed' ? { replayedAt: new Date(), replayedBy: actor } : {}) })
          .where(eq(divergentRows.id, r.id));
        results.push({ ...base, outcome: status, existing: parse(out.existing), note });
      } catch (err) {
        results.push({ ...base, outcome: 'error', existing: null, note: String((err as Error).message ?? err).slice(0, 500) });
      }
    }
    const counts: Record<string, number> = {};
    for (const r of results) counts[r.outcome] = (counts[r.outcome] ?? 0) + 1;
    await audit(deps.db, {
      actor,
      action: 'divergence.replayed',
      instanceId: inst.id,
      subject: inst.name,
      details: { failoverId: fo.id, statement: body.statement, counts, rows: results.map((r) => ({ id: r.id, outcome: r.outcome })) },
    });
    return { failoverId: fo.id, replayedInto: { region: region.name, database: inst.databaseName }, counts, results };
  }

  return app;
}
