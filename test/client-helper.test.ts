import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { connectInstance, EndpointSwitchError, isEndpointGone, type InstanceClient, type InstanceClientOptions } from '../client/index.js';
import { loadConfig } from '../lib/config.js';
import { uniqueName } from './helpers.js';

/**
 * The client helper against real PostgreSQL: database A on the primary
 * cluster, B on the secondary, and a tiny HTTP server standing in for the
 * BCDR API's endpoint route. "Failing over" fences the old database the way
 * the monitor does (read-only, sessions terminated) and makes the fake API
 * answer the other one.
 */
const token = 'client-helper-secret-token';
const cfg = loadConfig(inject('bcdrEnv'));
const adminUrl = (region: string, db = 'postgres') => {
  const u = new URL(cfg.REGIONS.find((r) => r.name === region)!.postgresUrl);
  u.pathname = `/${db}`;
  return u;
};
/** The endpoint as the API gives it: user, host, port, database; no password (it goes in the postgres options). */
const endpointOf = (region: string, db: string) => {
  const u = adminUrl(region, db);
  u.password = '';
  return u.toString();
};

const dbA = uniqueName('client_a').replace('-', '_');
const dbB = uniqueName('client_b').replace('-', '_');
const A = { region: 'primary', db: dbA, endpoint: endpointOf('primary', dbA) };
const B = { region: 'secondary', db: dbB, endpoint: endpointOf('secondary', dbB) };

/** What the fake API answers: the current endpoint, or an error. */
const api: { serving: typeof A; down: boolean; asked: number; auth: Set<string> } = { serving: A, down: false, asked: 0, auth: new Set() };
let server: Server;
let apiUrl = '';

const admin = (region: string, db = 'postgres') => postgres(adminUrl(region, db).toString(), { max: 1, onnotice: () => {}, fetch_types: false });
async function onDb<T>(d: typeof A, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = admin(d.region, d.db);
  try {
    return await fn(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}
/** Fences a database as the monitor fences an old primary: new sessions read-only, current ones terminated. */
async function fence(d: typeof A, on = true) {
  const sql = admin(d.region);
  try {
    if (on) await sql.unsafe(`ALTER DATABASE ${d.db} SET default_transaction_read_only = on`);
    else await sql.unsafe(`ALTER DATABASE ${d.db} RESET default_transaction_read_only`);
    await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${d.db} AND pid <> pg_backend_pid()`;
  } finally {
    await sql.end({ timeout: 5 });
  }
}
const rows = (d: typeof A, id: string) => onDb(d, async (sql) => (await sql<{ n: number }[]>`SELECT count(*)::int AS n FROM items WHERE id = ${id}`)[0]!.n);
/** How many times `insert` calls ran (`run` calls at most twice), and what they threw (`run` must rethrow that very error). */
let attempts = 0;
let thrown: unknown[] = [];
const insert = (id: string) => async (sql: postgres.Sql) => {
  attempts++;
  try {
    return await sql`INSERT INTO items (id) VALUES (${id})`;
  } catch (err) {
    thrown.push(err);
    throw err;
  }
};

/** Everything the client emitted, in order, and every error it threw: none may carry the token. */
const seen: { events: [string, unknown][]; allEvents: unknown[]; errors: unknown[] } = { events: [], allEvents: [], errors: [] };
function watch(client: InstanceClient) {
  for (const name of ['EndpointSwitchRequired', 'EndpointSwitched'] as const) {
    client.on(name, (e: unknown) => {
      seen.events.push([name, e]);
      seen.allEvents.push(e);
    });
  }
  return client;
}
const eventNames = () => seen.events.map(([n]) => n);
async function rejection(p: Promise<unknown>): Promise<any> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'the call should have failed').toBeDefined();
  seen.errors.push(err);
  return err;
}

const options = (extra: Partial<InstanceClientOptions> = {}): InstanceClientOptions => ({
  api: apiUrl,
  token,
  instance: 'contoso',
  // A password and a database that the endpoint must override: where to connect comes from the API only.
  postgres: { max: 5, onnotice: () => {}, fetch_types: false, connect_timeout: 5, password: adminUrl('primary').password || undefined, database: 'postgres' },
  ...extra,
});

beforeAll(async () => {
  for (const d of [A, B]) {
    const sql = admin(d.region);
    await sql.unsafe(`CREATE DATABASE ${d.db}`);
    await sql.end({ timeout: 5 });
    await onDb(d, (s) => s`CREATE TABLE items (id text PRIMARY KEY)`);
  }
  server = createServer((req, res) => {
    api.asked++;
    api.auth.add(req.headers.authorization ?? '');
    const send = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    if (req.headers.authorization !== `Bearer ${token}`) return send(401, { error: { code: 'unauthorized', message: 'unknown bearer token' } });
    if (req.url !== '/v1/instances/contoso/endpoint') return send(404, { error: { code: 'not_found', message: `no instance at ${req.url}` } });
    if (api.down) return send(503, { error: { code: 'unavailable', message: 'catalog unreachable' } });
    const s = api.serving;
    send(200, { endpoint: s.endpoint, activeRegion: s.region, failedOver: s === B, autoSwitchEnabled: true, alternate: null, multiHost: null });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  apiUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server?.close();
  for (const d of [A, B]) {
    const sql = admin(d.region);
    await sql.unsafe(`DROP DATABASE IF EXISTS ${d.db} WITH (FORCE)`).catch(() => {});
    await sql.end({ timeout: 5 });
  }
});

describe('client helper: following an endpoint switch', () => {
  let client: InstanceClient;
  afterAll(async () => client?.close());

  it('connects to the endpoint the API gives', async () => {
    client = watch(await connectInstance(options()));
    expect(client.endpoint).toBe(A.endpoint);
    expect(client.autoSwitchEnabled).toBe(true);
    expect(await client.run((sql) => sql`SELECT current_database() AS db`)).toEqual([{ db: A.db }]);
    expect(api.auth).toEqual(new Set([`Bearer ${token}`]));
  });

  it('a retry-safe call fails over: EndpointSwitchRequired then EndpointSwitched, the row lands in B once', async () => {
    seen.events.length = 0;
    await fence(A);
    api.serving = B;
    attempts = 0;
    thrown = [];
    await client.run(insert('r1'), { retrySafe: true });
    expect(attempts).toBe(2);
    expect(eventNames()).toEqual(['EndpointSwitchRequired', 'EndpointSwitched']);
    expect(seen.events[0]![1]).toMatchObject({ instance: 'contoso', from: A.endpoint, error: expect.any(String) });
    expect(seen.events[1]![1]).toEqual({ instance: 'contoso', from: A.endpoint, to: B.endpoint, activeRegion: 'secondary' });
    expect(client.endpoint).toBe(B.endpoint);
    expect(await rows(B, 'r1')).toBe(1);
    expect(await rows(A, 'r1')).toBe(0);
  });

  it('a call that is not retry-safe rethrows its error, but the pool is switched for the next one', async () => {
    seen.events.length = 0;
    await fence(A, false); // failback: A writable again, B fenced
    await fence(B);
    api.serving = A;
    attempts = 0;
    thrown = [];
    const err = await rejection(client.run(insert('r2')));
    expect(attempts).toBe(1);
    expect(err).toBe(thrown[0]);
    expect(isEndpointGone(err)).toBe(true); // 25006 from the fenced database, or the terminated session's error
    expect(eventNames()).toEqual(['EndpointSwitchRequired', 'EndpointSwitched']);
    expect(client.endpoint).toBe(A.endpoint);
    expect(await rows(A, 'r2')).toBe(0);
    expect(await rows(B, 'r2')).toBe(0);
    await client.run(insert('r3'));
    expect(await rows(A, 'r3')).toBe(1);
  });

  it('an unchanged endpoint throws the original error and switches nothing', async () => {
    seen.events.length = 0;
    await fence(A);
    const before = api.asked;
    attempts = 0;
    thrown = [];
    const err = await rejection(client.run(insert('r4'), { retrySafe: true }));
    expect(attempts).toBe(1);
    expect(err).toBe(thrown[0]);
    expect(api.asked - before).toBe(1); // waitForSwitchMs 0: asked once
    expect(eventNames()).toEqual(['EndpointSwitchRequired']);
    expect(client.endpoint).toBe(A.endpoint);
    expect(await rows(A, 'r4')).toBe(0);
  });

  it('other errors are rethrown untouched, without asking the API', async () => {
    seen.events.length = 0;
    const before = api.asked;
    const err = await rejection(client.run((sql) => sql`SELECT * FROM no_such_table`, { retrySafe: true }));
    expect(err.code).toBe('42P01');
    expect(api.asked).toBe(before);
    expect(seen.events).toEqual([]);
  });
});

describe('client helper: waiting for the switch', () => {
  let client: InstanceClient;
  afterAll(async () => client?.close());

  it('concurrent failing calls share one switch, found by polling the API', async () => {
    api.serving = A; // A is fenced (previous describe); B becomes writable, but the API says so only later
    await fence(B, false);
    client = watch(await connectInstance(options({ waitForSwitchMs: 10_000, pollMs: 100 })));
    await client.run((sql) => sql`SELECT 1`);
    seen.events.length = 0;
    const before = api.asked;
    const ids = ['c1', 'c2', 'c3', 'c4', 'c5'];
    const calls = Promise.all(ids.map((id) => client.run(insert(id), { retrySafe: true })));
    await sleep(400);
    api.serving = B;
    await calls;
    expect(eventNames()).toEqual(['EndpointSwitchRequired', 'EndpointSwitched']);
    expect(api.asked - before).toBeGreaterThanOrEqual(3); // polled while unchanged
    expect(api.asked - before).toBeLessThan(20); // one poller, not one per call
    expect(client.endpoint).toBe(B.endpoint);
    for (const id of ids) {
      expect(await rows(B, id)).toBe(1);
      expect(await rows(A, id)).toBe(0);
    }
  });

  it('an API that cannot answer ends the wait with EndpointSwitchError, carrying the call error and the API message', async () => {
    seen.events.length = 0;
    await fence(B);
    thrown = [];
    const c2 = watch(await connectInstance(options({ waitForSwitchMs: 300, pollMs: 100 })));
    try {
      api.down = true; // after connecting: the API is unreachable while the endpoint is gone
      const err = await rejection(c2.run(insert('d1'), { retrySafe: true }));
      expect(err).toBeInstanceOf(EndpointSwitchError);
      expect(err.cause).toBe(thrown[0]);
      expect(err.message).toMatch(/contoso.*catalog unreachable/);
      expect(isEndpointGone(err.cause)).toBe(true);
      expect(c2.endpoint).toBe(B.endpoint);
      expect(eventNames()).not.toContain('EndpointSwitched');
    } finally {
      api.down = false;
      await c2.close();
    }
  });

  it('the token is in no error message and no event payload', () => {
    expect(seen.errors.length).toBeGreaterThan(0);
    for (const e of seen.errors) {
      expect(String((e as Error).message)).not.toContain(token);
      expect(String((e as Error).cause instanceof Error ? (e as Error).cause : '')).not.toContain(token);
    }
    expect(seen.allEvents.length).toBeGreaterThan(0);
    expect(JSON.stringify(seen.allEvents)).not.toContain(token);
  });
});
