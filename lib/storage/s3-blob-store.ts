import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  AbortMultipartUploadCommand,
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  GetObjectLegalHoldCommand,
  GetObjectRetentionCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
  PutObjectLegalHoldCommand,
  PutObjectRetentionCommand,
  S3Client,
  paginateListObjectsV2,
  type ObjectLockLegalHoldStatus,
  type ObjectLockMode,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import {
  ObjectLockedError,
  ObjectNotFoundError,
  assertKey,
  assertPrefix,
  checkRange,
  type BlobInfo,
  type BlobLockState,
  type BlobStore,
  type PutOptions,
  type RetentionLock,
} from './blob-store.js';
import type { S3StoreConfig } from './store-config.js';

const MiB = 1024 * 1024;
/** Multipart part size: memory per upload is about PART_SIZE × (QUEUE_SIZE + 1); 10,000 parts of 8 MiB allow 78 GiB objects. */
const PART_SIZE = 8 * MiB;
const QUEUE_SIZE = 3;
/** CopyObject's limit; bigger objects are copied by a streamed get and put. */
const MAX_COPY_OBJECT = 5 * 1024 * MiB;

/** Error names S3 (and compatible servers) give for an absent object or version. */
const NOT_FOUND = new Set(['NoSuchKey', 'NotFound', 'NoSuchVersion']);
/** Error names meaning "this object has no retention / legal hold" rather than a failure. */
const NO_LOCK = new Set(['NoSuchObjectLockConfiguration', 'ObjectLockConfigurationNotFoundError', 'NoSuchObjectLegalHold', 'NoSuchObjectRetention']);

interface ServiceErrorLike {
  name?: string;
  message?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
  $fault?: string;
}
const asService = (err: unknown) => (err ?? {}) as ServiceErrorLike;
const errName = (err: unknown) => asService(err).name ?? asService(err).Code ?? '';
const httpStatus = (err: unknown) => asService(err).$metadata?.httpStatusCode;
const isNotFound = (err: unknown) => NOT_FOUND.has(errName(err)) || (httpStatus(err) === 404 && errName(err) !== 'NoSuchBucket');
/** "No lock configuration" answers: none set on the object, or the bucket has no Object Lock. */
const isNoLock = (err: unknown) => NO_LOCK.has(errName(err)) || (errName(err) === 'InvalidRequest' && /object lock configuration|not locked|no .*(retention|legal hold)/i.test(asService(err).message ?? ''));
/** An answer that says Object Lock refused (versitygw: AccessDenied "Access Denied because object protected by object lock."). */
const saysLocked = (err: unknown) => /object lock|locked|retention|legal hold|WORM/i.test(asService(err).message ?? '');
/**
 * A refusal by Object Lock. AWS answers a plain AccessDenied (403) for a locked
 * version, so with locks enforced (checked just before) AccessDenied and
 * InvalidRequest count as refusals too; otherwise only an answer that says so.
 */
const isLockRefusal = (err: unknown, enforcing: boolean) =>
  saysLocked(err) || (enforcing && ['AccessDenied', 'InvalidRequest', 'ObjectLocked'].includes(errName(err)));

/**
 * BlobStore on an S3-compatible bucket (AWS S3, versitygw, MinIO, Ceph RGW).
 * Every key lives under `config.prefix`. Puts stream through lib-storage's
 * Upload (multipart for streams of unknown length, at most ~32 MiB buffered);
 * a failed or aborted put aborts its multipart upload before it rejects, so
 * nothing is left behind. With `config.objectLock` the bucket (which must have
 * Object Lock, and so versioning) enforces retention and legal holds itself:
 * puts carry the lock headers, and `delete` removes every version of a key or
 * rejects with ObjectLockedError without deleting anything when a version is
 * still locked. Errors name the object (`s3://bucket/key`), never a credential.
 */
export class S3BlobStore implements BlobStore {
  readonly kind = 's3' as const;
  readonly location: string;
  readonly enforcesLocks: boolean;
  /** The SDK client, for tools and tests that need an S3 call the interface does not offer. */
  readonly client: S3Client;
  /** The bucket. */
  readonly bucket: string;
  /** `config.prefix`, ending in `/` unless empty: prepended to every key. */
  readonly prefix: string;
  /** Credential values seen, to scrub from error messages. */
  private readonly secrets = new Set<string>();

  /**
   * `env` is where `config.credentialsEnv` is read (`<P>_ACCESS_KEY_ID`,
   * `<P>_SECRET_ACCESS_KEY`, optional `<P>_SESSION_TOKEN`), when each request
   * is signed, so rotated keys are picked up. Without `credentialsEnv` the SDK's
   * default chain is used (AWS_* variables, profiles, instance roles); an
   * `env` other than process.env is consulted for AWS_ACCESS_KEY_ID first.
   */
  constructor(readonly config: S3StoreConfig, env: NodeJS.ProcessEnv = process.env) {
    this.bucket = config.bucket;
    this.prefix = config.prefix && !config.prefix.endsWith('/') ? `${config.prefix}/` : config.prefix;
    this.location = `s3://${config.bucket}/${this.prefix}`;
    this.enforcesLocks = Boolean(config.objectLock);
    this.client = new S3Client({
      region: config.region,
      endpoint: config.endpoint,
      forcePathStyle: config.forcePathStyle,
      credentials: this.credentialsFrom(env),
      // The SDK's default (WHEN_SUPPORTED) sends a CRC32 checksum with every PutObject and UploadPart,
      // which is what Object Lock requires in place of Content-MD5.
      requestChecksumCalculation: 'WHEN_SUPPORTED',
    });
  }

  private credentialsFrom(env: NodeJS.ProcessEnv): (() => Promise<{ accessKeyId: string; secretAccessKey: string; sessionToken?: string }>) | undefined {
    const p = this.config.credentialsEnv ?? (env !== process.env && env.AWS_ACCESS_KEY_ID ? 'AWS' : undefined);
    if (!p) return undefined;
    return async () => {
      const accessKeyId = env[`${p}_ACCESS_KEY_ID`];
      const secretAccessKey = env[`${p}_SECRET_ACCESS_KEY`];
      const sessionToken = env[`${p}_SESSION_TOKEN`] || undefined;
      if (!accessKeyId || !secretAccessKey) {
        throw new Error(`no credentials for ${this.location}: set ${p}_ACCESS_KEY_ID and ${p}_SECRET_ACCESS_KEY in the environment`);
      }
      for (const s of [accessKeyId, secretAccessKey, sessionToken]) if (s && s.length >= 4) this.secrets.add(s);
      return { accessKeyId, secretAccessKey, sessionToken };
    };
  }

  /** The bucket key of `key`. */
  private full(key: string): string {
    assertKey(key);
    return this.prefix + key;
  }

  /** A readable, credential-free error for a failed S3 call (ObjectNotFoundError / ObjectLockedError pass through). */
  private fail(op: string, key: string | undefined, err: unknown): Error {
    if (err instanceof ObjectNotFoundError || err instanceof ObjectLockedError) return err;
    const name = errName(err) || 'Error';
    const status = httpStatus(err);
    let detail = asService(err).message ?? String(err);
    for (const s of this.secrets) detail = detail.split(s).join('***');
    const where = key === undefined ? this.location : `s3://${this.bucket}/${this.prefix}${key}`;
    return Object.assign(new Error(`S3 ${op} ${where} failed: ${name}${status ? ` (HTTP ${status})` : ''}: ${detail}`), { code: name, status });
  }

  /** Runs an SDK call, turning its errors into `fail`'s; `notFound` errors become ObjectNotFoundError of `key`. */
  private async call<T>(op: string, key: string | undefined, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (key !== undefined && isNotFound(err)) throw new ObjectNotFoundError(key);
      throw this.fail(op, key, err);
    }
  }

  /** The Object Lock headers of a put or copy; none unless the store enforces locks. */
  private lockParams(opts: Pick<PutOptions, 'retention' | 'legalHold'>): {
    ObjectLockMode?: ObjectLockMode;
    ObjectLockRetainUntilDate?: Date;
    ObjectLockLegalHoldStatus?: ObjectLockLegalHoldStatus;
  } {
    if (!this.config.objectLock) return {};
    return {
      ...(opts.retention ? { ObjectLockMode: opts.retention.mode, ObjectLockRetainUntilDate: opts.retention.retainUntil } : {}),
      ...(opts.legalHold ? { ObjectLockLegalHoldStatus: 'ON' as const } : {}),
    };
  }

  async put(key: string, body: Readable, opts: PutOptions = {}): Promise<BlobInfo> {
    const Key = this.full(key);
    opts.signal?.throwIfAborted();
    let bytes = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        opts.onProgress?.(bytes);
        cb(null, chunk);
      },
    });
    // Errors of the source and aborts of the signal destroy `counter`, which fails the Upload's read of it:
    // lib-storage then aborts the multipart upload itself before done() rejects. (upload.abort() would make
    // done() reject at once and abort the multipart upload later, in the background.)
    let sourceError: unknown;
    const piped = pipeline(body, counter, { signal: opts.signal }).catch((err: unknown) => {
      sourceError = err;
    });
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key, Body: counter, ...this.lockParams(opts) },
      partSize: PART_SIZE,
      queueSize: QUEUE_SIZE,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
    } catch (err) {
      counter.destroy();
      body.destroy();
      await piped;
      // Belt and braces: should lib-storage not have aborted it, abort the multipart upload here.
      if (upload.uploadId) {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key, UploadId: upload.uploadId })).catch(() => {});
      }
      throw sourceError ?? this.fail('put', key, err);
    }
    await piped;
    if (sourceError) throw sourceError;
    return (await this.head(key)) ?? { key, size: bytes, modifiedAt: new Date() };
  }

  async get(key: string, range?: { start: number; end?: number }): Promise<Readable> {
    const Key = this.full(key);
    if (range) checkRange(range);
    const res = await this.call('get', key, () =>
      this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key, Range: range ? `bytes=${range.start}-${range.end ?? ''}` : undefined })),
    );
    if (!res.Body) throw this.fail('get', key, new Error('no body in the response'));
    return res.Body as Readable;
  }

  async head(key: string): Promise<BlobInfo | null> {
    const Key = this.full(key);
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }));
      return { key, size: res.ContentLength ?? 0, modifiedAt: res.LastModified ?? new Date(0) };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw this.fail('head', key, err);
    }
  }

  async list(prefix: string): Promise<BlobInfo[]> {
    assertPrefix(prefix);
    const out: BlobInfo[] = [];
    try {
      for await (const page of paginateListObjectsV2({ client: this.client }, { Bucket: this.bucket, Prefix: this.prefix + prefix })) {
        for (const o of page.Contents ?? []) {
          const key = o.Key?.slice(this.prefix.length);
          // Folder markers and names this store would not write are not objects of it.
          if (key === undefined || !isKey(key)) continue;
          out.push({ key, size: o.Size ?? 0, modifiedAt: o.LastModified ?? new Date(0) });
        }
      }
    } catch (err) {
      throw this.fail('list', prefix, err);
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /** Every unfinished multipart upload under `prefix` (bucket keys and upload ids). */
  private async multipartUploads(prefix: string): Promise<{ Key: string; UploadId: string }[]> {
    assertPrefix(prefix);
    const out: { Key: string; UploadId: string }[] = [];
    let KeyMarker: string | undefined;
    let UploadIdMarker: string | undefined;
    try {
      for (;;) {
        const page = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: this.prefix + prefix, KeyMarker, UploadIdMarker }));
        for (const u of page.Uploads ?? []) if (u.Key && u.UploadId) out.push({ Key: u.Key, UploadId: u.UploadId });
        if (!page.IsTruncated) break;
        KeyMarker = page.NextKeyMarker;
        UploadIdMarker = page.NextUploadIdMarker;
        if (!KeyMarker && !UploadIdMarker) break;
      }
    } catch (err) {
      throw this.fail('list multipart uploads', prefix, err);
    }
    return out;
  }

  async listIncomplete(prefix: string): Promise<string[]> {
    return (await this.multipartUploads(prefix)).map((u) => u.Key.slice(this.prefix.length)).sort();
  }

  async abortIncomplete(prefix: string): Promise<number> {
    const uploads = await this.multipartUploads(prefix);
    for (const u of uploads) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, ...u })).catch((err: unknown) => {
        if (errName(err) !== 'NoSuchUpload') throw this.fail('abort multipart upload', u.Key.slice(this.prefix.length), err);
      });
    }
    return uploads.length;
  }

  /**
   * The versions and delete markers of exactly `Key`, or null when the server
   * cannot list versions (an unversioned bucket on a server without the call).
   */
  private async versionsOf(key: string, Key: string): Promise<{ VersionId: string; marker: boolean }[] | null> {
    const out: { VersionId: string; marker: boolean }[] = [];
    let KeyMarker: string | undefined;
    let VersionIdMarker: string | undefined;
    try {
      for (;;) {
        const page = await this.client.send(new ListObjectVersionsCommand({ Bucket: this.bucket, Prefix: Key, KeyMarker, VersionIdMarker }));
        for (const v of page.Versions ?? []) if (v.Key === Key && v.VersionId) out.push({ VersionId: v.VersionId, marker: false });
        for (const m of page.DeleteMarkers ?? []) if (m.Key === Key && m.VersionId) out.push({ VersionId: m.VersionId, marker: true });
        if (!page.IsTruncated) break;
        KeyMarker = page.NextKeyMarker;
        VersionIdMarker = page.NextVersionIdMarker;
        // Past every version of Key (listing goes on with longer keys sharing the prefix).
        if (!KeyMarker || KeyMarker > Key) break;
      }
    } catch (err) {
      if (['NotImplemented', 'MethodNotAllowed'].includes(errName(err))) return null;
      throw this.fail('list versions', key, err);
    }
    return out;
  }

  /** Why version `VersionId` of `Key` cannot be deleted now, or null when it can. */
  private async lockOf(Key: string, VersionId: string): Promise<string | null> {
    const [retention, hold] = await Promise.all([
      this.client.send(new GetObjectRetentionCommand({ Bucket: this.bucket, Key, VersionId })).then(
        (r) => r.Retention,
        (err: unknown) => (isNoLock(err) || isNotFound(err) ? undefined : Promise.reject(err)),
      ),
      this.client.send(new GetObjectLegalHoldCommand({ Bucket: this.bucket, Key, VersionId })).then(
        (r) => r.LegalHold?.Status,
        (err: unknown) => (isNoLock(err) || isNotFound(err) ? undefined : Promise.reject(err)),
      ),
    ]);
    if (hold === 'ON') return `version ${VersionId} is under a legal hold`;
    if (retention?.RetainUntilDate && retention.RetainUntilDate.getTime() > Date.now()) {
      return `version ${VersionId} is under ${retention.Mode ?? ''} retention until ${retention.RetainUntilDate.toISOString()}`;
    }
    return null;
  }

  async delete(key: string): Promise<void> {
    const Key = this.full(key);
    const versions = await this.versionsOf(key, Key);
    if (versions === null) {
      await this.deleteOne(key, Key, undefined);
      return;
    }
    if (this.enforcesLocks) {
      // Check every version before deleting any, so a locked object is left whole rather than half deleted.
      for (const v of versions.filter((x) => !x.marker)) {
        const why = await this.call('check lock of', key, () => this.lockOf(Key, v.VersionId)).catch((err: unknown) => {
          if (err instanceof ObjectNotFoundError) return null;
          throw err;
        });
        if (why) throw new ObjectLockedError(key, why);
      }
    }
    // Versions first, delete markers last: a marker removed early would make an older version current again.
    for (const v of [...versions.filter((x) => !x.marker), ...versions.filter((x) => x.marker)]) {
      await this.deleteOne(key, Key, v.VersionId);
    }
  }

  private async deleteOne(key: string, Key: string, VersionId: string | undefined): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key, VersionId }));
    } catch (err) {
      if (isNotFound(err)) return;
      if (isLockRefusal(err, this.enforcesLocks)) throw new ObjectLockedError(key, `${errName(err)}: ${asService(err).message ?? ''}`);
      throw this.fail('delete', key, err);
    }
  }

  async copy(fromKey: string, toKey: string, opts: Pick<PutOptions, 'retention' | 'legalHold'> = {}): Promise<BlobInfo> {
    const from = this.full(fromKey);
    const Key = this.full(toKey);
    const src = await this.head(fromKey);
    if (!src) throw new ObjectNotFoundError(fromKey);
    if (src.size > MAX_COPY_OBJECT) {
      // CopyObject stops at 5 GiB: stream it through this process instead (bounded memory, like any put).
      return this.put(toKey, await this.get(fromKey), opts);
    }
    const CopySource = `${this.bucket}/${from.split('/').map(encodeURIComponent).join('/')}`;
    await this.call('copy', fromKey, () =>
      this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key, CopySource, MetadataDirective: 'COPY', ...this.lockParams(opts) })),
    );
    const info = await this.head(toKey);
    if (!info) throw this.fail('copy', toKey, new Error('the copy is not there after CopyObject'));
    return info;
  }

  /** Without `config.objectLock` the bucket cannot hold locks: only checks that the object exists. */
  async setRetention(key: string, lock: RetentionLock): Promise<void> {
    const Key = this.full(key);
    if (!this.config.objectLock) {
      if (!(await this.head(key))) throw new ObjectNotFoundError(key);
      return;
    }
    await this.call('set retention of', key, () =>
      this.client.send(new PutObjectRetentionCommand({ Bucket: this.bucket, Key, Retention: { Mode: lock.mode, RetainUntilDate: lock.retainUntil } })),
    );
  }

  /** Without `config.objectLock` the bucket cannot hold locks: only checks that the object exists. */
  async setLegalHold(key: string, on: boolean): Promise<void> {
    const Key = this.full(key);
    if (!this.config.objectLock) {
      if (!(await this.head(key))) throw new ObjectNotFoundError(key);
      return;
    }
    await this.call('set legal hold of', key, () =>
      this.client.send(new PutObjectLegalHoldCommand({ Bucket: this.bucket, Key, LegalHold: { Status: on ? 'ON' : 'OFF' } })),
    );
  }

  /** The current version's retention (as stored, even if past) and legal hold; none without `config.objectLock`. */
  async lockState(key: string): Promise<BlobLockState> {
    const Key = this.full(key);
    if (!(await this.head(key))) throw new ObjectNotFoundError(key);
    if (!this.config.objectLock) return { retention: null, legalHold: false };
    const noLock = (err: unknown) => (isNoLock(err) ? undefined : Promise.reject(err));
    const [retention, hold] = await this.call('get locks of', key, () =>
      Promise.all([
        this.client.send(new GetObjectRetentionCommand({ Bucket: this.bucket, Key })).then((r) => r.Retention, noLock),
        this.client.send(new GetObjectLegalHoldCommand({ Bucket: this.bucket, Key })).then((r) => r.LegalHold?.Status, noLock),
      ]),
    );
    return {
      retention: retention?.RetainUntilDate && retention.Mode ? { retainUntil: retention.RetainUntilDate, mode: retention.Mode } : null,
      legalHold: hold === 'ON',
    };
  }

  async ping(): Promise<void> {
    await this.call('ping', undefined, () => this.client.send(new HeadBucketCommand({ Bucket: this.bucket })));
  }
}

function isKey(key: string): boolean {
  try {
    assertKey(key);
    return true;
  } catch {
    return false;
  }
}
