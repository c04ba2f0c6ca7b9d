import { describe, expect, it } from 'vitest';
import { stalenessOf } from '../../lib/staleness.js';

const H = 3600_000;
const now = Date.parse('2026-11-23T12:00:00Z');
const row = (o: Partial<Parameters<typeof stalenessOf>[0]> = {}) => ({ lastGoodBackupAt: null, staleAfterHours: null, createdAt: new Date(now - 2 * H), state: 'active' as const, ...o });

describe('stalenessOf', () => {
  it('counts from the newest good backup, or from creation when there is none', () => {
    expect(stalenessOf(row({ lastGoodBackupAt: new Date(now - 25 * H), createdAt: new Date(now - 100 * H) }), 26, now)).toMatchObject({ stale: false, backupAgeSeconds: 25 * 3600, staleAfterHours: 26 });
    expect(stalenessOf(row({ lastGoodBackupAt: new Date(now - 27 * H) }), 26, now)).toMatchObject({ stale: true, backupAgeSeconds: 27 * 3600 });
    expect(stalenessOf(row({ createdAt: new Date(now - 27 * H) }), 26, now)).toMatchObject({ stale: true, lastGoodBackupAt: null });
    expect(stalenessOf(row(), 26, now)).toMatchObject({ stale: false, lastGoodBackupAt: null, backupAgeSeconds: 2 * 3600 });
  });

  it('is stale only past the threshold, and the instance threshold wins over the default', () => {
    expect(stalenessOf(row({ lastGoodBackupAt: new Date(now - 26 * H) }), 26, now).stale).toBe(false);
    expect(stalenessOf(row({ lastGoodBackupAt: new Date(now - 26 * H - 1000) }), 26, now).stale).toBe(true);
    expect(stalenessOf(row({ lastGoodBackupAt: new Date(now - 3 * H), staleAfterHours: 2 }), 26, now)).toMatchObject({ stale: true, staleAfterHours: 2 });
    expect(stalenessOf(row({ lastGoodBackupAt: new Date(now - 30 * H), staleAfterHours: 48 }), 26, now)).toMatchObject({ stale: false, staleAfterHours: 48 });
  });

  it('never calls an instance being provisioned stale, and a clock behind the backup gives age 0', () => {
    expect(stalenessOf(row({ state: 'provisioning', createdAt: new Date(now - 100 * H) }), 26, now)).toMatchObject({ stale: false, backupAgeSeconds: null });
    expect(stalenessOf(row({ lastGoodBackupAt: new Date(now + 60_000) }), 26, now)).toMatchObject({ stale: false, backupAgeSeconds: 0 });
  });
});
