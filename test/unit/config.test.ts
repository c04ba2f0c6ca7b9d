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
