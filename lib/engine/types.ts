import type { Readable } from 'node:stream';

/** Sequence high-water marks, `schema.sequence` → last value issued (null when never used). */
export type SequenceMarks = Record<string, string | null>;

/**
 * A running dump: its archive bytes (streamed, or written straight into the
 * file given as DumpOptions.fd), and a promise that settles when the dump tool exits.
 */
export interface DumpHandle {
  /** The archive bytes as they are produced; null when the tool writes them into DumpOptions.fd itself. */
  stream: Readable | null;
  /** Resolves on a clean exit; rejects with the tool's own error text otherwise. */
  done: Promise<void>;
  /** Stops the dump tool (used on cancellation). */
  kill(): void;
}

/** How a dump is produced. */
export interface DumpOptions {
  /**
   * An open, writable descriptor of an empty regular file: the tool writes the
   * archive into it itself, with no copy through this process (a seekable
   * custom-format archive also records where each table's data starts, which
   * parallel restores use). Without it the archive is streamed (DumpHandle.stream).
   */
  fd?: number;
  /**
   * Names the thing being dumped (say, a backup's object key). An earlier dump
   * with the same fence still running (the orphan of a killed attempt) is
   * stopped before this one starts, so at most one dump of it runs.
   */
  fence?: string;
}

/** A running restore: settles when the restore tool exits. */
export interface RestoreHandle {
  /** Resolves on a clean exit; rejects with the tool's own error text otherwise. */
  done: Promise<void>;
  /** Stops the restore tool (used on cancellation). */
  kill(): void;
}

/** Names of the three databases an atomic swap touches. */
export interface SwapNames {
  /** The database clients use; absent for a brand-new instance. */
  current: string;
  /** The fully restored copy that takes the current name. */
  incoming: string;
  /** Where the replaced database goes, to be dropped after the swap. */
  retired: string;
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
  /**
   * Dumps the database as a custom-format archive (also when it refuses
   * connections): streamed, or written into `opts.fd`. Resolves once the dump
   * tool is connected.
   */
  dump(name: string, opts?: DumpOptions): Promise<DumpHandle>;
  /**
   * Restores a custom-format archive file into an existing (empty) database
   * with `pg_restore`, stopping at the first error; `jobs` > 1 restores in parallel.
   */
  restore(name: string, archiveFile: string, opts?: { jobs?: number }): RestoreHandle;
  /**
   * Swaps `incoming` in under the `current` name in one transaction:
   * `current` → `retired`, `incoming` → `current` (or just the second rename
   * when `current` is absent). Both must refuse connections and have no
   * sessions, so nobody sees a half-swapped name. Idempotent: when `incoming`
   * is gone and `current` exists, the swap already happened.
   */
  swapDatabases(names: SwapNames): Promise<'swapped' | 'already-swapped'>;
  /**
   * Labels a database with the run that restored it to the end (a
   * database-level setting, `bcdr.restored_by`, that survives renames), so a
   * swap takes only a copy its own run completed.
   */
  labelRestored(name: string, runId: string): Promise<void>;
  /** The run label labelRestored put on the database, or null. */
  restoredBy(name: string): Promise<string | null>;
  /** Lets clients connect to the database, or refuses every new connection (a suspended instance). */
  setConnectionsAllowed(name: string, allowed: boolean): Promise<void>;
  /** Whether the database accepts new connections. */
  connectionsAllowed(name: string): Promise<boolean>;
  /** Ends every session on the database; returns how many were ended. */
  terminateSessions(name: string): Promise<number>;
  /**
   * Moves each named sequence (`schema.sequence` → value) so its next value is
   * greater than the given one; sequences already past it are left alone.
   * Returns the names it moved.
   */
  advanceSequences(name: string, marks: Record<string, string>): Promise<string[]>;
  /** On-disk size of the database in bytes. */
  sizeBytes(name: string): Promise<number>;
  /** Last value of every sequence in the database (also when it refuses connections). */
  sequences(name: string): Promise<SequenceMarks>;
  /** The server's version string, as `SHOW server_version` gives it. */
  serverVersion(): Promise<string>;
  /** The connection URI tenants use: user, host, port and database, never a password. */
  endpoint(name: string): string;
  /** True when the server answers. */
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

/** A database of the wanted name exists but does not belong to the instance being provisioned. */
export class DatabaseConflictError extends Error {}
