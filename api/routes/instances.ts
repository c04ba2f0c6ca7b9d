import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { randomBytes } from 'node:crypto';
import { asc, eq } from 'drizzle-orm';
import { Editions, instances, InstanceTypes, type InstanceRow } from '../../db/schema/index.js';
import { audit } from '../../lib/audit.js';
import { Runbooks, workflowIds, type InstanceRunInput } from '../../workflows/contract.js';
import { requireRole } from '../auth.js';
import type { ApiDeps, ApiEnv } from '../deps.js';
import { ApiError, badRequest, errorResponses, json } from '../errors.js';
import { awaitRun, findInstance, runRef, startLockedRunbook, startRun } from '../runbooks.js';
import { IdParam, InstanceName, InstanceSchema, instanceDto, RunRefSchema } from '../schemas.js';

const CreateInstanceBody = z
  .object({
    name: InstanceName,
    type: z.enum(InstanceTypes),
    edition: z.enum(Editions),
    homeRegion: z.string().min(1).openapi({ example: 'primary' }),
  })
  .strict()
  .openapi('CreateInstance');

const errors = errorResponses('no such instance', 'conflict: the name is taken, or a run holds the instance (named in the body)');

const InstanceWithRun = InstanceSchema.extend({ run: RunRefSchema.optional() });

/** /v1/instances: create (provisions the database and its backup schedule), list, get, delete. */
export function instancesApp(deps: ApiDeps) {
  const app = new OpenAPIHono<ApiEnv>();
  const waitMs = deps.syncWaitMs ?? 60_000;

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
      return c.json({ ...instanceDto(row), run: runRef(deps, workflowId, Runbooks.provisionInstance) }, outcome === 'completed' ? 201 : 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/',
      tags: ['instances'],
      summary: 'List instances',
      request: {
        query: z.object({ type: z.enum(InstanceTypes).optional(), state: z.string().optional(), region: z.string().optional() }),
      },
      responses: { 200: json(z.object({ instances: z.array(InstanceSchema) }), 'instances'), ...errors },
    }),
    async (c) => {
      const q = c.req.valid('query');
      const rows = await deps.db.select().from(instances).orderBy(asc(instances.name));
      const list = rows.filter((r) => (!q.type || r.type === q.type) && (!q.state || r.state === q.state) && (!q.region || r.activeRegion === q.region));
      return c.json({ instances: list.map(instanceDto) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/{id}',
      tags: ['instances'],
      summary: 'Get an instance by id or name',
      request: { params: IdParam },
      responses: { 200: json(InstanceSchema, 'the instance'), ...errors },
    }),
    async (c) => c.json(instanceDto(await findInstance(deps, c.req.valid('param').id)), 200),
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/{id}/endpoint',
      tags: ['instances'],
      summary: 'The endpoint tenants connect to, and the region serving it',
      request: { params: IdParam },
      responses: {
        200: json(z.object({ endpoint: z.string(), activeRegion: z.string() }), 'endpoint'),
        ...errors,
      },
    }),
    async (c) => {
      const row = await findInstance(deps, c.req.valid('param').id);
      return c.json({ endpoint: row.endpoint, activeRegion: row.activeRegion }, 200);
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
