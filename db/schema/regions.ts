import { pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/** A region: a PostgreSQL cluster plus a blob store, paired with another region. Synced from configuration at boot. */
export const regions = pgTable('regions', {
  name: text('name').primaryKey(),
  pair: text('pair').notNull(),
  blobDir: text('blob_dir').notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});
export type RegionRow = typeof regions.$inferSelect;
