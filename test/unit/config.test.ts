import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../lib/config.js';

const regions = JSON.stringify([
  { name: 'primary', pair: 'secondary', postgresUrl: 'postgres://u:secret@db1:5432/postgres', blobDir: '/b/p' },
  { name: 'secondary', pair: 'primary', postgresUrl: 'postgres://u:secret@db2:5432/postgres', blobDir: '/b/s' },
]);
const base = { CATALOG_DATABASE_URL: 'postgres://c@h/db', REGIONS: regions, BACKUP_KEYS: JSON.stringify({ k1: Buffer.alloc(32, 1).toString('base64') }), BACKUP_KEY_ACTIVE: 'k1' };

describe('configuration', () => {
  it('accepts a minimal environment and fills the defaults', () => {
    const cfg = loadConfig(base);
    expect(cfg).toMatchObject({ TEMPORAL_ADDRESS: 'localhost:7233', TEMPORAL_NAMESPACE: 'default', TEMPORAL_TASK_QUEUE: 'bcdr', API_PORT: 8080, API_TOKENS: [] });
    expect(cfg.REGIONS.map((r) => r.name)).toEqual(['primary', 'secondary']);
  });

  it('names every bad setting at once, without echoing secrets', () => {
    const run = () => loadConfig({ REGIONS: 'not json', API_PORT: 'eighty', API_TOKENS: '[{"token":"short","identity":"x","roles":["root"]}]' });
    expect(run).toThrow(ConfigError);
    try {
      run();
    } catch (err) {
      const msg = (err as Error).message;
      expect(msg).toMatch(/CATALOG_DATABASE_URL/);
      expect(msg).toMatch(/REGIONS: must be a JSON array/);
      expect(msg).toMatch(/API_PORT/);
      expect(msg).toMatch(/API_TOKENS/);
      expect(msg).not.toContain('short');
    }
  });

  it('refuses regions that do not pair with each other', () => {
    const lonely = JSON.stringify([{ name: 'primary', pair: 'nowhere', postgresUrl: 'postgres://h/p', blobDir: '/b' }]);
    expect(() => loadConfig({ ...base, REGIONS: lonely })).toThrow(/must name an existing, different region as its pair/);
  });

  it('refuses paired regions on one server (a geo-secondary keeps its primary\'s database name)', () => {
    const one = JSON.stringify([
      { name: 'primary', pair: 'secondary', postgresUrl: 'postgres://u:secret@db1:5432/postgres', blobDir: '/b/p' },
      { name: 'secondary', pair: 'primary', postgresUrl: 'postgres://other@db1/postgres', blobDir: '/b/s' },
    ]);
    expect(() => loadConfig({ ...base, REGIONS: one })).toThrow(/use the same PostgreSQL server \(db1:5432\)/);
  });

  it('refuses duplicate tokens', () => {
    const t = { token: 'same-token-123', identity: 'a', roles: ['viewer'] };
    expect(() => loadConfig({ ...base, API_TOKENS: JSON.stringify([t, { ...t, identity: 'b' }]) })).toThrow(/tokens must be unique/);
  });
});

describe('region stores', () => {
  const withStores = (primary: unknown, secondary: unknown = { kind: 'fs', dir: '/b/s' }, extra: Record<string, unknown> = {}) =>
    loadConfig({
      ...base,
      REGIONS: JSON.stringify([
        { name: 'primary', pair: 'secondary', postgresUrl: 'postgres://u@db1/postgres', store: primary, ...extra },
        { name: 'secondary', pair: 'primary', postgresUrl: 'postgres://u@db2/postgres', store: secondary },
      ]),
    });

  it('takes the three store kinds, with blobDir as shorthand for a folder', () => {
    const cfg = withStores({ kind: 's3', endpoint: 'http://127.0.0.1:7070', bucket: 'bcdr-eu', prefix: 'prod/a', forcePathStyle: true, credentialsEnv: 'EU_S3', objectLock: { mode: 'COMPLIANCE' } }, { kind: 'azure', connectionStringEnv: 'US_BLOB', container: 'bcdr', prefix: 'prod' });
    expect(cfg.REGIONS[0]!.store).toMatchObject({ kind: 's3', region: 'us-east-1', objectLock: { mode: 'COMPLIANCE' } });
    expect(cfg.REGIONS[1]!.store).toMatchObject({ kind: 'azure', container: 'bcdr' });
    expect(cfg.REGIONS.every((r) => r.encryption)).toBe(true);
    expect(loadConfig(base).REGIONS[0]!.store).toEqual({ kind: 'fs', dir: '/b/p' });
  });

  it.each([
    ['a prefix that climbs out', { kind: 's3', bucket: 'bcdr-eu', prefix: '../other' }, /prefix/],
    ['an absolute prefix', { kind: 's3', bucket: 'bcdr-eu', prefix: '/etc' }, /prefix/],
    ['a prefix with control characters', { kind: 'azure', connectionStringEnv: 'X', container: 'bcdr', prefix: 'a\u0000b\nc' }, /prefix/],
    ['a bucket that is not an S3 name', { kind: 's3', bucket: 'Bad_Bucket/../x' }, /bucket/],
    ['a huge bucket name', { kind: 's3', bucket: 'b'.repeat(10_000) }, /bucket/],
    ['a container that is not an Azure name', { kind: 'azure', connectionStringEnv: 'X', container: '--nope' }, /container/],
    ['two ways to reach Azure', { kind: 'azure', connectionString: 'AccountKey=c2VjcmV0', accountUrl: 'http://x', container: 'bcdr' }, /exactly one of/],
    ['an unknown kind', { kind: 'ftp', dir: '/x' }, /kind|store/],
  ])('refuses %s with a message naming the setting', (_what, store, message) => {
    expect(() => withStores(store)).toThrow(message);
    try {
      withStores(store);
    } catch (err) {
      // A connection string is a credential: never echoed back.
      expect((err as Error).message).not.toContain('c2VjcmV0');
    }
  });

  it('needs backup keys while a region encrypts, and none when every region turns encryption off', () => {
    const regions = JSON.stringify([
      { name: 'primary', pair: 'secondary', postgresUrl: 'postgres://u@db1/postgres', blobDir: '/b/p', encryption: false },
      { name: 'secondary', pair: 'primary', postgresUrl: 'postgres://u@db2/postgres', blobDir: '/b/s', encryption: false },
    ]);
    expect(loadConfig({ CATALOG_DATABASE_URL: base.CATALOG_DATABASE_URL, REGIONS: regions }).REGIONS[0]!.encryption).toBe(false);
    expect(() => loadConfig({ CATALOG_DATABASE_URL: base.CATALOG_DATABASE_URL, REGIONS: base.REGIONS })).toThrow(/BACKUP_KEYS/);
    const secret = Buffer.alloc(16, 7).toString('base64');
    const short = () => loadConfig({ ...base, BACKUP_KEYS: JSON.stringify({ k1: secret }) });
    expect(short).toThrow(/32 bytes/);
    try {
      short();
    } catch (err) {
      expect((err as Error).message).not.toContain(secret);
    }
  });
});
