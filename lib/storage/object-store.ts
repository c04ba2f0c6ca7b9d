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
   * Writes the stream durably beside `key` without making it visible. The
   * caller then commits it (it atomically replaces whatever is under `key`)
   * or discards it. Until then readers see the old object or nothing.
   */
  stage(key: string, body: Readable): Promise<StagedObject>;
  /**
   * Like `stage`, for a producer that writes a local file itself (a tool given
   * the file as its output, so the bytes never pass through this process).
   * The file is created empty, hidden beside `key` like any unfinished write;
   * seal it once the producer is done, or discard it.
   */
  stageLocal(key: string): Promise<LocalStaging>;
  /** Stages and commits in one step. */
  put(key: string, body: Readable): Promise<ObjectInfo>;
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
  /**
   * A local file with the object's bytes, for tools that read files
   * (`pg_restore --jobs`). It stays readable until released, even if the
   * object is deleted meanwhile. Idempotent per `readerId`: a retry of the
   * same reader gets the same file. Rejects with ObjectNotFoundError when absent.
   */
  pinLocal(key: string, readerId: string): Promise<string>;
  /** Releases the local file `pinLocal` gave `readerId`; does nothing when there is none. */
  unpinLocal(key: string, readerId: string): Promise<void>;
  /** Every pin there is: which object, for which reader. */
  listPins(): Promise<{ key: string; readerId: string }[]>;
}

/** A fully written object not yet visible under its key. */
export interface StagedObject {
  key: string;
  size: number;
  /** Makes the object visible under its key, atomically replacing any object there. */
  commit(): Promise<ObjectInfo>;
  /** Removes the staged data; the key is left as it was. Idempotent. */
  discard(): Promise<void>;
}

/** A local file a producer is writing, to become a StagedObject. */
export interface LocalStaging {
  key: string;
  /** The file, for tools that want a path. */
  path: string;
  /** An open descriptor of the file, for tools that take one (a child process's stdout). */
  fd: number;
  /** Bytes written so far. */
  size(): Promise<number>;
  /** Once the producer has exited: makes the file durable (fsync) and returns it staged, to commit or discard. */
  seal(): Promise<StagedObject>;
  /** Closes and removes the file; the key is left as it was. Idempotent. */
  discard(): Promise<void>;
}

/** Raised by ObjectStore.get for a missing key. */
export class ObjectNotFoundError extends Error {
  constructor(readonly key: string) {
    super(`object ${key} not found`);
  }
}
