import type { Readable } from 'node:stream';

/** Sequence high-water marks, `schema.sequence` → last value issued (null when never used). */
export type SequenceMarks = Record<string, string | null>;

/** A running dump: its archive bytes, and a promise that settles when the dump tool exits. */
export interface DumpHandle {
  stream: Readable;
  /** Resolves on a clean exit; rejects with the tool's own error text otherwise. */
  done: Promise<void>;
  /** Stops the dump tool (used on cancellation). */
  kill(): void;
}

/**
 * What runbooks need from a database server. Runbook code never builds SQL
 * or command lines for an engine: a new engine is a new implementation.
 */
export interface InstanceEngine {
  /**
   * Creates an empty database marked with `ownerTag`. Does nothing if it
   * exists with the same tag (a retry); throws DatabaseConflictError if a
   * database of that name exists without it, so a stray database is never adopted.
   */
  createDatabase(name: string, ownerTag: string): Promise<void>;
  /**
   * Drops a database, ending its sessions first; does nothing if it is absent.
   * With `ownerTag`, drops it only if it carries that tag; returns whether it dropped.
   */
  dropDatabase(name: string, ownerTag?: string): Promise<boolean>;
  /** The owner tag a database carries, or null (absent database or no tag). */
  ownerTag(name: string): Promise<string | null>;
  databaseExists(name: string): Promise<boolean>;
  /** Streams a custom-format archive of the database. */
  dump(name: string): DumpHandle;
  /** On-disk size of the database in bytes. */
  sizeBytes(name: string): Promise<number>;
  /** Last value of every sequence in the database. */
  sequences(name: string): Promise<SequenceMarks>;
  /** The server's version string, as `SHOW server_version` gives it. */
  serverVersion(): Promise<string>;
  /** The connection endpoint tenants use, without credentials. */
  endpoint(name: string): string;
  /** True when the server answers. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

/** A database of the wanted name exists but does not belong to the instance being provisioned. */
export class DatabaseConflictError extends Error {}
