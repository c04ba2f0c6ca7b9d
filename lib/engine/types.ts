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
  /** Only the schema (no rows): what a geo-secondary is seeded with before replication copies the rows. */
  schemaOnly?: boolean;
  /** Only these tables (`schema.table`), with their indexes and constraints. */
  tables?: string[];
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
export interface InstanceEngine extends ReplicationEngine {
  /**
   * Creates an empty database marked with `ownerTag`. Does nothing if it
   * exists with the same tag (a retry); throws DatabaseConflictError if a
   * database of that name exists without it, so a stray database is never adopted.
   */
  /** `readOnly`: new transactions are read-only by default from the moment the name appears (a replica's target). */
  /** `placeholder`: marked as standing in for a database that is gone (see isPlaceholder). */
  createDatabase(name: string, ownerTag: string, opts?: { readOnly?: boolean; placeholder?: boolean }): Promise<void>;
  /**
   * Renames database `from` (tagged `ownerTag`) to `to`: no new connections
   * meanwhile, its sessions ended (a subscription in it must be disabled
   * first, or its apply worker comes back). Refuses when `to` exists.
   * Idempotent: done when `from` is gone and `to` carries the tag.
   */
  renameDatabase(from: string, to: string, ownerTag: string): Promise<void>;
  /** Whether the database is an empty placeholder made by createDatabase with `placeholder` (a fenced old primary whose disks were lost). */
  isPlaceholder(name: string): Promise<boolean>;
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
   * Restores a custom-format archive into an existing (empty) database with
   * `pg_restore`, stopping at the first error: from a file (`jobs` > 1
   * restores in parallel), or streamed from `archive` (serially: a stream
   * cannot seek). A stream that errors stops the tool, so a short archive never restores.
   */
  restore(name: string, archive: string | Readable, opts?: { jobs?: number }): RestoreHandle;
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
  /** True when the server answers a query within `timeoutMs` (default 3 s), on a connection of its own. */
  ping(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
}

/** A replication slot's position against its server's current WAL position. */
export interface SlotPosition {
  /** The server's current WAL position when measured. */
  currentLsn: string;
  /** What the subscriber has confirmed it holds (null before its first confirmation). */
  confirmedLsn: string | null;
  /** Bytes of WAL the subscriber has not confirmed yet. */
  lagBytes: number;
  /** A subscriber is connected and streaming. */
  active: boolean;
  /** The walsender's own replay lag, while it measures one (null when idle or unknown). */
  replayLagSeconds: number | null;
}

/** A subscription as its subscriber sees it. */
export interface SubscriptionState {
  enabled: boolean;
  /** `schema.table` → sync state: i (init), d (copying), f/s (finishing), r (ready). */
  tables: Record<string, string>;
  /** The apply worker is running. */
  workerRunning: boolean;
}

/** One change the source committed that a slot's subscriber never confirmed, decoded from the retained WAL. */
export interface UnconfirmedChange {
  table: string;
  op: 'INSERT' | 'UPDATE' | 'DELETE';
  /** Column → value as text (null for SQL NULL); for UPDATE/DELETE, the key or the old row as the WAL carries it. */
  row: Record<string, string | null>;
  committedAt: string | null;
}

/** Per-table content fingerprint: row count and a digest of every row, order-independent. */
export type TableChecksums = Record<string, { rows: number; digest: string }>;

/**
 * Logical replication between two servers' copies of a database. Kept apart
 * from InstanceEngine's lifecycle calls so an engine without it is still a
 * valid engine for backups and restores.
 */
export interface ReplicationEngine {
  /**
   * The libpq connection string a subscriber on another server uses to reach
   * database `name` here. It holds credentials: never log it, never put it in
   * a workflow input or result.
   */
  replicationSource(name: string): string;
  /**
   * Publishes every table of database `name` as `publication` (new tables
   * included), giving tables without a primary key REPLICA IDENTITY FULL so
   * their updates and deletes replicate. Idempotent; returns the tables it
   * gave a replica identity.
   */
  publish(name: string, publication: string): Promise<string[]>;
  /** Drops the publication (if the database and it exist). */
  unpublish(name: string, publication: string): Promise<void>;
  /**
   * Creates logical replication slot `slot` (pgoutput) in database `name`,
   * on its own, outside any subscriber's transaction: a slot waits for the
   * server's running transactions, and a subscriber creating it from inside
   * its CREATE SUBSCRIPTION can deadlock with one going the other way.
   * Does nothing if it exists.
   */
  createSlot(name: string, slot: string): Promise<void>;
  /** Drops a replication slot, ending the walsender that holds it first. Returns whether it existed. */
  dropSlot(slot: string): Promise<boolean>;
  /** The slot's position, or null when there is no such slot. */
  slotPosition(slot: string): Promise<SlotPosition | null>;
  /** Bytes from `from` to `to` (negative when `to` is behind). */
  lsnDistance(from: string, to: string): Promise<number>;
  /**
   * Subscribes database `name` to `publication` at `source` (from the
   * publisher's replicationSource), through the slot named like the
   * subscription, which must exist there (createSlot). `copyData`: copy the
   * existing rows first. Idempotent.
   */
  subscribe(name: string, s: { subscription: string; publication: string; source: string; copyData: boolean }): Promise<void>;
  /**
   * Stops and drops the subscription without touching the publisher: its slot
   * there stays (dropped with dropSlot when the publisher answers). Returns whether it existed.
   */
  unsubscribe(name: string, subscription: string): Promise<boolean>;
  subscriptionState(name: string, subscription: string): Promise<SubscriptionState | null>;
  /** Enables or disables a subscription (false when there is none). Idempotent. */
  setSubscriptionEnabled(name: string, subscription: string, enabled: boolean): Promise<boolean>;
  /** Takes tables added to the publication since the subscription was made (their rows are copied). */
  refreshSubscription(name: string, subscription: string): Promise<void>;
  /** Every ordinary table, as `schema.table`. */
  tables(name: string): Promise<string[]>;
  /**
   * Makes new transactions on the database read-only by default
   * (`default_transaction_read_only`), or writable again. Logical replication
   * keeps applying into a read-only subscriber.
   */
  setReadOnly(name: string, readOnly: boolean): Promise<void>;
  /** Whether the database is read-only by default. */
  readOnly(name: string): Promise<boolean>;
  /**
   * Blocks writes: read-only by default, no new connections, and every client
   * session ended, while replication walsenders keep streaming what was
   * committed. Returns how many sessions it ended.
   */
  blockWrites(name: string): Promise<number>;
  /** Per-table row counts and content digests. */
  tableChecksums(name: string): Promise<TableChecksums>;
  /**
   * Every sequence's high-water mark: the larger of its last value and the
   * largest value in the column it belongs to, so promotion can move it past
   * every number in use.
   */
  sequencesInUse(name: string): Promise<Record<string, string>>;
  /**
   * The changes database `name` committed after what `slot`'s subscriber
   * confirmed, decoded from the WAL the slot retains (the slot is left as it is).
   */
  unconfirmedChanges(name: string, slot: string): Promise<UnconfirmedChange[]>;
  /** The primary key's columns of `table` (as quote_ident prints them), or null for a table without one. */
  keyColumns(name: string, table: string): Promise<string[] | null>;
  /**
   * For each key (column → value as text), the first row matching it as
   * `to_jsonb` text in canonical settings (UTC), or null when there is none.
   */
  rowsByKey(name: string, table: string, keys: Record<string, string | null>[]): Promise<(string | null)[]>;
  /**
   * Inserts `row` (`to_jsonb` text) unless its key (the whole row for a
   * table without a primary key) is there already: `present` when the row
   * there is identical, `conflict` (with the row there) when it differs or
   * another unique constraint refuses it. Never overwrites.
   */
  insertRowIfAbsent(name: string, table: string, row: string, keyColumns: string[] | null): Promise<{ outcome: 'inserted' | 'present' | 'conflict'; existing: string | null }>;
  /** For each row, whether database `name` holds it: by primary key, or whole-row for tables without one. */
  rowsPresent(name: string, table: string, rows: Record<string, string | null>[]): Promise<boolean[]>;
}

/** A database of the wanted name exists but does not belong to the instance being provisioned. */
export class DatabaseConflictError extends Error {}
