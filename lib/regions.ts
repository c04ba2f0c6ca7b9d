import { sql } from 'drizzle-orm';
import type { RegionHandles } from '../activities/deps.js';
import type { Database } from '../db/client.js';
import { regions } from '../db/schema/index.js';
import type { Config } from './config.js';
import type { StoreConfig } from './storage/store-config.js';
import { PostgresEngine } from './engine/postgres.js';
import { BackupStore } from './storage/backup-store.js';
import { keyringFromEnv, type Keyring } from './storage/keyring.js';
import { openBlobStore } from './storage/open-store.js';

/** Opens an engine and a backup store for every configured region. */
export function openRegions(
  cfg: Pick<Config, 'REGIONS' | 'PG_BIN_DIR'> & Partial<Pick<Config, 'BACKUP_KEYS' | 'BACKUP_KEY_ACTIVE'>>,
  env: NodeJS.ProcessEnv = process.env,
): { regions: Map<string, RegionHandles>; keyring: Keyring; close: () => Promise<void> } {
  const map = new Map<string, RegionHandles>();
  const keyring = keyringFromEnv({ BACKUP_KEYS: cfg.BACKUP_KEYS, BACKUP_KEY_ACTIVE: cfg.BACKUP_KEY_ACTIVE });
  for (const r of cfg.REGIONS) {
    const blobs = openBlobStore(r.store, env);
    map.set(r.name, {
      name: r.name,
      pair: r.pair,
      engine: new PostgresEngine(r.postgresUrl, { binDir: cfg.PG_BIN_DIR }),
      backups: new BackupStore(blobs, { keyring, encrypt: r.encryption, lockMode: r.store.kind === 's3' ? r.store.objectLock?.mode : r.store.kind === 'azure' ? r.store.immutability?.mode : undefined }),
    });
  }
  return {
    regions: map,
    keyring,
    close: async () => {
      await Promise.all([...map.values()].map((r) => r.engine.close()));
    },
  };
}

/** Where a store is, without credentials (what the catalog and the API show). */
export function storeLocation(s: StoreConfig): string {
  if (s.kind === 'fs') return s.dir;
  if (s.kind === 's3') return `s3://${s.bucket}/${s.prefix}`;
  return `azure://${s.container}/${s.prefix}`;
}

/** Writes the configured regions into the catalog, so the catalog always names what the config defines. */
export async function syncRegions(db: Database, cfg: Pick<Config, 'REGIONS'>): Promise<void> {
  for (const r of cfg.REGIONS) {
    await db
      .insert(regions)
      .values({ name: r.name, pair: r.pair, blobDir: storeLocation(r.store), storeKind: r.store.kind })
      .onConflictDoUpdate({ target: regions.name, set: { pair: r.pair, blobDir: storeLocation(r.store), storeKind: r.store.kind, updatedAt: sql`now()` } });
  }
}
