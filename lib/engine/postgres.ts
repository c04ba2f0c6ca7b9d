import type { Readable } from 'node:stream';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import postgres from 'postgres';
import { createHash, randomUUID } from 'node:crypto';
import {
  DatabaseConflictError,
  type DumpHandle,
  type DumpOptions,
  type InstanceEngine,
  type RestoreHandle,
  type SequenceMarks,
  type SlotPosition,
  type SubscriptionState,
  type SwapNames,
  type TableChecksums,
  type UnconfirmedChange,
} from './types.js';

const quoteIdent = (s: string) => `"${s.replace(/"/g, '""')}"`;
const quoteLiteral = (s: string) => `'${s.replace(/'/g, "''")}'`;

/** Finds the directory holding pg_dump: an explicit setting, Debian's newest cluster binaries, or PATH. */
export function resolvePgBinDir(explicit?: string): string | undefined {
  if (explicit) return explicit;
  const debian = '/usr/lib/postgresql';
  if (existsSync(debian)) {
    const versions = readdirSync(debian)
      .filter((v) => existsSync(path.join(debian, v, 'bin', 'pg_dump')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return path.join(debian, versions[0], 'bin');
  }
  return undefined;
}

/** libpq environment for a URL, so credentials go to the child process environment, never its argv. */
export function libpqEnv(url: string, database: string): NodeJS.ProcessEnv {
  const u = new URL(url);
  const env: NodeJS.ProcessEnv = {
    PGHOST: decodeURIComponent(u.hostname),
    PGPORT: u.port || '5432',
    PGDATABASE: database,
    PGCONNECT_TIMEOUT: '10',
  };
  if (u.username) env.PGUSER = decodeURIComponent(u.username);
  if (u.password) env.PGPASSWORD = decodeURIComponent(u.password);
  const sslmode = u.searchParams.get('sslmode');
  if (sslmode) env.PGSSLMODE = sslmode;
  return env;
}

/** An InstanceEngine over one PostgreSQL cluster, reached with an admin URL. */
export class PostgresEngine implements InstanceEngine {
  private readonly admin: postgres.Sql;
  private readonly binDir: string | undefined;

  constructor(
    private readonly adminUrl: string,
    opts: { binDir?: string } = {},
  ) {
    this.admin = postgres(adminUrl, { max: 2, onnotice: () => {}, connect_timeout: 10, fetch_types: false });
    this.binDir = resolvePgBinDir(opts.binDir);
  }

  private bin(tool: string): string {
    return this.binDir ? path.join(this.binDir, tool) : tool;
  }

  async createDatabase(name: string, ownerTag: string, opts: { readOnly?: boolean; placeholder?: boolean } = {}): Promise<void> {
    const conflict = (tag: string | null) =>
      new DatabaseConflictError(
        `database ${name} already exists on this server and does not belong to this instance (owner: ${tag ?? 'none'}); it was left untouched: drop or rename it, or choose another instance name`,
      );
    if (await this.databaseExists(name)) {
      const tag = await this.ownerTag(name);
      if (tag === ownerTag) return;
      throw conflict(tag);
    }
    // Created and tagged under a staging name, then renamed: the real name only ever appears already tagged.
    const staging = `${name}__bcdr_new`; // underscores never occur in instance names (DNS labels)
    if ((await this.databaseExists(staging)) && (await this.ownerTag(staging)) !== ownerTag) {
      await this.admin`DROP DATABASE IF EXISTS ${this.admin(staging)} WITH (FORCE)`; // an abandoned staging copy: empty by construction
    }
    if (!(await this.databaseExists(staging))) {
      await this.admin`CREATE DATABASE ${this.admin(staging)}`;
      await this.admin.unsafe(`COMMENT ON DATABASE ${quoteIdent(staging)} IS ${quoteLiteral(ownerTag)}`);
    }
    // Set before the rename (the setting follows the database): a client given a multi-host URI never finds it writable.
    if (opts.readOnly) await this.admin`ALTER DATABASE ${this.admin(staging)} SET default_transaction_read_only = on`;
    if (opts.placeholder) await this.admin.unsafe(`ALTER DATABASE ${quoteIdent(staging)} SET bcdr.placeholder = 'on'`);
    try {
      await this.admin`ALTER DATABASE ${this.admin(staging)} RENAME TO ${this.admin(name)}`;
    } catch (err) {
      // 42P04 duplicate_database: someone created the real name meanwhile.
      if ((err as { code?: string }).code !== '42P04') throw err;
      const tag = await this.ownerTag(name);
      if (tag !== ownerTag) throw conflict(tag);
    }
  }

  async dropDatabase(name: string, ownerTag?: string): Promise<boolean> {
    if (!(await this.databaseExists(name))) return false;
    if (ownerTag !== undefined && (await this.ownerTag(name)) !== ownerTag) return false;
    await this.admin`DROP DATABASE IF EXISTS ${this.admin(name)} WITH (FORCE)`;
    return true;
  }

  async ownerTag(name: string): Promise<string | null> {
    const [row] = await this.admin<{ tag: string | null }[]>`
      SELECT shobj_description(oid, 'pg_database') AS tag FROM pg_database WHERE datname = ${name}`;
    return row?.tag ?? null;
  }

  async databaseExists(name: string): Promise<boolean> {
    const rows = await this.admin`SELECT 1 FROM pg_database WHERE datname = ${name}`;
    return rows.length > 0;
  }

  /** Runs a PostgreSQL client tool against database `name`, credentials in its environment, never on argv. */
  private runTool(tool: string, args: string[], name: string, appName: string, stdout: 'pipe' | 'ignore' | number, stdin: 'pipe' | 'ignore' = 'ignore') {
    const child = spawn(this.bin(tool), args, {
      // Tools write also into databases that are read-only by default (a geo-secondary being seeded).
      env: { ...process.env, ...libpqEnv(this.adminUrl, name), PGAPPNAME: appName, PGOPTIONS: '-c default_transaction_read_only=off' },
      stdio: [stdin, stdout, 'pipe'],
    });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      if (stderr.length < 4000) stderr += chunk;
    });
    // A tool's DETAIL, CONTEXT and "Command was" lines can quote tenant rows: they never reach run errors or histories.
    // A quoted statement runs over several lines: everything up to the tool's next own line goes with it.
    const cleaned = () => {
      const kept: string[] = [];
      let quoting = false;
      for (const l of stderr.split('\n')) {
        if (/^\s*(pg_\w+: )?(DETAIL|CONTEXT|HINT|LINE \d+|QUERY):|^\s*(pg_\w+: )?(error: )?Command was:/.test(l)) quoting = true;
        else if (/^pg_\w+: /.test(l)) quoting = false;
        if (!quoting && !/^\s*\^\s*$/.test(l)) kept.push(l);
      }
      return kept.join('\n').trim().slice(0, 1000);
    };
    let exited = false;
    const done = new Promise<void>((resolve, reject) => {
      child.once('error', (err) => reject(new Error(`could not run ${tool}: ${err.message}`)));
      child.once('close', (code, signal) => {
        exited = true;
        if (code === 0) resolve();
        else reject(new Error(`${tool} exited with ${signal ?? `code ${code}`}: ${cleaned() || 'no output'}`));
      });
    });
    done.catch(() => {}); // the caller awaits it; never an unhandled rejection meanwhile
    return { child, done, exited: () => exited, kill: () => void child.kill('SIGTERM') };
  }

  async dump(name: string, opts: DumpOptions = {}): Promise<DumpHandle> {
    // application_name holds at most 63 bytes: a digest of the fence, then this dump's own part.
    const fenceTag = opts.fence === undefined ? null : `bcdr-dump-${createHash('sha256').update(opts.fence).digest('hex').slice(0, 16)}-`;
    const appName = `${fenceTag ?? 'bcdr-dump-'}${randomUUID()}`.slice(0, 63);
    if (fenceTag) {
      // A killed attempt's pg_dump may outlive its worker: end its session, and so the orphan, first.
      await this.admin`
        SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE starts_with(application_name, ${fenceTag}) AND pid <> pg_backend_pid()`;
    }
    let tool!: ReturnType<PostgresEngine['runTool']>;
    await this.admitOnly(name, appName, async () => {
      // Publications and subscriptions belong to the live replication set-up, never to what a restore recreates.
      const args = ['--format=custom', '--no-password', '--no-publications', '--no-subscriptions'];
      if (opts.schemaOnly) args.push('--schema-only');
      for (const t of opts.tables ?? []) args.push(`--table=${qualifiedPattern(t)}`);
      tool = this.runTool('pg_dump', args, name, appName, opts.fd ?? 'pipe');
      await this.sessionOf(appName, tool.exited);
    });
    return { stream: opts.fd === undefined ? tool.child.stdout! : null, done: tool.done, kill: tool.kill };
  }

  restore(name: string, archive: string | Readable, opts: { jobs?: number } = {}): RestoreHandle {
    const args = ['--exit-on-error', '--no-password', `--dbname=${name}`];
    const fromFile = typeof archive === 'string';
    if (fromFile && opts.jobs && opts.jobs > 1) args.push(`--jobs=${opts.jobs}`);
    if (fromFile) args.push(archive);
    const tool = this.runTool('pg_restore', args, name, `bcdr-restore-${randomUUID()}`, 'ignore', fromFile ? 'ignore' : 'pipe');
    if (!fromFile) {
      const stdin = tool.child.stdin!;
      // A source that fails (a bad chunk, a lost store) stops the tool: it must never see a clean end of a short archive.
      archive.once('error', () => tool.kill());
      stdin.on('error', () => {}); // the tool exiting early closes its stdin; its exit status tells why
      archive.pipe(stdin);
    }
    return { done: tool.done, kill: tool.kill };
  }

  async swapDatabases({ current, incoming, retired }: SwapNames): Promise<'swapped' | 'already-swapped'> {
    const [hasIncoming, hasCurrent, hasRetired] = await Promise.all([this.databaseExists(incoming), this.databaseExists(current), this.databaseExists(retired)]);
    if (!hasIncoming) {
      if (hasCurrent) return 'already-swapped';
      throw new Error(`neither ${incoming} nor ${current} exists on this server: there is nothing to swap in`);
    }
    if (hasRetired && hasCurrent) throw new Error(`${retired} still exists: drop it before swapping ${incoming} in`);
    // No new sessions on either side, then end the ones there: a database with sessions cannot be renamed.
    for (const db of hasCurrent ? [incoming, current] : [incoming]) {
      await this.setConnectionsAllowed(db, false);
      await this.terminateSessions(db);
    }
    // One transaction: clients never see the name missing or pointing at a half-restored copy.
    await this.admin.begin(async (tx) => {
      if (hasCurrent) await tx`ALTER DATABASE ${tx(current)} RENAME TO ${tx(retired)}`;
      await tx`ALTER DATABASE ${tx(incoming)} RENAME TO ${tx(current)}`;
    });
    return 'swapped';
  }

  async labelRestored(name: string, runId: string): Promise<void> {
    await this.admin.unsafe(`ALTER DATABASE ${quoteIdent(name)} SET bcdr.restored_by = ${quoteLiteral(runId)}`);
  }

  async restoredBy(name: string): Promise<string | null> {
    return this.databaseSetting(name, 'bcdr.restored_by');
  }

  /** A database-level setting (ALTER DATABASE … SET), or null. */
  async renameDatabase(from: string, to: string, ownerTag: string): Promise<void> {
    if (!(await this.databaseExists(from))) {
      if ((await this.databaseExists(to)) && (await this.ownerTag(to)) === ownerTag) return;
      throw new Error(`database ${from} does not exist`);
    }
    if ((await this.ownerTag(from)) !== ownerTag) throw new Error(`database ${from} does not belong to ${ownerTag}: not renamed`);
    if (await this.databaseExists(to)) throw new DatabaseConflictError(`database ${to} already exists: ${from} was not renamed to it`);
    const allowed = await this.connectionsAllowed(from);
    await this.admin`ALTER DATABASE ${this.admin(from)} ALLOW_CONNECTIONS false`;
    try {
      for (let i = 0; ; i++) {
        await this.endSessions(from);
        try {
          await this.admin`ALTER DATABASE ${this.admin(from)} RENAME TO ${this.admin(to)}`;
          break;
        } catch (err) {
          // 55006 object_in_use: a session was still going away.
          if ((err as { code?: string }).code !== '55006' || i >= 50) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    } finally {
      const now = (await this.databaseExists(to)) ? to : from;
      if (allowed) await this.admin`ALTER DATABASE ${this.admin(now)} ALLOW_CONNECTIONS true`;
    }
  }

  async isPlaceholder(name: string): Promise<boolean> {
    return (await this.databaseSetting(name, 'bcdr.placeholder')) === 'on';
  }

  private async databaseSetting(name: string, key: string): Promise<string | null> {
    const [row] = await this.admin<{ value: string | null }[]>`
      SELECT (SELECT substr(c, length(${key}) + 2) FROM unnest(s.setconfig) c WHERE starts_with(c, ${`${key}=`})) AS value
      FROM pg_database d LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0
      WHERE d.datname = ${name}`;
    return row?.value ?? null;
  }

  /**
   * Suspension is recorded twice: the door (ALLOW_CONNECTIONS) and a durable
   * mark (`bcdr.suspended`), so a door the engine opened for itself and could
   * not close again (a crash in admitOnly) is closed by the next caller.
   */
  async setConnectionsAllowed(name: string, allowed: boolean): Promise<void> {
    if (allowed) {
      await this.admin.unsafe(`ALTER DATABASE ${quoteIdent(name)} RESET bcdr.suspended`);
      await this.door(name, true);
    } else {
      await this.admin.unsafe(`ALTER DATABASE ${quoteIdent(name)} SET bcdr.suspended = 'on'`);
      await this.door(name, false);
    }
  }

  /** Opens or shuts the database to new connections, leaving the suspension mark alone. */
  private async door(name: string, open: boolean): Promise<void> {
    await this.admin.unsafe(`ALTER DATABASE ${quoteIdent(name)} WITH ALLOW_CONNECTIONS ${open ? 'true' : 'false'}`);
  }

  async connectionsAllowed(name: string): Promise<boolean> {
    const [row] = await this.admin<{ allowed: boolean }[]>`SELECT datallowconn AS allowed FROM pg_database WHERE datname = ${name}`;
    if (!row) throw new Error(`database ${name} does not exist on this server`);
    return row.allowed;
  }

  async terminateSessions(name: string): Promise<number> {
    return this.endSessions(name);
  }

  /** Ends every session on the database but this admin's own and, given `keepApp`, the one with that application name. */
  private async endSessions(name: string, keepApp?: string, spareWalSenders = false): Promise<number> {
    const rows = await this.admin`
      SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE datname = ${name} AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM ${keepApp ?? null}
        AND (NOT ${spareWalSenders} OR backend_type <> 'walsender')`;
    return rows.length;
  }

  async advanceSequences(name: string, marks: Record<string, string>): Promise<string[]> {
    return this.withDatabase(name, async (sql) => {
      const moved: string[] = [];
      const rows = await sql<{ name: string; schema: string; seq: string; last_value: string | null }[]>`
        SELECT schemaname || '.' || sequencename AS name, schemaname AS schema, sequencename AS seq, last_value::text AS last_value FROM pg_sequences`;
      for (const r of rows) {
        const mark = marks[r.name];
        if (mark === undefined || (r.last_value !== null && BigInt(r.last_value) >= BigInt(mark))) continue;
        await sql`SELECT setval(format('%I.%I', ${r.schema}::text, ${r.seq}::text)::regclass, ${mark}::bigint, true)`;
        moved.push(r.name);
      }
      return moved;
    });
  }

  /** Resolves once a session named `appName` is connected; rejects if the tool exits first or it never shows. */
  private async sessionOf(appName: string, exited: () => boolean): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const rows = await this.admin`SELECT 1 FROM pg_stat_activity WHERE application_name = ${appName}`;
      if (rows.length) return;
      if (exited() || Date.now() > deadline) throw new Error(`${appName} did not connect`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /**
   * Opens the door of a database that refuses connections (a suspended
   * instance) only until `connect` has its session, then shuts it and ends any
   * other session that slipped in meanwhile. An open database is just connected to.
   */
  private async admitOnly(name: string, appName: string, connect: () => Promise<void>): Promise<void> {
    const suspended = (await this.databaseSetting(name, 'bcdr.suspended')) === 'on' || !(await this.connectionsAllowed(name));
    if (!suspended) return connect();
    await this.door(name, true);
    try {
      await connect();
    } finally {
      await this.door(name, false);
    }
    // Clients that slipped in go; a replication walsender streaming what was committed stays.
    await this.endSessions(name, appName, true);
  }

  /** Runs `fn` on a short-lived session on database `name`, even a suspended one. */
  private async withDatabase<T>(name: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
    const appName = `bcdr-engine-${randomUUID()}`;
    const u = new URL(this.adminUrl);
    u.pathname = `/${encodeURIComponent(name)}`;
    // No type fetch at connect: a refused connection would reject that internal query with nobody listening.
    const sql = postgres(u.toString(), { max: 1, onnotice: () => {}, connect_timeout: 10, fetch_types: false, connection: { application_name: appName } });
    try {
      await this.admitOnly(name, appName, async () => {
        // Its own statements are management, also on a database that is read-only by default (a geo-secondary, a blocked primary).
        await sql`SET default_transaction_read_only = off`;
      });
      return await fn(sql);
    } finally {
      await sql.end({ timeout: 5 });
    }
  }

  async sizeBytes(name: string): Promise<number> {
    const [row] = await this.admin<{ size: string }[]>`SELECT pg_database_size(${name})::text AS size`;
    return Number(row?.size ?? 0);
  }

  async sequences(name: string): Promise<SequenceMarks> {
    return this.withDatabase(name, async (sql) => {
      const rows = await sql<{ name: string; last_value: string | null }[]>`
        SELECT schemaname || '.' || sequencename AS name, last_value::text AS last_value
        FROM pg_sequences ORDER BY 1`;
      return Object.fromEntries(rows.map((r) => [r.name, r.last_value]));
    });
  }

  async serverVersion(): Promise<string> {
    const [row] = await this.admin<{ server_version: string }[]>`SHOW server_version`;
    return row?.server_version ?? 'unknown';
  }

  endpoint(name: string): string {
    const u = new URL(this.adminUrl);
    const user = u.username ? `${u.username}@` : '';
    return `postgres://${user}${u.hostname}:${u.port || '5432'}/${encodeURIComponent(name)}`;
  }

  async ping(timeoutMs = 3000): Promise<boolean> {
    // A connection of its own: the shared pool backs off reconnecting to a dead server, which would make the answer slow.
    const sql = postgres(this.adminUrl, { max: 1, onnotice: () => {}, connect_timeout: Math.ceil(timeoutMs / 1000), fetch_types: false, idle_timeout: 1 });
    let timer: NodeJS.Timeout | undefined;
    try {
      const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
      return await Promise.race([sql`SELECT 1`.then(() => true, () => false), late]);
    } finally {
      clearTimeout(timer);
      void sql.end({ timeout: 1 }).catch(() => {});
    }
  }

  // ---- Logical replication (ReplicationEngine) ----

  replicationSource(name: string): string {
    const u = new URL(this.adminUrl);
    const kv = (k: string, v: string) => `${k}='${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
    const parts = [kv('host', decodeURIComponent(u.hostname)), kv('port', u.port || '5432'), kv('dbname', name)];
    if (u.username) parts.push(kv('user', decodeURIComponent(u.username)));
    if (u.password) parts.push(kv('password', decodeURIComponent(u.password)));
    const sslmode = u.searchParams.get('sslmode');
    if (sslmode) parts.push(kv('sslmode', sslmode));
    return parts.join(' ');
  }

  async publish(name: string, publication: string): Promise<string[]> {
    return this.withDatabase(name, async (sql) => {
      const keyless = await sql<{ t: string }[]>`
        SELECT format('%I.%I', n.nspname, c.relname) AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
          AND c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)`;
      for (const { t } of keyless) await sql.unsafe(`ALTER TABLE ${t} REPLICA IDENTITY FULL`);
      const [pub] = await sql`SELECT 1 FROM pg_publication WHERE pubname = ${publication}`;
      if (!pub) await sql.unsafe(`CREATE PUBLICATION ${quoteIdent(publication)} FOR ALL TABLES`);
      return keyless.map((r) => r.t);
    });
  }

  async unpublish(name: string, publication: string): Promise<void> {
    if (!(await this.databaseExists(name))) return;
    await this.withDatabase(name, (sql) => sql.unsafe(`DROP PUBLICATION IF EXISTS ${quoteIdent(publication)}`));
  }

  async createSlot(name: string, slot: string): Promise<void> {
    await this.withDatabase(name, async (sql) => {
      const [existing] = await sql`SELECT 1 FROM pg_replication_slots WHERE slot_name = ${slot}`;
      // A new slot waits for every running transaction on the server: bounded, so a long report cannot hold a switch for ever.
      await sql`SET statement_timeout = '60s'`;
      if (!existing) await sql`SELECT pg_create_logical_replication_slot(${slot}, 'pgoutput')`;
    });
  }

  async dropSlot(slot: string): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      const [row] = await this.admin<{ pid: number | null }[]>`SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = ${slot}`;
      if (!row) return false;
      if (row.pid !== null) {
        await this.admin`SELECT pg_terminate_backend(${row.pid}::int)`;
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      try {
        await this.admin`SELECT pg_drop_replication_slot(${slot})`;
        return true;
      } catch (err) {
        // 55006 object_in_use: a walsender took it again meanwhile; 42704: someone else dropped it.
        const code = (err as { code?: string }).code;
        if (code === '42704') return true;
        if (code !== '55006' || attempt > 50) throw err;
      }
    }
  }

  async slotPosition(slot: string): Promise<SlotPosition | null> {
    const [row] = await this.admin<{ current: string; confirmed: string | null; lag: string; active: boolean; replay: number | null }[]>`
      SELECT pg_current_wal_lsn()::text AS current, s.confirmed_flush_lsn::text AS confirmed,
             greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(s.confirmed_flush_lsn, s.restart_lsn)), 0)::bigint::text AS lag,
             s.active, extract(epoch FROM r.replay_lag)::float8 AS replay
      FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
      WHERE s.slot_name = ${slot}`;
    if (!row) return null;
    return { currentLsn: row.current, confirmedLsn: row.confirmed, lagBytes: Number(row.lag), active: row.active, replayLagSeconds: row.replay };
  }

  async lsnDistance(from: string, to: string): Promise<number> {
    const [row] = await this.admin<{ d: string }[]>`SELECT pg_wal_lsn_diff(${to}::pg_lsn, ${from}::pg_lsn)::bigint::text AS d`;
    return Number(row?.d ?? 0);
  }

  async subscribe(name: string, s: { subscription: string; publication: string; source: string; copyData: boolean }): Promise<void> {
    await this.withDatabase(name, async (sql) => {
      const [existing] = await sql`SELECT 1 FROM pg_subscription WHERE subname = ${s.subscription} AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`;
      if (existing) return;
      await sql.unsafe(
        `CREATE SUBSCRIPTION ${quoteIdent(s.subscription)} CONNECTION ${quoteLiteral(s.source)} PUBLICATION ${quoteIdent(s.publication)} ` +
          `WITH (copy_data = ${s.copyData ? 'true' : 'false'}, create_slot = false, slot_name = ${quoteLiteral(s.subscription)})`,
      );
    });
  }

  async unsubscribe(name: string, subscription: string): Promise<boolean> {
    if (!(await this.databaseExists(name))) return false;
    return this.withDatabase(name, async (sql) => {
      const [existing] = await sql`SELECT 1 FROM pg_subscription WHERE subname = ${subscription} AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`;
      if (!existing) return false;
      const sub = quoteIdent(subscription);
      await sql.unsafe(`ALTER SUBSCRIPTION ${sub} DISABLE`);
      await sql.unsafe(`ALTER SUBSCRIPTION ${sub} SET (slot_name = NONE)`);
      await sql.unsafe(`DROP SUBSCRIPTION ${sub}`);
      return true;
    });
  }

  async setSubscriptionEnabled(name: string, subscription: string, enabled: boolean): Promise<boolean> {
    if (!(await this.databaseExists(name))) return false;
    return this.withDatabase(name, async (sql) => {
      const [existing] = await sql<{ enabled: boolean }[]>`SELECT subenabled AS enabled FROM pg_subscription WHERE subname = ${subscription} AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`;
      if (!existing) return false;
      if (existing.enabled !== enabled) await sql.unsafe(`ALTER SUBSCRIPTION ${quoteIdent(subscription)} ${enabled ? 'ENABLE' : 'DISABLE'}`);
      return true;
    });
  }

  async subscriptionState(name: string, subscription: string): Promise<SubscriptionState | null> {
    return this.withDatabase(name, async (sql) => {
      const [sub] = await sql<{ oid: number; enabled: boolean; running: boolean }[]>`
        SELECT s.oid, s.subenabled AS enabled,
               EXISTS (SELECT 1 FROM pg_stat_subscription st WHERE st.subid = s.oid AND st.relid IS NULL AND st.pid IS NOT NULL) AS running
        FROM pg_subscription s WHERE s.subname = ${subscription} AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`;
      if (!sub) return null;
      const rels = await sql<{ t: string; state: string }[]>`
        SELECT format('%I.%I', n.nspname, c.relname) AS t, r.srsubstate AS state
        FROM pg_subscription_rel r JOIN pg_class c ON c.oid = r.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE r.srsubid = ${sub.oid}`;
      return { enabled: sub.enabled, workerRunning: sub.running, tables: Object.fromEntries(rels.map((r) => [r.t, r.state])) };
    });
  }

  async refreshSubscription(name: string, subscription: string): Promise<void> {
    await this.withDatabase(name, (sql) => sql.unsafe(`ALTER SUBSCRIPTION ${quoteIdent(subscription)} REFRESH PUBLICATION WITH (copy_data = true)`));
  }

  async tables(name: string): Promise<string[]> {
    return this.withDatabase(name, async (sql) => {
      const rows = await sql<{ t: string }[]>`
        SELECT format('%I.%I', n.nspname, c.relname) AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1`;
      return rows.map((r) => r.t);
    });
  }

  async setReadOnly(name: string, readOnly: boolean): Promise<void> {
    await this.admin.unsafe(
      readOnly ? `ALTER DATABASE ${quoteIdent(name)} SET default_transaction_read_only = on` : `ALTER DATABASE ${quoteIdent(name)} RESET default_transaction_read_only`,
    );
  }

  async readOnly(name: string): Promise<boolean> {
    return (await this.databaseSetting(name, 'default_transaction_read_only')) === 'on';
  }

  async blockWrites(name: string): Promise<number> {
    await this.setReadOnly(name, true);
    await this.setConnectionsAllowed(name, false);
    // Waits (up to 5 s each) until each session is gone, so no commit lands after the caller reads the WAL position.
    const rows = await this.admin`
      SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
      WHERE datname = ${name} AND pid <> pg_backend_pid() AND backend_type <> 'walsender'`;
    return rows.length;
  }

  async tableChecksums(name: string): Promise<TableChecksums> {
    const tables = await this.tables(name);
    return this.withDatabase(name, async (sql) => {
      await canonicalText(sql);
      const out: TableChecksums = {};
      for (const t of tables) {
        const [row] = await sql.unsafe<{ rows: string; digest: string }[]>(
          `SELECT count(*)::text AS rows, coalesce(md5(string_agg(h, '' ORDER BY h)), '') AS digest FROM (SELECT md5(x::text) AS h FROM ${t} x) s`,
        );
        out[t] = { rows: Number(row?.rows ?? 0), digest: row?.digest ?? '' };
      }
      return out;
    });
  }

  async sequencesInUse(name: string): Promise<Record<string, string>> {
    return this.withDatabase(name, async (sql) => {
      const seqs = await sql<{ seq: string; last: string | null }[]>`
        SELECT schemaname || '.' || sequencename AS seq, last_value::text AS last FROM pg_sequences`;
      const owned = await sql<{ seq: string; tbl: string; col: string }[]>`
        SELECT sn.nspname || '.' || s.relname AS seq, format('%I.%I', tn.nspname, t.relname) AS tbl, quote_ident(a.attname) AS col
        FROM pg_class s JOIN pg_namespace sn ON sn.oid = s.relnamespace
        JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE s.relkind = 'S'`;
      const marks: Record<string, bigint> = {};
      for (const s of seqs) if (s.last !== null) marks[s.seq] = BigInt(s.last);
      for (const o of owned) {
        const [row] = await sql.unsafe<{ m: string | null }[]>(`SELECT max(${o.col})::text AS m FROM ${o.tbl}`);
        if (row?.m == null || !/^-?\d+$/.test(row.m)) continue;
        const v = BigInt(row.m);
        if (marks[o.seq] === undefined || v > marks[o.seq]!) marks[o.seq] = v;
      }
      return Object.fromEntries(Object.entries(marks).map(([k, v]) => [k, v.toString()]));
    });
  }

  async unconfirmedChanges(name: string, slot: string): Promise<UnconfirmedChange[]> {
    const copy = `bcdr_peek_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
    return this.withDatabase(name, async (sql) => {
      // A temporary copy decoding as text: the subscriber's own slot is left exactly as it was.
      await canonicalText(sql);
      await sql`SELECT pg_copy_logical_replication_slot(${slot}, ${copy}, true, 'test_decoding')`;
      const rows = await sql<{ data: string }[]>`
        SELECT data FROM pg_logical_slot_peek_changes(${copy}, NULL, NULL, 'include-timestamp', 'on', 'skip-empty-xacts', 'on', 'include-xids', 'off')`;
      return parseTestDecoding(rows.map((r) => r.data));
    });
  }

  async rowsPresent(name: string, table: string, rows: Record<string, string | null>[]): Promise<boolean[]> {
    // Every column the change carries must match (values too large to be in the WAL record are left out).
    return (await this.rowsByKey(name, table, rows)).map((r) => r !== null);
  }

  async keyColumns(name: string, table: string): Promise<string[] | null> {
    return this.withDatabase(name, async (sql) => {
      const cols = await sql<{ col: string }[]>`
        SELECT quote_ident(a.attname) AS col FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
        WHERE i.indrelid = to_regclass(${table}) AND i.indisprimary
        ORDER BY array_position(i.indkey::int2[], a.attnum)`;
      return cols.length ? cols.map((c) => c.col) : null;
    });
  }

  async rowsByKey(name: string, table: string, keys: Record<string, string | null>[]): Promise<(string | null)[]> {
    if (!keys.length) return [];
    return this.withDatabase(name, async (sql) => {
      await canonicalText(sql);
      const [rel] = await sql<{ t: string | null }[]>`SELECT to_regclass(${table})::text AS t`;
      if (!rel?.t) return keys.map(() => null);
      const out: (string | null)[] = [];
      for (const key of keys) {
        const cols = Object.keys(key).filter((c) => key[c] !== UNCHANGED_TOAST);
        if (!cols.length || !cols.every(isIdentifier)) {
          out.push(null);
          continue;
        }
        const where = cols.map((c, i) => `x.${c}::text IS NOT DISTINCT FROM $${i + 1}`).join(' AND ');
        const [row] = await sql.unsafe<{ j: string }[]>(`SELECT to_jsonb(x)::text AS j FROM ${rel.t} x WHERE ${where} LIMIT 1`, cols.map((c) => key[c] ?? null));
        out.push(row?.j ?? null);
      }
      return out;
    });
  }

  async insertRowIfAbsent(name: string, table: string, row: string, keyColumns: string[] | null): Promise<{ outcome: 'inserted' | 'present' | 'conflict'; existing: string | null }> {
    if (keyColumns && !keyColumns.every(isIdentifier)) throw new Error(`bad key columns for ${table}`);
    return this.withDatabase(name, async (conn) => {
      await canonicalText(conn);
      return conn.begin(async (sql) => {
        const [rel] = await sql<{ t: string | null }[]>`SELECT to_regclass(${table})::text AS t`;
        if (!rel?.t) throw new Error(`table ${table} does not exist in ${name}`);
        const cols = (
          await sql<{ col: string }[]>`
            SELECT quote_ident(attname) AS col FROM pg_attribute
            WHERE attrelid = to_regclass(${table}) AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum`
        ).map((c) => c.col);
        const src = `jsonb_populate_record(NULL::${rel.t}, $1::text::jsonb)`;
        if (keyColumns) {
          const match = keyColumns.map((k) => `x.${k} IS NOT DISTINCT FROM r.${k}`).join(' AND ');
          const [found] = await sql.unsafe<{ j: string; same: boolean }[]>(
            `SELECT to_jsonb(x)::text AS j, to_jsonb(x) = $1::text::jsonb AS same FROM ${rel.t} x, ${src} r WHERE ${match} FOR UPDATE OF x`,
            [row],
          );
          if (found) return { outcome: found.same ? ('present' as const) : ('conflict' as const), existing: found.j };
        } else {
          const [found] = await sql.unsafe(`SELECT 1 FROM ${rel.t} x WHERE to_jsonb(x) = $1::text::jsonb LIMIT 1`, [row]);
          if (found) return { outcome: 'present' as const, existing: null };
        }
        const list = cols.join(', ');
        const inserted = await sql.unsafe(`INSERT INTO ${rel.t} (${list}) OVERRIDING SYSTEM VALUE SELECT ${list} FROM ${src} ON CONFLICT DO NOTHING RETURNING 1`, [row]);
        // Nothing inserted with no row under the key: another unique constraint holds the values.
        return { outcome: inserted.length ? ('inserted' as const) : ('conflict' as const), existing: null };
      });
    });
  }

  async close(): Promise<void> {
    await this.admin.end({ timeout: 5 });
  }
}

/** A `schema.table` as format('%I.%I') gives it, as a pg_dump --table pattern (quoted parts are matched literally). */
function qualifiedPattern(table: string): string {
  return table;
}

/** test_decoding's placeholder for a TOASTed value an UPDATE did not change. */
const UNCHANGED_TOAST = '\u0000unchanged-toast-datum';

/** Session settings under which two servers print the same value as the same text (checksums, decoded WAL). */
async function canonicalText(sql: postgres.Sql): Promise<void> {
  await sql`SET TimeZone = 'UTC'`;
  await sql`SET DateStyle = 'ISO, YMD'`;
  await sql`SET IntervalStyle = 'postgres'`;
  await sql`SET extra_float_digits = 3`;
}

/** A column name as quote_ident prints it: a plain identifier, or a double-quoted one. */
function isIdentifier(s: string): boolean {
  return /^[a-z_][a-z0-9_$]*$/.test(s) || /^"(?:[^"]|"")+"$/.test(s);
}

const COLUMN = /("(?:[^"]|"")+"|[^\s[]+)\[((?:[^[\]]|\[\])*)\]:('(?:[^']|'')*'|B'[01]*'|\S+)/g;

/** Parses test_decoding's text output into committed changes (the commit time is on each transaction's COMMIT line). */
export function parseTestDecoding(lines: string[]): UnconfirmedChange[] {
  const out: UnconfirmedChange[] = [];
  let pending: UnconfirmedChange[] = [];
  for (const line of lines) {
    if (line.startsWith('BEGIN')) {
      pending = [];
      continue;
    }
    if (line.startsWith('COMMIT')) {
      const at = /\(at (.+)\)/.exec(line)?.[1] ?? null;
      const when = at ? new Date(at.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')) : null;
      const committedAt = when && !Number.isNaN(when.getTime()) ? when.toISOString() : null;
      for (const c of pending) out.push({ ...c, committedAt });
      pending = [];
      continue;
    }
    const m = /^table (.+?): (INSERT|UPDATE|DELETE): ([\s\S]*)$/.exec(line);
    if (!m) continue;
    const body = m[3]!;
    let row: Record<string, string | null> = {};
    let prevEnd = 0;
    for (const col of body.matchAll(COLUMN)) {
      // An UPDATE that carries its old key lists it first; the new tuple starts after the `new-tuple:` marker between two values.
      if (body.slice(prevEnd, col.index).includes('new-tuple:')) row = {};
      prevEnd = col.index + col[0].length;
      const raw = col[3]!;
      row[col[1]!] = raw === 'null' ? null : raw === 'unchanged-toast-datum' ? UNCHANGED_TOAST : raw.startsWith("'") ? raw.slice(1, -1).replace(/''/g, "'") : raw.startsWith("B'") ? raw.slice(2, -1) : raw;
    }
    pending.push({ table: m[1]!, op: m[2] as UnconfirmedChange['op'], row, committedAt: null });
  }
  return out;
}
