import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ObjectNotFoundError, type LocalStaging, type ObjectInfo, type ObjectStore, type StagedObject } from './object-store.js';

const TMP_SUFFIX = '.partial';
const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const PIN_DIR = '.pinned';

const exists = (p: string) => fs.access(p).then(() => true, () => false);

/**
 * ObjectStore on a local directory. A write goes to a hidden temp file beside
 * its target (one per writer, so concurrent writers never share a file), is
 * fsynced, then renamed over the target, so a crash never leaves a half
 * object under a real key.
 */
export class FsObjectStore implements ObjectStore {
  constructor(readonly root: string) {}

  private path(key: string): string {
    if (!KEY_RE.test(key)) throw new Error(`invalid object key ${JSON.stringify(key)}`);
    return path.join(this.root, key);
  }

  private tmpPrefix(key: string): string {
    return `.${key}.`;
  }

  async stage(key: string, body: Readable): Promise<StagedObject> {
    const target = this.path(key);
    await fs.mkdir(this.root, { recursive: true });
    const tmp = path.join(this.root, `${this.tmpPrefix(key)}${randomUUID()}${TMP_SUFFIX}`);
    let size: number;
    try {
      await pipeline(body, createWriteStream(tmp, { flags: 'wx' }));
      const fh = await fs.open(tmp, 'r');
      try {
        await fh.sync();
        size = (await fh.stat()).size;
      } finally {
        await fh.close();
      }
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
    return this.stagedAt(key, target, tmp, size);
  }

  async stageLocal(key: string): Promise<LocalStaging> {
    const target = this.path(key);
    await fs.mkdir(this.root, { recursive: true });
    const tmp = path.join(this.root, `${this.tmpPrefix(key)}${randomUUID()}${TMP_SUFFIX}`);
    const fh = await fs.open(tmp, 'wx');
    let closed = false;
    const close = async () => {
      if (closed) return;
      closed = true;
      await fh.close();
    };
    return {
      key,
      path: tmp,
      fd: fh.fd,
      size: async () => (closed ? (await fs.stat(tmp)).size : (await fh.stat()).size),
      seal: async () => {
        let size: number;
        try {
          await fh.sync();
          size = (await fh.stat()).size;
          await close();
        } catch (err) {
          await close().catch(() => {});
          await fs.rm(tmp, { force: true });
          throw err;
        }
        return this.stagedAt(key, target, tmp, size);
      },
      discard: async () => {
        await close().catch(() => {});
        await fs.rm(tmp, { force: true });
      },
    };
  }

  /** The staged object for a finished temp file `tmp` of `key`. */
  private stagedAt(key: string, target: string, tmp: string, size: number): StagedObject {
    return {
      key,
      size,
      commit: async () => {
        await fs.rename(tmp, target);
        await this.syncDir();
        const info = await this.head(key);
        if (!info) throw new Error(`object ${key} vanished after commit`);
        return info;
      },
      discard: () => fs.rm(tmp, { force: true }),
    };
  }

  async put(key: string, body: Readable): Promise<ObjectInfo> {
    return (await this.stage(key, body)).commit();
  }

  async get(key: string): Promise<Readable> {
    const p = this.path(key);
    try {
      await fs.access(p);
    } catch {
      throw new ObjectNotFoundError(key);
    }
    return createReadStream(p);
  }

  async head(key: string): Promise<ObjectInfo | null> {
    try {
      const st = await fs.stat(this.path(key));
      return { key, size: st.size, modifiedAt: st.mtime };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await fs.rm(this.path(key), { force: true });
    await this.removeIncomplete(key);
  }

  async list(prefix = ''): Promise<ObjectInfo[]> {
    const names = await this.names();
    const out: ObjectInfo[] = [];
    for (const name of names) {
      if (name.startsWith('.') || !name.startsWith(prefix)) continue;
      const info = await this.head(name);
      if (info) out.push(info);
    }
    return out.sort((a, b) => a.key.localeCompare(b.key));
  }

  async listIncomplete(prefix = ''): Promise<string[]> {
    const names = await this.names();
    return names.filter((n) => n.startsWith(`.${prefix}`) && n.endsWith(TMP_SUFFIX));
  }

  async removeIncomplete(key: string): Promise<void> {
    const prefix = this.tmpPrefix(key);
    const names = await this.names();
    await Promise.all(
      names
        .filter((n) => n.startsWith(prefix) && n.endsWith(TMP_SUFFIX) && n.length === prefix.length + 36 + TMP_SUFFIX.length)
        .map((n) => fs.rm(path.join(this.root, n), { force: true })),
    );
  }

  /** Pins are hard links in a hidden folder: no copy, and the bytes outlive a delete of the key. */
  private pinPath(key: string, readerId: string): string {
    if (!KEY_RE.test(readerId)) throw new Error(`invalid reader id ${JSON.stringify(readerId)}`);
    return path.join(this.root, PIN_DIR, `${key}.${readerId}`);
  }

  async pinLocal(key: string, readerId: string): Promise<string> {
    const pin = this.pinPath(key, readerId);
    if ((await this.head(key)) === null && !(await exists(pin))) throw new ObjectNotFoundError(key);
    if (await exists(pin)) return pin;
    await fs.mkdir(path.dirname(pin), { recursive: true });
    try {
      await fs.link(this.path(key), pin);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new ObjectNotFoundError(key);
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    return pin;
  }

  async listPins(): Promise<{ key: string; readerId: string }[]> {
    let names: string[];
    try {
      names = await fs.readdir(path.join(this.root, PIN_DIR));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    // `<key>.<readerId>`: reader ids (workflow ids) hold no dots, so the last dot splits them.
    return names.filter((n) => n.includes('.')).map((n) => ({ key: n.slice(0, n.lastIndexOf('.')), readerId: n.slice(n.lastIndexOf('.') + 1) }));
  }

  async unpinLocal(key: string, readerId: string): Promise<void> {
    await fs.rm(this.pinPath(key, readerId), { force: true });
  }

  private async names(): Promise<string[]> {
    try {
      return await fs.readdir(this.root);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  private async syncDir(): Promise<void> {
    const dir = await fs.open(this.root, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}
