import { eq } from 'drizzle-orm';
import type { Database } from '../db/client.js';
import { instances, type InstanceRow, type Readiness, type ReplicaRow } from '../db/schema/index.js';
import { audit } from './audit.js';

/** What the readiness of one production instance is judged on. */
export interface ReadinessFacts {
  now: Date;
  rpoTargetSeconds: number;
  backupMaxAgeHours: number;
  /** How old a lag measurement may be before it no longer counts (a few health checks). */
  measureMaxAgeSeconds: number;
  /** The paired region's server answers. */
  secondaryReachable: boolean;
  /** As last seen on the secondary; null when it could not be asked. */
  subscriptionEnabled: boolean | null;
  replica: ReplicaRow | undefined;
  lastGoodBackupAt: Date | null;
}

/**
 * Whether a failover of the instance would work now: ready, or degraded with
 * each reason in words an operator can act on. Pure.
 */
export function assessReadiness(inst: Pick<InstanceRow, 'state' | 'activeRegion' | 'homeRegion'>, f: ReadinessFacts): Readiness {
  const reasons: string[] = [];
  const codes: string[] = [];
  // Each reason has a stable code: a change of codes is an event, a change of numbers in the words is not.
  const say = (code: string, text: string) => {
    codes.push(code);
    reasons.push(text);
  };
  const rep = f.replica;
  if (inst.state === 'failed_over' || inst.activeRegion !== inst.homeRegion) {
    say('failed-over', `failed over: served from ${inst.activeRegion}, with no geo-secondary until it fails back`);
  } else if (!rep) {
    say('no-secondary', 'no geo-secondary yet: the region monitor makes one');
  } else {
    if (!f.secondaryReachable) say('secondary-unreachable', "the secondary's region does not answer");
    if (rep.state === 'seeding') say('seeding', 'the geo-secondary is still copying: it cannot be promoted yet');
    if (f.subscriptionEnabled === false) say('subscription-disabled', 'the subscription is disabled: nothing reaches the secondary (the monitor re-enables it)');
    else if (rep.state === 'broken') say('broken', `replication is broken: ${rep.error ?? 'unknown error'} (the monitor remakes it)`);
    if (rep.drift?.length) say('drift', `schema drift: the secondary lacks ${rep.drift.join(', ')} (the monitor repairs it)`);
    if (rep.lagSeconds === null || !rep.checkedAt) say('lag-unmeasured', 'replication lag not measured yet');
    else if (rep.lagSeconds > f.rpoTargetSeconds) say('lag-above-target', `replication lag ${rep.lagSeconds.toFixed(1)} s is above the RPO target of ${f.rpoTargetSeconds} s`);
    if (rep.checkedAt && (f.now.getTime() - rep.checkedAt.getTime()) / 1000 > f.measureMaxAgeSeconds) {
      say('lag-stale', `replication lag last measured ${Math.round((f.now.getTime() - rep.checkedAt.getTime()) / 1000)} s ago`);
    }
  }
  if (!f.lastGoodBackupAt) say('no-backup', 'no completed backup');
  else if ((f.now.getTime() - f.lastGoodBackupAt.getTime()) / 3600_000 > f.backupMaxAgeHours) {
    say('backup-old', `the last good backup is ${((f.now.getTime() - f.lastGoodBackupAt.getTime()) / 3600_000).toFixed(1)} h old (more than ${f.backupMaxAgeHours} h)`);
  }
  return {
    state: reasons.length ? 'degraded' : 'ready',
    reasons,
    codes,
    checkedAt: f.now.toISOString(),
    rpoTargetSeconds: f.rpoTargetSeconds,
    secondaryReachable: f.secondaryReachable,
    subscriptionEnabled: f.subscriptionEnabled,
    lagBytes: rep?.lagBytes ?? null,
    lagSeconds: rep?.lagSeconds ?? null,
    caughtUpAt: rep?.caughtUpAt?.toISOString() ?? null,
    drift: rep?.drift ?? [],
    lastGoodBackupAt: f.lastGoodBackupAt?.toISOString() ?? null,
  };
}

/**
 * Stores a readiness when it changed (state or reason codes), or when the stored
 * one is older than `refreshSeconds`; a change is audited
 * (`instance.readiness`), so it is on the event stream. Returns whether the
 * state or the reasons changed.
 */
export async function recordReadiness(db: Database, inst: InstanceRow, r: Readiness, refreshSeconds: number): Promise<boolean> {
  const prev = inst.readiness;
  const changed = !prev || prev.state !== r.state || (prev.codes ?? prev.reasons).join('\n') !== r.codes.join('\n');
  if (!changed && Date.parse(r.checkedAt) - Date.parse(prev.checkedAt) < refreshSeconds * 1000) return false;
  await db.transaction(async (tx) => {
    await tx.update(instances).set({ readiness: r }).where(eq(instances.id, inst.id));
    if (changed) {
      await audit(tx, {
        actor: 'system:monitor',
        action: 'instance.readiness',
        instanceId: inst.id,
        subject: inst.name,
        details: { from: prev?.state ?? null, to: r.state, codes: r.codes, reasons: r.reasons, lagSeconds: r.lagSeconds, rpoTargetSeconds: r.rpoTargetSeconds },
      });
    }
  });
  inst.readiness = r;
  return changed;
}

