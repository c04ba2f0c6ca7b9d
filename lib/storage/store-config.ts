import { z } from 'zod';
import { LockModes } from './blob-store.js';

/** A key prefix inside a bucket or container: `/`-separated plain segments, no `..`, no leading `/`. */
const prefix = z
  .string()
  .max(200)
  .regex(/^([A-Za-z0-9][A-Za-z0-9._-]*\/)*([A-Za-z0-9][A-Za-z0-9._-]*)?$/, 'prefix must be plain path segments (letters, digits, . _ -), no leading /, no ..')
  .refine((p) => !p.split('/').some((s) => s === '..' || s === '.'), 'prefix must not contain . or .. segments')
  .default('');

/** A region's backups on a local (or mounted) filesystem folder. */
export const fsStoreSchema = z.object({ kind: z.literal('fs'), dir: z.string().min(1) });

/**
 * A region's backups in an S3-compatible bucket. Credentials come from the
 * environment: `<credentialsEnv>_ACCESS_KEY_ID` and `<credentialsEnv>_SECRET_ACCESS_KEY`
 * when `credentialsEnv` is set, else the AWS SDK's own chain (AWS_ACCESS_KEY_ID, …).
 * `objectLock` writes every archive and manifest with a retention date (the
 * bucket must have Object Lock enabled).
 */
export const s3StoreSchema = z.object({
  kind: z.literal('s3'),
  endpoint: z.string().url().optional(),
  bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'bucket must be an S3 bucket name (3-63 lowercase letters, digits, . and -)'),
  region: z.string().regex(/^[a-z0-9-]{1,40}$/, 'region must be an AWS region name').default('us-east-1'),
  prefix,
  forcePathStyle: z.boolean().default(false),
  credentialsEnv: z.string().regex(/^[A-Z][A-Z0-9_]{0,60}$/, 'credentialsEnv must name an environment variable prefix (A-Z, 0-9, _)').optional(),
  objectLock: z.object({ mode: z.enum(LockModes).default('GOVERNANCE') }).optional(),
});

/**
 * A region's backups in an Azure Blob container: `connectionString` (or the
 * name of an environment variable holding it, `connectionStringEnv`), or
 * `accountUrl` with the shared key in AZURE_STORAGE_ACCOUNT / AZURE_STORAGE_KEY.
 */
export const azureStoreSchema = z
  .object({
    kind: z.literal('azure'),
    connectionString: z.string().min(1).optional(),
    connectionStringEnv: z.string().regex(/^[A-Z][A-Z0-9_]{0,60}$/).optional(),
    accountUrl: z.string().url().optional(),
    container: z.string().regex(/^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$/, 'container must be an Azure container name (3-63 lowercase letters, digits and single -)'),
    prefix,
    /**
     * The container has version-level immutability (a real Azure account): blobs get an
     * immutability policy until the backup expires, and holds are set through the service.
     * Azurite does not implement it, so it is off by default and the catalog enforces holds.
     */
    immutability: z.object({ mode: z.enum(LockModes).default('GOVERNANCE') }).optional(),
  })
  .refine((a) => [a.connectionString, a.connectionStringEnv, a.accountUrl].filter(Boolean).length === 1, {
    message: 'give exactly one of connectionString, connectionStringEnv or accountUrl',
  });

/** Where a region keeps its backups: a discriminated union on `kind`. */
export const storeConfigSchema = z.discriminatedUnion('kind', [fsStoreSchema, s3StoreSchema, azureStoreSchema]);
export type StoreConfig = z.infer<typeof storeConfigSchema>;
export type FsStoreConfig = z.infer<typeof fsStoreSchema>;
export type S3StoreConfig = z.infer<typeof s3StoreSchema>;
export type AzureStoreConfig = z.infer<typeof azureStoreSchema>;
