import type { BlobStore } from './blob-store.js';
import { AzureBlobStore } from './azure-blob-store.js';
import { FsBlobStore } from './fs-blob-store.js';
import { S3BlobStore } from './s3-blob-store.js';
import type { StoreConfig } from './store-config.js';

/** The BlobStore a region's `store` setting names; credentials come from `env`, never from the config's logged parts. */
export function openBlobStore(cfg: StoreConfig, env: NodeJS.ProcessEnv = process.env): BlobStore {
  switch (cfg.kind) {
    case 'fs':
      return new FsBlobStore(cfg.dir);
    case 's3':
      return new S3BlobStore(cfg, env);
    case 'azure':
      return new AzureBlobStore(cfg, env, { immutability: cfg.immutability !== undefined });
  }
}
