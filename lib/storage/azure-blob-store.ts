import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  BlobServiceClient,
  RestError,
  StorageSharedKeyCredential,
  type BlobImmutabilityPolicyMode,
  type BlockBlobClient,
  type ContainerClient,
  type StorageRetryOptions,
} from '@azure/storage-blob';
import {
  assertKey,
  assertPrefix,
  checkRange,
  ObjectLockedError,
  ObjectNotFoundError,
  type BlobInfo,
  type BlobLockState,
  type BlobStore,
  type PutOptions,
  type RetentionLock,
} from './blob-store.js';
import type { AzureStoreConfig } from './store-config.js';

/** Block size of `put`: each block is one buffer of this size in memory (the SDK default, 8 MiB). */
export const AZURE_BLOCK_SIZE = 8 * 1024 * 1024;
/** Buffers `put` may hold at once (so at most 4 × 8 MiB of a body in memory); about 3 of them upload concurrently. */
export const AZURE_UPLOAD_BUFFERS = 4;

/** How long a failed `put` lets its block uploads in flight finish before aborting them (then cleaning up). */
const STAGE_GRACE_MS = 30_000;
/** How long `copy` waits for a server-side copy to finish before giving up (the copy itself is aborted then). */
const COPY_TIMEOUT_MS = 30 * 60_000;

/** Service codes that mean a version-level immutability policy or legal hold refused the write or delete. */
const LOCK_CODES = new Set(['BlobImmutableDueToPolicy', 'BlobImmutableDueToLegalHold', 'ImmutableStorageViolation', 'BlobImmutableDueToLegalHoldOrPolicy']);

/** Options of AzureBlobStore beyond its config. */
export interface AzureBlobStoreOptions {
  /**
   * The account's container has version-level immutability support enabled
   * (the real service; Azurite answers 501 to those calls). Only then do
   * `setRetention`, `setLegalHold`, `lockState` and the `retention`/`legalHold`
   * options of `put` and `copy` talk to the service, and does `enforcesLocks`
   * become true. Default false: locks are the catalog's job.
   */
  immutability?: boolean;
  /** Retry policy of the SDK pipeline (its default retries a refused connection for about a minute; tests shorten it). */
  retry?: StorageRetryOptions;
}

/**
 * A failure of the Azure service or of the way to it, with the SDK's text
 * reduced to the service's error code, HTTP status and first message line and
 * scrubbed of the account key, connection string and SAS signatures. Raised
 * instead of the SDK's RestError, whose request (headers, URL) can carry them.
 */
export class AzureStoreError extends Error {
  constructor(
    readonly op: string,
    readonly key: string | undefined,
    /** The service's error code (`ContainerNotFound`, …) or the socket's (`ECONNREFUSED`). */
    readonly code: string | undefined,
    readonly statusCode: number | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'AzureStoreError';
  }
}

/** Credentials and endpoint resolved from a config and an environment. */
interface Resolved {
  service: BlobServiceClient;
  account: string;
  secrets: string[];
}

function resolveClient(config: AzureStoreConfig, env: NodeJS.ProcessEnv, retry: StorageRetryOptions | undefined): Resolved {
  const pipelineOptions = retry ? { retryOptions: retry } : {};
  let connectionString = config.connectionString;
  if (config.connectionStringEnv) {
    connectionString = env[config.connectionStringEnv];
    if (!connectionString) throw new Error(`azure store: environment variable ${config.connectionStringEnv} (connectionStringEnv) is not set`);
  }
  if (connectionString) {
    const secrets = [connectionString, ...secretsOfConnectionString(connectionString)];
    let service: BlobServiceClient;
    try {
      service = BlobServiceClient.fromConnectionString(connectionString, pipelineOptions);
    } catch (err) {
      throw new Error(`azure store: the connection string is not usable: ${scrub(firstLine(err), secrets)}`);
    }
    return { service, account: service.accountName, secrets };
  }
  if (!config.accountUrl) throw new Error('azure store: give one of connectionString, connectionStringEnv or accountUrl');
  const url = new URL(config.accountUrl);
  const sas = url.searchParams.get('sig');
  const account = env.AZURE_STORAGE_ACCOUNT;
  const key = env.AZURE_STORAGE_KEY;
  if (account && key) {
    const secrets = [key, ...(sas ? [sas, url.search] : [])];
    return { service: new BlobServiceClient(config.accountUrl, new StorageSharedKeyCredential(account, key), pipelineOptions), account, secrets };
  }
  if (sas) {
    // A SAS in the URL authorizes on its own; the account is the first label of the host (or first path segment for an IP-style URL).
    const service = new BlobServiceClient(config.accountUrl, undefined, pipelineOptions);
    return { service, account: service.accountName, secrets: [sas, url.search] };
  }
  throw new Error('azure store: accountUrl needs AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY in the environment (or a SAS in the URL)');
}

function secretsOfConnectionString(cs: string): string[] {
  const out: string[] = [];
  for (const part of cs.split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    const name = part.slice(0, i).trim().toLowerCase();
    const value = part.slice(i + 1).trim();
    if (value && (name === 'accountkey' || name === 'sharedaccesssignature')) out.push(value);
  }
  return out;
}

function firstLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0] ?? '';
}

/** Removes every known secret and anything shaped like a key or signature from `text`. */
function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s) out = out.split(s).join('[redacted]');
  return out
    .replace(/(AccountKey|SharedAccessSignature)=[^;\s]+/gi, '$1=[redacted]')
    .replace(/([?&]sig=)[^&\s]+/gi, '$1[redacted]')
    .replace(/SharedKey\s+[^:\s]+:[^\s,]+/gi, 'SharedKey [redacted]');
}

function statusOf(err: unknown): number | undefined {
  return err instanceof RestError ? err.statusCode : undefined;
}

function codeOf(err: unknown): string | undefined {
  if (err instanceof RestError) return err.code;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function isAbort(err: unknown): boolean {
  return (err as { name?: unknown } | null)?.name === 'AbortError';
}

/** Lock mode ↔ immutability policy mode: GOVERNANCE is an unlocked policy (can be shortened or removed), COMPLIANCE a locked one. */
const toPolicyMode = (mode: RetentionLock['mode']): BlobImmutabilityPolicyMode => (mode === 'COMPLIANCE' ? 'Locked' : 'Unlocked');

/**
 * BlobStore on an Azure Blob container (or Azurite), with every key under
 * `config.prefix`.
 *
 * Writes: `put` stages the body as 8 MiB blocks (at most 4 buffers in memory)
 * and commits the block list at the end; the commit is the atomic point, so a
 * failed or aborted upload never becomes visible. What it staged stays as
 * uncommitted blocks, which the service discards on its own seven days after
 * the last block was staged. A failed `put` waits for its block uploads in
 * flight (30 s at most), then deletes the key's uncommitted-only blob where
 * the service allows that (Azurite does, measured); `listIncomplete` finds
 * such keys and `abortIncomplete` deletes them the same way, counting only
 * what it could delete. A failed overwrite of an existing object leaves its
 * stray blocks attached to the old object (invisible, expire the same way) and
 * is not listed.
 *
 * Locks: Azurite does not implement version-level immutability policies or
 * legal holds (it answers 501). Unless constructed with `{ immutability: true }`
 * (for a real account whose container has version-level immutability
 * enabled), `enforcesLocks` is false, `setRetention`/`setLegalHold` do nothing,
 * `lockState` says none, and the catalog enforces retention and holds.
 *
 * Credentials never appear in `location` or in an error: SDK failures are
 * rethrown as AzureStoreError with scrubbed text.
 */
export class AzureBlobStore implements BlobStore {
  readonly kind = 'azure' as const;
  readonly location: string;
  readonly enforcesLocks: boolean;
  /** The container client (for setup scripts and tests; its URL holds no key, but keep it out of logs when a SAS is in use). */
  readonly container: ContainerClient;
  private readonly root: string;
  private readonly secrets: string[];
  private readonly immutability: boolean;

  /**
   * Credentials: `config.connectionString`, else the environment variable named
   * by `config.connectionStringEnv` (read from `env`), else `config.accountUrl`
   * with AZURE_STORAGE_ACCOUNT / AZURE_STORAGE_KEY from `env` (or a SAS in the
   * URL). Throws, without echoing any secret, when they are missing or malformed.
   * Makes no request: call `ping` (or `ensureContainer` in setup).
   */
  constructor(config: AzureStoreConfig, env: NodeJS.ProcessEnv = process.env, opts: AzureBlobStoreOptions = {}) {
    const { service, account, secrets } = resolveClient(config, env, opts.retry);
    this.secrets = secrets;
    this.container = service.getContainerClient(config.container);
    this.root = config.prefix === '' || config.prefix.endsWith('/') ? config.prefix : `${config.prefix}/`;
    this.location = `azure://${account}/${config.container}${this.root ? `/${this.root.replace(/\/$/, '')}` : ''}`;
    this.immutability = opts.immutability ?? false;
    this.enforcesLocks = this.immutability;
  }

  /**
   * Creates the container when it is missing (idempotent). For setup scripts
   * and tests: the store itself never creates its container, so a typo in the
   * config fails `ping` instead of quietly writing backups somewhere new.
   */
  async ensureContainer(): Promise<void> {
    await this.call('create container', undefined, () => this.container.createIfNotExists());
  }

  async ping(): Promise<void> {
    await this.call('ping', undefined, () => this.container.getProperties());
  }

  async put(key: string, body: Readable, opts: PutOptions = {}): Promise<BlobInfo> {
    const blob = this.blob(key);
    const { signal, onProgress } = opts;
    if (signal?.aborted) {
      body.destroy();
      signal.throwIfAborted();
    }
    let size = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        size += chunk.length;
        onProgress?.(size);
        cb(null, chunk);
      },
    });
    // pipeline turns an early close of `body` (destroyed without an error) and an abort into an error on
    // `counter`, which the SDK's BufferScheduler rejects on; on its own it would wait forever for 'end'.
    const piped = pipeline(body, counter, signal ? { signal } : {}).then(
      () => undefined,
      (err: unknown) => err,
    );
    // uploadStream neither hands its abort signal to its Put Block calls nor waits for them when it fails.
    // Keep them: a failed put lets the ones in flight finish (a block the service is still receiving would
    // otherwise land after the cleanup), aborting them only after STAGE_GRACE_MS, then removes what they staged.
    const stop = new AbortController();
    const staging = new Set<Promise<unknown>>();
    const stageBlock = blob.stageBlock.bind(blob);
    blob.stageBlock = (id, data, length, o) => {
      const p = stageBlock(id, data, length, { ...o, abortSignal: stop.signal });
      staging.add(p);
      void p.then(() => staging.delete(p), () => staging.delete(p));
      return p;
    };
    try {
      const res = await blob.uploadStream(counter, AZURE_BLOCK_SIZE, AZURE_UPLOAD_BUFFERS, { abortSignal: signal });
      if (this.immutability && (opts.retention || opts.legalHold)) await this.applyLocks(key, opts);
      return { key, size, modifiedAt: res.lastModified ?? new Date() };
    } catch (err) {
      counter.destroy();
      const streamErr = await piped;
      const grace = setTimeout(() => stop.abort(), STAGE_GRACE_MS);
      while (staging.size) await Promise.allSettled([...staging]);
      clearTimeout(grace);
      await this.discardUncommitted(blob).catch(() => undefined);
      if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : this.wrap('put', key, err);
      if (streamErr instanceof Error && !(err instanceof RestError)) throw streamErr;
      throw this.wrap('put', key, err);
    }
  }

  async get(key: string, range?: { start: number; end?: number }): Promise<Readable> {
    const blob = this.blob(key);
    if (range) checkRange(range);
    const offset = range?.start ?? 0;
    const count = range?.end === undefined ? undefined : range.end - offset + 1;
    const res = await this.call('get', key, () => blob.download(offset, count));
    if (!res.readableStreamBody) throw new AzureStoreError('get', key, undefined, undefined, `azure get ${key}: the service sent no body`);
    return res.readableStreamBody as Readable;
  }

  async head(key: string): Promise<BlobInfo | null> {
    const blob = this.blob(key);
    try {
      const p = await this.call('head', key, () => blob.getProperties());
      return { key, size: p.contentLength ?? 0, modifiedAt: p.lastModified ?? new Date(0) };
    } catch (err) {
      if (err instanceof ObjectNotFoundError) return null;
      throw err;
    }
  }

  async list(prefix: string): Promise<BlobInfo[]> {
    assertPrefix(prefix);
    const out: BlobInfo[] = [];
    await this.call('list', prefix, async () => {
      for await (const b of this.container.listBlobsFlat({ prefix: this.root + prefix })) {
        out.push({ key: b.name.slice(this.root.length), size: b.properties.contentLength ?? 0, modifiedAt: b.properties.lastModified });
      }
    });
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    const blob = this.blob(key);
    await this.call('delete', key, () => blob.deleteIfExists({ deleteSnapshots: 'include' }));
    // In an account with blob versioning, the delete only turned the current version into a previous one.
    await this.call('delete', key, async () => {
      for await (const b of this.container.listBlobsFlat({ prefix: blob.name, includeVersions: true })) {
        if (b.name === blob.name && b.versionId) await blob.withVersion(b.versionId).deleteIfExists();
      }
    });
  }

  async copy(fromKey: string, toKey: string, opts: Pick<PutOptions, 'retention' | 'legalHold'> = {}): Promise<BlobInfo> {
    const src = this.blob(fromKey);
    const dst = this.blob(toKey);
    const locks = this.immutability
      ? {
          ...(opts.retention ? { immutabilityPolicy: { expiriesOn: opts.retention.retainUntil, policyMode: toPolicyMode(opts.retention.mode) } } : {}),
          ...(opts.legalHold ? { legalHold: true } : {}),
        }
      : {};
    try {
      // Same account, so the destination's own authorization covers the source: a server-side copy, no bytes through us.
      const abort = AbortSignal.timeout(COPY_TIMEOUT_MS);
      const poller = await dst.beginCopyFromURL(src.url, { ...locks, abortSignal: abort, intervalInMs: 500 });
      const done = await poller.pollUntilDone();
      if (done.copyStatus !== 'success') {
        throw new AzureStoreError('copy', toKey, done.copyStatus, undefined, `azure copy ${fromKey} → ${toKey}: copy ended ${done.copyStatus ?? 'unknown'}`);
      }
    } catch (err) {
      const code = codeOf(err);
      if (code === 'BlobNotFound' || (code === 'CannotVerifyCopySource' && statusOf(err) === 404)) throw new ObjectNotFoundError(fromKey);
      if (code !== 'CannotVerifyCopySource' && statusOf(err) !== 403) throw this.wrap('copy', toKey, err);
      // The source is not readable by URL with these credentials (a SAS without read, a token): stream it through us.
      return this.put(toKey, await this.get(fromKey), opts);
    }
    const info = await this.head(toKey);
    if (!info) throw new AzureStoreError('copy', toKey, undefined, undefined, `azure copy ${fromKey} → ${toKey}: the copy is not there`);
    return info;
  }

  /**
   * Keys under `prefix` that have staged blocks but no committed blob: a
   * killed writer's upload, or one in progress. Found by listing with and
   * without uncommitted blobs.
   */
  async listIncomplete(prefix: string): Promise<string[]> {
    return (await this.uncommitted(prefix)).map((u) => u.key);
  }

  /**
   * Deletes the uncommitted-only blobs under `prefix` (an upload still in
   * progress there then fails at its commit). Azurite allows the delete; where
   * the service refuses it or does not find such a blob, it is not counted and
   * its blocks expire on their own after seven days.
   */
  async abortIncomplete(prefix: string): Promise<number> {
    let n = 0;
    for (const u of await this.uncommitted(prefix)) {
      if (await this.discardUncommitted(this.blob(u.key), u.etag).catch(() => false)) n++;
    }
    return n;
  }

  /**
   * With `{ immutability: true }`: sets the blob's version-level immutability
   * policy (COMPLIANCE → Locked, GOVERNANCE → Unlocked). Otherwise does nothing:
   * the catalog enforces the lock.
   */
  async setRetention(key: string, lock: RetentionLock): Promise<void> {
    const blob = this.blob(key);
    if (!this.immutability) return;
    await this.call('set retention', key, () => blob.setImmutabilityPolicy({ expiriesOn: lock.retainUntil, policyMode: toPolicyMode(lock.mode) }));
  }

  /** With `{ immutability: true }`: sets or lifts the blob's legal hold. Otherwise does nothing: the catalog holds it. */
  async setLegalHold(key: string, on: boolean): Promise<void> {
    const blob = this.blob(key);
    if (!this.immutability) return;
    await this.call('set legal hold', key, () => blob.setLegalHold(on));
  }

  /** The service's policy and hold with `{ immutability: true }`; none otherwise (the store holds no locks then). Rejects with ObjectNotFoundError when absent. */
  async lockState(key: string): Promise<BlobLockState> {
    const blob = this.blob(key);
    const p = await this.call('lock state', key, () => blob.getProperties());
    if (!this.immutability) return { retention: null, legalHold: false };
    const until = p.immutabilityPolicyExpiresOn;
    const mode = p.immutabilityPolicyMode;
    return {
      retention: until && (mode === 'Locked' || mode === 'Unlocked') ? { retainUntil: until, mode: mode === 'Locked' ? 'COMPLIANCE' : 'GOVERNANCE' } : null,
      legalHold: p.legalHold ?? false,
    };
  }

  private blob(key: string): BlockBlobClient {
    assertKey(key);
    return this.container.getBlockBlobClient(this.root + key);
  }

  private async applyLocks(key: string, opts: Pick<PutOptions, 'retention' | 'legalHold'>): Promise<void> {
    if (opts.retention) await this.setRetention(key, opts.retention);
    if (opts.legalHold) await this.setLegalHold(key, true);
  }

  /** Uncommitted-only blobs under `prefix`: listed with uncommitted blobs but not without. */
  private async uncommitted(prefix: string): Promise<{ key: string; etag: string | undefined }[]> {
    assertPrefix(prefix);
    const full = this.root + prefix;
    const committed = new Set<string>();
    const all: { key: string; etag: string | undefined }[] = [];
    await this.call('list incomplete', prefix, async () => {
      for await (const b of this.container.listBlobsFlat({ prefix: full })) committed.add(b.name);
      for await (const b of this.container.listBlobsFlat({ prefix: full, includeUncommitedBlobs: true })) {
        if (!committed.has(b.name)) all.push({ key: b.name.slice(this.root.length), etag: b.properties.etag });
      }
    });
    return all.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /**
   * Deletes `blob` when it has no committed content, never a real object: the
   * delete is conditional on the uncommitted blob's ETag. Azurite answers 412
   * to that condition on an uncommitted blob (measured), so on 412 it checks
   * that no committed blob is there and deletes unconditionally (a writer
   * committing in that instant would lose its object; keys have one writer).
   * True when something was deleted.
   */
  private async discardUncommitted(blob: BlockBlobClient, etag?: string): Promise<boolean> {
    if (!etag) {
      if (await blob.exists()) return false;
      for await (const b of this.container.listBlobsFlat({ prefix: blob.name, includeUncommitedBlobs: true })) {
        if (b.name === blob.name) etag = b.properties.etag;
      }
      if (!etag) return false;
    }
    try {
      return (await blob.deleteIfExists({ conditions: { ifMatch: etag } })).succeeded;
    } catch (err) {
      if (statusOf(err) !== 412 || (await blob.exists())) return false;
      return (await blob.deleteIfExists()).succeeded;
    }
  }

  /** Runs an SDK call, turning a 404 into ObjectNotFoundError (for a key), a lock refusal into ObjectLockedError, anything else into AzureStoreError. */
  private async call<T>(op: string, key: string | undefined, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.wrap(op, key, err);
    }
  }

  private wrap(op: string, key: string | undefined, err: unknown): Error {
    if (err instanceof ObjectNotFoundError || err instanceof ObjectLockedError || err instanceof AzureStoreError) return err;
    const code = codeOf(err);
    const status = statusOf(err);
    // A HEAD answer has no body, so a missing blob may come without a code.
    if (key !== undefined && (code === 'BlobNotFound' || (status === 404 && !code))) return new ObjectNotFoundError(key);
    if (key !== undefined && code && LOCK_CODES.has(code)) return new ObjectLockedError(key, code);
    if (isAbort(err)) return err as Error;
    const where = `${this.location}${key === undefined ? '' : ` ${key}`}`;
    const detail = scrub(firstLine(err), this.secrets);
    return new AzureStoreError(op, key, code, status, `azure ${op} ${where}: ${code ?? 'error'}${status ? ` (HTTP ${status})` : ''}: ${detail}`);
  }
}
