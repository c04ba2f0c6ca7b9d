import { bigint, index, jsonb, pgTable, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

/** `system` backups come from the schedule; `on_demand` ones from an operator and carry a label. */
export const BackupKinds = ['system', 'on_demand'] as const;
export type BackupKind = (typeof BackupKinds)[number];

/** A backup row is created `pending` before the dump and ends `completed` or `failed`; `deleting` marks an expiry in progress. */
export const BackupStatuses = ['pending', 'completed', 'failed', 'deleting'] as const;
export type BackupStatus = (typeof BackupStatuses)[number];

/** Sequence high-water marks captured with a backup: `schema.sequence` → last value issued. */
export type SequenceMarks = Record<string, string | null>;

/**
 * A pg_dump archive of one instance in its region's blob store. `instanceId`
 * is deliberately not a foreign key: backups outlive a deleted instance.
 */
export const backups = pgTable(
  'backups',
  {
    id: text('id').primaryKey(),
    instanceId: text('instance_id').notNull(),
    instanceName: text('instance_name').notNull(),
    region: text('region').notNull(),
    kind: text('kind', { enum: BackupKinds }).notNull(),
    label: text('label'),
    status: text('status', { enum: BackupStatuses }).notNull(),
    objectKey: text('object_key').notNull(),
    /** The database dumped, when not the instance's own (the old primary a failback keeps); region is where it lived. */
    sourceDatabase: text('source_database'),
    edition: text('edition').notNull(),
    serverVersion: text('server_version'),
    sizeBytes: bigint('size_bytes', { mode: 'number' }),
    sha256: text('sha256'),
    sequences: jsonb('sequences').$type<SequenceMarks>(),
    error: text('error'),
    workflowId: text('workflow_id').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    completedAt: timestamp('completed_at', { withTimezone: true }),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
  },
  (t) => [
    uniqueIndex('backups_region_object_key').on(t.region, t.objectKey),
    index('backups_instance_created').on(t.instanceId, t.createdAt),
  ],
);
export type BackupRow = typeof backups.$inferSelect;
