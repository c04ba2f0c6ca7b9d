import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import postgres from 'postgres';
import { DatabaseConflictError, type DumpHandle, type InstanceEngine, type SequenceMarks } from './types.js';

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

  dump(name: string): DumpHandle {
    const child = spawn(this.bin('pg_dump'), ['--format=custom', '--no-password'], {
      env: { ...process.env, ...libpqEnv(this.adminUrl, name) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (stderr.length < 4000) stderr += chunk;
    });
    const done = new Promise<void>((resolve, reject) => {
      child.once('error', (err) => reject(new Error(`could not run pg_dump: ${err.message}`)));
      child.once('close', (code, signal) => {
        if (code === 0) resolve();
        else reject(new Error(`pg_dump exited with ${signal ?? `code ${code}`}: ${stderr.trim() || 'no output'}`));
      });
    });
    return { stream: child.stdout, done, kill: () => child.kill('SIGTERM') };
  }

  async sizeBytes(name: string): Promise<number> {
    const [row] = await this.admin<{ size: string }[]>`SELECT pg_database_size(${name})::text AS size`;
    return Number(row?.size ?? 0);
  }

  async sequences(name: string): Promise<SequenceMarks> {
    const u = new URL(this.adminUrl);
    u.pathname = `/${encodeURIComponent(name)}`;
    const sql = postgres(u.toString(), { max: 1, onnotice: () => {}, connect_timeout: 10 });
    try {
      const rows = await sql<{ name: string; last_value: string | null }[]>`
        SELECT schemaname || '.' || sequencename AS name, last_value::text AS last_value
        FROM pg_sequences ORDER BY 1`;
      return Object.fromEntries(rows.map((r) => [r.name, r.last_value]));
    } finally {
      await sql.end({ timeout: 5 });
    }
  }

  async serverVersion(): Promise<string> {
    const [row] = await this.admin<{ server_version: string }[]>`SHOW server_version`;
    return row?.server_version ?? 'unknown';
  }

  endpoint(name: string): string {
    const u = new URL(this.adminUrl);
    return `postgres://${u.hostname}:${u.port || '5432'}/${encodeURIComponent(name)}`;
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
