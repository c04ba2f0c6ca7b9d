import { drizzle, type PostgresJsDatabase } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import * as schema from './schema/index.js';

/** The catalog database handle; also the type of a transaction passed to query functions. */
export type Database = PostgresJsDatabase<typeof schema>;

/** Opens the catalog. `close()` ends the connection pool. */
export function createDb(url: string, opts: { max?: number } = {}): { db: Database; close: () => Promise<void> } {
  const sql = postgres(url, { max: opts.max ?? 10, onnotice: () => {} });
  return { db: drizzle(sql, { schema }), close: () => sql.end({ timeout: 5 }) };
}
