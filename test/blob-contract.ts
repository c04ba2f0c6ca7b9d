import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ObjectNotFoundError, type BlobStore } from '../lib/storage/blob-store.js';

/** What a contract run needs: a store to test, and how to tear it down afterwards. */
export interface BlobStoreFixture {
  store: BlobStore;
  cleanup?: () => Promise<void>;
}

const MiB = 1024 * 1024;

/** SHA-256 (hex) of everything `stream` yields, read to its end: compares uploads with downloads without keeping either. */
export async function sha256Of(stream: Readable): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of stream) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** All bytes of `stream`, for small objects. */
export async function bytesOf(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/**
 * A stream of `total` random (incompressible) bytes generated on the fly in
 * `chunk`-sized pieces, of unknown length to its reader (no `path`, no
 * ContentLength), as a pg_dump pipe is. `digest()` gives the SHA-256 of what
 * was produced so far, to compare with what a store gives back.
 */
export function generatedStream(total: number, chunk = MiB): Readable & { digest(): string; produced(): number } {
  const h = createHash('sha256');
  let produced = 0;
  const stream = new Readable({
    read() {
      if (produced >= total) {
        this.push(null);
        return;
      }
      const n = Math.min(chunk, total - produced);
      const buf = randomBytes(n);
      h.update(buf);
      produced += n;
      this.push(buf);
    },
  });
  return Object.assign(stream, { digest: () => h.copy().digest('hex'), produced: () => produced });
}

/** A stream that yields `before` random bytes, then fails with `error` (a dump tool dying half way). */
export function failingStream(before: number, error = new Error('source failed half way')): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= before) {
        this.destroy(error);
        return;
      }
      const n = Math.min(MiB, before - sent);
      sent += n;
      this.push(randomBytes(n));
    },
  });
}

/** Asserts two buffers hold the same bytes (vitest's toEqual walks a Buffer byte by byte: seconds per MB). */
function sameBytes(actual: Buffer, expected: Buffer): void {
  expect(actual.length).toBe(expected.length);
  expect(actual.equals(expected), 'same bytes').toBe(true);
}

/** Polls `check` every 50 ms until it returns true, failing after `timeoutMs`. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what}: not seen within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/**
 * The behaviour every BlobStore implementation must have (FsBlobStore,
 * S3BlobStore, AzureBlobStore), as one vitest `describe` block: atomic
 * streamed puts of unknown length, ranges, prefix listing, cleanup of failed
 * and aborted uploads, overwrite, idempotent delete, copy, key validation.
 * `make` is called once for the block; every test works under its own random
 * key prefix, so the store may be shared with other tests. The block deletes
 * what it wrote and aborts its unfinished uploads, then calls `cleanup`.
 */
export function describeBlobStoreContract(name: string, make: () => Promise<BlobStoreFixture>): void {
  describe(`BlobStore contract: ${name}`, () => {
    let fixture: BlobStoreFixture | undefined;
    let store: BlobStore;
    const run = `contract-${randomUUID().slice(0, 8)}`;
    let n = 0;
    /** A fresh key prefix (ending in `/`) for one test. */
    const ns = () => `${run}/t${++n}/`;

    beforeAll(async () => {
      fixture = await make();
      store = fixture.store;
    });

    afterAll(async () => {
      if (fixture) {
        try {
          await store.abortIncomplete(`${run}/`);
          for (const o of await store.list(`${run}/`)) await store.delete(o.key);
        } finally {
          await fixture.cleanup?.();
        }
      }
    });

    it('describes itself without credentials', () => {
      expect(['fs', 's3', 'azure']).toContain(store.kind);
      expect(typeof store.location).toBe('string');
      expect(store.location.length).toBeGreaterThan(0);
      expect(store.location).not.toMatch(/secret|password|AccountKey|:[^/@]*@/i);
      expect(typeof store.enforcesLocks).toBe('boolean');
    });

    it('answers ping', async () => {
      await expect(store.ping()).resolves.toBeUndefined();
    });

    it('round-trips a few MB of random bytes (sha256 equal), with head and progress', async () => {
      const key = `${ns()}archive.dump`;
      const data = randomBytes(3 * MiB + 12345);
      const progress: number[] = [];
      const info = await store.put(key, Readable.from([data.subarray(0, MiB), data.subarray(MiB)]), { onProgress: (b) => progress.push(b) });
      expect(info.key).toBe(key);
      expect(info.size).toBe(data.length);
      expect(info.modifiedAt).toBeInstanceOf(Date);
      expect(progress.at(-1)).toBe(data.length);
      expect(progress).toEqual([...progress].sort((a, b) => a - b));
      const head = await store.head(key);
      expect(head?.size).toBe(data.length);
      expect(head?.key).toBe(key);
      expect(await sha256Of(await store.get(key))).toBe(createHash('sha256').update(data).digest('hex'));
    });

    it('stores an empty object', async () => {
      const key = `${ns()}empty`;
      const info = await store.put(key, Readable.from([]));
      expect(info.size).toBe(0);
      expect((await store.head(key))?.size).toBe(0);
      expect((await bytesOf(await store.get(key))).length).toBe(0);
    });

    it('keeps flat legacy keys with dots (the old FsObjectStore layout) usable', async () => {
      const p = ns();
      for (const key of [`${p}contoso-20260304-050607`, `${p}contoso-20260304-050607.manifest.json`]) {
        await store.put(key, Readable.from([Buffer.from(key)]));
        expect((await bytesOf(await store.get(key))).toString()).toBe(key);
      }
      expect((await store.list(p)).map((o) => o.key)).toEqual([`${p}contoso-20260304-050607`, `${p}contoso-20260304-050607.manifest.json`]);
    });

    it('reads byte ranges (inclusive ends, open end)', async () => {
      const key = `${ns()}ranged`;
      const data = randomBytes(256 * 1024);
      await store.put(key, Readable.from([data]));
      sameBytes(await bytesOf(await store.get(key, { start: 10, end: 19 })), data.subarray(10, 20));
      sameBytes(await bytesOf(await store.get(key, { start: 0, end: 0 })), data.subarray(0, 1));
      sameBytes(await bytesOf(await store.get(key, { start: data.length - 5 })), data.subarray(data.length - 5));
      sameBytes(await bytesOf(await store.get(key, { start: 1000, end: data.length - 1 })), data.subarray(1000));
      sameBytes(await bytesOf(await store.get(key, { start: 0 })), data);
    });

    it('lists complete objects under a prefix, nested keys, in key order', async () => {
      const p = ns();
      const keys = [`${p}b/d`, `${p}a`, `${p}b/c/e.json`, `${p}b-x`, `${p}c.manifest.json`];
      for (const k of keys) await store.put(k, Readable.from([Buffer.from(k)]));
      const all = await store.list(p);
      expect(all.map((o) => o.key)).toEqual([...keys].sort());
      for (const o of all) expect(o.size).toBe(Buffer.byteLength(o.key));
      expect((await store.list(`${p}b/`)).map((o) => o.key)).toEqual([`${p}b/c/e.json`, `${p}b/d`]);
      expect((await store.list(`${p}b`)).map((o) => o.key)).toEqual([`${p}b-x`, `${p}b/c/e.json`, `${p}b/d`]);
      expect((await store.list(`${p}b/c/e`)).map((o) => o.key)).toEqual([`${p}b/c/e.json`]);
      expect(await store.list(`${p}nothing/`)).toEqual([]);
      expect(await store.head(`${p}b`)).toBeNull();
    });

    it('hides an upload in progress from head/list, shows it in listIncomplete, and cleans up when its signal aborts', async () => {
      const p = ns();
      const key = `${p}in-progress.dump`;
      const body = new PassThrough();
      const ac = new AbortController();
      const done = store.put(key, body, { signal: ac.signal });
      done.catch(() => {});
      // More than one S3 part (8 MiB) so a multipart upload exists server-side.
      for (let i = 0; i < 12; i++) body.write(randomBytes(MiB));
      await until('the unfinished upload in listIncomplete', async () => (await store.listIncomplete(p)).includes(key));
      expect(await store.head(key)).toBeNull();
      expect(await store.list(p)).toEqual([]);
      ac.abort();
      await expect(done).rejects.toThrow();
      expect(await store.head(key)).toBeNull();
      expect(await store.list(p)).toEqual([]);
      expect(await store.listIncomplete(p)).toEqual([]);
    });

    it('rejects a put whose signal is already aborted, leaving nothing', async () => {
      const p = ns();
      const ac = new AbortController();
      ac.abort();
      await expect(store.put(`${p}never`, Readable.from([randomBytes(1000)]), { signal: ac.signal })).rejects.toThrow();
      expect(await store.head(`${p}never`)).toBeNull();
      expect(await store.listIncomplete(p)).toEqual([]);
    });

    it('leaves no object and no incomplete upload when the stream errors half way', async () => {
      const p = ns();
      const key = `${p}broken.dump`;
      await expect(store.put(key, failingStream(20 * MiB, new Error('pg_dump died')))).rejects.toThrow(/pg_dump died/);
      expect(await store.head(key)).toBeNull();
      expect(await store.list(p)).toEqual([]);
      expect(await store.listIncomplete(p)).toEqual([]);
      // A small stream that fails before one part is full, too.
      await expect(store.put(key, failingStream(1000, new Error('early')))).rejects.toThrow(/early/);
      expect(await store.head(key)).toBeNull();
      expect(await store.listIncomplete(p)).toEqual([]);
    });

    it('keeps the old object when a replacing upload fails', async () => {
      const key = `${ns()}kept`;
      await store.put(key, Readable.from([Buffer.from('old')]));
      await expect(store.put(key, failingStream(10 * MiB))).rejects.toThrow();
      expect((await bytesOf(await store.get(key))).toString()).toBe('old');
    });

    it('replaces an object on overwrite', async () => {
      const key = `${ns()}over`;
      await store.put(key, Readable.from([randomBytes(100_000)]));
      const second = Buffer.from('second version');
      const info = await store.put(key, Readable.from([second]));
      expect(info.size).toBe(second.length);
      expect((await store.head(key))?.size).toBe(second.length);
      sameBytes(await bytesOf(await store.get(key)), second);
      expect((await store.list(key)).length).toBe(1);
    });

    it('deletes idempotently; a missing key is absent everywhere', async () => {
      const p = ns();
      const key = `${p}gone/deep/obj`;
      await store.put(key, Readable.from([Buffer.from('x')]));
      await store.delete(key);
      expect(await store.head(key)).toBeNull();
      expect(await store.list(p)).toEqual([]);
      await expect(store.get(key)).rejects.toBeInstanceOf(ObjectNotFoundError);
      await expect(store.delete(key)).resolves.toBeUndefined();
      await expect(store.delete(`${p}never-was`)).resolves.toBeUndefined();
      // A sibling survives the delete.
      await store.put(`${p}gone/keep`, Readable.from([Buffer.from('k')]));
      await store.put(`${p}gone/drop`, Readable.from([Buffer.from('d')]));
      await store.delete(`${p}gone/drop`);
      expect((await store.list(p)).map((o) => o.key)).toEqual([`${p}gone/keep`]);
    });

    it('rejects get of a missing key with ObjectNotFoundError; head gives null', async () => {
      const key = `${ns()}missing`;
      const err = await store.get(key).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ObjectNotFoundError);
      expect((err as ObjectNotFoundError).key).toBe(key);
      await expect(store.get(key, { start: 0, end: 9 })).rejects.toBeInstanceOf(ObjectNotFoundError);
      expect(await store.head(key)).toBeNull();
      expect(await store.lockState(key).catch((e: unknown) => e)).toBeInstanceOf(ObjectNotFoundError);
    });

    it('copies an object; the copy is independent of its source', async () => {
      const p = ns();
      const data = randomBytes(2 * MiB + 7);
      await store.put(`${p}src`, Readable.from([data]));
      const info = await store.copy(`${p}src`, `${p}sub/dst`);
      expect(info.key).toBe(`${p}sub/dst`);
      expect(info.size).toBe(data.length);
      sameBytes(await bytesOf(await store.get(`${p}sub/dst`)), data);
      await store.delete(`${p}src`);
      sameBytes(await bytesOf(await store.get(`${p}sub/dst`)), data);
      await expect(store.copy(`${p}src`, `${p}other`)).rejects.toBeInstanceOf(ObjectNotFoundError);
      expect(await store.head(`${p}other`)).toBeNull();
    });

    it('reports no store-held locks on a plain object', async () => {
      const key = `${ns()}plain`;
      await store.put(key, Readable.from([Buffer.from('p')]));
      expect(await store.lockState(key)).toEqual({ retention: null, legalHold: false });
    });

    it('refuses invalid keys and prefixes everywhere (assertKey)', async () => {
      const bad = ['', '../escape', 'a/../../b', '/etc/passwd', 'a//b', 'a/', './a', '.hidden', 'a/.partial', 'tab\there', 'nul\u0000byte', 'new\nline', 'back\\slash', 'spa ce', 'x'.repeat(2000), `${'a/'.repeat(600)}b`];
      for (const key of bad) {
        await expect(store.put(key, Readable.from([Buffer.from('no')])), `put ${JSON.stringify(key.slice(0, 30))}`).rejects.toThrow(/invalid object key/);
        await expect(store.get(key), `get ${JSON.stringify(key.slice(0, 30))}`).rejects.toThrow(/invalid object key/);
        await expect(store.head(key)).rejects.toThrow(/invalid object key/);
        await expect(store.delete(key)).rejects.toThrow(/invalid object key/);
        await expect(store.copy(key, 'ok')).rejects.toThrow(/invalid object key/);
        await expect(store.copy('ok', key)).rejects.toThrow(/invalid object key/);
        await expect(store.lockState(key)).rejects.toThrow(/invalid object key/);
      }
      for (const prefix of ['../', '/abs/', 'a//', 'x'.repeat(2000)]) {
        await expect(store.list(prefix)).rejects.toThrow(/invalid object key/);
        await expect(store.listIncomplete(prefix)).rejects.toThrow(/invalid object key/);
        await expect(store.abortIncomplete(prefix)).rejects.toThrow(/invalid object key/);
      }
    });

    it('uploads 64 MiB of a stream of unknown length generated on the fly', async () => {
      const key = `${ns()}big.dump`;
      const total = 64 * MiB;
      const body = generatedStream(total, 256 * 1024 + 3);
      let last = 0;
      const info = await store.put(key, body, { onProgress: (b) => (last = b) });
      expect(info.size).toBe(total);
      expect(last).toBe(total);
      expect((await store.head(key))?.size).toBe(total);
      expect(await sha256Of(await store.get(key))).toBe(body.digest());
      expect(await store.listIncomplete(key)).toEqual([]);
    });
  });
}
