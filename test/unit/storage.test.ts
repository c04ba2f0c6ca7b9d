import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BackupStore } from '../../lib/storage/backup-store.js';
import { FsObjectStore } from '../../lib/storage/fs-object-store.js';
import { ObjectNotFoundError } from '../../lib/storage/object-store.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bcdr-store-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

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

describe('backup object names', () => {
  it('follows <instance>-<yyyymmdd>-<hhmmss> in UTC', () => {
    expect(BackupStore.objectKey('contoso', new Date('2026-03-04T05:06:07.890Z'))).toBe('contoso-20260304-050607');
    expect(BackupStore.manifestKey('contoso-20260304-050607')).toBe('contoso-20260304-050607.manifest.json');
  });
});

describe('filesystem object store', () => {
  it('writes atomically: a failed write leaves no object and no temp file', async () => {
    const store = new FsObjectStore(dir);
    await expect(store.put('a-20260101-000000', failingStream(3))).rejects.toThrow('producer died');
    expect(await store.head('a-20260101-000000')).toBeNull();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('commits an archive only when the producer confirms it finished', async () => {
    const backups = new BackupStore(new FsObjectStore(dir));
    const body = Readable.from([Buffer.from('hello '), Buffer.from('world')]);
    await expect(backups.stageArchive('b-20260101-000000', body, { complete: Promise.reject(new Error('pg_dump exited with code 1')) })).rejects.toThrow(
      'pg_dump exited',
    );
    expect(readdirSync(dir)).toEqual([]);
    const ok = await backups.stageArchive('b-20260101-000000', Readable.from([Buffer.from('hello world')]), { complete: Promise.resolve() });
    expect({ sizeBytes: ok.sizeBytes, sha256: ok.sha256 }).toEqual({ sizeBytes: 11, sha256: 'b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9' });
    expect(await backups.objects.head('b-20260101-000000')).toBeNull(); // staged, not yet visible
    await ok.staged.commit();
    expect(await backups.checksum('b-20260101-000000')).toEqual({ sizeBytes: 11, sha256: ok.sha256 });
  });

  it('keeps concurrent writers of one key apart: each stages its own file, and the last commit wins whole', async () => {
    const store = new FsObjectStore(dir);
    const [a, b] = await Promise.all([store.stage('k-1', Readable.from([Buffer.from('aaaa')])), store.stage('k-1', Readable.from([Buffer.from('bbbbbb')]))]);
    await a.commit();
    await b.commit();
    expect((await store.head('k-1'))?.size).toBe(6);
    await a.discard(); // already committed: nothing to remove, the object stays
    expect((await store.head('k-1'))?.size).toBe(6);
    expect(await store.listIncomplete('k-1')).toEqual([]);
  });

  it('lists complete objects only, and deletes idempotently', async () => {
    const store = new FsObjectStore(dir);
    await store.put('c-1', Readable.from([Buffer.from('x')]));
    expect((await store.list('c-')).map((o) => o.key)).toEqual(['c-1']);
    await store.delete('c-1');
    await store.delete('c-1');
    await expect(store.get('c-1')).rejects.toBeInstanceOf(ObjectNotFoundError);
  });

  it('refuses keys that could escape its folder', async () => {
    const store = new FsObjectStore(dir);
    await expect(store.put('../evil', Readable.from([Buffer.from('x')]))).rejects.toThrow(/invalid object key/);
  });
});
