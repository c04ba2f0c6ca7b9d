import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ArchiveIntegrityError, BackupStore, type BackupRef } from '../../lib/storage/backup-store.js';
import { FsBlobStore } from '../../lib/storage/fs-blob-store.js';
import { KeyUnavailableError, StaticKeyring } from '../../lib/storage/keyring.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bcdr-store-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const keyA = randomBytes(32);
const keyring = (keys: Record<string, Buffer> = { a: keyA }, active: string | null = 'a') => new StaticKeyring(new Map(Object.entries(keys)), active);

/** A stream that yields `chunks` then fails, as a dump cut off part way. */
function failingStream(chunks: number): Readable {
  let n = 0;
  return new Readable({
    read() {
      if (n++ < chunks) this.push(Buffer.alloc(64 * 1024, 7));
      else this.destroy(new Error('producer died'));
    },
  });
}

/** Every file under the store's root, hidden ones included. */
const allFiles = () => readdirSync(dir, { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).map((d) => path.relative(dir, path.join(d.parentPath, d.name)));

async function read(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('backup object names', () => {
  it('keys a backup by its id, and keeps the old <instance>-<yyyymmdd>-<hhmmss> names readable', () => {
    expect(BackupStore.folder('contoso', 'bk-1')).toBe('backups/contoso/bk-1');
    expect(BackupStore.manifestKey({ layout: 'v2', objectKey: 'backups/contoso/bk-1' })).toBe('backups/contoso/bk-1/manifest.json');
    expect(BackupStore.legacyObjectKey('contoso', new Date('2026-03-04T05:06:07.890Z'))).toBe('contoso-20260304-050607');
    expect(BackupStore.manifestKey({ layout: 'flat', objectKey: 'contoso-20260304-050607' })).toBe('contoso-20260304-050607.manifest.json');
  });
});

describe('backup store', () => {
  it('leaves nothing behind when the producer fails, even after its bytes were all read', async () => {
    const store = new BackupStore(new FsBlobStore(dir), { keyring: keyring(), encrypt: true });
    await expect(store.writeArchive('backups/i/bk-1', failingStream(3))).rejects.toThrow('producer died');
    const body = Readable.from([Buffer.from('hello world')]);
    await expect(store.writeArchive('backups/i/bk-1', body, { complete: Promise.reject(new Error('pg_dump exited with code 1')) })).rejects.toThrow('pg_dump exited with code 1');
    expect(allFiles()).toEqual([]);
  });

  it('encrypts an archive so the stored bytes hold nothing in clear, and reads it back whole', async () => {
    const store = new BackupStore(new FsBlobStore(dir), { keyring: keyring(), encrypt: true });
    const plain = Buffer.concat([Buffer.from('PGDMP'), Buffer.from('secret tenant row '.repeat(100_000))]);
    const w = await store.writeArchive('backups/i/bk-2', Readable.from([plain]), { complete: Promise.resolve() });
    expect(w.encryption).toMatchObject({ keyId: 'a' });
    expect(w.plainBytes).toBe(plain.length);
    const stored = readFileSync(path.join(dir, w.archiveKey));
    expect(stored.length).toBe(w.sizeBytes);
    expect(stored.includes(Buffer.from('PGDMP'))).toBe(false);
    expect(stored.includes(Buffer.from('secret tenant row'))).toBe(false);
    expect(JSON.stringify(w)).not.toContain(keyA.toString('base64'));
    const ref: BackupRef = { layout: 'v2', objectKey: 'backups/i/bk-2', archiveKey: w.archiveKey };
    expect(await read(await store.openArchive(ref, w.encryption, w))).toEqual(plain);
  });

  it('fails a read of a flipped or truncated archive, and names a missing key before reading', async () => {
    const store = new BackupStore(new FsBlobStore(dir), { keyring: keyring(), encrypt: true });
    const w = await store.writeArchive('backups/i/bk-3', Readable.from([randomBytes(3 << 20)]), { complete: Promise.resolve() });
    const ref: BackupRef = { layout: 'v2', objectKey: 'backups/i/bk-3', archiveKey: w.archiveKey };
    const file = path.join(dir, w.archiveKey);
    const good = readFileSync(file);
    const flipped = Buffer.from(good);
    flipped[flipped.length >> 1]! ^= 1;
    writeFileSync(file, flipped);
    await expect(read(await store.openArchive(ref, w.encryption, w))).rejects.toThrow();
    writeFileSync(file, good.subarray(0, good.length - 100));
    await expect(read(await store.openArchive(ref, w.encryption, w))).rejects.toThrow();
    writeFileSync(file, good);
    await expect(store.verify(ref, { sizeBytes: w.sizeBytes, sha256: '0'.repeat(64) })).rejects.toBeInstanceOf(ArchiveIntegrityError);
    const without = new BackupStore(new FsBlobStore(dir), { keyring: keyring({}, null), encrypt: true });
    await expect(without.openArchive(ref, w.encryption, w)).rejects.toBeInstanceOf(KeyUnavailableError);
    await expect(without.openArchive(ref, w.encryption, w)).rejects.toThrow(/\ba\b/);
  });

  it('restores a backup written the old way: flat name, manifest beside it, in clear', async () => {
    const plain = Buffer.from('PGDMP old archive');
    const key = BackupStore.legacyObjectKey('old', new Date('2026-01-01T00:00:00Z'));
    writeFileSync(path.join(dir, key), plain);
    const sha256 = (await import('node:crypto')).createHash('sha256').update(plain).digest('hex');
    writeFileSync(path.join(dir, `${key}.manifest.json`), JSON.stringify({ formatVersion: 1, objectKey: key, sha256, sizeBytes: plain.length }));
    const store = new BackupStore(new FsBlobStore(dir), { keyring: keyring(), encrypt: true });
    const ref: BackupRef = { layout: 'flat', objectKey: key, archiveKey: null };
    await store.verify(ref, { sizeBytes: plain.length, sha256 });
    expect(await read(await store.openArchive(ref, null, { sizeBytes: plain.length, sha256 }))).toEqual(plain);
    await store.remove(ref);
    expect(allFiles()).toEqual([]);
  });
});
