import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { randomBytes } from 'node:crypto';
import { and, asc, desc, eq, isNull, sql } from 'drizzle-orm';
import { Editions, failovers, instances, InstanceStates, InstanceTypes, replicas, type FailoverRow, type InstanceRow, type ReplicaRow } from '../../db/schema/index.js';
import { alternateName, multiHostUri, removeGeoSecondary, yieldGeoSecondary } from '../../lib/replication.js';
import { audit } from '../../lib/audit.js';
import type { CatalogCache } from '../../lib/catalog-cache.js';
import { resumeInstance, servedBy, servingRefusal } from '../../lib/instances.js';
import { acquireLock, releaseLock } from '../../lib/locks.js';
import { editionAtLeast } from '../../lib/restore-rules.js';
import { isRunRunning } from '../../lib/runs.js';
import { Runbooks, workflowIds, type InstanceRunInput } from '../../workflows/contract.js';
import { requireRole } from '../auth.js';
import type { ApiDeps, ApiEnv } from '../deps.js';
import { ApiError, badRequest, editionError, errorResponses, json } from '../errors.js';
import { awaitRun, busyError, findInstance, runRef, startLockedRunbook, startRun } from '../runbooks.js';
import { IdParam, InstanceName, InstanceSchema, instanceDto, Ref, RunRefSchema } from '../schemas.js';

const CreateInstanceBody = z
  .object({
    name: InstanceName,
    type: z.enum(InstanceTypes),
    edition: z.enum(Editions),
    homeRegion: z.string().min(1).openapi({ example: 'primary' }),
  })
  .strict()
  .openapi('CreateInstance');

const PatchInstanceBody = z
  .object({
    type: z.enum(InstanceTypes).optional(),
    edition: z.enum(Editions).optional(),
    rpoTargetSeconds: z
      .number()
      .min(0.1, 'must be at least 0.1 seconds')
      .max(86_400, 'must be at most a day (86400 seconds)')
      .nullable()
      .optional()
      .openapi({ description: 'production: the replication lag above which failover readiness is degraded; null: back to the default (RPO_TARGET_SECONDS)' }),
    staleAfterHours: z
      .number()
      .min(0.1, 'must be at least 0.1 hours')
      .max(24 * 366, 'must be at most a year (8784 hours)')
      .nullable()
      .optional()
      .openapi({ description: 'hours without a good backup after which the instance is stale; null: back to the default (BACKUP_MAX_AGE_HOURS)' }),
  })
  .strict()
  .refine((b) => b.type !== undefined || b.edition !== undefined || b.rpoTargetSeconds !== undefined || b.staleAfterHours !== undefined, 'give type, edition, rpoTargetSeconds, staleAfterHours, or several')
  .openapi('UpdateInstance');

const errors = errorResponses('no such instance', 'conflict: the name is taken, or a run holds the instance (named in the body)');

const InstanceWithRun = InstanceSchema.extend({ run: RunRefSchema.optional() });

const ReplicationSchema = z
  .object({
    state: z.string().openapi({ description: 'seeding, streaming, drift (a table the secondary lacks; the monitor repairs it) or broken' }),
    direction: z.enum(['forward', 'reverse']),
    sourceRegion: z.string(),
    targetRegion: z.string(),
    targetDatabase: z.string(),
    lagBytes: z.number().nullable(),
    lagSeconds: z.number().nullable(),
    caughtUpAt: z.string().nullable().openapi({ description: 'the last time the secondary was known to hold everything the primary had committed' }),
    checkedAt: z.string().nullable(),
    drift: z.array(z.string()).nullable(),
    error: z.string().nullable(),
  })
  .openapi('Replication');

const FailoverSchema = z
  .object({
    workflowId: z.string(),
    kind: z.enum(['planned', 'unplanned']),
    status: z.enum(['promoted', 'failed_back']),
    fromRegion: z.string(),
    toRegion: z.string(),
    declaredAt: z.string(),
    signedOffAt: z.string().nullable(),
    servingAt: z.string(),
    rtoFromDeclaredSeconds: z.number(),
    rtoFromSignoffSeconds: z.number().nullable(),
    estimatedLoss: z.record(z.string(), z.unknown()),
    measuredLoss: z.record(z.string(), z.unknown()).nullable().openapi({ description: 'what the old primary had that never reached the secondary, measured at failback (the true RPO)' }),
    oldPrimaryBackupId: z.string().nullable(),
    writeBlockedSeconds: z.number().nullable(),
    failedBackAt: z.string().nullable(),
  })
  .openapi('Failover');

const InstanceListItemSchema = InstanceSchema.extend({
  replication: ReplicationSchema.pick({ state: true, lagBytes: true, lagSeconds: true, caughtUpAt: true, checkedAt: true }).nullable().openapi({ description: 'production: its geo-replication, as the region monitor last measured it' }),
}).openapi('InstanceListItem');

const InstanceDetailSchema = InstanceSchema.extend({ replication: ReplicationSchema.nullable(), lastFailover: FailoverSchema.nullable() }).openapi('InstanceDetail');

/** An instance as `GET /v1/instances` lists it, and as `GET /v1/instances/:id` gives it (the console renders both). */
export type InstanceListItemDto = z.infer<typeof InstanceListItemSchema>;
export type InstanceDetailDto = z.infer<typeof InstanceDetailSchema>;

const replicationDto = (r: ReplicaRow) => ({
  state: r.state,
  direction: r.direction,
  sourceRegion: r.sourceRegion,
  targetRegion: r.targetRegion,
  targetDatabase: r.targetDatabase,
  lagBytes: r.lagBytes,
  lagSeconds: r.lagSeconds,
  caughtUpAt: r.caughtUpAt?.toISOString() ?? null,
  checkedAt: r.checkedAt?.toISOString() ?? null,
  drift: r.drift,
  error: r.error,
});

const failoverDto = (f: FailoverRow) => ({
  workflowId: f.workflowId,
  kind: f.kind,
  status: f.status,
  fromRegion: f.fromRegion,
  toRegion: f.toRegion,
  declaredAt: f.declaredAt.toISOString(),
  signedOffAt: f.signedOffAt?.toISOString() ?? null,
  servingAt: f.servingAt.toISOString(),
  rtoFromDeclaredSeconds: f.rtoFromDeclaredSeconds,
  rtoFromSignoffSeconds: f.rtoFromSignoffSeconds,
  estimatedLoss: { ...f.estimate },
  measuredLoss: f.measured ? { ...f.measured } : null,
  oldPrimaryBackupId: f.oldPrimaryBackupId,
  writeBlockedSeconds: f.writeBlockedSeconds,
  failedBackAt: f.failedBackAt?.toISOString() ?? null,
});

/** The 409 for a maintenance change while the instance is failed over (limited mode). */
const failedOverRefusal = (name: string, what: string) =>
  new ApiError(409, 'failed_over', `instance ${name} is failed over to its geo-secondary (limited mode): you cannot ${what} until it fails back (POST /v1/runbooks/failback); backups continue in the secondary region`);

/** /v1/instances: create (provisions the database and its backup schedule), list, get, delete. */
export function instancesApp(deps: ApiDeps, cache: CatalogCache) {
  /** The geo-secondary of a production instance, as clients would reach it. */
  const alternateOf = (row: InstanceRow) => {
    if (row.type !== 'production') return null;
    const pair = deps.regions.get(deps.regions.get(row.homeRegion)?.pair ?? '');
    return pair ? { name: alternateName(row.name), region: pair.name, endpoint: pair.engine.endpoint(row.name) } : null;
  };

  const app = new OpenAPIHono<ApiEnv>();
  const waitMs = deps.syncWaitMs ?? 60_000;

  /** Every instance by name, and the replicas, as the catalog has them now (or as last read, if it has not changed). */
  const fleet = () =>
    cache.get('instances', async () => {
      const [rows, reps] = await Promise.all([deps.db.select().from(instances).orderBy(asc(instances.name)), deps.db.select().from(replicas)]);
      return { rows, reps: new Map(reps.filter((r) => r.direction === 'forward' || !reps.some((x) => x.instanceId === r.instanceId && x.direction === 'forward')).map((r) => [r.instanceId, r])) };
    });
  const listItems = (f: Awaited<ReturnType<typeof fleet>>, now: number) =>
    f.rows.map((r) => {
      const rep = f.reps.get(r.id);
      return { ...instanceDto(r, deps.cfg.BACKUP_MAX_AGE_HOURS, now), replication: rep ? { state: rep.state, lagBytes: rep.lagBytes, lagSeconds: rep.lagSeconds, caughtUpAt: rep.caughtUpAt?.toISOString() ?? null, checkedAt: rep.checkedAt?.toISOString() ?? null } : null };
    });

  app.openapi(
    createRoute({
      method: 'post',
      path: '/',
      tags: ['instances'],
      summary: 'Create an instance: provisions its database in the home region and a daily backup schedule',
      middleware: [requireRole('operator')] as const,
      request: { body: { content: { 'application/json': { schema: CreateInstanceBody } }, required: true } },
      responses: {
        201: json(InstanceWithRun, 'provisioned'),
        202: json(InstanceWithRun, 'still provisioning; follow the run'),
        ...errors,
      },
    }),
    async (c) => {
      const body = c.req.valid('json');
      const region = deps.regions.get(body.homeRegion);
      if (!region) throw badRequest('homeRegion', `must be one of the configured regions: ${[...deps.regions.keys()].join(', ')}`);
      const id = `i-${randomBytes(6).toString('hex')}`;
      const workflowId = workflowIds.provisionInstance(id);
      const actor = c.get('principal').identity;
      const inserted = await deps.db.transaction(async (tx) => {
        const rows: InstanceRow[] = await tx
          .insert(instances)
          .values({
            id,
            name: body.name,
            type: body.type,
            edition: body.edition,
            homeRegion: body.homeRegion,
            activeRegion: body.homeRegion,
            state: 'provisioning',
            databaseName: body.name,
            endpoint: region.engine.endpoint(body.name),
            lockedByRun: workflowId,
            lockedRunbook: Runbooks.provisionInstance,
            lockedAt: new Date(),
          })
          .onConflictDoNothing()
          .returning();
        return rows;
      });
      if (!inserted.length) throw new ApiError(409, 'name_taken', `an instance named ${body.name} already exists; delete it first or choose another name`);
      const args: [InstanceRunInput] = [{ instanceId: id, requestedBy: actor }];
      await startRun(deps, { instance: { id, name: body.name }, runbook: Runbooks.provisionInstance, workflowId, workflowType: 'provisionInstanceWorkflow', args }, () =>
        deps.db.delete(instances).where(eq(instances.id, id)),
      );
      await audit(deps.db, { actor, action: 'instance.create', instanceId: id, subject: body.name, details: { ...body, workflowId } });
      const outcome = await awaitRun(deps, workflowId, Runbooks.provisionInstance, waitMs);
      const row = await findInstance(deps, id);
      return c.json({ ...instanceDto(row, deps.cfg.BACKUP_MAX_AGE_HOURS), run: runRef(deps, workflowId, Runbooks.provisionInstance) }, outcome === 'completed' ? 201 : 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/',
      tags: ['instances'],
      summary: 'List instances',
      request: {
        query: z.object({
          type: z.enum(InstanceTypes).optional(),
          state: z.enum(InstanceStates).optional(),
          region: Ref(50).optional(),
          stale: z.enum(['true', 'false']).optional().openapi({ description: 'true: only instances without a good backup for longer than their threshold; false: only the others' }),
        }),
      },
      responses: { 200: json(z.object({ instances: z.array(InstanceListItemSchema) }), 'instances, by name, with their replication lag'), ...errors },
    }),
    async (c) => {
      const q = c.req.valid('query');
      // Served from memory until the catalog changes (lib/catalog-cache.ts): a fleet page or a scraper reading the
      // list many times a second costs one catalog read per change. The ages in it are at most a second old.
      if (!q.type && !q.state && !q.region && !q.stale) {
        const body = await cache.get('instances:all-json', async () => Buffer.from(JSON.stringify({ instances: listItems(await fleet(), Date.now()) })), 1_000);
        return c.body(body, 200, { 'content-type': 'application/json' }) as never;
      }
      const now = Date.now();
      const list = listItems(await fleet(), now).filter(
        (r) => (!q.type || r.type === q.type) && (!q.state || r.state === q.state) && (!q.region || r.activeRegion === q.region) && (!q.stale || String(r.stale) === q.stale),
      );
      return c.json({ instances: list }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/{id}',
      tags: ['instances'],
      summary: 'Get an instance by id or name',
      request: { params: IdParam },
      responses: { 200: json(InstanceDetailSchema, 'the instance, its geo-replication and its last failover'), ...errors },
    }),
    async (c) => {
      const row = await findInstance(deps, c.req.valid('param').id);
      const [rep] = await deps.db.select().from(replicas).where(eq(replicas.instanceId, row.id));
      const [fo] = await deps.db.select().from(failovers).where(eq(failovers.instanceId, row.id)).orderBy(desc(failovers.declaredAt)).limit(1);
      return c.json({ ...instanceDto(row, deps.cfg.BACKUP_MAX_AGE_HOURS), replication: rep ? replicationDto(rep) : null, lastFailover: fo ? failoverDto(fo) : null }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/{id}/endpoint',
      tags: ['instances'],
      summary: 'The connection URI tenants use as is (user, host, port, database; never a password), and the instance serving it',
      request: { params: IdParam },
      responses: {
        200: json(
          z.object({
            endpoint: z.string().openapi({ example: 'postgres://postgres@127.0.0.1:55433/contoso-sandbox' }),
            activeRegion: z.string(),
            servedBy: z.object({ id: z.string(), name: z.string() }).nullable().openapi({ description: 'set while another instance serves this endpoint' }),
            acceptsConnections: z.boolean().openapi({ description: 'false while the instance is suspended' }),
            failedOver: z.boolean().openapi({ description: 'true while the alternate serves (limited mode)' }),
            alternate: z
              .object({ name: z.string(), region: z.string(), endpoint: z.string() })
              .nullable()
              .openapi({ description: 'the geo-secondary `<name>--s` in the paired region (production instances): a database of the same name there, read-only until a failover promotes it' }),
            autoSwitchEnabled: z.boolean().openapi({ description: 'true when a healthy alternate can take over (a streaming geo-secondary, or the alternate serving after a failover): clients may follow a switch by themselves' }),
            multiHost: z
              .string()
              .nullable()
              .openapi({
                description:
                  'production: one URI listing both sides with `target_session_attrs=read-write`. Exactly one side takes writes (the secondary is read-only until promoted; a fenced old primary refuses writes), so libpq clients and postgres.js land on it with no code change',
                example: 'postgres://postgres@127.0.0.1:55433,127.0.0.1:55434/contoso?target_session_attrs=read-write&connect_timeout=5',
              }),
          }),
          'endpoint',
        ),
        ...errors,
      },
    }),
    async (c) => {
      const row = await findInstance(deps, c.req.valid('param').id);
      const server = row.servedBy ? await findInstance(deps, row.servedBy) : row;
      const region = deps.regions.get(server.activeRegion);
      if (!region) throw new ApiError(409, 'region_unknown', `instance ${server.name} lives in region ${server.activeRegion}, which is not configured`);
      const alternate = row.servedBy ? null : alternateOf(row);
      const home = deps.regions.get(row.homeRegion);
      const [rep] = alternate ? await deps.db.select().from(replicas).where(eq(replicas.instanceId, row.id)) : [];
      return c.json(
        {
          endpoint: region.engine.endpoint(server.databaseName),
          activeRegion: server.activeRegion,
          servedBy: row.servedBy ? { id: server.id, name: server.name } : null,
          acceptsConnections: server.state !== 'suspended',
          failedOver: row.state === 'failed_over',
          alternate,
          autoSwitchEnabled: !!alternate && (row.state === 'failed_over' || (rep?.direction === 'forward' && rep.state === 'streaming')),
          // The serving side first: clients try it first, so a side that came back is never tried before the one that serves.
          multiHost: alternate && home ? multiHostUri(row.activeRegion === row.homeRegion ? [home.engine.endpoint(row.name), alternate.endpoint] : [alternate.endpoint, home.engine.endpoint(row.name)]) : null,
        },
        200,
      );
    },
  );

  app.openapi(
    createRoute({
      method: 'patch',
      path: '/{id}',
      tags: ['instances'],
      summary: 'Switch the type, or raise the edition (never lower it); refused while a runbook holds the instance',
      middleware: [requireRole('operator')] as const,
      request: { params: IdParam, body: { content: { 'application/json': { schema: PatchInstanceBody } }, required: true } },
      responses: { 200: json(InstanceSchema, 'changed'), ...errors, ...editionError },
    }),
    async (c) => {
      const inst = await findInstance(deps, c.req.valid('param').id);
      const body = c.req.valid('json');
      const serving = await servedBy(deps.db, inst.id);
      if (serving && body.type) throw new ApiError(409, 'serving_production', servingRefusal(inst.name, serving.name));
      if (inst.state === 'failed_over' && body.type) throw failedOverRefusal(inst.name, 'switch its type');
      if (body.edition && !editionAtLeast(body.edition, inst.edition)) {
        throw new ApiError(422, 'edition_lowered', `instance ${inst.name} is ${inst.edition}; an edition can be raised, never lowered (to ${body.edition})`);
      }
      const actor = c.get('principal').identity;
      if (body.type) await yieldGeoSecondary(deps.db, deps.temporal, inst.id);
      const changed = await deps.db.transaction(async (tx) => {
        const rows = await tx
          .update(instances)
          .set({
            ...(body.type ? { type: body.type } : {}),
            ...(body.edition ? { edition: body.edition } : {}),
            ...(body.rpoTargetSeconds !== undefined ? { rpoTargetSeconds: body.rpoTargetSeconds } : {}),
            ...(body.staleAfterHours !== undefined ? { staleAfterHours: body.staleAfterHours } : {}),
            // A sandbox has no failover readiness.
            ...(body.type === 'sandbox' ? { readiness: null } : {}),
            updatedAt: sql`now()`,
          })
          // A type or an edition waits for the run holding the instance; an RPO target or a staleness threshold is only a setting.
          .where(and(eq(instances.id, inst.id), ...(body.type || body.edition ? [isNull(instances.lockedByRun)] : [])))
          .returning();
        if (rows.length) {
          await audit(tx, {
            actor,
            action: 'instance.update',
            instanceId: inst.id,
            subject: inst.name,
            details: { from: { type: inst.type, edition: inst.edition, rpoTargetSeconds: inst.rpoTargetSeconds, staleAfterHours: inst.staleAfterHours }, to: body },
          });
        }
        return rows;
      });
      if (!changed[0]) {
        const now = await findInstance(deps, inst.id);
        throw busyError(deps, inst.name, { workflowId: now.lockedByRun ?? 'unknown', runbook: now.lockedRunbook ?? 'unknown' });
      }
      // A sandbox keeps no geo-secondary (a new production instance gets one from its region monitor).
      if (body.type === 'sandbox' && inst.type === 'production') {
        await removeGeoSecondary(deps.db, deps.regions, inst, actor).catch(() => {
          // The region monitor removes what is left once the region answers.
        });
      }
      return c.json(instanceDto(changed[0], deps.cfg.BACKUP_MAX_AGE_HOURS), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/{id}/resume',
      tags: ['instances'],
      summary: 'Resume a suspended (restored) instance: it accepts connections again and is active',
      middleware: [requireRole('operator')] as const,
      request: { params: IdParam },
      responses: { 200: json(InstanceSchema, 'resumed'), ...errors },
    }),
    async (c) => {
      const inst = await findInstance(deps, c.req.valid('param').id);
      if (inst.state !== 'suspended') throw new ApiError(409, 'not_suspended', `instance ${inst.name} is ${inst.state}, not suspended: there is nothing to resume`);
      const region = deps.regions.get(inst.activeRegion);
      if (!region) throw new ApiError(409, 'region_unknown', `instance ${inst.name} lives in region ${inst.activeRegion}, which is not configured`);
      // Held for the moment it takes, like a run, so no runbook starts on it half way.
      const holder = `resume-${inst.id}-${randomBytes(4).toString('hex')}`;
      const lock = await acquireLock(deps.db, { instanceId: inst.id, workflowId: holder, runbook: 'resume' }, (id) => isRunRunning(deps.temporal, id));
      if (!lock.ok) throw lock.reason === 'busy' ? busyError(deps, inst.name, lock.holder) : new ApiError(404, 'instance_not_found', `instance ${inst.name} does not exist`);
      try {
        await resumeInstance(deps.db, region, inst, c.get('principal').identity);
      } finally {
        await releaseLock(deps.db, inst.id, holder);
      }
      return c.json(instanceDto(await findInstance(deps, inst.id), deps.cfg.BACKUP_MAX_AGE_HOURS), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'delete',
      path: '/{id}',
      tags: ['instances'],
      summary: 'Delete an instance (its database and schedule); refused while a runbook holds it. Its backups stay until they expire.',
      middleware: [requireRole('operator')] as const,
      request: { params: IdParam },
      responses: {
        200: json(z.object({ deleted: z.string(), run: RunRefSchema }), 'deleted'),
        202: json(z.object({ deleted: z.string(), run: RunRefSchema }), 'deleting; follow the run'),
        ...errors,
      },
    }),
    async (c) => {
      const inst = await findInstance(deps, c.req.valid('param').id);
      const serving = await servedBy(deps.db, inst.id);
      if (serving) throw new ApiError(409, 'serving_production', servingRefusal(inst.name, serving.name));
      if (inst.state === 'failed_over') throw failedOverRefusal(inst.name, 'delete it');
      const actor = c.get('principal').identity;
      const workflowId = workflowIds.deleteInstance(inst.id);
      const args: [InstanceRunInput] = [{ instanceId: inst.id, requestedBy: actor }];
      const run = await startLockedRunbook(deps, { instance: inst, runbook: Runbooks.deleteInstance, workflowId, workflowType: 'deleteInstanceWorkflow', args });
      await audit(deps.db, { actor, action: 'instance.delete', instanceId: inst.id, subject: inst.name, details: { workflowId } });
      const outcome = await awaitRun(deps, workflowId, Runbooks.deleteInstance, waitMs);
      return c.json({ deleted: inst.id, run }, outcome === 'completed' ? 200 : 202);
    },
  );

  return app;
}
