import type { Readable } from 'node:stream';

/** Size and time of a stored object. */
export interface ObjectInfo {
  key: string;
  size: number;
  modifiedAt: Date;
}

/**
 * A flat blob store. Writes are atomic: a reader sees the whole object or
 * nothing. Keys are chosen by the layer above (BackupStore), never by runbooks.
 */
export interface ObjectStore {
  /**
   * Stores the stream under `key`, replacing any object there; the object
   * appears only once fully written. If `beforeCommit` rejects, the write is
   * abandoned and nothing appears.
   */
  put(key: string, body: Readable, opts?: PutOptions): Promise<ObjectInfo>;
  /** Opens an object for reading; rejects with ObjectNotFoundError when absent. */
  get(key: string): Promise<Readable>;
  /** Size and time of an object, or null when absent. */
  head(key: string): Promise<ObjectInfo | null>;
  /** Removes an object and any unfinished write of it; does nothing when absent. */
  delete(key: string): Promise<void>;
  /** Complete objects whose key starts with `prefix`, unfinished writes excluded. */
  list(prefix?: string): Promise<ObjectInfo[]>;
  /** Keys of unfinished writes (left by a killed writer) whose key starts with `prefix`. */
  listIncomplete(prefix?: string): Promise<string[]>;
  /** Removes unfinished writes of `key` left by killed writers. */
  removeIncomplete(key: string): Promise<void>;
}

/** Options of ObjectStore.put. */
export interface PutOptions {
  /** Awaited after the data is durably written and before it becomes visible under its key. */
  beforeCommit?: () => Promise<void>;
}

/** Raised by ObjectStore.get for a missing key. */
export class ObjectNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`object ${key} not found`);
  }
}
