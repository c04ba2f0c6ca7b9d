import { z } from '@hono/zod-openapi';
import type { BackupCopyRow, BackupRow, BackupScheduleRow, InstanceRow } from '../db/schema/index.js';
import { BackupLayouts, Editions, InstanceTypes } from '../db/schema/index.js';
import { stalenessOf } from '../lib/staleness.js';

/** DNS-label instance names; `--` is reserved for alternate endpoints (`<name>--s`). */
export const InstanceName = z
  .string()
  .min(1, 'must not be empty')
  .max(50, 'must be at most 50 characters')
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, 'must be a DNS label: lowercase letters, digits and inner hyphens')
  .refine((s) => !s.includes('--'), 'must not contain "--" (reserved for alternate endpoints)')
  .refine((s) => !/^i-[0-9a-f]{12}$/.test(s), 'must not look like an instance id (i-<12 hex digits>)')
  .refine((s) => !['postgres', 'template0', 'template1'].includes(s), "must not be one of the server's own databases (postgres, template0, template1)")
  .openapi({ example: 'contoso-sandbox' });

/**
 * Free text a person writes (labels, statements, reasons): trimmed, bounded,
 * and free of control characters. PostgreSQL cannot store NUL in text or
 * jsonb, so such input is refused here, before any run starts. `multiline`
 * allows line breaks and tabs (statements); single-line fields refuse them.
 */
export const FreeText = (opts: { max: number; multiline?: boolean; example?: string }) =>
  z
    .string()
    .trim()
    .min(1, 'must not be empty')
    .max(opts.max, `must be at most ${opts.max} characters`)
    .refine(
      // C0 controls (NUL included), DEL and C1 controls; line breaks and tabs only where allowed.
      (s) => !(opts.multiline ? /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/ : /[\u0000-\u001f\u007f-\u009f]/).test(s),
      opts.multiline ? 'must not contain control characters (line breaks and tabs are allowed)' : 'must not contain control characters (NUL, line breaks, tabs and the like)',
    )
    .refine((s) => !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s), 'must be valid Unicode (no lone surrogates)')
    .openapi(opts.example ? { example: opts.example } : {});

/**
 * An id or name a caller passes to look something up (an instance, a backup,
 * a run): bounded and free of control characters, which PostgreSQL and
 * Temporal's list queries cannot take.
 */
export const Ref = (max = 100) =>
  z
    .string()
    .min(1, 'must not be empty')
    .max(max, `must be at most ${max} characters`)
    .refine((s) => !/[\u0000-\u001f\u007f-\u009f]/.test(s), 'must not contain control characters');

export const IdParam = z.object({
  id: Ref().openapi({ param: { name: 'id', in: 'path' }, example: 'contoso-sandbox' }),
});

export const InstanceSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    type: z.enum(InstanceTypes),
    edition: z.enum(Editions),
    homeRegion: z.string(),
    activeRegion: z.string(),
    state: z.string(),
    endpoint: z.string(),
    servedBy: z.string().nullable().openapi({ description: 'another instance serving this one\'s endpoint (after a failed production restore)' }),
    fencedSince: z.string().nullable().openapi({ description: 'since when the old primary of a failed-over instance refuses writes (fenced); null otherwise' }),
    lockedBy: z.object({ workflowId: z.string(), runbook: z.string() }).nullable(),
    rpoTargetSeconds: z.number().nullable().openapi({ description: 'production: the replication lag (seconds) above which a failover counts as not ready; null: the default (RPO_TARGET_SECONDS)' }),
    readiness: z
      .object({
        state: z.enum(['ready', 'degraded']),
        reasons: z.array(z.string()),
        codes: z.array(z.string()).openapi({ description: 'a stable code per reason: secondary-unreachable, subscription-disabled, broken, drift, seeding, no-secondary, lag-above-target, lag-unmeasured, lag-stale, no-backup, backup-old, failed-over' }),
        checkedAt: z.string(),
        rpoTargetSeconds: z.number(),
        secondaryReachable: z.boolean(),
        subscriptionEnabled: z.boolean().nullable(),
        lagBytes: z.number().nullable(),
        lagSeconds: z.number().nullable(),
        caughtUpAt: z.string().nullable(),
        drift: z.array(z.string()),
        lastGoodBackupAt: z.string().nullable(),
      })
      .nullable()
      .openapi({ description: 'production: whether a failover would work now (`ready`, or `degraded` with the reasons), as the readiness check last found it' }),
    lastGoodBackupAt: z.string().nullable().openapi({ description: 'when its newest completed backup completed; null: none yet' }),
    backupAgeSeconds: z.number().nullable().openapi({ description: 'seconds since then (since it was created, when it has no backup); null while provisioning' }),
    staleAfterHours: z.number().openapi({ description: 'the threshold that applies: its own (PATCH staleAfterHours) or the default (BACKUP_MAX_AGE_HOURS, 26)' }),
    stale: z.boolean().openapi({ description: 'no good backup for longer than staleAfterHours (an `instance.stale` event on /v1/events; `instance.fresh` when a backup completes)' }),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi('Instance');
export type InstanceDto = z.infer<typeof InstanceSchema>;

/** An instance as the API shows it; `defaultStaleHours` is the staleness threshold of instances without their own. */
export function instanceDto(r: InstanceRow, defaultStaleHours: number, now = Date.now()): InstanceDto {
  const { lastGoodBackupAt, backupAgeSeconds, staleAfterHours, stale } = stalenessOf(r, defaultStaleHours, now);
  return {
    id: r.id,
    name: r.name,
    type: r.type,
    edition: r.edition,
    homeRegion: r.homeRegion,
    activeRegion: r.activeRegion,
    state: r.state,
    endpoint: r.endpoint,
    servedBy: r.servedBy,
    fencedSince: r.fencedAt?.toISOString() ?? null,
    lockedBy: r.lockedByRun ? { workflowId: r.lockedByRun, runbook: r.lockedRunbook ?? 'unknown' } : null,
    rpoTargetSeconds: r.rpoTargetSeconds,
    readiness: r.readiness ?? null,
    lastGoodBackupAt,
    backupAgeSeconds: backupAgeSeconds === null ? null : Math.round(backupAgeSeconds),
    staleAfterHours,
    stale,
    createdAt: r.createdAt.toISOString(),
    updatedAt: r.updatedAt.toISOString(),
  };
}

/** Where one copy of a backup is: the home region (where it was taken) first, then each offsite copy. */
export const BackupCopySchema = z
  .object({
    region: z.string(),
    storeKind: z.string().nullable().openapi({ description: 'fs, s3 or azure; null when the region is not configured here' }),
    status: z.enum(['home', 'pending', 'verified', 'failed']).openapi({ description: 'home: the region it was taken in; an offsite copy is pending until written, verified once read back and matched, or failed with its reason' }),
    verifiedAt: z.string().nullable().openapi({ description: 'when an offsite copy was last read back and matched' }),
    error: z.string().nullable(),
  })
  .openapi('BackupCopy');
export type BackupCopyDto = z.infer<typeof BackupCopySchema>;

export const BackupSchema = z
  .object({
    id: z.string(),
    instanceId: z.string(),
    instanceName: z.string(),
    region: z.string(),
    kind: z.enum(['system', 'on_demand']),
    label: z.string().nullable(),
    status: z.string(),
    objectKey: z.string(),
    layout: z.enum(BackupLayouts).openapi({ description: 'flat: an archive named <instance>-<yyyymmdd>-<hhmmss> (before object storage); v2: a folder per backup id' }),
    edition: z.string(),
    serverVersion: z.string().nullable(),
    sizeBytes: z.number().nullable(),
    sha256: z.string().nullable(),
    sequences: z.record(z.string(), z.string().nullable()).nullable(),
    encryption: z
      .object({ alg: z.string(), keyId: z.string().openapi({ description: 'the key-encryption key its data key is wrapped under (GET /v1/keys)' }) })
      .nullable()
      .openapi({ description: 'how the archive is encrypted; null: stored in clear. Never a key' }),
    copies: z.array(BackupCopySchema).openapi({ description: 'where the backup is: its home region first, then each offsite copy' }),
    offsiteVerifiedAt: z.string().nullable().openapi({ description: 'when the offsite copy was last read back and matched; a backup counts as good only with it' }),
    hold: z
      .object({ reason: z.string(), by: z.string(), at: z.string() })
      .nullable()
      .openapi({ description: 'legal hold: nothing removes the backup or its copies until an approver other than `by` releases it' }),
    lock: z
      .object({ until: z.string(), mode: z.string().nullable() })
      .nullable()
      .openapi({ description: "the store's own retention lock (S3 Object Lock) on its objects: they cannot be removed before `until`" }),
    error: z.string().nullable(),
    workflowId: z.string(),
    createdAt: z.string(),
    completedAt: z.string().nullable(),
    expiresAt: z.string(),
  })
  .openapi('Backup');
export type BackupDto = z.infer<typeof BackupSchema>;

/**
 * A backup as the API shows it, with its offsite `copies` (rows of
 * backup_copies) and `storeKindOf` naming a region's store kind. Built field by
 * field: the wrapped data key and other internals never leave the catalog.
 */
export function backupDto(b: BackupRow, copies: readonly BackupCopyRow[] = [], storeKindOf: (region: string) => string | null = () => null): BackupDto {
  return {
    id: b.id,
    instanceId: b.instanceId,
    instanceName: b.instanceName,
    region: b.region,
    kind: b.kind,
    label: b.label,
    status: b.status,
    objectKey: b.objectKey,
    layout: b.layout,
    edition: b.edition,
    serverVersion: b.serverVersion,
    sizeBytes: b.sizeBytes,
    sha256: b.sha256,
    sequences: b.sequences,
    encryption: b.encryption ? { alg: b.encryption.alg, keyId: b.encryption.keyId } : null,
    copies: [
      { region: b.region, storeKind: storeKindOf(b.region), status: 'home' as const, verifiedAt: null, error: null },
      ...copies
        .filter((c) => c.backupId === b.id && c.region !== b.region)
        .sort((x, y) => x.region.localeCompare(y.region))
        .map((c) => ({ region: c.region, storeKind: c.storeKind, status: c.status, verifiedAt: c.verifiedAt?.toISOString() ?? null, error: c.error })),
    ],
    offsiteVerifiedAt: b.offsiteVerifiedAt?.toISOString() ?? null,
    hold: b.heldAt ? { reason: b.holdReason ?? '', by: b.heldBy ?? 'unknown', at: b.heldAt.toISOString() } : null,
    lock: b.lockedUntil ? { until: b.lockedUntil.toISOString(), mode: b.lockMode } : null,
    error: b.error,
    workflowId: b.workflowId,
    createdAt: b.createdAt.toISOString(),
    completedAt: b.completedAt?.toISOString() ?? null,
    expiresAt: b.expiresAt.toISOString(),
  };
}

export const ScheduleSchema = z
  .object({
    instanceId: z.string(),
    scheduleId: z.string(),
    startTime: z.string(),
    intervalDays: z.number(),
    retentionDays: z.number(),
    keepAtLeastOne: z.boolean(),
    enabled: z.boolean(),
    lastRun: z
      .object({ at: z.string(), status: z.enum(['completed', 'failed']), error: z.string().nullable(), workflowId: z.string().nullable() })
      .nullable(),
    nextRuns: z.array(z.string()),
  })
  .openapi('BackupSchedule');
export type ScheduleDto = z.infer<typeof ScheduleSchema>;

export function scheduleDto(s: BackupScheduleRow, nextRuns: Date[]): ScheduleDto {
  return {
    instanceId: s.instanceId,
    scheduleId: s.scheduleId,
    startTime: s.startTime,
    intervalDays: s.intervalDays,
    retentionDays: s.retentionDays,
    keepAtLeastOne: s.keepAtLeastOne,
    enabled: s.enabled,
    lastRun:
      s.lastRunAt && s.lastRunStatus
        ? { at: s.lastRunAt.toISOString(), status: s.lastRunStatus, error: s.lastRunError, workflowId: s.lastRunWorkflowId }
        : null,
    nextRuns: nextRuns.map((d) => d.toISOString()),
  };
}

export const RunRefSchema = z
  .object({
    workflowId: z.string(),
    runbook: z.string(),
    url: z.string().openapi({ description: 'the run in the Temporal Web UI' }),
    links: z.record(z.string(), z.string()),
  })
  .openapi('RunRef');

export const RunSchema = z
  .object({
    workflowId: z.string(),
    runId: z.string(),
    runbook: z.string().nullable(),
    instanceId: z.string().nullable(),
    status: z.string(),
    startTime: z.string(),
    closeTime: z.string().nullable(),
    step: z.string().nullable(),
    stepsDone: z.array(z.string()),
    progress: z.unknown().nullable(),
    warnings: z.array(z.string()),
    waiting: z
      .object({ kind: z.enum(['signoff', 'window']), until: z.string(), detail: z.string() })
      .nullable()
      .openapi({ description: 'what the run waits for: a sign-off (until its deadline) or a maintenance window (until it opens)' }),
    requestedBy: z.string().nullable(),
    instances: z
      .record(z.string(), z.object({ name: z.string(), step: z.string(), stepsDone: z.array(z.string()), error: z.string().optional(), facts: z.record(z.string(), z.unknown()).optional() }))
      .nullable()
      .openapi({ description: 'runs over many instances (failover, failback): each instance\'s step' }),
    result: z.unknown().nullable(),
    error: z.string().nullable(),
    url: z.string(),
  })
  .openapi('Run');
export type RunDto = z.infer<typeof RunSchema>;
