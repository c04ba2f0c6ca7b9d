import { randomUUID } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  DeleteObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectVersionsCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ObjectLockedError, ObjectNotFoundError, type LockMode } from '../lib/storage/blob-store.js';
import { FsBlobStore } from '../lib/storage/fs-blob-store.js';
import { S3BlobStore } from '../lib/storage/s3-blob-store.js';
import { s3StoreSchema, type S3StoreConfig } from '../lib/storage/store-config.js';
import { createBucket, ensureVersitygw, s3ClientFor, startS3Server, type S3Server } from '../scripts/lib/s3-server.js';
import { freePort } from '../scripts/lib/services.js';
import { bytesOf, describeBlobStoreContract, generatedStream } from './blob-contract.js';

const MiB = 1024 * 1024;
const DAY = 24 * 3600_000;

// ---------------------------------------------------------------- filesystem

describeBlobStoreContract('FsBlobStore', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bcdr-fsblob-'));
  return { store: new FsBlobStore(path.join(dir, 'root')), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
});

describe('FsBlobStore specifics', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'bcdr-fsblob-x-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const fresh = () => path.join(dir, randomUUID());

  it('reads, lists and deletes what the old FsObjectStore wrote, under the same flat keys', async () => {
    const root = fresh();
    // The old FsObjectStore's layout: flat files in the root, hard-link pins in `.pinned`, and an
    // unfinished write of a killed writer as `.<key>.<uuid>.partial`.
    mkdirSync(path.join(root, '.pinned'), { recursive: true });
    writeFileSync(path.join(root, 'contoso-20260304-050607'), 'dump');
    writeFileSync(path.join(root, 'contoso-20260304-050607.manifest.json'), '{}');
    linkSync(path.join(root, 'contoso-20260304-050607'), path.join(root, '.pinned', 'contoso-20260304-050607.restore1'));
    writeFileSync(path.join(root, `.contoso-20260305-000000.${randomUUID()}.partial`), 'half');
    const store = new FsBlobStore(root);
    expect((await store.list('')).map((o) => o.key)).toEqual(['contoso-20260304-050607', 'contoso-20260304-050607.manifest.json']);
    expect((await store.list('contoso-')).length).toBe(2);
    expect((await bytesOf(await store.get('contoso-20260304-050607'))).toString()).toBe('dump');
    expect(await store.listIncomplete('contoso')).toEqual(['contoso-20260305-000000']);
    expect(await store.abortIncomplete('')).toBe(1);
    await store.delete('contoso-20260304-050607.manifest.json');
    expect(existsSync(path.join(root, 'contoso-20260304-050607.manifest.json'))).toBe(false);
    expect(existsSync(path.join(root, '.pinned'))).toBe(true);
  });

  it('keeps nested keys in sub-folders and removes folders a delete empties, never the root', async () => {
    const root = fresh();
    const store = new FsBlobStore(root);
    await store.put('region/contoso/a.dump', Readable.from([Buffer.from('a')]));
    expect(statSync(path.join(root, 'region', 'contoso', 'a.dump')).isFile()).toBe(true);
    await store.delete('region/contoso/a.dump');
    expect(existsSync(path.join(root, 'region'))).toBe(false);
    expect(existsSync(root)).toBe(true);
  });

  it('makes locked files read-only (the catalog enforces the lock); delete still works', async () => {
    const store = new FsBlobStore(fresh());
    expect(store.enforcesLocks).toBe(false);
    const mode = (key: string) => statSync(path.join(store.location, ...key.split('/'))).mode & 0o777;
    await store.put('l/retained', Readable.from([Buffer.from('r')]));
    expect(mode('l/retained')).toBe(0o644);
    await store.setRetention('l/retained', { mode: 'COMPLIANCE', retainUntil: new Date(Date.now() + DAY) });
    expect(mode('l/retained')).toBe(0o444);
    expect(await store.lockState('l/retained')).toEqual({ retention: null, legalHold: false });
    await store.put('l/held', Readable.from([Buffer.from('h')]), { legalHold: true });
    expect(mode('l/held')).toBe(0o444);
    await store.put('l/put-retained', Readable.from([Buffer.from('h')]), { retention: { mode: 'GOVERNANCE', retainUntil: new Date(Date.now() + DAY) } });
    expect(mode('l/put-retained')).toBe(0o444);
    await store.copy('l/held', 'l/copy');
    expect(mode('l/copy')).toBe(0o644);
    await store.copy('l/held', 'l/copy-held', { legalHold: true });
    expect(mode('l/copy-held')).toBe(0o444);
    // Overwriting a read-only file replaces it (rename), as S3 makes a new version.
    await store.put('l/held', Readable.from([Buffer.from('h2')]));
    expect((await bytesOf(await store.get('l/held'))).toString()).toBe('h2');
    await store.delete('l/retained');
    expect(await store.head('l/retained')).toBeNull();
    await expect(store.setRetention('l/none', { mode: 'GOVERNANCE', retainUntil: new Date() })).rejects.toBeInstanceOf(ObjectNotFoundError);
  });

  it('pings a root it can create, and fails on one it cannot', async () => {
    await expect(new FsBlobStore(path.join(fresh(), 'a', 'b')).ping()).resolves.toBeUndefined();
    const file = path.join(dir, 'a-file');
    writeFileSync(file, 'x');
    await expect(new FsBlobStore(path.join(file, 'sub')).ping()).rejects.toThrow();
  });
});

// ---------------------------------------------------------------- S3 (versitygw)

let server: S3Server | undefined;
let s3Dir: string;
let admin: S3Client;
const BUCKET = 'bcdr-lock';
const PLAIN_BUCKET = 'bcdr-plain';
const CRED_ENV = 'BLOBTEST_S3';

/** Starts one versitygw for the whole file (first caller starts it). */
let starting: Promise<S3Server> | undefined;
function s3(): Promise<S3Server> {
  starting ??= (async () => {
    const bin = ensureVersitygw();
    s3Dir = mkdtempSync(path.join(os.tmpdir(), 'bcdr-s3-'));
    server = await startS3Server({
      bin,
      port: await freePort(),
      dataDir: path.join(s3Dir, 'data'),
      logFile: path.join(s3Dir, 'versitygw.log'),
      accessKey: 'bcdrtest',
      secretKey: `secret-${randomUUID()}`,
    });
    await createBucket(server, BUCKET, { objectLock: true });
    await createBucket(server, BUCKET, { objectLock: true }); // idempotent
    await createBucket(server, PLAIN_BUCKET, { objectLock: false });
    admin = s3ClientFor(server);
    return server;
  })();
  return starting;
}

function s3Config(srv: S3Server, over: Partial<S3StoreConfig> = {}): S3StoreConfig {
  return s3StoreSchema.parse({ kind: 's3', endpoint: srv.endpoint, bucket: BUCKET, region: srv.region, forcePathStyle: true, credentialsEnv: CRED_ENV, objectLock: { mode: 'GOVERNANCE' }, ...over });
}
const credEnv = (srv: S3Server) => ({ [`${CRED_ENV}_ACCESS_KEY_ID`]: srv.accessKey, [`${CRED_ENV}_SECRET_ACCESS_KEY`]: srv.secretKey });

afterAll(async () => {
  admin?.destroy();
  await server?.stop();
  if (s3Dir) rmSync(s3Dir, { recursive: true, force: true });
});

describeBlobStoreContract('S3BlobStore (versitygw, Object Lock bucket)', async () => {
  const srv = await s3();
  return { store: new S3BlobStore(s3Config(srv, { prefix: 'contract' }), credEnv(srv)) };
});

describeBlobStoreContract('S3BlobStore (versitygw, plain bucket, no prefix)', async () => {
  const srv = await s3();
  return { store: new S3BlobStore(s3Config(srv, { bucket: PLAIN_BUCKET, objectLock: undefined }), credEnv(srv)) };
});

describe('S3BlobStore specifics (versitygw)', () => {
  let store: S3BlobStore;
  let srv: S3Server;
  beforeAll(async () => {
    srv = await s3();
    store = new S3BlobStore(s3Config(srv, { prefix: 'specific/' }), credEnv(srv));
  });

  const versionsOf = async (key: string) => {
    const full = store.prefix + key;
    const r = await admin.send(new ListObjectVersionsCommand({ Bucket: BUCKET, Prefix: full }));
    return [...(r.Versions ?? []), ...(r.DeleteMarkers ?? [])].filter((v) => v.Key === full).map((v) => v.VersionId!);
  };
  const rawDelete = (key: string, VersionId: string, BypassGovernanceRetention?: boolean) =>
    admin.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: store.prefix + key, VersionId, BypassGovernanceRetention }));

  it('says where it is without credentials, and enforces locks with objectLock', () => {
    expect(store.location).toBe(`s3://${BUCKET}/specific/`);
    expect(store.enforcesLocks).toBe(true);
    expect(new S3BlobStore(s3Config(srv, { objectLock: undefined }), credEnv(srv)).enforcesLocks).toBe(false);
  });

  it('names the missing variables, and never a secret, when credentials fail', async () => {
    const missing = new S3BlobStore(s3Config(srv), {});
    await expect(missing.ping()).rejects.toThrow(/BLOBTEST_S3_ACCESS_KEY_ID and BLOBTEST_S3_SECRET_ACCESS_KEY/);
    const wrongSecret = 'wrong-secret-value-1234';
    const wrong = new S3BlobStore(s3Config(srv), { [`${CRED_ENV}_ACCESS_KEY_ID`]: srv.accessKey, [`${CRED_ENV}_SECRET_ACCESS_KEY`]: wrongSecret });
    const err = (await wrong.ping().catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toMatch(/^S3 ping s3:\/\/bcdr-lock\/ failed/);
    expect(err.message).not.toContain(wrongSecret);
    expect(err.message).not.toContain(srv.secretKey);
    const noBucket = new S3BlobStore(s3Config(srv, { bucket: 'no-such-bucket' }), credEnv(srv));
    await expect(noBucket.ping()).rejects.toThrow(/no-such-bucket.*404/);
  });

  it('leaves no multipart upload when the writer is killed mid-upload (source destroyed)', async () => {
    const key = 'killed/archive.dump';
    const body = new PassThrough();
    const put = store.put(key, body);
    put.catch(() => {});
    for (let i = 0; i < 20; i++) body.write(Buffer.alloc(MiB, i));
    const deadline = Date.now() + 20_000;
    while (!(await store.listIncomplete('killed/')).includes(key)) {
      if (Date.now() > deadline) throw new Error('multipart upload never started');
      await sleep(50);
    }
    body.destroy();
    await expect(put).rejects.toThrow();
    const mpus = await admin.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: store.prefix }));
    expect(mpus.Uploads ?? []).toEqual([]);
    expect(await store.head(key)).toBeNull();
    expect(await versionsOf(key)).toEqual([]);
  });

  it('lists and aborts multipart uploads a killed process left behind', async () => {
    const { CreateMultipartUploadCommand } = await import('@aws-sdk/client-s3');
    await admin.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: `${store.prefix}orphan/x.dump` }));
    expect(await store.listIncomplete('orphan/')).toEqual(['orphan/x.dump']);
    expect(await store.list('orphan/')).toEqual([]);
    expect(await store.abortIncomplete('orphan/')).toBe(1);
    expect(await store.listIncomplete('orphan/')).toEqual([]);
  });

  for (const mode of ['GOVERNANCE', 'COMPLIANCE'] as LockMode[]) {
    it(`refuses to delete an object under ${mode} retention a day ahead, through the S3 API and store.delete`, async () => {
      const key = `retained/${mode.toLowerCase()}.dump`;
      const retainUntil = new Date(Date.now() + DAY);
      await store.put(key, Readable.from([Buffer.from('locked bytes')]), { retention: { mode, retainUntil } });
      const state = await store.lockState(key);
      expect(state.legalHold).toBe(false);
      expect(state.retention?.mode).toBe(mode);
      expect(Math.abs(state.retention!.retainUntil.getTime() - retainUntil.getTime())).toBeLessThan(2000);
      const [versionId] = await versionsOf(key);
      const raw = await rawDelete(key, versionId!).catch((e: unknown) => e as Error);
      expect(raw).toBeInstanceOf(Error);
      console.log(`versitygw DeleteObject(VersionId) of a ${mode}-retained version: ${(raw as Error).name}: ${(raw as Error).message}`);
      expect((raw as Error).name).toBe('AccessDenied');
      const err = await store.delete(key).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ObjectLockedError);
      expect((err as Error).message).toMatch(new RegExp(`${mode} retention until`));
      // Nothing deleted: no delete marker, the version still there and readable.
      expect(await versionsOf(key)).toEqual([versionId]);
      expect((await bytesOf(await store.get(key))).toString()).toBe('locked bytes');
      if (mode === 'GOVERNANCE') await rawDelete(key, versionId!, true); // the privileged way out, for cleanup
    });
  }

  it('sends a checksum with every locked PutObject and UploadPart (Object Lock requires one; versitygw does not check)', async () => {
    const probe = new S3BlobStore(s3Config(srv, { prefix: 'specific/' }), credEnv(srv));
    const seen: { op: string; checksum: boolean }[] = [];
    probe.client.middlewareStack.add(
      (next, context) => async (args) => {
        const headers = (args.request as { headers: Record<string, string> }).headers;
        seen.push({ op: context.commandName ?? '', checksum: Boolean(headers['content-md5'] || headers['x-amz-checksum-crc32'] || headers['x-amz-checksum-crc32c'] || headers['x-amz-checksum-sha256']) });
        return next(args);
      },
      { step: 'finalizeRequest', priority: 'low', name: 'checksumProbe' },
    );
    const retention = { mode: 'GOVERNANCE' as const, retainUntil: new Date(Date.now() + 60_000) };
    await probe.put('checksum/small', Readable.from([Buffer.from('small')]), { retention });
    await probe.put('checksum/multipart', generatedStream(20 * MiB), { retention });
    const bodies = seen.filter((s) => s.op === 'PutObjectCommand' || s.op === 'UploadPartCommand');
    expect(bodies.map((s) => s.op)).toEqual(['PutObjectCommand', 'UploadPartCommand', 'UploadPartCommand', 'UploadPartCommand']);
    expect(bodies.every((s) => s.checksum)).toBe(true);
    probe.client.destroy();
    for (const key of ['checksum/small', 'checksum/multipart']) for (const v of await versionsOf(key)) await rawDelete(key, v, true);
  });

  it('maps the server refusal to ObjectLockedError when the store does not check locks first', async () => {
    const key = 'retained/unchecked.dump';
    await store.put(key, Readable.from([Buffer.from('x')]), { retention: { mode: 'GOVERNANCE', retainUntil: new Date(Date.now() + DAY) } });
    const unchecked = new S3BlobStore(s3Config(srv, { prefix: 'specific/', objectLock: undefined }), credEnv(srv));
    await expect(unchecked.delete(key)).rejects.toBeInstanceOf(ObjectLockedError);
    expect(await store.head(key)).not.toBeNull();
  });

  it('refuses to delete under a legal hold; once lifted (no retention) delete removes every version', async () => {
    const key = 'held/archive.dump';
    await store.put(key, Readable.from([Buffer.from('v1')]));
    await store.put(key, Readable.from([Buffer.from('v2 held')]), { legalHold: true });
    expect(await store.lockState(key)).toEqual({ retention: null, legalHold: true });
    expect((await versionsOf(key)).length).toBe(2);
    const listed = await admin.send(new ListObjectVersionsCommand({ Bucket: BUCKET, Prefix: store.prefix + key }));
    const held = listed.Versions!.find((v) => v.IsLatest)!.VersionId!;
    const raw = await rawDelete(key, held).catch((e: unknown) => e as Error);
    console.log(`versitygw DeleteObject(VersionId) of a legal-hold version: ${(raw as Error).name}: ${(raw as Error).message}`);
    expect((raw as Error).name).toBe('AccessDenied');
    await expect(store.delete(key)).rejects.toBeInstanceOf(ObjectLockedError);
    // The unlocked older version was not deleted either: the check comes before any delete.
    expect((await versionsOf(key)).length).toBe(2);
    await store.setLegalHold(key, false);
    expect(await store.lockState(key)).toEqual({ retention: null, legalHold: false });
    await store.delete(key);
    expect(await versionsOf(key)).toEqual([]);
    expect(await store.head(key)).toBeNull();
  });

  it('deletes every version of an unlocked, overwritten object, leaving no delete marker', async () => {
    const key = 'plain/over.dump';
    for (const v of ['a', 'b', 'c']) await store.put(key, Readable.from([Buffer.from(v)]));
    expect((await versionsOf(key)).length).toBe(3);
    await store.delete(key);
    expect(await versionsOf(key)).toEqual([]);
  });

  it('sets retention on an existing object and copies with a lock', async () => {
    const key = 'later/archive.dump';
    await store.put(key, Readable.from([Buffer.from('later')]));
    await store.setRetention(key, { mode: 'GOVERNANCE', retainUntil: new Date(Date.now() + DAY) });
    expect((await store.lockState(key)).retention?.mode).toBe('GOVERNANCE');
    await expect(store.delete(key)).rejects.toBeInstanceOf(ObjectLockedError);
    await store.copy(key, 'later/copy.dump', { legalHold: true });
    expect(await store.lockState('later/copy.dump')).toEqual({ retention: null, legalHold: true });
    await store.setLegalHold('later/copy.dump', false);
    await store.copy(key, 'later/copy2.dump');
    expect(await store.lockState('later/copy2.dump')).toEqual({ retention: null, legalHold: false });
    await store.delete('later/copy.dump');
    await store.delete('later/copy2.dump');
    for (const v of await versionsOf(key)) await rawDelete(key, v, true);
  });

  it('streams 512 MiB of random data with bounded memory (RSS growth under 200 MB)', async () => {
    const key = 'memory/512.dump';
    const total = 512 * MiB;
    const body = generatedStream(total, 64 * 1024);
    const before = process.memoryUsage.rss();
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
    const t0 = Date.now();
    try {
      const info = await store.put(key, body);
      expect(info.size).toBe(total);
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, process.memoryUsage.rss());
    const growthMB = (peak - before) / 1e6;
    console.log(`512 MiB S3 upload: RSS before ${(before / 1e6).toFixed(0)} MB, peak ${(peak / 1e6).toFixed(0)} MB, growth ${growthMB.toFixed(0)} MB, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    expect(growthMB).toBeLessThan(200);
    expect((await store.head(key))?.size).toBe(total);
    await store.delete(key);
  });
});
