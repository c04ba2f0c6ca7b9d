import { describe, expect, it } from 'vitest';
import { connectInstance, EndpointSwitchError, isEndpointGone } from '../../client/index.js';

/** An error shaped like postgres.js's PostgresError: `code` is the SQLSTATE. */
const pgError = (code: string, message: string) => Object.assign(new Error(message), { name: 'PostgresError', code, severity: 'ERROR' });
/** An error shaped like a socket or postgres.js connection failure. */
const netError = (code: string) => Object.assign(new Error(`write ${code} 127.0.0.1:5432`), { code, errno: code, address: '127.0.0.1', port: 5432 });

describe('isEndpointGone', () => {
  it.each(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENOTFOUND', 'EPIPE', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT'])(
    'is true for the network failure %s',
    (code) => expect(isEndpointGone(netError(code))).toBe(true),
  );

  it.each([
    ['08006', 'connection failure'],
    ['08001', 'could not connect'],
    ['57P01', 'terminating connection due to administrator command'],
    ['57P02', 'terminating connection because of crash of another server process'],
    ['57P03', 'the database system is starting up'],
    ['3D000', 'database "contoso" does not exist'],
    ['25006', 'cannot execute INSERT in a read-only transaction'],
    ['55000', 'database "contoso" is not currently accepting connections'],
  ])('is true for SQLSTATE %s (%s)', (code, message) => expect(isEndpointGone(pgError(code, message))).toBe(true));

  it.each([
    ['23505', 'duplicate key value violates unique constraint "orders_pkey"'],
    ['42601', 'syntax error at or near "SELEC"'],
    ['42P01', 'relation "orders" does not exist'],
    ['40001', 'could not serialize access due to concurrent update'],
    ['55000', 'object not in prerequisite state'],
    ['55P03', 'could not obtain lock on row in relation "orders"'],
    ['28P01', 'password authentication failed for user "tenant"'],
  ])('is false for SQLSTATE %s (%s)', (code, message) => expect(isEndpointGone(pgError(code, message))).toBe(false));

  it('is false for things that are not errors with a code', () => {
    for (const x of [undefined, null, 'ECONNREFUSED', 42, new Error('ECONNREFUSED'), { code: 57 }, { code: 'UNDEFINED_VALUE' }]) {
      expect(isEndpointGone(x)).toBe(false);
    }
  });
});

describe('connectInstance against an API that refuses', () => {
  const token = 'client-unit-secret-token';
  const answer = (status: number, body: unknown) => (async () => new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } })) as typeof fetch;

  it("shows the API's message, never the token", async () => {
    const refusing = answer(404, { error: { code: 'not_found', message: `no instance named nope (asked with ${token})` } });
    const err = await connectInstance({ api: 'http://api.invalid', token, instance: 'nope', fetch: refusing }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/404.*no instance named nope/);
    expect((err as Error).message).not.toContain(token);
  });

  it('names an unreachable API without the token', async () => {
    const unreachable = (async () => {
      throw new TypeError('fetch failed');
    }) as typeof fetch;
    const err = await connectInstance({ api: 'http://api.invalid', token, instance: 'x', fetch: unreachable }).catch((e: Error) => e);
    expect((err as Error).message).toMatch(/BCDR API unreachable at http:\/\/api\.invalid: fetch failed/);
    expect((err as Error).message).not.toContain(token);
  });

  it('sends the bearer token and reads autoSwitchEnabled (or infers it from the alternate)', async () => {
    const seen: string[] = [];
    const recording = (async (_url: string, init: RequestInit) => {
      seen.push(new Headers(init.headers).get('authorization') ?? '');
      return new Response(JSON.stringify({ endpoint: 'postgres://u@127.0.0.1:1/db', activeRegion: 'primary', failedOver: false, alternate: { name: 'db--s', region: 'secondary', endpoint: 'postgres://u@127.0.0.1:2/db--s' } }));
    }) as typeof fetch;
    const client = await connectInstance({ api: 'http://api.invalid/', token, instance: 'db', fetch: recording });
    expect(seen).toEqual([`Bearer ${token}`]);
    expect(client.autoSwitchEnabled).toBe(true);
    expect(client.endpoint).toBe('postgres://u@127.0.0.1:1/db');
    await client.close();
  });

  it('EndpointSwitchError is an Error with a cause', () => {
    const cause = pgError('25006', 'read-only');
    const e = new EndpointSwitchError('gone', { cause });
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('EndpointSwitchError');
    expect(e.cause).toBe(cause);
  });
});
