import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import postgres from 'postgres';
import { createHash, randomUUID } from 'node:crypto';
import { DatabaseConflictError, type DumpHandle, type DumpOptions, type InstanceEngine, type RestoreHandle, type SequenceMarks, type SwapNames } from './types.js';

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
    this.admin = postgres(adminUrl, { max: 2, onnotice: () => {}, connect_timeout: 10 });
    this.binDir = resolvePgBinDir(opts.binDir);
  }

  private bin(tool: string): string {
    return this.binDir ? path.join(this.binDir, tool) : tool;
  }

  async createDatabase(name: string, ownerTag: string): Promise<void> {
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
  private runTool(tool: string, args: string[], name: string, appName: string, stdout: 'pipe' | 'ignore' | number) {
    const child = spawn(this.bin(tool), args, {
      env: { ...process.env, ...libpqEnv(this.adminUrl, name), PGAPPNAME: appName },
      stdio: ['ignore', stdout, 'pipe'],
    });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      if (stderr.length < 4000) stderr += chunk;
    });
    // A tool's DETAIL, CONTEXT and "Command was" lines can quote tenant rows: they never reach run errors or histories.
    const cleaned = () =>
      stderr
        .split('\n')
        .filter((l) => !/^\s*(pg_\w+: )?(DETAIL|CONTEXT|HINT|LINE \d+|QUERY):|^\s*(pg_\w+: )?(error: )?Command was:|^\s*\^\s*$/.test(l))
        .join('\n')
        .trim()
        .slice(0, 1000);
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
      tool = this.runTool('pg_dump', ['--format=custom', '--no-password'], name, appName, opts.fd ?? 'pipe');
      await this.sessionOf(appName, tool.exited);
    });
    return { stream: opts.fd === undefined ? tool.child.stdout! : null, done: tool.done, kill: tool.kill };
  }

  restore(name: string, archiveFile: string, opts: { jobs?: number } = {}): RestoreHandle {
    const args = ['--exit-on-error', '--no-password', `--dbname=${name}`];
    if (opts.jobs && opts.jobs > 1) args.push(`--jobs=${opts.jobs}`);
    args.push(archiveFile);
    const tool = this.runTool('pg_restore', args, name, `bcdr-restore-${randomUUID()}`, 'ignore');
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
  private async endSessions(name: string, keepApp?: string): Promise<number> {
    const rows = await this.admin`
      SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE datname = ${name} AND pid <> pg_backend_pid() AND application_name IS DISTINCT FROM ${keepApp ?? null}`;
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
    await this.endSessions(name, appName);
  }

  /** Runs `fn` on a short-lived session on database `name`, even a suspended one. */
  private async withDatabase<T>(name: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
    const appName = `bcdr-engine-${randomUUID()}`;
    const u = new URL(this.adminUrl);
    u.pathname = `/${encodeURIComponent(name)}`;
    const sql = postgres(u.toString(), { max: 1, onnotice: () => {}, connect_timeout: 10, connection: { application_name: appName } });
    try {
      await this.admitOnly(name, appName, async () => {
        await sql`SELECT 1`;
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

  async ping(): Promise<boolean> {
    try {
      await this.admin`SELECT 1`;
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    await this.admin.end({ timeout: 5 });
  }
}
