import { doublePrecision, integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/** Region health as the region's monitor last saw it. */
export const RegionHealths = ['unknown', 'healthy', 'unreachable', 'outage'] as const;
export type RegionHealth = (typeof RegionHealths)[number];

/**
 * A region: a PostgreSQL cluster plus a blob store, paired with another region.
 * Synced from configuration at boot; the health columns are the monitor's last check.
 */
export const regions = pgTable('regions', {
  name: text('name').primaryKey(),
  pair: text('pair').notNull(),
  /** Where the region's backups are (a folder, `s3://bucket/prefix`, `azure://account/container/prefix`): never a credential. */
  blobDir: text('blob_dir').notNull(),
  storeKind: text('store_kind').notNull().default('fs'),
  health: text('health', { enum: RegionHealths }).notNull().default('unknown'),
  latencyMs: doublePrecision('latency_ms'),
  checkedAt: timestamp('checked_at', { withTimezone: true }),
  /** Consecutive failed checks; the monitor declares an outage at its threshold. */
  failedChecks: integer('failed_checks').notNull().default(0),
  outageSince: timestamp('outage_since', { withTimezone: true }),
  lastError: text('last_error'),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});
export type RegionRow = typeof regions.$inferSelect;
