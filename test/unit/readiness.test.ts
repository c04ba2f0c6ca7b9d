import { describe, expect, it } from 'vitest';
import type { ReplicaRow } from '../../db/schema/index.js';
import { assessReadiness, type ReadinessFacts } from '../../lib/readiness.js';

const now = new Date('2026-11-23T10:00:00Z');
const replica = (over: Partial<ReplicaRow> = {}): ReplicaRow => ({
  instanceId: 'i1',
  direction: 'forward',
  sourceRegion: 'east',
  sourceDatabase: 'db',
  targetRegion: 'west',
  targetDatabase: 'db',
  subscription: 'bcdr_x',
  state: 'streaming',
  lagBytes: 0,
  lagSeconds: 0.4,
  caughtUpAt: new Date(now.getTime() - 1000),
  checkedAt: new Date(now.getTime() - 2000),
  sampleLsn: null,
  sampleAt: null,
  drift: null,
  error: null,
  createdAt: now,
  updatedAt: now,
  ...over,
});
const facts = (over: Partial<ReadinessFacts> = {}): ReadinessFacts => ({
  now,
  rpoTargetSeconds: 5,
  backupMaxAgeHours: 26,
  measureMaxAgeSeconds: 30,
  secondaryReachable: true,
  subscriptionEnabled: true,
  replica: replica(),
  lastGoodBackupAt: new Date(now.getTime() - 3600_000),
  ...over,
});
const active = { state: 'active' as const, activeRegion: 'east', homeRegion: 'east' };

describe('failover readiness', () => {
  it('is ready when every check passes', () => {
    const r = assessReadiness(active, facts());
    expect(r).toMatchObject({ state: 'ready', reasons: [], lagSeconds: 0.4, rpoTargetSeconds: 5, checkedAt: now.toISOString() });
  });

  it.each([
    ['the secondary region is down', facts({ secondaryReachable: false }), /does not answer/],
    ['the subscription is disabled', facts({ subscriptionEnabled: false }), /subscription is disabled/],
    ['lag above the RPO target', facts({ replica: replica({ lagSeconds: 9.5 }) }), /lag 9\.5 s is above the RPO target of 5 s/],
    ['lag never measured', facts({ replica: replica({ lagSeconds: null, checkedAt: null }) }), /not measured yet/],
    ['a stale measurement', facts({ replica: replica({ checkedAt: new Date(now.getTime() - 120_000) }) }), /last measured 120 s ago/],
    ['schema drift', facts({ replica: replica({ state: 'drift', drift: ['public.orders'] }) }), /schema drift: the secondary lacks public\.orders/],
    ['broken replication', facts({ replica: replica({ state: 'broken', error: 'slot missing' }) }), /replication is broken: slot missing/],
    ['still seeding', facts({ replica: replica({ state: 'seeding' }) }), /still copying/],
    ['no geo-secondary', facts({ replica: undefined }), /no geo-secondary/],
    ['no backup', facts({ lastGoodBackupAt: null }), /no completed backup/],
    ['an old backup', facts({ lastGoodBackupAt: new Date(now.getTime() - 30 * 3600_000) }), /30\.0 h old \(more than 26 h\)/],
  ])('is degraded when %s, saying why', (_what, f, reason) => {
    const r = assessReadiness(active, f);
    expect(r.state).toBe('degraded');
    expect(r.reasons.some((x) => reason.test(x)), r.reasons.join('; ')).toBe(true);
  });

  it('honours a per-instance RPO target', () => {
    const r = assessReadiness(active, facts({ rpoTargetSeconds: 0.2 }));
    expect(r.reasons).toEqual(['replication lag 0.4 s is above the RPO target of 0.2 s']);
    expect(r.codes).toEqual(['lag-above-target']);
  });

  it('is degraded while failed over, whatever the replica row says', () => {
    const r = assessReadiness({ state: 'failed_over', activeRegion: 'west', homeRegion: 'east' }, facts());
    expect(r.reasons).toEqual(['failed over: served from west, with no geo-secondary until it fails back']);
  });
});
