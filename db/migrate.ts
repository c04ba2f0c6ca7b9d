import path from 'node:path';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import { createDb } from './client.js';
import { isMain, projectRoot } from '../lib/paths.js';

/** Folder of the committed drizzle-kit migrations. */
export const migrationsFolder = path.join(projectRoot, 'db', 'migrations');

/** Applies every pending migration to the catalog at `url`. Safe to run again. */
export async function migrateCatalog(url: string): Promise<void> {
  const { db, close } = createDb(url, { max: 1 });
  try {
    await migrate(db, { migrationsFolder });
  } finally {
    await close();
  }
}

if (isMain(import.meta.url)) {
  const url = process.env.CATALOG_DATABASE_URL;
  if (!url) {
    console.error('CATALOG_DATABASE_URL is required');
    process.exit(2);
  }
  migrateCatalog(url).then(
    () => console.log('catalog migrations applied'),
    (err: unknown) => {
      console.error('migration failed:', err instanceof Error ? err.message : err);
      process.exit(1);
    },
  );
}
