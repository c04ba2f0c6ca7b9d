import { randomBytes, randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { inspect } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AzureBlobStore, AzureStoreError } from '../lib/storage/azure-blob-store.js';
import { ObjectNotFoundError } from '../lib/storage/blob-store.js';
import { azureStoreSchema } from '../lib/storage/store-config.js';
import { AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY, createContainer, startAzurite, type AzuriteServer } from '../scripts/lib/azurite.js';
import { freePort } from '../scripts/lib/services.js';
import { describeBlobStoreContract, generatedStream, sha256Of } from './blob-contract.js';

const MiB = 1024 * 1024;
const CONTAINER = 'bcdr-backups';
const workDir = path.join(os.tmpdir(), `bcdr-azurite-${randomUUID().slice(0, 8)}`);
let azurite: AzuriteServer | undefined;

function server(): AzuriteServer {
  if (!azurite) throw new Error('Azurite is not running');
  return azurite;
}

/**
 * A store on the shared Azurite under `prefix`. It keeps the SDK's retries (short delays): Azurite 3.35 now and
 * then resets a keep-alive connection ("socket hang up"), which the retry policy absorbs as it would in production.
 */
function storeAt(prefix: string, extra: Partial<{ container: string; immutability: boolean; connectionString: string }> = {}): AzureBlobStore {
  const config = azureStoreSchema.parse({ kind: 'azure', connectionString: extra.connectionString ?? server().connectionString, container: extra.container ?? CONTAINER, prefix });
  return new AzureBlobStore(config, {}, { immutability: extra.immutability, retry: { maxTries: 4, retryDelayInMs: 200, maxRetryDelayInMs: 2_000, tryTimeoutInMs: 60_000 } });
}

/** Every text an error shows a person or a log: message, stack, and what util.inspect prints (own properties, cause). */
function everyTextOf(err: unknown): string {
  return `${String((err as Error)?.message)}\n${String((err as Error)?.stack)}\n${inspect(err, { depth: 6 })}`;
}

beforeAll(async () => {
  const port = await freePort();
  azurite = await startAzurite({ port, dataDir: path.join(workDir, 'data'), logFile: path.join(workDir, 'azurite.log'), debugLog: process.env.AZURITE_DEBUG_LOG });
  await createContainer(azurite.connectionString, CONTAINER);
}, 60_000);

afterAll(async () => {
  await azurite?.stop();
  rmSync(workDir, { recursive: true, force: true });
});

describeBlobStoreContract('azure (Azurite)', async () => ({ store: storeAt('contract') }));

describe('AzureBlobStore on Azurite', () => {
  const run = `azure-${randomUUID().slice(0, 8)}`;

  it('names its place azure://<account>/<container>/<prefix> and holds no locks itself', async () => {
    const store = storeAt('region/eu');
    expect(store.kind).toBe('azure');
    expect(store.location).toBe(`azure://${AZURITE_ACCOUNT}/${CONTAINER}/region/eu`);
    expect(storeAt('').location).toBe(`azure://${AZURITE_ACCOUNT}/${CONTAINER}`);
    expect(store.enforcesLocks).toBe(false);
    expect(storeAt('x', { immutability: true }).enforcesLocks).toBe(true);
  });

  it('keeps keys under config.prefix in the container', async () => {
    const store = storeAt(`${run}/pfx`);
    await store.put('a/b.dump', Readable.from([Buffer.from('hello')]));
    const names: string[] = [];
    for await (const b of store.container.listBlobsFlat({ prefix: `${run}/` })) names.push(b.name);
    expect(names).toEqual([`${run}/pfx/a/b.dump`]);
    expect((await store.list('')).map((o) => o.key)).toEqual(['a/b.dump']);
    await store.delete('a/b.dump');
  });

  it('takes credentials from connectionStringEnv, or accountUrl with AZURE_STORAGE_ACCOUNT / AZURE_STORAGE_KEY', async () => {
    const fromEnv = new AzureBlobStore(azureStoreSchema.parse({ kind: 'azure', connectionStringEnv: 'BCDR_AZ_CS', container: CONTAINER }), { BCDR_AZ_CS: server().connectionString });
    await fromEnv.ping();
    const fromUrl = new AzureBlobStore(azureStoreSchema.parse({ kind: 'azure', accountUrl: server().accountUrl, container: CONTAINER }), {
      AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT,
      AZURE_STORAGE_KEY: AZURITE_ACCOUNT_KEY,
    });
    await fromUrl.ping();
    expect(fromUrl.location).toBe(`azure://${AZURITE_ACCOUNT}/${CONTAINER}`);
    expect(() => new AzureBlobStore(azureStoreSchema.parse({ kind: 'azure', connectionStringEnv: 'BCDR_AZ_UNSET', container: CONTAINER }), {})).toThrow(/BCDR_AZ_UNSET/);
    expect(() => new AzureBlobStore(azureStoreSchema.parse({ kind: 'azure', accountUrl: server().accountUrl, container: CONTAINER }), {})).toThrow(/AZURE_STORAGE_KEY/);
  });

  it('leaves no committed blob when the source stream is destroyed mid-upload (no error, just gone)', async () => {
    const store = storeAt(run);
    const key = 'destroyed/mid.dump';
    const body = new PassThrough();
    const done = store.put(key, body);
    done.catch(() => {});
    for (let i = 0; i < 20; i++) body.write(randomBytes(MiB));
    await sleep(200);
    body.destroy();
    const err = await done.then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(await store.head(key)).toBeNull();
    const committed: string[] = [];
    for await (const b of store.container.listBlobsFlat({ prefix: `${run}/destroyed/` })) committed.push(b.name);
    expect(committed).toEqual([]);
    expect(await store.listIncomplete('destroyed/')).toEqual([]);
  });

  it('finds a killed writer\'s staged blocks with listIncomplete and removes them with abortIncomplete, sparing committed objects', async () => {
    const store = storeAt(run);
    await store.put('killed/done.dump', Readable.from([Buffer.from('complete')]));
    // A writer that staged a block and died before the commit.
    const orphan = store.container.getBlockBlobClient(`${run}/killed/orphan.dump`);
    await orphan.stageBlock(Buffer.from('block-0000').toString('base64'), randomBytes(1000), 1000);
    expect(await store.listIncomplete('killed/')).toEqual(['killed/orphan.dump']);
    expect((await store.list('killed/')).map((o) => o.key)).toEqual(['killed/done.dump']);
    expect(await store.head('killed/orphan.dump')).toBeNull();
    // Measured on Azurite: deleting a blob that has only uncommitted blocks is allowed.
    expect(await store.abortIncomplete('killed/')).toBe(1);
    expect(await store.listIncomplete('killed/')).toEqual([]);
    expect((await store.list('killed/')).map((o) => o.key)).toEqual(['killed/done.dump']);
    await store.delete('killed/done.dump');
  });

  it('copies server-side within the account (beginCopyFromURL) to a nested key', async () => {
    const store = storeAt(run);
    await store.put('copy/src', Readable.from([Buffer.from('copied')]));
    const info = await store.copy('copy/src', 'copy/deep/dst');
    expect(info).toMatchObject({ key: 'copy/deep/dst', size: 6 });
    const props = await store.container.getBlockBlobClient(`${run}/copy/deep/dst`).getProperties();
    expect(props.copyStatus).toBe('success');
    await store.delete('copy/src');
    await store.delete('copy/deep/dst');
  });

  it('without { immutability }: setRetention / setLegalHold do nothing, lockState says none (the catalog enforces locks)', async () => {
    const store = storeAt(run);
    await store.put('locks/plain', Readable.from([Buffer.from('p')]));
    await store.setRetention('locks/plain', { retainUntil: new Date(Date.now() + 86_400_000), mode: 'COMPLIANCE' });
    await store.setLegalHold('locks/plain', true);
    expect(await store.lockState('locks/plain')).toEqual({ retention: null, legalHold: false });
    await store.delete('locks/plain');
    expect(await store.head('locks/plain')).toBeNull();
  });

  it('measures: Azurite answers 501 to version-level immutability policies and legal holds', async () => {
    const store = storeAt(run, { immutability: true });
    await store.put('locks/real', Readable.from([Buffer.from('r')]));
    const retention = await store.setRetention('locks/real', { retainUntil: new Date(Date.now() + 86_400_000), mode: 'GOVERNANCE' }).then(() => null, (e: unknown) => e);
    const hold = await store.setLegalHold('locks/real', true).then(() => null, (e: unknown) => e);
    console.log(`Azurite setImmutabilityPolicy: ${(retention as Error | null)?.message ?? 'accepted'}`);
    console.log(`Azurite setLegalHold: ${(hold as Error | null)?.message ?? 'accepted'}`);
    expect(retention).toBeInstanceOf(AzureStoreError);
    expect((retention as AzureStoreError).statusCode).toBe(501);
    expect(hold).toBeInstanceOf(AzureStoreError);
    expect((hold as AzureStoreError).code).toBe('APINotImplemented');
    expect(await store.lockState('locks/real')).toEqual({ retention: null, legalHold: false });
    await store.delete('locks/real');
  });

  it('never shows the AccountKey: location, a wrong container, a wrong key, a stopped server', async () => {
    const key = AZURITE_ACCOUNT_KEY;
    const errors: unknown[] = [];
    const wrongContainer = storeAt(run, { container: 'no-such-container' });
    expect(wrongContainer.location).not.toContain(key);
    for (const call of [
      () => wrongContainer.ping(),
      () => wrongContainer.put('x', Readable.from([Buffer.from('x')])),
      () => wrongContainer.get('x'),
      () => wrongContainer.list(''),
      () => wrongContainer.copy('x', 'y'),
    ]) errors.push(await call().then(() => null, (e: unknown) => e));

    // A key the server does not accept (HTTP 403): that key must not show either.
    const badKey = randomBytes(64).toString('base64');
    const badCs = server().connectionString.replace(key, badKey);
    const wrongKey = storeAt(run, { connectionString: badCs });
    const badKeyErr = await wrongKey.ping().then(() => null, (e: unknown) => e);
    expect(everyTextOf(badKeyErr)).not.toContain(badKey);
    errors.push(badKeyErr);

    // A server that was there and is gone.
    const port = await freePort();
    const dead = await startAzurite({ port, dataDir: path.join(workDir, 'dead'), logFile: path.join(workDir, 'dead.log') });
    await createContainer(dead.connectionString, CONTAINER);
    const gone = new AzureBlobStore(azureStoreSchema.parse({ kind: 'azure', connectionString: dead.connectionString, container: CONTAINER }), {}, { retry: { maxTries: 1 } });
    await gone.ping();
    await dead.stop();
    for (const call of [() => gone.ping(), () => gone.put('x', Readable.from([randomBytes(100)])), () => gone.head('x'), () => gone.list('')]) {
      errors.push(await call().then(() => null, (e: unknown) => e));
    }

    for (const err of errors) {
      expect(err).toBeInstanceOf(Error);
      expect(everyTextOf(err)).not.toContain(key);
      expect(everyTextOf(err)).not.toMatch(/AccountKey=|SharedKey [^[]/);
    }
    expect(errors[0]).toBeInstanceOf(AzureStoreError);
    expect((errors[0] as AzureStoreError).code).toBe('ContainerNotFound');
    expect(errors[2]).not.toBeInstanceOf(ObjectNotFoundError);
    console.log(`error examples:\n  ${errors.map((e) => (e as Error).message).join('\n  ')}`);
  });

  it('uploads 512 MiB of incompressible bytes with bounded memory (RSS growth < 200 MB)', async () => {
    const store = storeAt(run);
    const total = 512 * MiB;
    const body = generatedStream(total, MiB);
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 25);
    const t0 = Date.now();
    let info;
    try {
      info = await store.put('big/512.dump', body);
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, process.memoryUsage().rss);
    const secs = (Date.now() - t0) / 1000;
    const growthMB = (peak - baseline) / 1e6;
    console.log(`512 MiB upload: ${secs.toFixed(1)} s (${(total / MiB / secs).toFixed(0)} MiB/s), RSS baseline ${(baseline / 1e6).toFixed(0)} MB, peak ${(peak / 1e6).toFixed(0)} MB, growth ${growthMB.toFixed(0)} MB`);
    expect(info.size).toBe(total);
    expect(growthMB).toBeLessThan(200);
    expect((await store.head('big/512.dump'))?.size).toBe(total);
    expect(await sha256Of(await store.get('big/512.dump'))).toBe(body.digest());
    await store.delete('big/512.dump');
  }, 300_000);
});
