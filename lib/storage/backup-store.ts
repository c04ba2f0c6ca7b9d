import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pipeline as pipelineCb } from 'node:stream';
import type { BlobInfo, BlobStore, LockMode, RetentionLock, StoreKind } from './blob-store.js';
import { ENVELOPE_ALG, decryptStream, encryptStream } from './envelope.js';
import { newDataKey, type Keyring } from './keyring.js';
import type { SequenceMarks } from '../engine/types.js';

/** How an archive is encrypted, as the catalog and the manifest record it: never a key in clear. */
export interface ArchiveEncryption {
  alg: string;
  keyId: string;
  wrappedKey: string;
}

/** What a backup archive is, stored beside it so the archive can be checked and restored without the catalog. */
export interface BackupManifest {
  formatVersion: 1 | 2;
  backupId: string;
  objectKey: string;
  /** v2: the archive's own key inside the backup's folder. */
  archiveKey?: string;
  instanceId: string;
  instance: string;
  kind: 'system' | 'on_demand';
  label: string | null;
  edition: string;
  serverVersion: string;
  /** Bytes stored (the ciphertext when encrypted). */
  sizeBytes: number;
  /** sha256 of the bytes stored. */
  sha256: string;
  encryption?: ArchiveEncryption | null;
  sequences: SequenceMarks;
  createdAt: string;
  expiresAt: string;
}

/** Where a backup's objects are: what the catalog row says about its layout. */
export interface BackupRef {
  layout: 'flat' | 'v2';
  /** flat: the archive's key; v2: the backup's folder. */
  objectKey: string;
  /** v2: the committed archive's key (null while pending). */
  archiveKey: string | null;
}

/** An archive written under an attempt's own key, not yet committed (no manifest, row still pending). */
export interface WrittenArchive {
  archiveKey: string;
  /** Bytes stored. */
  sizeBytes: number;
  /** sha256 of the bytes stored. */
  sha256: string;
  /** Bytes of the archive before encryption. */
  plainBytes: number;
  encryption: ArchiveEncryption | null;
}

/** Options of BackupStore.writeArchive. */
export interface WriteArchiveOptions {
  signal?: AbortSignal;
  /** Called with the running count of archive bytes (before encryption). */
  onProgress?: (bytes: number) => void;
  /** Settles when the producer has finished; a rejection aborts the upload so nothing is committed. */
  complete?: Promise<void>;
  retention?: RetentionLock;
}

/** Hashes and counts bytes as they pass, so the archive is read once and never held in memory. */
class DigestStream extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  constructor(private readonly onBytes?: (bytes: number) => void) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(this.bytes);
    cb(null, chunk);
  }
  digest(): string {
    return this.hash.digest('hex');
  }
}

/** Options of a BackupStore. */
export interface BackupStoreOptions {
  /** Key-encryption keys; new archives are encrypted under its active key when `encrypt` is on. */
  keyring: Keyring;
  /** Encrypt new archives (on by default; a region may turn it off). */
  encrypt: boolean;
  /** Retention lock mode for archives and manifests, where the store enforces locks. */
  lockMode?: LockMode;
}

const pad = (n: number) => String(n).padStart(2, '0');

/**
 * The backup layout above a raw BlobStore, and the only place that knows
 * object names. A backup lives in its own folder, `backups/<instance>/<backupId>/`:
 * `archive.<attempt>` (each dump attempt writes its own, so two attempts never
 * share a key) and `manifest.json`, written last, which with the catalog row
 * commits the backup. Backups taken before object storage (`flat`) keep
 * `<instance>-<yyyymmdd>-<hhmmss>` and `<key>.manifest.json`. Archives are
 * encrypted in chunks (AES-256-GCM) under a fresh data key wrapped by the
 * keyring, and hashed as stored, so a copy is verified without any key.
 */
export class BackupStore {
  constructor(readonly blobs: BlobStore, readonly opts: BackupStoreOptions) {}

  /** The folder of a backup: unique by its id, so no two backups ever collide and nobody looks for a free name. */
  static folder(instance: string, backupId: string): string {
    return `backups/${instance}/${backupId}`;
  }

  /** The flat archive key of a backup of `instance` taken at `at` (the layout before object storage). */
  static legacyObjectKey(instance: string, at: Date): string {
    const d = `${at.getUTCFullYear()}${pad(at.getUTCMonth() + 1)}${pad(at.getUTCDate())}`;
    const t = `${pad(at.getUTCHours())}${pad(at.getUTCMinutes())}${pad(at.getUTCSeconds())}`;
    return `${instance}-${d}-${t}`;
  }

  /** The manifest's key of a backup. */
  static manifestKey(ref: Pick<BackupRef, 'layout' | 'objectKey'>): string {
    return ref.layout === 'flat' ? `${ref.objectKey}.manifest.json` : `${ref.objectKey}/manifest.json`;
  }

  /** The committed archive's key of a backup. */
  static archiveKey(ref: BackupRef): string {
    if (ref.layout === 'flat') return ref.objectKey;
    if (!ref.archiveKey) throw new Error(`backup folder ${ref.objectKey} has no committed archive`);
    return ref.archiveKey;
  }

  /** The kind of store underneath (fs, s3, azure). */
  get kind(): StoreKind {
    return this.blobs.kind;
  }

  /** Where the store is, for people: never a credential. */
  get location(): string {
    return this.blobs.location;
  }

  /** True when the store holds the backup's manifest (so the backup); rejects when the store cannot be reached. */
  async has(ref: Pick<BackupRef, 'layout' | 'objectKey'>): Promise<boolean> {
    return (await this.blobs.head(BackupStore.manifestKey(ref))) !== null;
  }

  /** Removes one attempt's archive (one that lost the commit, or failed): never call it with a committed archive's key. */
  async discardArchive(archiveKey: string): Promise<void> {
    await this.blobs.delete(archiveKey);
  }

  /** Whether new archives are written under a retention lock the store enforces. */
  get locksInStore(): boolean {
    return this.blobs.enforcesLocks && this.opts.lockMode !== undefined;
  }

  /** The lock to write a backup's objects with, given when it expires, where the store enforces locks. */
  retentionFor(expiresAt: Date): RetentionLock | undefined {
    return this.locksInStore ? { retainUntil: expiresAt, mode: this.opts.lockMode! } : undefined;
  }

  /**
   * Streams an archive (a dump's output) into the store under a key of this
   * attempt's own in `folder`, encrypted when the store encrypts, hashing the
   * bytes stored on the way. Nothing is committed: the caller writes the
   * manifest and marks the row. If the source fails, `opts.complete` rejects
   * (the producer did not exit cleanly) or `opts.signal` aborts, the upload is
   * aborted and nothing is left under the key.
   */
  async writeArchive(folder: string, source: Readable, opts: WriteArchiveOptions = {}): Promise<WrittenArchive> {
    opts.complete?.catch(() => {}); // awaited below; never an unhandled rejection if the upload fails first
    const archiveKey = `${folder}/archive.${randomUUID().slice(0, 8)}`;
    const plain = new DigestStream(opts.onProgress);
    const stored = new DigestStream();
    let encryption: ArchiveEncryption | null = null;
    const stages: Transform[] = [plain];
    if (this.opts.encrypt) {
      if (!this.opts.keyring.activeKeyId) throw new Error('backups are encrypted but no active key is configured (BACKUP_KEY_ACTIVE)');
      const dataKey = newDataKey();
      const wrapped = await this.opts.keyring.wrap(dataKey);
      encryption = { alg: ENVELOPE_ALG, keyId: wrapped.keyId, wrappedKey: wrapped.wrapped };
      stages.push(encryptStream(dataKey));
      dataKey.fill(0); // the cipher holds its own copy (a KeyObject); the plain data key goes no further
    }
    // The producer must have exited cleanly before the last byte counts: the end waits for it.
    const complete = opts.complete ?? Promise.resolve();
    const gate = new Transform({
      transform(chunk: Buffer, _e, cb) {
        cb(null, chunk);
      },
      flush(cb) {
        complete.then(() => cb(), (err: unknown) => cb(err instanceof Error ? err : new Error(String(err))));
      },
    });
    // Any failure (the source, a stage, the producer's exit, an abort) fails the body the store reads, which aborts the upload.
    const body = pipeline_(source, ...stages, stored, gate);
    try {
      await this.blobs.put(archiveKey, body, { signal: opts.signal, retention: opts.retention });
    } catch (err) {
      source.destroy();
      await this.blobs.delete(archiveKey).catch(() => {});
      throw err;
    }
    return { archiveKey, sizeBytes: stored.bytes, sha256: stored.digest(), plainBytes: plain.bytes, encryption };
  }

  /**
   * Removes what attempts left in a pending backup's folder: unfinished
   * uploads, and archives other than `keep`. Call it under the backup's row
   * lock while it is pending, so it never races a commit.
   */
  async clearUncommitted(folder: string, keep?: string): Promise<void> {
    await this.blobs.abortIncomplete(`${folder}/`);
    for (const o of await this.blobs.list(`${folder}/archive.`)) {
      if (o.key !== keep) await this.blobs.delete(o.key);
    }
  }

  /** Size of a stored object, or null when it is gone. */
  async sizeOf(key: string): Promise<number | null> {
    return (await this.blobs.head(key))?.size ?? null;
  }

  async writeManifest(ref: BackupRef, manifest: BackupManifest, retention?: RetentionLock): Promise<void> {
    const body = Readable.from([Buffer.from(JSON.stringify(manifest, null, 2))]);
    await this.blobs.put(BackupStore.manifestKey(ref), body, { retention });
  }

  async readManifest(ref: Pick<BackupRef, 'layout' | 'objectKey'>): Promise<BackupManifest | null> {
    const key = BackupStore.manifestKey(ref);
    if (!(await this.blobs.head(key))) return null;
    const chunks: Buffer[] = [];
    for await (const chunk of await this.blobs.get(key)) chunks.push(chunk as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as BackupManifest;
  }

  /**
   * Rewrites a backup's manifest with `patch` (a rotated key's new wrapped
   * data key, say). The archive is not touched. A store with versioning keeps
   * the old manifest as an older version, under its own lock.
   */
  async updateManifest(ref: BackupRef, patch: Partial<BackupManifest>, retention?: RetentionLock): Promise<void> {
    const current = await this.readManifest(ref);
    if (!current) throw new Error(`the manifest of ${ref.objectKey} is missing in ${this.blobs.location}`);
    await this.writeManifest(ref, { ...current, ...patch }, retention);
  }

  /** Re-reads the stored archive and returns its size and sha256 (of the bytes stored). */
  async checksum(ref: BackupRef): Promise<{ sizeBytes: number; sha256: string }> {
    return hashStream(await this.blobs.get(BackupStore.archiveKey(ref)));
  }

  /**
   * Checks a stored archive before anyone uses it: its size and sha256 must
   * match `expected` (the catalog's record) and its manifest. Throws
   * ArchiveIntegrityError naming what differs.
   */
  async verify(ref: BackupRef, expected: { sizeBytes: number; sha256: string }, onProgress?: (bytes: number) => void): Promise<void> {
    const manifest = await this.readManifest(ref);
    const key = BackupStore.archiveKey(ref);
    const { sizeBytes, sha256 } = await hashStream(await this.blobs.get(key), onProgress);
    const problems: string[] = [];
    if (!manifest) problems.push('its manifest is missing');
    if (sha256 !== expected.sha256) problems.push(`its sha256 is ${sha256}, the catalog recorded ${expected.sha256}`);
    if (manifest && sha256 !== manifest.sha256) problems.push(`the manifest says sha256 ${manifest.sha256}`);
    if (sizeBytes !== expected.sizeBytes) problems.push(`its size is ${sizeBytes} bytes, the catalog recorded ${expected.sizeBytes}`);
    if (problems.length) throw new ArchiveIntegrityError(`archive ${key} failed verification: ${problems.join('; ')}`);
  }

  /**
   * The plain archive as a stream: read from the store, hashed as stored
   * (the stream fails with ArchiveIntegrityError at its end when the bytes are
   * not `expected`), and decrypted chunk by chunk (a tampered or truncated
   * object fails). The data key is unwrapped first, so a missing or wrong key
   * fails before a byte is read.
   */
  async openArchive(ref: BackupRef, encryption: ArchiveEncryption | null, expected: { sizeBytes: number; sha256: string }): Promise<Readable> {
    const decrypt = encryption ? decryptStream(await this.unwrap(encryption)) : null;
    const key = BackupStore.archiveKey(ref);
    const raw = await this.blobs.get(key);
    const check = new DigestStream();
    // The digest is compared before the end is passed on: a restore never sees a clean end of a wrong archive.
    const verified = new Transform({
      transform(chunk: Buffer, _e, cb) {
        cb(null, chunk);
      },
      flush(cb) {
        const sha256 = check.digest();
        if (check.bytes !== expected.sizeBytes || sha256 !== expected.sha256) {
          cb(new ArchiveIntegrityError(`archive ${key} failed verification while it was read: ${check.bytes} bytes with sha256 ${sha256}, the catalog recorded ${expected.sizeBytes} bytes, ${expected.sha256}`));
        } else cb();
      },
    });
    return decrypt ? pipeline_(raw, check, verified, decrypt) : pipeline_(raw, check, verified);
  }

  /** Writes the plain archive into a local file (for `pg_restore --jobs`, which needs to seek); removes the file if anything fails. */
  async spoolArchive(ref: BackupRef, encryption: ArchiveEncryption | null, expected: { sizeBytes: number; sha256: string }, file: string): Promise<void> {
    try {
      await pipeline(await this.openArchive(ref, encryption, expected), createWriteStream(file, { flags: 'w', mode: 0o600 }));
    } catch (err) {
      await fs.rm(file, { force: true });
      throw err;
    }
  }

  /** Unwraps a backup's data key; the keyring's error names the key id when it is missing or wrong. */
  async unwrap(encryption: ArchiveEncryption): Promise<Buffer> {
    return this.opts.keyring.unwrap({ alg: 'A256GCM', keyId: encryption.keyId, wrapped: encryption.wrappedKey });
  }

  /** Every stored key of a backup (archive, manifest, attempts' leftovers) and unfinished uploads; a string is a v2 backup's folder. */
  async keysOf(refOrFolder: Pick<BackupRef, 'layout' | 'objectKey'> | string): Promise<string[]> {
    const ref = typeof refOrFolder === 'string' ? { layout: 'v2' as const, objectKey: refOrFolder } : refOrFolder;
    const prefix = ref.layout === 'flat' ? ref.objectKey : `${ref.objectKey}/`;
    const complete = (await this.blobs.list(prefix)).map((o) => o.key);
    const incomplete = await this.blobs.listIncomplete(prefix);
    return [...complete, ...incomplete];
  }

  /**
   * Removes a backup's objects: the manifest first (so a half-removed backup
   * is never taken for a whole one), then the archive and anything an attempt
   * left. Idempotent. A store lock that refuses raises ObjectLockedError.
   */
  async remove(ref: Pick<BackupRef, 'layout' | 'objectKey'>): Promise<void> {
    if (ref.layout === 'flat') {
      await this.blobs.delete(BackupStore.manifestKey(ref));
      await this.blobs.delete(ref.objectKey);
      await this.blobs.abortIncomplete(ref.objectKey);
      return;
    }
    await this.blobs.delete(BackupStore.manifestKey(ref));
    await this.blobs.abortIncomplete(`${ref.objectKey}/`);
    for (const o of await this.blobs.list(`${ref.objectKey}/`)) await this.blobs.delete(o.key);
  }

  /**
   * Copies a committed backup (archive, then manifest) into another region's
   * store under the same keys, streamed (stores of different kinds), then
   * reads the copy back and returns its size and sha256, for the caller to
   * compare with the catalog. The ciphertext is copied as is: no key is needed.
   */
  async copyTo(target: BackupStore, ref: BackupRef, retention?: RetentionLock, onProgress?: (bytes: number) => void): Promise<{ sizeBytes: number; sha256: string }> {
    const archive = BackupStore.archiveKey(ref);
    const counted = new DigestStream(onProgress);
    const source = await this.blobs.get(archive);
    source.once('error', (err) => counted.destroy(err));
    await target.blobs.put(archive, source.pipe(counted), { retention });
    const manifestKey = BackupStore.manifestKey(ref);
    await target.blobs.put(manifestKey, await this.blobs.get(manifestKey), { retention });
    return hashStream(await target.blobs.get(archive));
  }

  /** The objects of a backup, for locks and holds. */
  private objectsOf(ref: BackupRef): string[] {
    return [BackupStore.archiveKey(ref), BackupStore.manifestKey(ref)];
  }

  /** Sets or lifts the store's legal hold on a backup's objects, where the store enforces locks; otherwise what the store can (read-only files). */
  async setLegalHold(ref: BackupRef, on: boolean): Promise<void> {
    for (const key of this.objectsOf(ref)) await this.blobs.setLegalHold(key, on);
  }

  /** The store's view of an archive's locks. */
  async lockState(ref: BackupRef) {
    return this.blobs.lockState(BackupStore.archiveKey(ref));
  }

  /** Lists a store's objects (for tests and tools that check nothing was left behind). */
  async list(prefix: string): Promise<BlobInfo[]> {
    return this.blobs.list(prefix);
  }
}

/** Pipes streams into each other and returns the last, whose reader sees every stage's error. */
function pipeline_(...streams: (Readable | Transform)[]): Readable {
  return pipelineCb(streams as unknown as [Readable, Transform], () => {}) as unknown as Readable;
}

/** Size and sha256 of a stream. */
async function hashStream(stream: Readable, onProgress?: (bytes: number) => void): Promise<{ sizeBytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    sizeBytes += (chunk as Buffer).length;
    onProgress?.(sizeBytes);
  }
  return { sizeBytes, sha256: hash.digest('hex') };
}

/** An archive whose bytes do not match its catalog record or manifest: it must not be restored. */
export class ArchiveIntegrityError extends Error {}
