import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import type { ObjectStore, StagedObject } from './object-store.js';
import type { SequenceMarks } from '../engine/types.js';

/** What a backup archive is, stored beside it so the archive can be checked and restored without the catalog. */
export interface BackupManifest {
  formatVersion: 1;
  backupId: string;
  objectKey: string;
  instanceId: string;
  instance: string;
  kind: 'system' | 'on_demand';
  label: string | null;
  edition: string;
  serverVersion: string;
  sizeBytes: number;
  sha256: string;
  sequences: SequenceMarks;
  createdAt: string;
  expiresAt: string;
}

const pad = (n: number) => String(n).padStart(2, '0');

/** Hashes and counts bytes as they pass, so the archive is read once and never held in memory. */
class DigestStream extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  constructor(private readonly opts: Pick<WriteArchiveOptions, 'onProgress'>) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.opts.onProgress?.(this.bytes);
    cb(null, chunk);
  }
}

/** An archive written in full but not yet visible under its key, with its size and checksum. */
export interface StagedArchive {
  staged: StagedObject;
  sizeBytes: number;
  sha256: string;
}

/** Options of BackupStore.stageArchive. */
export interface WriteArchiveOptions {
  /** Called with the running byte count as data passes. */
  onProgress?: (bytes: number) => void;
  /** Settles when the producer has finished; a rejection aborts the write so no archive is committed. */
  complete?: Promise<void>;
}

/** A running producer that writes an archive into the file descriptor it was given (a dump tool). */
export interface ArchiveProducer {
  /** Resolves when the producer exited cleanly; rejects otherwise. */
  done: Promise<void>;
  /** Stops the producer. */
  kill(): void;
}

/** Options of BackupStore.stageArchiveFile. */
export interface ProduceArchiveOptions {
  /** Called with the bytes written so far (read from the growing file), then with the bytes hashed. */
  onProgress?: (p: { phase: 'writing' | 'hashing'; bytes: number }) => void;
  /** How often the growing file's size is read (default 1 s). */
  progressEveryMs?: number;
  /** Aborting it stops the producer; the staged file is then discarded. */
  signal?: AbortSignal;
}

/** Reads of 1 MB+ hash about twice as fast as the 64 KB a read stream uses by default. */
const HASH_READ_BYTES = 4 << 20;

/**
 * The backup layout above a raw ObjectStore: it alone knows that an archive is
 * named `<instance>-<yyyymmdd>-<hhmmss>` (UTC) and that its manifest sits
 * beside it as `<key>.manifest.json`.
 */
export class BackupStore {
  constructor(readonly objects: ObjectStore) {}

  /** The archive key of a backup of `instance` taken at `at`. */
  static objectKey(instance: string, at: Date): string {
    const d = `${at.getUTCFullYear()}${pad(at.getUTCMonth() + 1)}${pad(at.getUTCDate())}`;
    const t = `${pad(at.getUTCHours())}${pad(at.getUTCMinutes())}${pad(at.getUTCSeconds())}`;
    return `${instance}-${d}-${t}`;
  }

  static manifestKey(objectKey: string): string {
    return `${objectKey}.manifest.json`;
  }

  /**
   * Streams an archive into a staged (not yet visible) object for `objectKey`,
   * computing its sha256 on the way. Unfinished writes of the key left by a
   * killed attempt are removed first. If the stream fails, or `opts.complete`
   * rejects (the producer did not finish cleanly), the staged data is
   * discarded and nothing changes under the key. The caller commits it.
   */
  async stageArchive(objectKey: string, source: Readable, opts: WriteArchiveOptions = {}): Promise<StagedArchive> {
    opts.complete?.catch(() => {}); // awaited below; never an unhandled rejection if the write fails first
    await this.objects.removeIncomplete(objectKey);
    const digest = new DigestStream(opts);
    source.on('error', (err) => digest.destroy(err));
    const staged = await this.objects.stage(objectKey, source.pipe(digest));
    try {
      await (opts.complete ?? Promise.resolve());
    } catch (err) {
      await staged.discard();
      throw err;
    }
    return { staged, sizeBytes: digest.bytes, sha256: digest.hash.digest('hex') };
  }

  /**
   * Stages an archive that a producer writes into a local file itself (`start`
   * gets the file's descriptor and starts, say, pg_dump with it as its output),
   * so the bytes never pass through this process. Once the producer exits
   * cleanly the file is hashed (sha256) and fsynced, both at once, and staged.
   * Unfinished writes of the key left by a killed attempt are removed first.
   * If the producer fails or is aborted, the file is discarded and nothing
   * changes under the key. The caller commits it.
   */
  async stageArchiveFile(objectKey: string, start: (fd: number) => Promise<ArchiveProducer>, opts: ProduceArchiveOptions = {}): Promise<StagedArchive> {
    await this.objects.removeIncomplete(objectKey);
    const local = await this.objects.stageLocal(objectKey);
    let producer: ArchiveProducer | undefined;
    const stop = () => producer?.kill();
    opts.signal?.addEventListener('abort', stop);
    const poll = setInterval(() => {
      local.size().then((bytes) => opts.onProgress?.({ phase: 'writing', bytes }), () => {});
    }, opts.progressEveryMs ?? 1000);
    try {
      producer = await start(local.fd);
      if (opts.signal?.aborted) stop();
      await producer.done;
      if (opts.signal?.aborted) throw opts.signal.reason ?? new Error('aborted');
    } catch (err) {
      producer?.kill();
      await local.discard();
      throw err;
    } finally {
      clearInterval(poll);
      opts.signal?.removeEventListener('abort', stop);
    }
    // Hashing reads the file back from the page cache while fsync writes it out: neither waits for the other.
    const [hashed, sealed] = await Promise.allSettled([
      hashFile(local.path, (bytes) => opts.onProgress?.({ phase: 'hashing', bytes })),
      local.seal(),
    ]);
    if (hashed.status === 'rejected' || sealed.status === 'rejected') {
      await local.discard();
      throw hashed.status === 'rejected' ? hashed.reason : (sealed as PromiseRejectedResult).reason;
    }
    if (hashed.value.sizeBytes !== sealed.value.size) {
      await local.discard();
      throw new Error(`archive ${objectKey} changed while it was hashed (${hashed.value.sizeBytes} bytes hashed, ${sealed.value.size} on disk)`);
    }
    return { staged: sealed.value, sizeBytes: hashed.value.sizeBytes, sha256: hashed.value.sha256 };
  }

  async writeManifest(manifest: BackupManifest): Promise<void> {
    const body = Readable.from([Buffer.from(JSON.stringify(manifest, null, 2))]);
    await this.objects.put(BackupStore.manifestKey(manifest.objectKey), body);
  }

  async readManifest(objectKey: string): Promise<BackupManifest | null> {
    if (!(await this.objects.head(BackupStore.manifestKey(objectKey)))) return null;
    const chunks: Buffer[] = [];
    for await (const chunk of await this.objects.get(BackupStore.manifestKey(objectKey))) chunks.push(chunk as Buffer);
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as BackupManifest;
  }

  /** Re-reads an archive and returns its actual size and sha256. */
  async checksum(objectKey: string): Promise<{ sizeBytes: number; sha256: string }> {
    const hash = createHash('sha256');
    let sizeBytes = 0;
    for await (const chunk of await this.objects.get(objectKey)) {
      hash.update(chunk as Buffer);
      sizeBytes += (chunk as Buffer).length;
    }
    return { sizeBytes, sha256: hash.digest('hex') };
  }

  /**
   * Pins an archive as a local file for `readerId` (see ObjectStore.pinLocal)
   * and checks it before anyone uses it: its size and sha256 must match
   * `expected` (the catalog's record) and the manifest beside it. Returns the
   * file. Throws ArchiveIntegrityError naming what differs; the pin is then released.
   */
  async pinVerified(objectKey: string, expected: { sizeBytes: number; sha256: string }, readerId: string, onProgress?: (bytes: number) => void): Promise<string> {
    const manifest = await this.readManifest(objectKey);
    const file = await this.objects.pinLocal(objectKey, readerId);
    const { sizeBytes, sha256 } = await hashFile(file, onProgress);
    const problems: string[] = [];
    if (!manifest) problems.push('its manifest is missing');
    if (sha256 !== expected.sha256) problems.push(`its sha256 is ${sha256}, the catalog recorded ${expected.sha256}`);
    if (manifest && sha256 !== manifest.sha256) problems.push(`the manifest says sha256 ${manifest.sha256}`);
    if (sizeBytes !== expected.sizeBytes) problems.push(`its size is ${sizeBytes} bytes, the catalog recorded ${expected.sizeBytes}`);
    if (problems.length) {
      await this.objects.unpinLocal(objectKey, readerId);
      throw new ArchiveIntegrityError(`archive ${objectKey} failed verification: ${problems.join('; ')}`);
    }
    return file;
  }

  /** Releases what pinVerified pinned for `readerId`. Idempotent. */
  async unpin(objectKey: string, readerId: string): Promise<void> {
    await this.objects.unpinLocal(objectKey, readerId);
  }

  /** Removes an archive, its manifest and any unfinished write of either. Idempotent. */
  async remove(objectKey: string): Promise<void> {
    await this.objects.delete(BackupStore.manifestKey(objectKey));
    await this.objects.delete(objectKey);
  }

  /** Every stored key (archives, manifests and unfinished writes) belonging to `objectKey`. */
  async keysOf(objectKey: string): Promise<string[]> {
    const complete = (await this.objects.list(objectKey)).map((o) => o.key);
    const incomplete = await this.objects.listIncomplete(objectKey);
    return [...complete, ...incomplete];
  }
}

/** Size and sha256 of a local file, read in large blocks. */
async function hashFile(file: string, onProgress?: (bytes: number) => void): Promise<{ sizeBytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: HASH_READ_BYTES })) {
    hash.update(chunk as Buffer);
    sizeBytes += (chunk as Buffer).length;
    onProgress?.(sizeBytes);
  }
  return { sizeBytes, sha256: hash.digest('hex') };
}

/** An archive whose bytes do not match its catalog record or manifest: it must not be restored. */
export class ArchiveIntegrityError extends Error {}
