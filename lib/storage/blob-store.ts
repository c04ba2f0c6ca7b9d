import type { Readable } from 'node:stream';

/** The store kinds a region can keep its backups in. */
export const StoreKinds = ['fs', 's3', 'azure'] as const;
export type StoreKind = (typeof StoreKinds)[number];

/** S3 Object Lock retention modes: GOVERNANCE can be lifted by a privileged user, COMPLIANCE by nobody before its date. */
export const LockModes = ['GOVERNANCE', 'COMPLIANCE'] as const;
export type LockMode = (typeof LockModes)[number];

/** Size and time of a stored object. */
export interface BlobInfo {
  key: string;
  size: number;
  modifiedAt: Date;
}

/** A retention lock: the object cannot be deleted or overwritten before `retainUntil`. */
export interface RetentionLock {
  retainUntil: Date;
  mode: LockMode;
}

/** What a store says about an object's locks (what it enforces itself). */
export interface BlobLockState {
  retention: RetentionLock | null;
  legalHold: boolean;
}

/** Options of BlobStore.put. */
export interface PutOptions {
  /** Aborting it stops the upload; nothing becomes visible and the partial upload is cleaned up. */
  signal?: AbortSignal;
  /** Written with the object, where the store enforces locks (ignored elsewhere: see BlobStore.enforcesLocks). */
  retention?: RetentionLock;
  /** Set a legal hold with the object, where the store enforces locks. */
  legalHold?: boolean;
  /** Called with the running count of bytes accepted from `body`. */
  onProgress?: (bytes: number) => void;
}

/**
 * A flat blob store, shaped like S3 and Azure Blob: objects under keys of
 * `/`-separated segments. Writes are atomic: a reader sees the whole object or
 * nothing (multipart complete, block list commit, rename). Keys are chosen by
 * BackupStore, never by runbooks. Implementations: FsBlobStore, S3BlobStore,
 * AzureBlobStore. Errors never carry credentials.
 */
export interface BlobStore {
  readonly kind: StoreKind;
  /** Where the store is, for people and the catalog (`s3://bucket/prefix`, a folder): never a credential. */
  readonly location: string;
  /**
   * True when the store itself refuses to delete a locked object (S3 Object
   * Lock). Otherwise retention locks and legal holds are enforced by the
   * catalog, and `setRetention`/`setLegalHold` do what the store can
   * (read-only files on a filesystem) or nothing.
   */
  readonly enforcesLocks: boolean;
  /**
   * Streams `body` (of any, unknown length) to `key`, never holding it whole
   * in memory or on local disk. The object becomes visible only once the whole
   * stream is written; when the stream errors or `signal` aborts, nothing
   * becomes visible and the partial upload is removed. Replaces an object already there.
   */
  put(key: string, body: Readable, opts?: PutOptions): Promise<BlobInfo>;
  /** Opens an object (or the bytes `start`..`end`, both inclusive) for reading; rejects with ObjectNotFoundError when absent. */
  get(key: string, range?: { start: number; end?: number }): Promise<Readable>;
  /** Size and time of an object, or null when absent. */
  head(key: string): Promise<BlobInfo | null>;
  /** Complete objects whose key starts with `prefix`, in key order; unfinished uploads excluded. */
  list(prefix: string): Promise<BlobInfo[]>;
  /**
   * Removes an object (every version of it, in a versioned bucket); does
   * nothing when absent. Rejects with ObjectLockedError when the store's lock refuses.
   */
  delete(key: string): Promise<void>;
  /** Copies an object within the store (server-side where the store can). */
  copy(fromKey: string, toKey: string, opts?: Pick<PutOptions, 'retention' | 'legalHold'>): Promise<BlobInfo>;
  /** Keys of unfinished uploads (left by a killed writer) whose key starts with `prefix`. */
  listIncomplete(prefix: string): Promise<string[]>;
  /** Aborts unfinished uploads whose key starts with `prefix`; returns how many. */
  abortIncomplete(prefix: string): Promise<number>;
  /** Sets (or extends) an object's retention lock. */
  setRetention(key: string, lock: RetentionLock): Promise<void>;
  /** Sets or lifts an object's legal hold. */
  setLegalHold(key: string, on: boolean): Promise<void>;
  /** The locks the store holds on an object. */
  lockState(key: string): Promise<BlobLockState>;
  /** Resolves when the store answers (bucket or container reachable); rejects with the reason otherwise. */
  ping(): Promise<void>;
}

/** Raised by BlobStore.get for a missing key. */
export class ObjectNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`object ${key} not found`);
  }
}

/** Raised when a store refuses to delete or overwrite an object under a retention lock or legal hold. */
export class ObjectLockedError extends Error {
  constructor(readonly key: string, detail: string) {
    super(`object ${key} is locked by the store: ${detail}`);
  }
}

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Throws unless `key` is `/`-separated segments of letters, digits, `.`, `_` and `-`, none `..`, at most 1,000 bytes. */
export function assertKey(key: string): void {
  const ok = key.length > 0 && key.length <= 1000 && key.split('/').every((s) => SEGMENT.test(s) && s !== '..' && s !== '.');
  if (!ok) throw new Error(`invalid object key ${JSON.stringify(key.slice(0, 200))}`);
}

/** Like assertKey for a prefix of keys: empty, or segments ending in `/` or not. */
export function assertPrefix(prefix: string): void {
  if (prefix === '') return;
  assertKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix);
}

/** Throws unless `range` is integral, non-negative, and `end` (when given) is not before `start`. */
export function checkRange(range: { start: number; end?: number }): void {
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || start < 0 || (end !== undefined && (!Number.isSafeInteger(end) || end < start))) {
    throw new Error(`invalid byte range ${JSON.stringify(range)}`);
  }
}
