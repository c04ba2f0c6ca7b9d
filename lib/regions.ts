import { sql } from 'drizzle-orm';
import type { RegionHandles } from '../activities/deps.js';
import type { Database } from '../db/client.js';
import { regions } from '../db/schema/index.js';
import type { Config } from './config.js';
import { PostgresEngine } from './engine/postgres.js';
import { BackupStore } from './storage/backup-store.js';
import { FsObjectStore } from './storage/fs-object-store.js';

/** Opens an engine and a backup store for every configured region. */
export function openRegions(cfg: Pick<Config, 'REGIONS' | 'PG_BIN_DIR'>): { regions: Map<string, RegionHandles>; close: () => Promise<void> } {
  const map = new Map<string, RegionHandles>();
  for (const r of cfg.REGIONS) {
    map.set(r.name, {
      name: r.name,
      pair: r.pair,
      engine: new PostgresEngine(r.postgresUrl, { binDir: cfg.PG_BIN_DIR }),
      backups: new BackupStore(new FsObjectStore(r.blobDir)),
    });
  }
  return {
    regions: map,
    close: async () => {
      await Promise.all([...map.values()].map((r) => r.engine.close()));
    },
  };
}

/** Writes the configured regions into the catalog, so the catalog always names what the config defines. */
export async function syncRegions(db: Database, cfg: Pick<Config, 'REGIONS'>): Promise<void> {
  for (const r of cfg.REGIONS) {
    await db
      .insert(regions)
      .values({ name: r.name, pair: r.pair, blobDir: r.blobDir })
      .onConflictDoUpdate({ target: regions.name, set: { pair: r.pair, blobDir: r.blobDir, updatedAt: sql`now()` } });
  }
}
