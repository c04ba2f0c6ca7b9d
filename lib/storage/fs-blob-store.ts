import { randomUUID } from 'node:crypto';
import { constants as fsConstants, type Dirent } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
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

const TMP_SUFFIX = '.partial';
/** `.<basename>.<uuid>.partial`: an unfinished write of `<basename>` in the same folder (also the old FsObjectStore's layout). */
const TMP_RE = /^\.(.+)\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.partial$/;
/** Mode of a locked (held or retained) file: read-only for everyone. */
const LOCKED_MODE = 0o444;
const PLAIN_MODE = 0o644;

const isErrno = (err: unknown, ...codes: string[]) => codes.includes((err as NodeJS.ErrnoException)?.code ?? '');

/** An entry found by walking the root: a complete object or a writer's temp file. */
interface Found {
  key: string;
  file: string;
}

/**
 * BlobStore on a local (or mounted) folder. A key's `/`-separated segments are
 * sub-folders of the root; since every segment starts with a letter or digit
 * (assertKey), hidden names (`.pinned`, writers' temp files) never collide
 * with a key and no key leaves the root. A put streams into a hidden temp file
 * beside its target (one per writer), fsyncs it, renames it over the target
 * and fsyncs the folder, so a crash never shows a half object under a real
 * key. Flat keys of the old FsObjectStore (`contoso-20260304-050607`, its
 * `.manifest.json`) are files directly in the root and stay readable under
 * the same key. Locks are enforced by the catalog (`enforcesLocks` false);
 * the store only makes locked files read-only.
 */
export class FsBlobStore implements BlobStore {
  readonly kind = 'fs' as const;
  readonly enforcesLocks = false;
  /** The absolute root folder. */
  readonly location: string;

  constructor(readonly root: string) {
    this.location = path.resolve(root);
  }

  /** The file of `key` under the root. */
  private file(key: string): string {
    assertKey(key);
    return path.join(this.location, ...key.split('/'));
  }

  async put(key: string, body: Readable, opts: PutOptions = {}): Promise<BlobInfo> {
    const target = this.file(key);
    opts.signal?.throwIfAborted();
    const dir = path.dirname(target);
    const tmp = path.join(dir, `.${path.basename(target)}.${randomUUID()}${TMP_SUFFIX}`);
    try {
      const out = await this.createTemp(dir, tmp);
      let bytes = 0;
      const count = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          bytes += chunk.length;
          opts.onProgress?.(bytes);
          cb(null, chunk);
        },
      });
      await pipeline(body, count, out.createWriteStream(), { signal: opts.signal });
      await this.seal(tmp, opts.retention !== undefined || opts.legalHold === true);
      await fs.rename(tmp, target);
      await syncDir(dir);
    } catch (err) {
      body.destroy();
      await fs.rm(tmp, { force: true });
      throw err;
    }
    return this.infoOf(key, target);
  }

  /**
   * Creates the folder and opens `tmp` exclusively. Retried because a
   * concurrent delete may remove the (then empty) folder between the two.
   */
  private async createTemp(dir: string, tmp: string): Promise<fs.FileHandle> {
    for (let attempt = 0; ; attempt++) {
      await fs.mkdir(dir, { recursive: true });
      try {
        return await fs.open(tmp, 'wx', PLAIN_MODE);
      } catch (err) {
        if (!isErrno(err, 'ENOENT') || attempt >= 5) throw err;
      }
    }
  }

  /** Makes a finished temp file durable (fsync), read-only when it is to be locked. */
  private async seal(tmp: string, locked: boolean): Promise<void> {
    const fh = await fs.open(tmp, 'r');
    try {
      if (locked) await fh.chmod(LOCKED_MODE);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  async get(key: string, range?: { start: number; end?: number }): Promise<Readable> {
    const file = this.file(key);
    if (range) checkRange(range);
    let fh: fs.FileHandle;
    try {
      fh = await fs.open(file, 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT', 'ENOTDIR')) throw new ObjectNotFoundError(key);
      throw err;
    }
    try {
      if (!(await fh.stat()).isFile()) throw new ObjectNotFoundError(key);
    } catch (err) {
      await fh.close();
      throw err;
    }
    return fh.createReadStream({ start: range?.start, end: range?.end });
  }

  async head(key: string): Promise<BlobInfo | null> {
    return this.infoOf(key, this.file(key)).catch((err: unknown) => {
      if (err instanceof ObjectNotFoundError) return null;
      throw err;
    });
  }

  /** Size and time of the file of `key`; ObjectNotFoundError when it is not a file. */
  private async infoOf(key: string, file: string): Promise<BlobInfo> {
    try {
      const st = await fs.stat(file);
      if (st.isFile()) return { key, size: st.size, modifiedAt: st.mtime };
    } catch (err) {
      if (!isErrno(err, 'ENOENT', 'ENOTDIR')) throw err;
    }
    throw new ObjectNotFoundError(key);
  }

  async list(prefix: string): Promise<BlobInfo[]> {
    assertPrefix(prefix);
    const found = await this.walk(prefix, 'objects');
    const out: BlobInfo[] = [];
    for (const f of found) {
      const info = await this.infoOf(f.key, f.file).catch(() => null);
      if (info) out.push(info);
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async listIncomplete(prefix: string): Promise<string[]> {
    assertPrefix(prefix);
    return (await this.walk(prefix, 'temps')).map((f) => f.key).sort();
  }

  async abortIncomplete(prefix: string): Promise<number> {
    assertPrefix(prefix);
    const temps = await this.walk(prefix, 'temps');
    for (const t of temps) await fs.rm(t.file, { force: true });
    return temps.length;
  }

  /**
   * Walks the folders that can hold keys starting with `prefix` and returns the
   * complete objects or the writers' temp files (with the key they are for).
   * Hidden entries (`.pinned`, temp files) are never objects; names that are
   * not valid key segments (put there by hand) are skipped.
   */
  private async walk(prefix: string, what: 'objects' | 'temps'): Promise<Found[]> {
    const slash = prefix.lastIndexOf('/');
    const base = slash < 0 ? '' : prefix.slice(0, slash + 1);
    const out: Found[] = [];
    const visit = async (rel: string): Promise<void> => {
      let entries: Dirent[];
      try {
        entries = await fs.readdir(path.join(this.location, ...rel.split('/').filter(Boolean)), { withFileTypes: true });
      } catch (err) {
        if (isErrno(err, 'ENOENT', 'ENOTDIR')) return;
        throw err;
      }
      for (const e of entries) {
        const dir = path.join(this.location, ...rel.split('/').filter(Boolean));
        if (e.name.startsWith('.')) {
          const m = what === 'temps' && e.isFile() ? TMP_RE.exec(e.name) : null;
          if (m && isKey(rel + m[1]) && (rel + m[1]).startsWith(prefix)) out.push({ key: rel + m[1], file: path.join(dir, e.name) });
          continue;
        }
        const key = rel + e.name;
        if (!isKey(key)) continue;
        if (e.isDirectory()) {
          // Descend only where keys under it can still match the prefix.
          if (`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`)) await visit(`${key}/`);
        } else if (e.isFile() && what === 'objects' && key.startsWith(prefix)) {
          out.push({ key, file: path.join(dir, e.name) });
        }
      }
    };
    await visit(base);
    return out;
  }

  async delete(key: string): Promise<void> {
    const file = this.file(key);
    try {
      // Unlinking needs write access to the folder only, so a read-only (locked) file goes too.
      await fs.unlink(file);
    } catch (err) {
      if (isErrno(err, 'ENOENT', 'ENOTDIR', 'EISDIR')) return;
      throw err;
    }
    await syncDir(path.dirname(file)).catch(() => {});
    // Remove folders the delete left empty, up to (not including) the root.
    for (let dir = path.dirname(file); dir !== this.location && dir.startsWith(this.location + path.sep); dir = path.dirname(dir)) {
      try {
        await fs.rmdir(dir);
      } catch {
        break;
      }
    }
  }

  async copy(fromKey: string, toKey: string, opts: Pick<PutOptions, 'retention' | 'legalHold'> = {}): Promise<BlobInfo> {
    const from = this.file(fromKey);
    const target = this.file(toKey);
    await this.infoOf(fromKey, from);
    const dir = path.dirname(target);
    const tmp = path.join(dir, `.${path.basename(target)}.${randomUUID()}${TMP_SUFFIX}`);
    await (await this.createTemp(dir, tmp)).close();
    try {
      // copyFile uses the kernel's copy (copy_file_range, reflinks): no bytes through this process.
      try {
        await fs.copyFile(from, tmp, fsConstants.COPYFILE_FICLONE);
      } catch (err) {
        if (isErrno(err, 'ENOENT')) throw new ObjectNotFoundError(fromKey);
        throw err;
      }
      // The copy takes the source's mode (read-only when locked); a copy is locked only when asked.
      await fs.chmod(tmp, PLAIN_MODE);
      await this.seal(tmp, opts.retention !== undefined || opts.legalHold === true);
      await fs.rename(tmp, target);
      await syncDir(dir);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
    return this.infoOf(toKey, target);
  }

  /** Makes the file read-only; the retention itself is kept and enforced by the catalog. */
  async setRetention(key: string, _lock: RetentionLock): Promise<void> {
    await this.makeReadOnly(key);
  }

  /**
   * Setting a hold makes the file read-only. Lifting it leaves the file
   * read-only: the store does not know whether a retention still applies (the
   * catalog does), and a read-only file can still be deleted.
   */
  async setLegalHold(key: string, on: boolean): Promise<void> {
    if (on) await this.makeReadOnly(key);
    else await this.infoOf(key, this.file(key));
  }

  private async makeReadOnly(key: string): Promise<void> {
    const file = this.file(key);
    await this.infoOf(key, file);
    await fs.chmod(file, LOCKED_MODE);
  }

  /** A filesystem holds no locks of its own: always none (ObjectNotFoundError when absent). */
  async lockState(key: string): Promise<BlobLockState> {
    await this.infoOf(key, this.file(key));
    return { retention: null, legalHold: false };
  }

  async ping(): Promise<void> {
    await fs.mkdir(this.location, { recursive: true });
    await fs.access(this.location, fsConstants.W_OK | fsConstants.X_OK);
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

async function syncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
