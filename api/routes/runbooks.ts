import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { randomBytes } from 'node:crypto';
import { and, eq } from 'drizzle-orm';
import { backups, Editions, instances, type BackupRow } from '../../db/schema/index.js';
import { failoverCandidates, legacySecondaryDatabase } from '../../lib/replication.js';
import { audit } from '../../lib/audit.js';
import { servedBy, servingRefusal } from '../../lib/instances.js';
import { backupRefusal, editionAtLeast, targetRefusal, type Refusal } from '../../lib/restore-rules.js';
import { Runbooks, workflowIds, type FailbackInput, type ProductionRestoreInput, type RegionFailoverInput, type ResetInput, type RestoreInput } from '../../workflows/contract.js';
import { requireRole } from '../auth.js';
import type { ApiDeps, ApiEnv } from '../deps.js';
import { ApiError, badRequest, editionError, errorResponses, json } from '../errors.js';
import { findInstance, runRef, startLockedRunbook, startRun } from '../runbooks.js';
import { FreeText, InstanceName, InstanceSchema, instanceDto, Ref, RunRefSchema } from '../schemas.js';

const Id = Ref();
const Jobs = z.number().int('must be a whole number').min(1, 'must be at least 1').max(16, 'must be at most 16').default(1).openapi({ description: 'pg_restore parallel jobs' });
const AdvanceSequences = z.boolean().default(false).openapi({ description: 'move sequences past what the target had issued, so no number is issued twice' });

const RestoreBody = z
  .object({
    backupId: Id.openapi({ example: 'bk-…' }),
    target: z
      .object({
        instance: Id.optional().openapi({ description: 'an existing sandbox instance, by id or name' }),
        newInstance: z
          .object({ name: InstanceName, edition: z.enum(Editions), region: Ref(50).openapi({ example: 'primary' }) })
          .strict()
          .optional(),
      })
      .strict()
      .refine((t) => (t.instance === undefined) !== (t.newInstance === undefined), 'give exactly one of target.instance and target.newInstance'),
    jobs: Jobs,
    advanceSequences: AdvanceSequences,
  })
  .strict()
  .openapi('StartRestore');

const ResetBody = z
  .object({ instance: Id, backupId: Id.optional().openapi({ description: 'restore this backup once the database is empty' }), jobs: Jobs, advanceSequences: AdvanceSequences })
  .strict()
  .openapi('StartReset');

const RegionRef = Ref(50).openapi({ example: 'primary' });

const RegionFailoverBody = z
  .object({
    region: RegionRef.openapi({ description: 'the region whose production instances move to their paired region' }),
    reason: FreeText({ max: 500, example: 'primary region unreachable since 03:12' }).optional().openapi({ description: 'why (required unless dryRun)' }),
    dryRun: z.boolean().default(false).openapi({ description: "answer at once with each instance's readiness and what it could lose; start nothing, change nothing" }),
    mode: z.enum(['auto', 'unplanned']).default('auto').openapi({ description: 'auto: a planned switchover (no loss, no sign-off) when the region answers, else unplanned; unplanned: no drain and always a sign-off; the promotion still fences an old primary that answers' }),
    signoffTimeoutMinutes: z.number().min(0.25, 'must be at least 0.25 minutes (15 s)').max(7 * 24 * 60, 'must be at most 7 days').optional(),
    signoffRemindEveryMinutes: z.number().min(0.25, 'must be at least 0.25 minutes (15 s)').max(24 * 60, 'must be at most a day').optional(),
    concurrency: z.number().int().min(1, 'must be at least 1').max(64, 'must be at most 64').optional(),
  })
  .strict()
  .refine((b) => b.dryRun || b.reason !== undefined, { path: ['reason'], message: 'is required (say why the region fails over), unless dryRun is true' })
  .openapi('StartRegionFailover');

const DryRunSchema = z
  .object({
    dryRun: z.literal(true),
    region: z.string(),
    reachable: z.boolean().openapi({ description: 'the region answered just now' }),
    kind: z.enum(['planned', 'unplanned']).openapi({ description: 'what a real run would do now: planned (writes blocked until zero lag, no sign-off) or unplanned (promote after sign-off)' }),
    signoffRequired: z.boolean(),
    instances: z.array(
      z.object({
        id: z.string(),
        name: z.string(),
        readiness: InstanceSchema.shape.readiness,
        couldLose: z.object({
          lagBytes: z.number().nullable(),
          lagSeconds: z.number().nullable(),
          caughtUpAt: z.string().nullable(),
          checkedAt: z.string().nullable(),
          couldLoseSeconds: z.number().nullable().openapi({ description: 'unplanned: seconds since the secondary was last known caught up; planned: 0' }),
        }),
      }),
    ),
    skipped: z.array(z.object({ instanceId: z.string(), name: z.string(), reason: z.string() })),
  })
  .openapi('RegionFailoverDryRun');

const FailbackBody = z
  .object({
    region: RegionRef.openapi({ description: 'the home region to bring its failed-over instances back to' }),
    instances: z.array(Ref()).min(1, 'name at least one instance, or leave it out for all').max(1000).optional().openapi({ description: 'only these instances (ids or names); default: all failed over from the region' }),
    concurrency: z.number().int().min(1, 'must be at least 1').max(64, 'must be at most 64').optional(),
  })
  .strict()
  .openapi('StartFailback');

const MAX_WINDOW_AHEAD_MS = 30 * 24 * 3600_000;

const ProductionRestoreBody = z
  .object({
    production: Id,
    sandbox: Id,
    backupId: Id.optional().openapi({ description: "a completed backup of production; default: the swap's own fresh backup of production" }),
    notBefore: z.iso
      .datetime({ offset: true, message: 'must be an ISO date-time, such as 2026-11-24T02:00:00Z' })
      .refine((s) => Date.parse(s) < Date.now() + MAX_WINDOW_AHEAD_MS, 'must be within 30 days')
      .optional(),
    requireSignoff: z.boolean().default(false),
    signoffTimeoutMinutes: z.number().int().min(1, 'must be at least 1 minute').max(7 * 24 * 60, 'must be at most 7 days').default(24 * 60),
    deleteTemporaryBackups: z.boolean().default(false),
    jobs: Jobs,
    advanceSequences: AdvanceSequences,
  })
  .strict()
  .openapi('StartProductionRestore');

const Started = z.object({ run: RunRefSchema, target: InstanceSchema.optional() }).openapi('RunbookStarted');
const errors = {
  ...errorResponses('no such instance or backup', 'conflict: a production target, a taken name, an unusable backup, or a run holds the instance (named in the body)'),
  ...editionError,
};

const refuse = (r: Refusal | null) => {
  if (r) throw new ApiError(r.status, r.code, r.message);
};
const suffix = () => randomBytes(4).toString('hex');

/** /v1/runbooks: start restore, reset and the production-restore swap. Every rule is checked before anything starts. */
export function runbooksApp(deps: ApiDeps) {
  const app = new OpenAPIHono<ApiEnv>();

  /** 409 when the instance serves a degraded production's endpoint. */
  async function refuseServing(inst: { id: string; name: string }): Promise<void> {
    const serving = await servedBy(deps.db, inst.id);
    if (serving) throw new ApiError(409, 'serving_production', servingRefusal(inst.name, serving.name));
  }

  async function findBackup(id: string): Promise<BackupRow> {
    const [row] = await deps.db.select().from(backups).where(eq(backups.id, id));
    refuse(backupRefusal(row, id));
    return row!;
  }

  app.openapi(
    createRoute({
      method: 'post',
      path: '/restore',
      tags: ['runbooks'],
      summary: 'Restore a completed backup into an existing sandbox instance or a new instance; it lands suspended',
      middleware: [requireRole('operator')] as const,
      request: { body: { content: { 'application/json': { schema: RestoreBody } }, required: true } },
      responses: { 202: json(Started, 'restore started; follow the run'), ...errors },
    }),
    async (c) => {
      const body = c.req.valid('json');
      const actor = c.get('principal').identity;
      const backup = await findBackup(body.backupId);
      const opts = { backupId: backup.id, jobs: body.jobs, advanceSequences: body.advanceSequences, dropRetiredAfterSeconds: deps.cfg.DROP_RETIRED_AFTER_SECONDS, requestedBy: actor };
      if (body.target.instance !== undefined) {
        const inst = await findInstance(deps, body.target.instance);
        refuse(targetRefusal(backup, inst));
        await refuseServing(inst);
        const workflowId = workflowIds.restore(inst.name, suffix());
        const args: [RestoreInput] = [{ ...opts, instanceId: inst.id, createsInstance: false }];
        const run = await startLockedRunbook(deps, { instance: inst, runbook: Runbooks.restore, workflowId, workflowType: 'restoreWorkflow', args });
        await audit(deps.db, { actor, action: 'restore.start', instanceId: inst.id, subject: backup.id, details: { workflowId, jobs: body.jobs, advanceSequences: body.advanceSequences } });
        return c.json({ run, target: instanceDto(inst, deps.cfg.BACKUP_MAX_AGE_HOURS) }, 202);
      }
      const spec = body.target.newInstance!;
      const region = deps.regions.get(spec.region);
      if (!region) throw badRequest('target.newInstance.region', `must be one of the configured regions: ${[...deps.regions.keys()].join(', ')}`);
      if (!editionAtLeast(spec.edition, backup.edition)) {
        throw new ApiError(422, 'edition_too_low', `backup ${backup.id} is of edition ${backup.edition}; a new ${spec.edition} instance is a lower edition: choose ${backup.edition} or higher`);
      }
      const [named] = await deps.db.select({ id: instances.id }).from(instances).where(eq(instances.name, spec.name));
      if (named) throw new ApiError(409, 'name_taken', `an instance named ${spec.name} already exists; delete it first, or restore into it as target.instance if it is a sandbox`);
      if (await region.engine.databaseExists(spec.name)) {
        throw new ApiError(409, 'database_exists', `a database named ${spec.name} already exists on region ${spec.region}'s server and belongs to no instance; it is left untouched: choose another name`);
      }
      const id = `i-${randomBytes(6).toString('hex')}`;
      const workflowId = workflowIds.restore(spec.name, suffix());
      const [row] = await deps.db
        .insert(instances)
        .values({
          id,
          name: spec.name,
          type: 'sandbox',
          edition: spec.edition,
          homeRegion: spec.region,
          activeRegion: spec.region,
          state: 'provisioning',
          databaseName: spec.name,
          endpoint: region.engine.endpoint(spec.name),
          lockedByRun: workflowId,
          lockedRunbook: Runbooks.restore,
          lockedAt: new Date(),
        })
        .onConflictDoNothing()
        .returning();
      if (!row) throw new ApiError(409, 'name_taken', `an instance named ${spec.name} already exists; delete it first, or restore into it as target.instance if it is a sandbox`);
      const args: [RestoreInput] = [{ ...opts, instanceId: id, createsInstance: true }];
      await startRun(deps, { instance: row, runbook: Runbooks.restore, workflowId, workflowType: 'restoreWorkflow', args }, () => deps.db.delete(instances).where(eq(instances.id, id)));
      await audit(deps.db, { actor, action: 'restore.start', instanceId: id, subject: backup.id, details: { workflowId, newInstance: spec, jobs: body.jobs, advanceSequences: body.advanceSequences } });
      return c.json({ run: runRef(deps, workflowId, Runbooks.restore), target: instanceDto(row, deps.cfg.BACKUP_MAX_AGE_HOURS) }, 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/reset',
      tags: ['runbooks'],
      summary: 'Reset a sandbox instance: empty database, active; optionally restore a backup into it',
      middleware: [requireRole('operator')] as const,
      request: { body: { content: { 'application/json': { schema: ResetBody } }, required: true } },
      responses: { 202: json(Started, 'reset started; follow the run'), ...errors },
    }),
    async (c) => {
      const body = c.req.valid('json');
      const actor = c.get('principal').identity;
      const inst = await findInstance(deps, body.instance);
      if (inst.type !== 'sandbox') {
        throw new ApiError(409, 'production_target', `instance ${inst.name} is a production instance; only sandbox instances can be reset. To restore production, use the production-restore swap`);
      }
      if (inst.state === 'provisioning' || inst.state === 'failed_over') throw new ApiError(409, 'invalid_state', `instance ${inst.name} is ${inst.state}; it cannot be reset now`);
      await refuseServing(inst);
      if (body.backupId) refuse(targetRefusal(await findBackup(body.backupId), inst));
      const workflowId = workflowIds.reset(inst.name, suffix());
      const args: [ResetInput] = [{ instanceId: inst.id, backupId: body.backupId, jobs: body.jobs, advanceSequences: body.advanceSequences, dropRetiredAfterSeconds: deps.cfg.DROP_RETIRED_AFTER_SECONDS, requestedBy: actor }];
      const run = await startLockedRunbook(deps, { instance: inst, runbook: Runbooks.reset, workflowId, workflowType: 'resetWorkflow', args });
      await audit(deps.db, { actor, action: 'reset.start', instanceId: inst.id, subject: inst.name, details: { workflowId, backupId: body.backupId ?? null } });
      return c.json({ run, target: instanceDto(inst, deps.cfg.BACKUP_MAX_AGE_HOURS) }, 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/production-restore',
      tags: ['runbooks'],
      summary: 'Restore production through a sandbox (the five-step swap), optionally after sign-off and in a maintenance window',
      middleware: [requireRole('operator')] as const,
      request: { body: { content: { 'application/json': { schema: ProductionRestoreBody } }, required: true } },
      responses: { 202: json(Started, 'swap started; follow the run'), ...errors },
    }),
    async (c) => {
      const body = c.req.valid('json');
      const actor = c.get('principal').identity;
      const [prod, sbx] = [await findInstance(deps, body.production), await findInstance(deps, body.sandbox)];
      if (prod.id === sbx.id) throw badRequest('sandbox', 'must be another instance than production');
      if (prod.type !== 'production') throw new ApiError(409, 'not_production', `instance ${prod.name} is a ${prod.type} instance; name a production instance as production`);
      if (sbx.type !== 'sandbox') throw new ApiError(409, 'not_sandbox', `instance ${sbx.name} is a ${sbx.type} instance; the swap needs a sandbox instance to restore through`);
      // A degraded production is repaired from the sandbox that serves it, with that sandbox's live data.
      const repair = prod.state === 'degraded' && prod.servedBy === sbx.id;
      const serving = await servedBy(deps.db, sbx.id);
      if (serving && serving.id !== prod.id) throw new ApiError(409, 'serving_production', servingRefusal(sbx.name, serving.name));
      if (prod.state === 'degraded' && !repair) {
        throw new ApiError(409, 'invalid_state', `production ${prod.name} is degraded and served by instance ${prod.servedBy}; repair it with that sandbox`);
      }
      if (repair && body.backupId) throw badRequest('backupId', `must be omitted: degraded production ${prod.name} is repaired from the live data of sandbox ${sbx.name}, which serves it`);
      for (const inst of repair ? [sbx] : [prod, sbx]) {
        if (inst.state !== 'active' && inst.state !== 'suspended') {
          throw new ApiError(409, 'invalid_state', `instance ${inst.name} is ${inst.state}; the swap needs both instances active or suspended${inst.state === 'failed' ? ' (reset it first)' : ''}`);
        }
      }
      let edition: string = prod.edition;
      if (body.backupId) {
        const backup = await findBackup(body.backupId);
        if (backup.instanceId !== prod.id) throw new ApiError(409, 'backup_of_other_instance', `backup ${backup.id} is a backup of ${backup.instanceName}, not of production instance ${prod.name}`);
        edition = backup.edition;
      }
      if (repair && !editionAtLeast(prod.edition, sbx.edition)) {
        throw new ApiError(422, 'edition_too_low', `production ${prod.name} is of edition ${prod.edition}, lower than sandbox ${sbx.name}'s ${sbx.edition}, whose data it would take back: raise production's edition first`);
      }
      if (!editionAtLeast(sbx.edition, edition)) {
        throw new ApiError(422, 'edition_too_low', `sandbox ${sbx.name} is of edition ${sbx.edition}, lower than the production backup's ${edition}: use a ${edition} or higher sandbox`);
      }
      const workflowId = workflowIds.productionRestore(prod.name, suffix());
      const args: [ProductionRestoreInput] = [
        {
          productionId: prod.id,
          sandboxId: sbx.id,
          backupId: body.backupId,
          notBefore: body.notBefore ? new Date(body.notBefore).toISOString() : undefined,
          requireSignoff: body.requireSignoff,
          signoffTimeoutMinutes: body.signoffTimeoutMinutes,
          deleteTemporaryBackups: body.deleteTemporaryBackups,
          jobs: body.jobs,
          advanceSequences: body.advanceSequences,
          dropRetiredAfterSeconds: deps.cfg.DROP_RETIRED_AFTER_SECONDS,
          requestedBy: actor,
        },
      ];
      const run = await startLockedRunbook(deps, { instance: prod, locks: [prod, sbx], runbook: Runbooks.productionRestore, workflowId, workflowType: 'productionRestoreWorkflow', args });
      await audit(deps.db, { actor, action: 'production-restore.start', instanceId: prod.id, subject: sbx.id, details: { workflowId, ...body } });
      return c.json({ run, target: instanceDto(prod, deps.cfg.BACKUP_MAX_AGE_HOURS) }, 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/region-failover',
      tags: ['runbooks'],
      summary: "Fail a region over to its pair: a planned switchover when it answers, otherwise after an approver's sign-off",
      middleware: [requireRole('operator')] as const,
      request: { body: { content: { 'application/json': { schema: RegionFailoverBody } }, required: true } },
      responses: { 202: json(z.object({ run: RunRefSchema }), 'failover started; follow the run'), 200: json(DryRunSchema, 'dryRun: what a failover would do now (nothing started, nothing changed)'), ...errors },
    }),
    async (c) => {
      const body = c.req.valid('json');
      const actor = c.get('principal').identity;
      const region = deps.regions.get(body.region);
      if (!region) throw badRequest('region', `must be one of the configured regions: ${[...deps.regions.keys()].join(', ')}`);
      if (body.dryRun) {
        // Reads only: the catalog (readiness and lag as the monitor last found them) and a ping of the region.
        const reachable = await region.engine.ping();
        const kind: 'planned' | 'unplanned' = reachable && body.mode === 'auto' ? 'planned' : 'unplanned';
        const { targets, skipped, reps } = await failoverCandidates(deps.db, body.region);
        const now = Date.now();
        return c.json(
          {
            dryRun: true as const,
            region: body.region,
            reachable,
            kind,
            signoffRequired: kind === 'unplanned' && targets.length > 0,
            instances: targets.map((t) => {
              const rep = reps.find((r) => r.instanceId === t.id);
              return {
                id: t.id,
                name: t.name,
                readiness: t.readiness ?? null,
                couldLose: {
                  lagBytes: rep?.lagBytes ?? null,
                  lagSeconds: rep?.lagSeconds ?? null,
                  caughtUpAt: rep?.caughtUpAt?.toISOString() ?? null,
                  checkedAt: rep?.checkedAt?.toISOString() ?? null,
                  couldLoseSeconds: kind === 'planned' ? 0 : rep?.caughtUpAt ? Math.max(0, (now - rep.caughtUpAt.getTime()) / 1000) : null,
                },
              };
            }),
            skipped,
          },
          200,
        );
      }
      const workflowId = workflowIds.regionFailover(body.region, suffix());
      const args: [RegionFailoverInput] = [
        {
          region: body.region,
          requestedBy: actor,
          reason: body.reason ?? '',
          mode: body.mode,
          signoffTimeoutMinutes: body.signoffTimeoutMinutes ?? deps.cfg.FAILOVER_SIGNOFF_MINUTES,
          signoffRemindEveryMinutes: body.signoffRemindEveryMinutes ?? deps.cfg.FAILOVER_REMIND_SECONDS / 60,
          concurrency: body.concurrency ?? deps.cfg.FAILOVER_CONCURRENCY,
        },
      ];
      await startRun(deps, { instance: { id: `region:${body.region}`, name: body.region }, runbook: Runbooks.regionFailover, workflowId, workflowType: 'regionFailoverWorkflow', args }, async () => {});
      await audit(deps.db, { actor, action: 'region-failover.start', subject: body.region, details: { workflowId, ...body } });
      return c.json({ run: runRef(deps, workflowId, Runbooks.regionFailover) }, 202);
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/failback',
      tags: ['runbooks'],
      summary: 'Bring failed-over instances home: keep and measure the old primary, rebuild it from the secondary, switch back with writes blocked for seconds',
      middleware: [requireRole('operator')] as const,
      request: { body: { content: { 'application/json': { schema: FailbackBody } }, required: true } },
      responses: { 202: json(z.object({ run: RunRefSchema }), 'failback started; follow the run'), ...errors },
    }),
    async (c) => {
      const body = c.req.valid('json');
      const actor = c.get('principal').identity;
      const region = deps.regions.get(body.region);
      if (!region) throw badRequest('region', `must be one of the configured regions: ${[...deps.regions.keys()].join(', ')}`);
      let instanceIds: string[] | undefined;
      if (body.instances) {
        instanceIds = [];
        for (const ref of body.instances) {
          const inst = await findInstance(deps, ref);
          if (inst.state !== 'failed_over' || inst.homeRegion !== body.region) {
            throw new ApiError(409, 'not_failed_over', `instance ${inst.name} is ${inst.state} with home region ${inst.homeRegion}: only instances failed over from ${body.region} can fail back`);
          }
          instanceIds.push(inst.id);
        }
      }
      if (!(await region.engine.ping())) throw new ApiError(409, 'region_unreachable', `region ${body.region} does not answer; fail back once it is healthy (GET /v1/regions)`);
      // Failed over before 0.2, an instance is served from `<name>--s`; this version's failback rebuilds from a database of the instance's name.
      const legacy = (await deps.db.select().from(instances).where(and(eq(instances.homeRegion, body.region), eq(instances.state, 'failed_over')))).filter(
        (i) => (!instanceIds || instanceIds.includes(i.id)) && i.databaseName === legacySecondaryDatabase(i.name),
      );
      if (legacy.length) {
        throw new ApiError(
          409,
          'legacy_failover',
          `instance(s) ${legacy.map((i) => i.name).join(', ')} failed over before version 0.2 and are served from <name>--s: rename that database to the instance's name on its server (ALTER DATABASE … RENAME, with its clients stopped) and set the endpoint, or fail back with the version that failed it over`,
        );
      }
      const workflowId = workflowIds.failback(body.region, suffix());
      const args: [FailbackInput] = [{ region: body.region, requestedBy: actor, concurrency: body.concurrency ?? deps.cfg.FAILOVER_CONCURRENCY, ...(instanceIds ? { instanceIds } : {}) }];
      await startRun(deps, { instance: { id: `region:${body.region}`, name: body.region }, runbook: Runbooks.failback, workflowId, workflowType: 'failbackWorkflow', args }, async () => {});
      await audit(deps.db, { actor, action: 'failback.start', subject: body.region, details: { workflowId, ...body } });
      return c.json({ run: runRef(deps, workflowId, Runbooks.failback) }, 202);
    },
  );

  return app;
}
