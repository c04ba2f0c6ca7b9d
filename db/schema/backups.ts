import { bigint, index, integer, jsonb, pgTable, primaryKey, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

/** `system` backups come from the schedule; `on_demand` ones from an operator and carry a label. */
export const BackupKinds = ['system', 'on_demand'] as const;
export type BackupKind = (typeof BackupKinds)[number];

/** A backup row is created `pending` before the dump and ends `completed` or `failed`; `deleting` marks an expiry in progress. */
export const BackupStatuses = ['pending', 'completed', 'failed', 'deleting'] as const;
export type BackupStatus = (typeof BackupStatuses)[number];

/** Sequence high-water marks captured with a backup: `schema.sequence` → last value issued. */
export type SequenceMarks = Record<string, string | null>;

/**
 * How a backup's objects are named. `flat`: before object storage, an archive
 * `<instance>-<yyyymmdd>-<hhmmss>` with `<key>.manifest.json` beside it, in
 * clear. `v2`: a folder per backup id, `backups/<instance>/<backupId>/`, with
 * `archive.<attempt>` and `manifest.json`, encrypted unless the region turned it off.
 */
export const BackupLayouts = ['flat', 'v2'] as const;
export type BackupLayout = (typeof BackupLayouts)[number];

/** How an archive is encrypted: the algorithm, the key-encryption key's id and the data key wrapped by it (never a key in clear). */
export interface BackupEncryption {
  alg: string;
  keyId: string;
  wrappedKey: string;
}

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
    /** `flat`: the archive's key. `v2`: the backup's folder (`backups/<instance>/<backupId>`). */
    objectKey: text('object_key').notNull(),
    layout: text('layout', { enum: BackupLayouts }).notNull().default('flat'),
    /** The committed archive's key (v2: `<folder>/archive.<attempt>`); null until completed, and for flat backups. */
    archiveKey: text('archive_key'),
    /** Null for an archive stored in clear (flat backups, regions with encryption off). */
    encryption: jsonb('encryption').$type<BackupEncryption>(),
    /** When the offsite copy in the paired region was last read back and matched: a backup counts as good only with it. */
    offsiteVerifiedAt: timestamp('offsite_verified_at', { withTimezone: true }),
    /** Legal hold: retention, delete and the sweep never remove a held backup, nor any of its copies. */
    holdReason: text('hold_reason'),
    heldBy: text('held_by'),
    heldAt: timestamp('held_at', { withTimezone: true }),
    /** The store's own retention lock (S3 Object Lock) on the archive and manifest, when the store has one. */
    lockedUntil: timestamp('locked_until', { withTimezone: true }),
    lockMode: text('lock_mode'),
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

/** A copy of a backup in another region's store is `pending` until written, `verified` once read back and matched, or `failed` with its reason. */
export const CopyStatuses = ['pending', 'verified', 'failed'] as const;
export type CopyStatus = (typeof CopyStatuses)[number];

/** An offsite copy of a backup: the same objects, under the same keys, in another region's store. */
export const backupCopies = pgTable(
  'backup_copies',
  {
    backupId: text('backup_id').notNull().references(() => backups.id, { onDelete: 'cascade' }),
    region: text('region').notNull(),
    storeKind: text('store_kind').notNull(),
    status: text('status', { enum: CopyStatuses }).notNull(),
    sizeBytes: bigint('size_bytes', { mode: 'number' }),
    sha256: text('sha256'),
    attempts: integer('attempts').notNull().default(0),
    error: text('error'),
    verifiedAt: timestamp('verified_at', { withTimezone: true }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.backupId, t.region] }), index('backup_copies_status').on(t.status)],
);
export type BackupCopyRow = typeof backupCopies.$inferSelect;

/**
 * A run reading a backup (a restore streaming or spooling its archive).
 * Retention and delete leave a backup alone while a live run reads it; the
 * pin sweep removes readers whose run has ended.
 */
export const backupReaders = pgTable(
  'backup_readers',
  {
    backupId: text('backup_id').notNull(),
    readerId: text('reader_id').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.backupId, t.readerId] })],
);
