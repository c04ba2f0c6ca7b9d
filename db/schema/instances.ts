import { doublePrecision, jsonb, pgTable, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

/** Instance types: production instances are never restored into directly. */
export const InstanceTypes = ['production', 'sandbox'] as const;
export type InstanceType = (typeof InstanceTypes)[number];

/** Editions, ordered: a backup restores only into the same or a higher edition. */
export const Editions = ['basic', 'standard', 'premium'] as const;
export type Edition = (typeof Editions)[number];

/**
 * Lifecycle states of an instance, as in the spec. `suspended`: restored, refusing
 * connections until resumed. `failed`: a restore failed after its swap began; reset it.
 * `degraded`: a production restore failed and another instance (`servedBy`) serves its endpoint.
 */
export const InstanceStates = ['provisioning', 'active', 'busy', 'suspended', 'failed', 'resetting', 'failed_over', 'degraded'] as const;
export type InstanceState = (typeof InstanceStates)[number];

/** Whether a failover of a production instance would work now, and why not. */
export interface Readiness {
  state: 'ready' | 'degraded';
  /** Empty when ready; otherwise each reason in words an operator can act on. */
  reasons: string[];
  /** A stable code per reason (`lag-above-target`, `subscription-disabled`, …): a change of codes is an event. */
  codes: string[];
  checkedAt: string;
  rpoTargetSeconds: number;
  secondaryReachable: boolean;
  subscriptionEnabled: boolean | null;
  lagBytes: number | null;
  lagSeconds: number | null;
  caughtUpAt: string | null;
  drift: string[];
  lastGoodBackupAt: string | null;
}

/**
 * A tenant database. `lockedBy*` is the exclusion lock: the workflow id of the
 * one runbook acting on the instance, so two runbooks never act on it at once.
 */
export const instances = pgTable(
  'instances',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    type: text('type', { enum: InstanceTypes }).notNull(),
    edition: text('edition', { enum: Editions }).notNull(),
    homeRegion: text('home_region').notNull(),
    activeRegion: text('active_region').notNull(),
    state: text('state', { enum: InstanceStates }).notNull(),
    databaseName: text('database_name').notNull(),
    endpoint: text('endpoint').notNull(),
    /** Set while another instance serves this one's endpoint (a production restore that failed twice). */
    servedBy: text('served_by'),
    /** Set while the old primary of a failed-over instance is fenced (refuses writes); only the failback's switch lifts it. */
    fencedAt: timestamp('fenced_at', { withTimezone: true }),
    /** Production only: the most data a failover may lose (replication lag, seconds) before the instance counts as not ready. Null: the default (RPO_TARGET_SECONDS). */
    rpoTargetSeconds: doublePrecision('rpo_target_seconds'),
    /** Production only: whether a failover would work now, as the readiness check last found it. */
    readiness: jsonb('readiness').$type<Readiness>(),
    /** When the newest completed backup completed (kept by a trigger on backups, migration 0004); null: none yet. */
    lastGoodBackupAt: timestamp('last_good_backup_at', { withTimezone: true }),
    /** Hours without a good backup after which the instance counts as stale. Null: the default (BACKUP_MAX_AGE_HOURS). */
    staleAfterHours: doublePrecision('stale_after_hours'),
    /** Since when the staleness check has found the instance stale (an `instance.stale` event was sent); null when fresh. */
    staleSince: timestamp('stale_since', { withTimezone: true }),
    lockedByRun: text('locked_by_run'),
    lockedRunbook: text('locked_runbook'),
    lockedAt: timestamp('locked_at', { withTimezone: true }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex('instances_name_key').on(t.name)],
);
export type InstanceRow = typeof instances.$inferSelect;
