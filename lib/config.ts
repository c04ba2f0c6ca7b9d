import { z } from 'zod';
import { storeConfigSchema } from './storage/store-config.js';
import { backupKeysSchema } from './storage/keyring.js';

/** host:port of a PostgreSQL URL, for telling servers apart. */
const serverOf = (url: string) => {
  try {
    const u = new URL(url);
    // A Unix socket (no host in the URL) is named by its host parameter; localhost is the loopback address.
    const host = u.hostname || u.searchParams.get('host') || 'socket';
    return `${host === 'localhost' ? '127.0.0.1' : host}:${u.port || '5432'}`;
  } catch {
    return url;
  }
};

/** Roles a bearer token can carry. `approver` signs off runbooks that may lose data. */
export const Roles = ['viewer', 'operator', 'approver'] as const;
export type Role = (typeof Roles)[number];

const jsonArray = <T extends z.ZodType>(item: T) =>
  z
    .string()
    .transform((raw, ctx) => {
      try {
        return JSON.parse(raw) as unknown;
      } catch {
        ctx.addIssue({ code: 'custom', message: 'must be a JSON array' });
        return z.NEVER;
      }
    })
    .pipe(z.array(item).min(1));

/**
 * One region: a PostgreSQL cluster reached through an admin URL, and a backup
 * store (`store`, a discriminated union on `kind`; the older `blobDir` is
 * shorthand for `{"kind":"fs","dir":…}`). `encryption: false` stores the
 * region's new archives in clear.
 */
export const regionConfigSchema = z
  .object({
    name: z.string().regex(/^[a-z][a-z0-9-]{0,30}$/, 'region name must be a lowercase DNS label'),
    pair: z.string(),
    postgresUrl: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL'),
    blobDir: z.string().min(1).optional(),
    store: storeConfigSchema.optional(),
    encryption: z.boolean().default(true),
  })
  .refine((r) => (r.blobDir === undefined) !== (r.store === undefined), { message: 'give a region exactly one of store or blobDir' })
  .transform(({ blobDir, store, ...r }) => ({ ...r, store: store ?? { kind: 'fs' as const, dir: blobDir! } }));
export type RegionConfig = z.infer<typeof regionConfigSchema>;

/** One API bearer token and the identity and roles it stands for. */
export const tokenConfigSchema = z.object({
  token: z.string().min(8, 'tokens must be at least 8 characters'),
  identity: z.string().min(1),
  roles: z.array(z.enum(Roles)).min(1),
});
export type TokenConfig = z.infer<typeof tokenConfigSchema>;

/**
 * Every setting the worker and the API read, from the environment.
 * The same names drive the embedded local stack and a production deployment.
 */
export const configSchema = z
  .object({
    CATALOG_DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL'),
    TEMPORAL_ADDRESS: z.string().default('localhost:7233'),
    TEMPORAL_NAMESPACE: z.string().default('default'),
    TEMPORAL_TASK_QUEUE: z.string().default('bcdr'),
    TEMPORAL_UI_URL: z.string().url().default('http://localhost:8233'),
    REGIONS: jsonArray(regionConfigSchema),
    API_TOKENS: jsonArray(tokenConfigSchema).default([]),
    API_HOST: z.string().default('127.0.0.1'),
    API_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
    PG_BIN_DIR: z.string().optional(),
    /**
     * Key-encryption keys of backups: a JSON object of key id → base64 of 32 bytes.
     * New archives are encrypted under BACKUP_KEY_ACTIVE; older ids stay to restore and rewrap.
     */
    BACKUP_KEYS: z.string().optional(),
    BACKUP_KEY_ACTIVE: z.string().optional(),
    /** The worker's scratch folder: parallel restores spool an archive there (pg_restore --jobs needs a file it can seek). */
    SCRATCH_DIR: z.string().optional(),
    WORKER_SHUTDOWN_GRACE_SECONDS: z.coerce.number().int().min(0).max(3600).default(50),
    DEFAULT_BACKUP_START_TIME: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'must be HH:MM (UTC, 24-hour)').default('02:00'),
    /** How long after a restore's swap the replaced database copy is dropped (a DROP forces a checkpoint). */
    DROP_RETIRED_AFTER_SECONDS: z.coerce.number().int().min(0).max(24 * 3600).default(60),
    /** Test-only: arms fault hooks in the activity layer (see activities/faults.ts). Never set it in production. */
    BCDR_FAULT_FILE: z.string().optional(),
    RETENTION_SWEEP_EVERY_MINUTES: z.coerce.number().int().min(1).max(24 * 60).default(60),
    /** Create or update the fleet-wide retention sweep schedule when this worker starts (`false` for workers of another catalog). */
    FLEET_SCHEDULES: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
    /** Start (or replace) the region monitors when this worker starts; `false` for workers that should leave them alone. */
    REGION_MONITORS: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
    /** Seconds between a region monitor's health checks (each also measures replication lag and copies sequences). */
    REGION_CHECK_SECONDS: z.coerce.number().int().min(1).max(3600).default(5),
    /** Failover readiness: the replication lag (seconds) above which a production instance is not ready, unless it has its own target. */
    RPO_TARGET_SECONDS: z.coerce.number().min(0.1).max(86_400).default(5),
    /** Failover readiness: how old the newest good backup may be (hours). */
    BACKUP_MAX_AGE_HOURS: z.coerce.number().min(1).max(24 * 365).default(26),
    /** Consecutive failed checks after which a monitor declares a region outage. */
    OUTAGE_AFTER_FAILED_CHECKS: z.coerce.number().int().min(1).max(1000).default(3),
    /** Start a failover when an outage is declared; it still waits for sign-off when data can be lost. */
    AUTO_FAILOVER: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
    /** How long a failover waits for sign-off before it ends `expired`, changing nothing. */
    FAILOVER_SIGNOFF_MINUTES: z.coerce.number().int().min(1).max(7 * 24 * 60).default(60),
    /** How often a failover waiting for sign-off sends a reminder. */
    FAILOVER_REMIND_SECONDS: z.coerce.number().int().min(1).max(24 * 3600).default(900),
    /** Instances a failover or failback works on at once. */
    FAILOVER_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(8),
    /** Log level of the API and the worker (pino): fatal, error, warn, info, debug, trace or silent. */
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** `json` (default): one JSON object per line. `pretty`: human-readable lines (what `npm start` uses). */
    LOG_FORMAT: z.enum(['json', 'pretty']).default('json'),
    /** Where the worker serves Prometheus `/metrics` (bearer token of API_TOKENS, any role); port 0 turns it off. */
    WORKER_METRICS_HOST: z.string().default('127.0.0.1'),
    WORKER_METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
    /** Loopback port of the Temporal SDK's own Prometheus exporter, appended to the worker's `/metrics`; 0 picks a free port. */
    WORKER_SDK_METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(0),
  })
  .superRefine((cfg, ctx) => {
    const names = new Set(cfg.REGIONS.map((r) => r.name));
    if (names.size !== cfg.REGIONS.length) {
      ctx.addIssue({ code: 'custom', path: ['REGIONS'], message: 'region names must be unique' });
    }
    for (const r of cfg.REGIONS) {
      const pair = cfg.REGIONS.find((p) => p.name === r.pair);
      if (!pair || pair.name === r.name || pair.pair !== r.name) {
        ctx.addIssue({
          code: 'custom',
          path: ['REGIONS'],
          message: `region ${r.name} must name an existing, different region as its pair, and that region must pair back`,
        });
      } else if (serverOf(pair.postgresUrl) === serverOf(r.postgresUrl)) {
        // A geo-secondary has its primary's database name: on one server the two would be the same database.
        ctx.addIssue({ code: 'custom', path: ['REGIONS'], message: `regions ${r.name} and ${pair.name} are paired but use the same PostgreSQL server (${serverOf(r.postgresUrl)}): paired regions need different servers` });
      }
    }
    if (cfg.REGIONS.some((r) => r.encryption)) {
      const keys = backupKeysSchema.safeParse({ BACKUP_KEYS: cfg.BACKUP_KEYS, BACKUP_KEY_ACTIVE: cfg.BACKUP_KEY_ACTIVE });
      if (!keys.success) {
        for (const i of keys.error.issues) ctx.addIssue({ code: 'custom', path: [String(i.path[0] ?? 'BACKUP_KEYS')], message: `${i.message} (a region encrypts its backups; set the keys or give the region "encryption": false)` });
      }
    }
    const tokens = new Set(cfg.API_TOKENS.map((t) => t.token));
    if (tokens.size !== cfg.API_TOKENS.length) {
      ctx.addIssue({ code: 'custom', path: ['API_TOKENS'], message: 'tokens must be unique' });
    }
  });
export type Config = z.infer<typeof configSchema>;

/** Thrown when the environment does not describe a valid configuration. */
export class ConfigError extends Error {}

/** Parses the environment; throws a ConfigError listing every bad setting, without echoing secret values. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = configSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new ConfigError(`Invalid configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}

/** Loads the configuration or exits the process with a readable message. */
export function loadConfigOrExit(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(2);
    }
    throw err;
  }
}
