import { bigint, doublePrecision, index, jsonb, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/** Where a geo-secondary stands. `drift`: a table of the primary is missing on the secondary (repaired by the monitor). */
export const ReplicaStates = ['seeding', 'streaming', 'drift', 'broken'] as const;
export type ReplicaState = (typeof ReplicaStates)[number];

/**
 * The geo-secondary of a production instance: a database in the paired
 * region's cluster kept by logical replication (a publication on the source
 * database, a subscription named `subscription` on the target, whose slot on
 * the source has the same name). `forward`: home → paired region; `reverse`:
 * during a failback, the serving secondary → the rebuilt home database.
 */
export const replicas = pgTable('replicas', {
  instanceId: text('instance_id').primaryKey(),
  direction: text('direction', { enum: ['forward', 'reverse'] }).notNull(),
  sourceRegion: text('source_region').notNull(),
  sourceDatabase: text('source_database').notNull(),
  targetRegion: text('target_region').notNull(),
  targetDatabase: text('target_database').notNull(),
  subscription: text('subscription').notNull(),
  state: text('state', { enum: ReplicaStates }).notNull(),
  lagBytes: bigint('lag_bytes', { mode: 'number' }),
  lagSeconds: doublePrecision('lag_seconds'),
  /** The last time the secondary was known to hold everything the primary had committed. */
  caughtUpAt: timestamp('caught_up_at', { withTimezone: true }),
  checkedAt: timestamp('checked_at', { withTimezone: true }),
  /** The primary's WAL position at the last check, and when: once the secondary confirms it, it was caught up then. */
  sampleLsn: text('sample_lsn'),
  sampleAt: timestamp('sample_at', { withTimezone: true }),
  /** Tables of the primary the secondary lacks (schema drift), while unrepaired. */
  drift: jsonb('drift').$type<string[]>(),
  error: text('error'),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});
export type ReplicaRow = typeof replicas.$inferSelect;

/** What an instance could lose at a failover, as known when it was measured. */
export interface LossEstimate {
  /** True when the primary was reachable and writes were blocked until zero lag: nothing can be lost. */
  planned: boolean;
  lagBytes: number | null;
  lagSeconds: number | null;
  caughtUpAt: string | null;
  checkedAt: string | null;
  /** Upper bound of the seconds of writes that may be lost (outage declared − last caught up), null when unknown. */
  couldLoseSeconds: number | null;
  /** The instance's failover readiness as the readiness check last found it before the outage was declared. */
  readiness?: { state: 'ready' | 'degraded'; reasons: string[]; checkedAt: string } | null;
}

/** What a failback found the old primary had committed that never reached the secondary. */
export interface MeasuredLoss {
  rows: number;
  /** From the first to the last lost commit (0 when nothing, or one transaction, was lost). */
  seconds: number;
  /** From the last time the secondary was known caught up to the last lost commit: the window of writes lost. */
  windowSeconds?: number;
  byTable: Record<string, number>;
  firstLostAt: string | null;
  lastLostAt: string | null;
}

/**
 * One instance's failover and, later, its failback: the achieved RTO, the
 * estimated RPO, and the measured one. The old primary's replication slot
 * (`slot`) is kept until the failback has measured the loss from it.
 */
export const failovers = pgTable(
  'failovers',
  {
    id: text('id').primaryKey(),
    workflowId: text('workflow_id').notNull(),
    instanceId: text('instance_id').notNull(),
    fromRegion: text('from_region').notNull(),
    toRegion: text('to_region').notNull(),
    kind: text('kind', { enum: ['planned', 'unplanned'] }).notNull(),
    status: text('status', { enum: ['promoted', 'failed_back'] }).notNull(),
    declaredAt: timestamp('declared_at', { withTimezone: true }).notNull(),
    signedOffAt: timestamp('signed_off_at', { withTimezone: true }),
    servingAt: timestamp('serving_at', { withTimezone: true }).notNull(),
    estimate: jsonb('estimate').$type<LossEstimate>().notNull(),
    rtoFromDeclaredSeconds: doublePrecision('rto_from_declared_seconds').notNull(),
    rtoFromSignoffSeconds: doublePrecision('rto_from_signoff_seconds'),
    slot: text('slot'),
    failbackWorkflowId: text('failback_workflow_id'),
    measured: jsonb('measured').$type<MeasuredLoss>(),
    oldPrimaryBackupId: text('old_primary_backup_id'),
    writeBlockedSeconds: doublePrecision('write_blocked_seconds'),
    failedBackAt: timestamp('failed_back_at', { withTimezone: true }),
  },
  (t) => [index('failovers_instance').on(t.instanceId, t.declaredAt)],
);
export type FailoverRow = typeof failovers.$inferSelect;

/**
 * A row the old primary had, after a failover, that the secondary lacked or
 * held differently (decoded from the WAL the old primary's slot kept, before
 * the failback dropped it; the same rows are in the old primary's backup).
 * One row per table and key, as the old primary last had it. `status`:
 * `pending` until an operator replays it; `replayed`; `present` (the serving
 * database held it already, identical); `conflict` (its key now holds other
 * values: never overwritten); `skipped` (a delete: not replayed).
 */
export const DivergentRowStatuses = ['pending', 'replayed', 'present', 'conflict', 'skipped'] as const;
export type DivergentRowStatus = (typeof DivergentRowStatuses)[number];

export const divergentRows = pgTable(
  'divergent_rows',
  {
    /** `<failover id>/<n>`: stable, so measuring again writes the same rows. */
    id: text('id').primaryKey(),
    failoverId: text('failover_id').notNull(),
    instanceId: text('instance_id').notNull(),
    table: text('table_name').notNull(),
    /** The key columns' values (the whole row for a table without a primary key), as text. */
    key: jsonb('key').$type<Record<string, string | null>>().notNull(),
    /** `insert`: the secondary lacked the row; `update`: it held other values; `delete`: the old primary no longer had it. */
    op: text('op', { enum: ['insert', 'update', 'delete'] }).notNull(),
    /** The row as the old primary last had it (`to_jsonb` text, kept as text so big numbers stay exact); null for a delete. */
    row: text('row'),
    /** The secondary's row under the key when measured, if any. */
    secondaryRow: text('secondary_row'),
    committedAt: timestamp('committed_at', { withTimezone: true }),
    status: text('status', { enum: DivergentRowStatuses }).notNull().default('pending'),
    /** For a conflict: the serving database's row under the same key (null when another unique constraint refused it). */
    conflict: text('conflict'),
    /** Why a replay left the row alone, in words. */
    note: text('note'),
    replayedAt: timestamp('replayed_at', { withTimezone: true }),
    replayedBy: text('replayed_by'),
  },
  (t) => [index('divergent_rows_instance_idx').on(t.instanceId, t.failoverId)],
);
export type DivergentRow = typeof divergentRows.$inferSelect;
