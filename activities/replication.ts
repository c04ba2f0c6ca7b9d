import { createHash } from 'node:crypto';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { and, eq, inArray, sql } from 'drizzle-orm';
import { backups, divergentRows, failovers, instances, regions as regionsTable, replicas, type InstanceRow, type LossEstimate, type MeasuredLoss, type ReplicaRow } from '../db/schema/index.js';
import { audit } from '../lib/audit.js';
import { PUBLICATION, ensureReplication, failoverCandidates, legacySecondaryDatabase, type ReplicationPair, missingTables, recordReplica, removeGeoSecondary, removeReplication, replicationPair, type SeedProgress } from '../lib/replication.js';
import { FailureTypes, Runbooks } from '../workflows/contract.js';
import { callerWorkflowId, loadInstance, region, type ActivityDeps } from './deps.js';
import { ownerTag } from './names.js';
import type { UnconfirmedChange } from '../lib/engine/types.js';
import { assessReadiness, recordReadiness } from '../lib/readiness.js';
import { recordStaleness } from '../lib/staleness.js';

const HEARTBEAT_MS = 2_000;
/** How far past the highest number in use an unplanned promotion moves each sequence: the old primary may have issued some that never arrived. */
const UNPLANNED_SEQUENCE_GAP = 10_000n;

/** What the region monitor learned from one health check. */
export interface RegionHealthCheck {
  region: string;
  healthy: boolean;
  latencyMs: number | null;
  failedChecks: number;
  /** Set once the failed checks reach the threshold: when the outage was declared. */
  outageSince: string | null;
}

/** Settles like `p`, or rejects after `ms`. */
function within<T>(ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** One instance a failover acts on. */
export interface FailoverTarget {
  instanceId: string;
  name: string;
}

/** Runs `fn` while heartbeating `progress()` every two seconds. */
async function heartbeating<T>(progress: () => unknown, fn: () => Promise<T>): Promise<T> {
  const ctx = Context.current();
  ctx.heartbeat(progress());
  const beat = setInterval(() => ctx.heartbeat(progress()), HEARTBEAT_MS);
  try {
    return await fn();
  } finally {
    clearInterval(beat);
  }
}

/**
 * Waits until the subscriber of `p` confirmed everything its source had
 * committed when the wait began, heartbeating the bytes still missing.
 * lagBytes is -1 when the slot is missing.
 */
async function drain(p: ReplicationPair, timeoutSeconds: number): Promise<{ caughtUp: boolean; lagBytes: number; waitedMs: number }> {
  const started = Date.now();
  const target = (await p.source.engine.slotPosition(p.subscription))?.currentLsn;
  if (!target) return { caughtUp: false, lagBytes: -1, waitedMs: 0 };
  let lagBytes = -1;
  return heartbeating(
    () => ({ lagBytes }),
    async () => {
      for (;;) {
        const pos = await p.source.engine.slotPosition(p.subscription);
        lagBytes = pos?.confirmedLsn ? Math.max(0, -(await p.source.engine.lsnDistance(target, pos.confirmedLsn))) : -1;
        if (lagBytes === 0) return { caughtUp: true, lagBytes, waitedMs: Date.now() - started };
        if (Date.now() - started > timeoutSeconds * 1000) return { caughtUp: false, lagBytes, waitedMs: Date.now() - started };
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  );
}

/** Geo-replication, region health, failover and failback activities. Each is idempotent. */
export function replicationActivities(deps: ActivityDeps) {
  const audited = (action: string, inst: Pick<InstanceRow, 'id' | 'name'>, details: Record<string, unknown>) =>
    audit(deps.db, { actor: 'system:runbook', action, instanceId: inst.id, subject: inst.name, details: { ...details, workflowId: callerWorkflowId() } });

  async function replicaRow(instanceId: string): Promise<ReplicaRow | undefined> {
    const [row] = await deps.db.select().from(replicas).where(eq(replicas.instanceId, instanceId));
    return row;
  }

  /** Measures one forward replication and records lag, caught-up time and drift. */
  async function measure(inst: InstanceRow, row: ReplicaRow): Promise<{ subscriptionEnabled: boolean | null }> {
    const p = replicationPair(deps.regions, inst, row.direction);
    const now = new Date();
    const pos = await p.source.engine.slotPosition(p.subscription);
    const sub = await p.target.engine.subscriptionState(p.targetDatabase, p.subscription).catch(() => null);
    const drift = await missingTables(p).catch(() => [] as string[]);
    let caughtUpAt = row.caughtUpAt;
    if (pos?.confirmedLsn) {
      if (pos.lagBytes === 0) caughtUpAt = now;
      else if (row.sampleLsn && row.sampleAt && (await p.source.engine.lsnDistance(row.sampleLsn, pos.confirmedLsn)) >= 0) {
        if (!caughtUpAt || row.sampleAt > caughtUpAt) caughtUpAt = row.sampleAt;
      }
    }
    const broken = !pos || !sub || !sub.enabled;
    const lagSeconds = pos?.lagBytes === 0 ? 0 : (pos?.replayLagSeconds ?? (caughtUpAt ? (now.getTime() - caughtUpAt.getTime()) / 1000 : null));
    const state = broken ? 'broken' : drift.length || !sub.workerRunning ? (drift.length ? 'drift' : row.state) : 'streaming';
    await deps.db
      .update(replicas)
      .set({
        state: row.state === 'seeding' ? 'seeding' : state,
        lagBytes: pos?.lagBytes ?? null,
        lagSeconds,
        caughtUpAt,
        checkedAt: now,
        sampleLsn: pos?.currentLsn ?? row.sampleLsn,
        sampleAt: pos ? now : row.sampleAt,
        drift: drift.length ? drift : null,
        error: broken ? (pos ? `subscription ${p.subscription} is missing or disabled on ${p.targetDatabase}` : `replication slot ${p.subscription} is missing on ${p.source.name}`) : null,
        updatedAt: sql`now()`,
      })
      .where(eq(replicas.instanceId, inst.id));
    if (drift.length && row.state !== 'drift') await audit(deps.db, { actor: 'system:monitor', action: 'replication.drift', instanceId: inst.id, subject: inst.name, details: { missingTables: drift } });
    // Logical replication carries no sequences: keep the secondary's close at every check.
    if (!broken && row.direction === 'forward') {
      const marks = Object.fromEntries(Object.entries(await p.source.engine.sequences(p.sourceDatabase)).filter((e): e is [string, string] => e[1] !== null));
      if (Object.keys(marks).length) await p.target.engine.advanceSequences(p.targetDatabase, marks);
    }
    return { subscriptionEnabled: sub ? sub.enabled : null };
  }

  /**
   * Judges and records the failover readiness of the region's production
   * instances (see lib/readiness.ts): at every check, stored when it changes
   * (an audited event) and at least every `readiness.refreshSeconds`.
   */
  async function checkReadiness(homed: InstanceRow[], pairReachable: boolean, subscriptionEnabled: Map<string, boolean | null>): Promise<void> {
    const prod = homed.filter((i) => i.type === 'production' && i.state !== 'provisioning');
    if (!prod.length) return;
    const cfg = { rpoTargetSeconds: 5, backupMaxAgeHours: 26, refreshSeconds: 60, measureMaxAgeSeconds: 30, ...deps.readiness };
    const reps = await deps.db.select().from(replicas).where(inArray(replicas.instanceId, prod.map((i) => i.id)));
    for (const inst of prod) {
      const replica = reps.find((r) => r.instanceId === inst.id && r.direction === 'forward');
      const r = assessReadiness(inst, {
        now: new Date(),
        rpoTargetSeconds: inst.rpoTargetSeconds ?? cfg.rpoTargetSeconds,
        backupMaxAgeHours: cfg.backupMaxAgeHours,
        measureMaxAgeSeconds: cfg.measureMaxAgeSeconds,
        secondaryReachable: pairReachable,
        subscriptionEnabled: subscriptionEnabled.get(inst.id) ?? null,
        replica,
        lastGoodBackupAt: inst.lastGoodBackupAt, // kept on the row by the backups trigger (migration 0004)
      });
      await recordReadiness(deps.db, inst, r, cfg.refreshSeconds);
    }
  }

  /**
   * The rows behind a failover's lost changes, for salvage: per table and
   * key (the whole row without a primary key), the row as the old primary
   * last had it against the secondary's. Only rows that differ are kept:
   * `insert` (the secondary lacks it), `update` (it holds other values),
   * `delete` (the old primary no longer had it).
   */
  async function divergentRowsOf(inst: InstanceRow, failoverId: string, byTable: Map<string, UnconfirmedChange[]>): Promise<(typeof divergentRows.$inferInsert)[]> {
    const home = region(deps, inst.homeRegion);
    const alt = region(deps, home.pair);
    const out: (typeof divergentRows.$inferInsert)[] = [];
    for (const [table, changes] of byTable) {
      const keyCols = await home.engine.keyColumns(inst.name, table);
      const keys = new Map<string, { key: Record<string, string | null>; committedAt: string | null; op: UnconfirmedChange['op'] }>();
      for (const c of changes) {
        // Values the WAL left out (TOASTed and unchanged: a marker holding NUL, which no text value can) are no part of a key.
        const known = Object.fromEntries(Object.entries(c.row).filter(([, v]) => !v?.includes('\u0000')));
        const key = keyCols && keyCols.every((k) => k in known) ? Object.fromEntries(keyCols.map((k) => [k, known[k] ?? null])) : known;
        const id = JSON.stringify(key);
        keys.delete(id); // the latest change of a key wins, in commit order
        keys.set(id, { key, committedAt: c.committedAt, op: c.op });
      }
      const list = [...keys.values()];
      const [old, sec] = await Promise.all([home.engine.rowsByKey(inst.name, table, list.map((k) => k.key)), alt.engine.rowsByKey(inst.name, table, list.map((k) => k.key))]);
      list.forEach((k, i) => {
        const o = old[i] ?? null;
        const s = sec[i] ?? null;
        const op = o !== null && s === null ? 'insert' : o !== null && s !== null && o !== s ? 'update' : o === null && s !== null && (keyCols || k.op === 'DELETE') ? 'delete' : null;
        if (!op) return;
        const digest = createHash('sha256').update(`${table}\n${JSON.stringify(k.key)}`).digest('hex').slice(0, 24);
        out.push({ id: `${failoverId}/${digest}`, failoverId, instanceId: inst.id, table, key: k.key, op, row: o, secondaryRow: s, committedAt: k.committedAt ? new Date(k.committedAt) : null });
      });
    }
    return out;
  }

  /** The promotion itself (see promoteSecondary). */
  async function promote(input: { instanceId: string; planned: boolean }): Promise<{ sequencesAdvanced: string[] }> {
    const inst = await loadInstance(deps, input.instanceId);
    const p = replicationPair(deps.regions, inst, 'forward');
    const sub = await p.target.engine.subscriptionState(p.targetDatabase, p.subscription);
    const unsynced = Object.entries(sub?.tables ?? {}).filter(([, st]) => st !== 'r');
    if (unsynced.length) {
      // Still copying: promoting it would serve tables that are empty or half full.
      throw ApplicationFailure.nonRetryable(
        `the geo-secondary of ${inst.name} is still copying ${unsynced.length} table(s) (${unsynced.slice(0, 3).map(([t]) => t).join(', ')}): it cannot serve yet`,
        FailureTypes.invalidState,
      );
    }
    // An unplanned promotion with the old primary answering (it came back during the sign-off, or an operator chose
    // `unplanned`): it is fenced first, so the two sides never both take writes.
    if (!input.planned && (await p.source.engine.ping(1500))) await fence(inst.id, 'promotion of the secondary while the old primary answers', 'system:runbook', { onlyIfFailedOver: false });
    await p.target.engine.unsubscribe(p.targetDatabase, p.subscription);
    await deps.faults?.hold('promote', inst.id);
    const marks = await p.target.engine.sequencesInUse(p.targetDatabase);
    if (input.planned) {
      for (const [k, v] of Object.entries(await p.source.engine.sequences(p.sourceDatabase))) {
        if (v !== null && (marks[k] === undefined || BigInt(v) > BigInt(marks[k]!))) marks[k] = v;
      }
      await p.source.engine.dropSlot(p.subscription);
      await p.source.engine.unpublish(p.sourceDatabase, PUBLICATION);
    } else {
      for (const k of Object.keys(marks)) marks[k] = (BigInt(marks[k]!) + UNPLANNED_SEQUENCE_GAP).toString();
    }
    const sequencesAdvanced = await p.target.engine.advanceSequences(p.targetDatabase, marks);
    await p.target.engine.setReadOnly(p.targetDatabase, false);
    // Sessions opened while it was read-only keep that default: they go, new ones can write.
    await p.target.engine.terminateSessions(p.targetDatabase);
    return { sequencesAdvanced };
  }

  /** Lifts an instance's fence in the catalog (its database is opened by the caller), audited as `instance.unfenced`. */
  async function unfence(inst: InstanceRow, details: Record<string, unknown>): Promise<void> {
    if (!inst.fencedAt) return;
    const fencedSince = inst.fencedAt.toISOString();
    await deps.db.transaction(async (tx) => {
      await tx.update(instances).set({ fencedAt: null, updatedAt: sql`now()` }).where(eq(instances.id, inst.id));
      await audit(tx, { actor: 'system:runbook', action: 'instance.unfenced', instanceId: inst.id, subject: inst.name, details: { ...details, fencedSince, workflowId: callerWorkflowId() } });
    });
  }

  /**
   * Fences an instance's old primary: its home database refuses writes, and
   * the instance shows since when. The fence is the database's
   * `default_transaction_read_only`, with every session that began before it
   * ended (the door is shut while they are ended, then opened again). The
   * database keeps accepting connections on purpose: a client given the
   * multi-host URI (`target_session_attrs=read-write`) must find it read-only
   * and move on to the promoted side; a refused connection would stop it at
   * the first host. For the same reason a home region that came back without
   * the database gets an empty, read-only placeholder of that name. Idempotent:
   * a fence someone lifted by hand is put back at the next check.
   */
  async function fence(instanceId: string, reason: string, actor: 'system:monitor' | 'system:runbook', opts: { onlyIfFailedOver: boolean }): Promise<boolean> {
    return deps.db.transaction(async (tx) => {
      // The instance's row stays locked while its database is fenced: a failback taking the instance meanwhile waits,
      // and one that took it first is seen here (the monitor never fences a home database a failback is rebuilding).
      const [inst] = await tx.select().from(instances).where(eq(instances.id, instanceId)).for('update');
      if (!inst) return false;
      if (opts.onlyIfFailedOver) {
        if (inst.state !== 'failed_over' || inst.activeRegion === inst.homeRegion || inst.lockedRunbook === Runbooks.failback) return false;
        const [reverse] = await tx.select().from(replicas).where(and(eq(replicas.instanceId, inst.id), eq(replicas.direction, 'reverse')));
        if (reverse) return false;
      }
      const home = region(deps, inst.homeRegion);
      const tag = ownerTag(inst.id);
      let placeholder = false;
      if (!(await home.engine.databaseExists(inst.name))) {
        await home.engine.createDatabase(inst.name, tag, { readOnly: true, placeholder: true });
        placeholder = true;
      } else if ((await home.engine.ownerTag(inst.name)) !== tag) {
        throw new Error(`database ${inst.name} in region ${home.name} does not belong to instance ${inst.id}: it is not fenced (rename it, then the monitor fences the instance's own)`);
      }
      const holding = !placeholder && (await home.engine.readOnly(inst.name)) && (await home.engine.connectionsAllowed(inst.name));
      if (!holding) {
        const ended = await home.engine.blockWrites(inst.name);
        await home.engine.setConnectionsAllowed(inst.name, true);
        // Not updatedAt: a retried endpoint switch reads it as the time it switched.
        await tx.update(instances).set({ fencedAt: inst.fencedAt ?? new Date() }).where(eq(instances.id, inst.id));
        await audit(tx, { actor, action: 'instance.fenced', instanceId: inst.id, subject: inst.name, details: { database: inst.name, region: home.name, reason, sessionsEnded: ended, ...(placeholder ? { placeholder: true } : {}) } });
      } else if (!inst.fencedAt) {
        await tx.update(instances).set({ fencedAt: new Date() }).where(eq(instances.id, inst.id));
      }
      return !holding;
    });
  }

  return {
    /**
     * Creates (or completes, or repairs after schema drift) the instance's
     * geo-secondary: `<name>--s` in the paired region, read-only, kept by
     * logical replication. Heartbeats its seeding progress. Idempotent.
     */
    async ensureGeoSecondary(input: { instanceId: string }): Promise<{ created: boolean; repaired: string[] }> {
      const inst = await loadInstance(deps, input.instanceId);
      if (inst.type !== 'production' || inst.activeRegion !== inst.homeRegion) return { created: false, repaired: [] };
      const p = replicationPair(deps.regions, inst, 'forward');
      let existing = await replicaRow(inst.id);
      if (existing?.direction === 'forward' && existing.targetDatabase === legacySecondaryDatabase(inst.name) && existing.targetDatabase !== p.targetDatabase) {
        // A secondary made before 0.2 (`<name>--s`) cannot share a multi-host URI with its primary: it takes the
        // instance's name in place (its subscription paused meanwhile; the slot keeps every change), with no new copy.
        const legacy = existing.targetDatabase;
        if (await p.target.engine.databaseExists(legacy)) {
          await p.target.engine.setSubscriptionEnabled(legacy, p.subscription, false);
          await p.target.engine.renameDatabase(legacy, p.targetDatabase, ownerTag(inst.id));
        }
        await p.target.engine.setSubscriptionEnabled(p.targetDatabase, p.subscription, true);
        await deps.db.update(replicas).set({ targetDatabase: p.targetDatabase, updatedAt: sql`now()` }).where(eq(replicas.instanceId, inst.id));
        await audited('replication.renamed', inst, { targetRegion: p.target.name, from: legacy, to: p.targetDatabase });
        existing = await replicaRow(inst.id);
      }
      if (!existing) await recordReplica(deps.db, p, inst.id, { state: 'seeding' });
      let progress: SeedProgress = { phase: 'schema', tablesReady: 0, tables: 0 };
      const signal = Context.current().cancellationSignal;
      const out = await heartbeating(
        () => progress,
        () =>
          ensureReplication(p, inst.id, {
            copyData: true,
            onProgress: (s) => (progress = s),
            signal,
            onRecreate: () => recordReplica(deps.db, p, inst.id, { state: 'seeding', caughtUpAt: null }),
          }),
      );
      await recordReplica(deps.db, p, inst.id, { state: 'streaming', drift: null, error: null, ...(existing?.caughtUpAt ? {} : { caughtUpAt: new Date() }) });
      if (out.created) await audited('replication.created', inst, { targetRegion: p.target.name, targetDatabase: p.targetDatabase, identityFull: out.identityFull });
      if (out.repaired.length) await audited('replication.repaired', inst, { addedTables: out.repaired });
      return { created: out.created, repaired: out.repaired };
    },

    /** Removes the instance's geo-secondary: subscription, slot, publication and database. Idempotent. */
    async removeGeoSecondary(input: { instanceId: string }): Promise<boolean> {
      const [inst] = await deps.db.select().from(instances).where(eq(instances.id, input.instanceId));
      if (!inst) return false;
      return removeGeoSecondary(deps.db, deps.regions, inst, 'system:runbook');
    },

    /**
     * One health check of a region: connect-and-query on a connection of its
     * own (bounded to 3 s) with its latency, counted against `outageAfter`
     * consecutive failures. Fast whatever the fleet's size: measuring
     * replication is reconcileRegion's job.
     */
    async checkRegionHealth(input: { region: string; outageAfter: number }): Promise<RegionHealthCheck> {
      const r = region(deps, input.region);
      const started = performance.now();
      const healthy = await r.engine.ping();
      const latencyMs = healthy ? Math.round((performance.now() - started) * 10) / 10 : null;
      const [before] = await deps.db.select().from(regionsTable).where(eq(regionsTable.name, input.region));
      const failedChecks = healthy ? 0 : (before?.failedChecks ?? 0) + 1;
      const outage = !healthy && failedChecks >= input.outageAfter;
      const outageSince = outage ? (before?.outageSince ?? new Date()) : null;
      await deps.db
        .update(regionsTable)
        .set({
          health: healthy ? 'healthy' : outage ? 'outage' : 'unreachable',
          latencyMs,
          checkedAt: new Date(),
          failedChecks,
          outageSince,
          lastError: healthy ? null : `no answer from the PostgreSQL server of region ${input.region}`,
          updatedAt: sql`now()`,
        })
        .where(eq(regionsTable.name, input.region));
      if (outage && !before?.outageSince) {
        await audit(deps.db, { actor: 'system:monitor', action: 'region.outage', subject: input.region, details: { failedChecks, since: outageSince?.toISOString() } });
      }
      // Backup staleness of every instance homed here, at every check: from the catalog only, so also (above all)
      // while the region is down and its backups stop. A change is an event (instance.stale / instance.fresh).
      const homed = await deps.db.select().from(instances).where(eq(instances.homeRegion, input.region));
      await recordStaleness(deps.db, homed, deps.readiness?.backupMaxAgeHours ?? 26).catch((err: unknown) =>
        audit(deps.db, { actor: 'system:monitor', action: 'instance.staleness-check-failed', subject: input.region, details: { error: String((err as Error).message ?? err).slice(0, 500) } }),
      );
      return { region: input.region, healthy, latencyMs, failedChecks, outageSince: outageSince?.toISOString() ?? null };
    },

    /**
     * Measures every replication the region publishes (a few at once, each
     * bounded to 10 s, the least recently measured first, within `budgetMs`)
     * and lists the geo-secondaries to make, repair or remove. Stops as soon
     * as either server of the pair stops answering: that is the health
     * check's business.
     */
    async reconcileRegion(input: { region: string; budgetMs?: number }): Promise<{ needReplica: string[]; dropReplica: string[]; measured: number; fenced: string[] }> {
      const r = region(deps, input.region);
      const pair = deps.regions.get(r.pair);
      const out = { needReplica: [] as string[], dropReplica: [] as string[], measured: 0, fenced: [] as string[] };
      const homed = await deps.db.select().from(instances).where(eq(instances.homeRegion, input.region));
      // First, before anything else runs there: the old primaries of failed-over instances refuse writes.
      // Each is re-checked under its row lock (a failback may have taken it since the list was read).
      const failedOver = homed.filter((i) => i.state === 'failed_over' && i.activeRegion !== input.region && i.lockedRunbook !== Runbooks.failback);
      for (const inst of failedOver) {
        try {
          if (await fence(inst.id, 'the region answers again while the instance is failed over', 'system:monitor', { onlyIfFailedOver: true })) out.fenced.push(inst.id);
        } catch (err) {
          // One instance that cannot be fenced must not stop the region's checks: it is audited, and tried again at the next check.
          await audit(deps.db, { actor: 'system:monitor', action: 'instance.fence-failed', instanceId: inst.id, subject: inst.name, details: { error: String((err as Error).message ?? err).slice(0, 500) } });
        }
      }
      const subscriptionEnabled = new Map<string, boolean | null>();
      if (!pair || !(await pair.engine.ping())) {
        await checkReadiness(homed, false, subscriptionEnabled);
        return out;
      }
      const rows = homed.length ? await deps.db.select().from(replicas).where(inArray(replicas.instanceId, homed.map((i) => i.id))) : [];
      const deadline = Date.now() + (input.budgetMs ?? 60_000);
      const due = homed
        .map((inst) => ({ inst, row: rows.find((x) => x.instanceId === inst.id) }))
        .sort((a, b) => (a.row?.checkedAt?.getTime() ?? 0) - (b.row?.checkedAt?.getTime() ?? 0));
      let serversDown = false;
      let next = 0;
      const lane = async () => {
        while (next < due.length && !serversDown && Date.now() < deadline) {
          const { inst, row } = due[next++]!;
          if (inst.type === 'sandbox') {
            if (row && !inst.lockedByRun) out.dropReplica.push(inst.id);
            continue;
          }
          if (inst.activeRegion !== inst.homeRegion) continue;
          // Only an instance that takes writes is measured: a runbook acting on it (a swap, a failover) owns its database
          // meanwhile, and the measure's sessions (and sequence copy) would race its steps. Backups only read.
          const quiet = inst.state === 'active' && (!inst.lockedRunbook || inst.lockedRunbook === Runbooks.onDemandBackup || inst.lockedRunbook === Runbooks.dailyBackup);
          let state = row?.state;
          if (row && row.direction === 'forward' && row.state !== 'seeding' && quiet) {
            const failed = await within(10_000, measure(inst, row)).then(
              (m) => {
                subscriptionEnabled.set(inst.id, m.subscriptionEnabled);
                return null;
              },
              (err: unknown) => err,
            );
            if (failed) {
              // A server that stopped answering mid-check is an outage for the health check, not a broken replication to remake.
              if (!(await r.engine.ping()) || !(await pair.engine.ping())) {
                serversDown = true;
                return;
              }
              await deps.db.update(replicas).set({ state: 'broken', error: String((failed as Error).message ?? failed).slice(0, 500), checkedAt: new Date() }).where(eq(replicas.instanceId, inst.id));
              state = 'broken';
            } else {
              out.measured++;
              state = (await replicaRow(inst.id))?.state;
            }
          }
          const legacy = row?.direction === 'forward' && row.targetDatabase !== inst.name;
          if (inst.state === 'active' && !inst.lockedByRun && (!row || legacy || state === 'drift' || state === 'broken')) out.needReplica.push(inst.id);
        }
      };
      await Promise.all(Array.from({ length: 4 }, lane));
      // Fresh rows: the lanes may have changed an instance (a fence, a lock) since the list was read.
      const fresh = homed.length ? await deps.db.select().from(instances).where(inArray(instances.id, homed.map((i) => i.id))) : [];
      await checkReadiness(fresh, !serversDown, subscriptionEnabled);
      return out;
    },

    /** The production instances a failover of `region` covers: those served from it now. */
    async failoverTargets(input: { region: string }): Promise<{ reachable: boolean; targets: FailoverTarget[]; skipped: { instanceId: string; name: string; reason: string }[] }> {
      const r = region(deps, input.region);
      const reachable = await r.engine.ping();
      const { targets, skipped } = await failoverCandidates(deps.db, input.region);
      return { reachable, targets: targets.map((t) => ({ instanceId: t.id, name: t.name })), skipped };
    },

    /** What the instance could lose if its secondary were promoted now without the primary: the last lag seen, and when. */
    async estimateLoss(input: { instanceId: string; declaredAt: string }): Promise<LossEstimate> {
      const row = await replicaRow(input.instanceId);
      const caughtUpAt = row?.caughtUpAt ?? null;
      const [inst] = await deps.db.select({ readiness: instances.readiness }).from(instances).where(eq(instances.id, input.instanceId));
      const r = inst?.readiness;
      return {
        readiness: r ? { state: r.state, reasons: r.reasons, checkedAt: r.checkedAt } : null,
        planned: false,
        lagBytes: row?.lagBytes ?? null,
        lagSeconds: row?.lagSeconds ?? null,
        caughtUpAt: caughtUpAt?.toISOString() ?? null,
        checkedAt: row?.checkedAt?.toISOString() ?? null,
        couldLoseSeconds: caughtUpAt ? Math.max(0, (Date.parse(input.declaredAt) - caughtUpAt.getTime()) / 1000) : null,
      };
    },

    /**
     * Planned switchover: blocks writes on the primary (read-only, no new
     * connections, sessions ended; the walsender keeps streaming), then waits
     * until the secondary confirmed everything committed before the block.
     * Returns whether it caught up within `timeoutSeconds`.
     */
    async blockAndDrain(input: { instanceId: string; timeoutSeconds: number }): Promise<{ caughtUp: boolean; lagBytes: number; waitedMs: number }> {
      const inst = await loadInstance(deps, input.instanceId);
      const p = replicationPair(deps.regions, inst, 'forward');
      // The old primary is fenced the same way as after an outage, before the secondary is promoted.
      await fence(inst.id, 'planned switchover', 'system:runbook', { onlyIfFailedOver: false });
      return drain(p, input.timeoutSeconds);
    },

    /**
     * Promotes the geo-secondary: detaches its subscription (in a planned
     * switchover the primary's slot and publication go too; otherwise the
     * slot stays on the old primary so the failback can measure what was
     * lost), moves every sequence past the highest number in use, and makes
     * the database writable. Idempotent.
     */
    async promoteSecondary(input: { instanceId: string; planned: boolean }): Promise<{ sequencesAdvanced: string[] }> {
      return heartbeating(() => ({ promoting: input.instanceId }), () => promote(input));
    },

    /**
     * Switches the instance's endpoint to its alternate (`<name>--s`: the
     * database of the same name in the paired region; limited mode `failed_over`) or back home (`active`),
     * with the EndpointSwitchRequired and EndpointSwitched events around the
     * change. Idempotent.
     */
    async switchEndpoint(input: { instanceId: string; to: 'alternate' | 'home' }): Promise<{ region: string; database: string; switchedAt: string }> {
      const inst = await loadInstance(deps, input.instanceId);
      const home = region(deps, inst.homeRegion);
      const toRegion = input.to === 'alternate' ? region(deps, home.pair) : home;
      // The alternate's database has the instance's name on the paired server.
      const database = inst.name;
      const endpoint = toRegion.engine.endpoint(database);
      const state = input.to === 'alternate' ? 'failed_over' : 'active';
      const workflowId = callerWorkflowId();
      // Connection URIs stay out of workflow histories: the run learns the region and the database name.
      if (inst.endpoint === endpoint && inst.state === state) return { region: toRegion.name, database, switchedAt: inst.updatedAt.toISOString() };
      await audit(deps.db, { actor: 'system:runbook', action: 'EndpointSwitchRequired', instanceId: inst.id, subject: inst.name, details: { from: inst.endpoint, to: endpoint, workflowId } });
      const switchedAt = new Date();
      await deps.db.transaction(async (tx) => {
        await tx.update(instances).set({ activeRegion: toRegion.name, databaseName: database, endpoint, state, updatedAt: switchedAt }).where(eq(instances.id, inst.id));
        await audit(tx, { actor: 'system:runbook', action: 'EndpointSwitched', instanceId: inst.id, subject: inst.name, details: { endpoint, region: toRegion.name, state, workflowId } });
      });
      return { region: toRegion.name, database, switchedAt: switchedAt.toISOString() };
    },

    /** Records an instance's failover with its RTO and loss estimate (once per run and instance). */
    async recordFailover(input: {
      instanceId: string;
      kind: 'planned' | 'unplanned';
      declaredAt: string;
      signedOffAt: string | null;
      servingAt: string;
      estimate: LossEstimate;
    }): Promise<{ rtoFromDeclaredSeconds: number; rtoFromSignoffSeconds: number | null }> {
      const inst = await loadInstance(deps, input.instanceId);
      const workflowId = callerWorkflowId();
      const p = replicationPair(deps.regions, inst, 'forward');
      const serving = Date.parse(input.servingAt);
      const rtoFromDeclaredSeconds = (serving - Date.parse(input.declaredAt)) / 1000;
      const rtoFromSignoffSeconds = input.signedOffAt ? (serving - Date.parse(input.signedOffAt)) / 1000 : null;
      await deps.db.transaction(async (tx) => {
        const rows = await tx
          .insert(failovers)
          .values({
            id: `${workflowId}/${inst.id}`,
            workflowId,
            instanceId: inst.id,
            fromRegion: inst.homeRegion,
            toRegion: p.target.name,
            kind: input.kind,
            status: 'promoted',
            declaredAt: new Date(input.declaredAt),
            signedOffAt: input.signedOffAt ? new Date(input.signedOffAt) : null,
            servingAt: new Date(input.servingAt),
            estimate: input.estimate,
            rtoFromDeclaredSeconds,
            rtoFromSignoffSeconds,
            slot: input.kind === 'unplanned' ? p.subscription : null,
          })
          .onConflictDoNothing()
          .returning({ id: failovers.id });
        if (rows.length) {
          await tx.delete(replicas).where(eq(replicas.instanceId, inst.id));
          await audit(tx, { actor: 'system:runbook', action: 'instance.failed-over', instanceId: inst.id, subject: inst.name, details: { workflowId, kind: input.kind, rtoFromDeclaredSeconds, rtoFromSignoffSeconds, estimate: input.estimate } });
        }
      });
      return { rtoFromDeclaredSeconds, rtoFromSignoffSeconds };
    },

    /** The failed-over instances of `region` (by home region) a failback brings home; `instanceIds` narrows them. */
    async failbackTargets(input: { region: string; instanceIds?: string[] }): Promise<{ reachable: boolean; targets: FailoverTarget[] }> {
      const reachable = await region(deps, input.region).engine.ping();
      const rows = await deps.db.select().from(instances).where(and(eq(instances.homeRegion, input.region), eq(instances.state, 'failed_over')));
      const targets = rows
        .filter((i) => !input.instanceIds || input.instanceIds.includes(i.id))
        .sort((a, b) => a.id.localeCompare(b.id))
        .map((i) => ({ instanceId: i.id, name: i.name }));
      return { reachable, targets };
    },

    /** The failover a failback undoes: the instance's latest one not failed back yet. */
    async openFailover(input: { instanceId: string }): Promise<{ id: string; slot: string | null; kind: 'planned' | 'unplanned'; oldPrimaryBackupId: string | null } | null> {
      const rows = await deps.db.select().from(failovers).where(and(eq(failovers.instanceId, input.instanceId), eq(failovers.status, 'promoted')));
      const row = rows.sort((a, b) => b.declaredAt.getTime() - a.declaredAt.getTime())[0];
      return row ? { id: row.id, slot: row.slot, kind: row.kind, oldPrimaryBackupId: row.oldPrimaryBackupId } : null;
    },

    /** Whether the old primary's database still exists in the home region (it may be gone with the region's disks). */
    async oldPrimaryExists(input: { instanceId: string }): Promise<boolean> {
      const inst = await loadInstance(deps, input.instanceId);
      const home = region(deps, inst.homeRegion);
      // A placeholder the fence made (the region came back without the database) is not the old primary.
      return (await home.engine.databaseExists(inst.name)) && !(await home.engine.isPlaceholder(inst.name));
    },

    /**
     * Measures what the old primary had committed that never reached the
     * secondary: the changes after what its slot's subscriber confirmed,
     * decoded from the retained WAL, less those the secondary holds anyway.
     * Records it beside the estimate as the failover's true RPO, keeps the
     * backup id, then drops the slot. Idempotent.
     */
    async measureDivergence(input: { instanceId: string; failoverId: string; backupId: string | null }): Promise<MeasuredLoss> {
      const inst = await loadInstance(deps, input.instanceId);
      const [fo] = await deps.db.select().from(failovers).where(eq(failovers.id, input.failoverId));
      if (!fo) throw ApplicationFailure.nonRetryable(`failover ${input.failoverId} does not exist`, FailureTypes.invalidState);
      if (fo.measured) return fo.measured;
      const home = region(deps, inst.homeRegion);
      const alt = region(deps, home.pair);
      const measured: MeasuredLoss = { rows: 0, seconds: 0, byTable: {}, firstLostAt: null, lastLostAt: null };
      let divergent: (typeof divergentRows.$inferInsert)[] = [];
      if (fo.slot && (await home.engine.slotPosition(fo.slot)) && (await home.engine.databaseExists(inst.name))) {
        const changes = await heartbeating(() => ({ phase: 'decoding' }), () => home.engine.unconfirmedChanges(inst.name, fo.slot!));
        const byTable = new Map<string, typeof changes>();
        for (const c of changes) byTable.set(c.table, [...(byTable.get(c.table) ?? []), c]);
        for (const [table, list] of byTable) {
          const present = await heartbeating(() => ({ phase: 'comparing', table }), () => alt.engine.rowsPresent(inst.name, table, list.map((c) => c.row)));
          list.forEach((c, i) => {
            // An insert or update arrived when the secondary holds the row as the change left it; a delete, when it holds no such row.
            if (c.op === 'DELETE' ? !present[i] : present[i]) return;
            measured.rows++;
            measured.byTable[table] = (measured.byTable[table] ?? 0) + 1;
            if (c.committedAt && (!measured.firstLostAt || c.committedAt < measured.firstLostAt)) measured.firstLostAt = c.committedAt;
            if (c.committedAt && (!measured.lastLostAt || c.committedAt > measured.lastLostAt)) measured.lastLostAt = c.committedAt;
          });
        }
        divergent = await heartbeating(() => ({ phase: 'listing divergent rows' }), () => divergentRowsOf(inst, fo.id, byTable));
        if (measured.firstLostAt && measured.lastLostAt) measured.seconds = (Date.parse(measured.lastLostAt) - Date.parse(measured.firstLostAt)) / 1000;
        const caughtUp = fo.estimate.caughtUpAt ? Date.parse(fo.estimate.caughtUpAt) : null;
        if (measured.lastLostAt && caughtUp !== null) measured.windowSeconds = Math.max(0, (Date.parse(measured.lastLostAt) - caughtUp) / 1000);
      }
      await deps.db.transaction(async (tx) => {
        await tx.update(failovers).set({ measured, oldPrimaryBackupId: input.backupId, failbackWorkflowId: callerWorkflowId() }).where(eq(failovers.id, fo.id));
        for (let i = 0; i < divergent.length; i += 500) await tx.insert(divergentRows).values(divergent.slice(i, i + 500)).onConflictDoNothing();
        await audit(tx, { actor: 'system:runbook', action: 'failover.loss-measured', instanceId: inst.id, subject: inst.name, details: { failoverId: fo.id, estimate: fo.estimate, measured, oldPrimaryBackupId: input.backupId } });
      });
      return measured;
    },

    /**
     * Rebuilds the home database from the serving secondary, with
     * replication running the other way: the old primary's slot and
     * publication go, its database is dropped (only once the backup of it
     * completed, when there is one), a fresh read-only copy is seeded and
     * subscribed. Idempotent.
     */
    async reseedHome(input: { instanceId: string; backupId: string | null }): Promise<void> {
      const inst = await loadInstance(deps, input.instanceId);
      if (input.backupId) {
        const [b] = await deps.db.select().from(backups).where(eq(backups.id, input.backupId));
        if (b?.status !== 'completed') throw ApplicationFailure.nonRetryable(`the backup ${input.backupId} of the old primary is ${b?.status ?? 'missing'}: its database is kept`, FailureTypes.invalidState);
      }
      const forward = replicationPair(deps.regions, inst, 'forward');
      const reverse = replicationPair(deps.regions, inst, 'reverse');
      const row = await replicaRow(inst.id);
      if (!row || row.direction !== 'reverse') {
        // The old primary, kept (backed up) and measured: its slot and publication go with it (and a forward
        // subscription a failed earlier failback left on the alternate, which would point at a database about to go).
        await forward.target.engine.unsubscribe(forward.targetDatabase, forward.subscription);
        await forward.source.engine.dropSlot(forward.subscription);
        await reverse.target.engine.dropDatabase(reverse.targetDatabase, ownerTag(inst.id));
        await recordReplica(deps.db, reverse, inst.id, { state: 'seeding' });
      }
      let progress: SeedProgress = { phase: 'schema', tablesReady: 0, tables: 0 };
      await heartbeating(() => progress, () => ensureReplication(reverse, inst.id, { copyData: true, onProgress: (s) => (progress = s) }));
      await recordReplica(deps.db, reverse, inst.id, { state: 'streaming', error: null });
      await audited('replication.reversed', inst, { from: reverse.sourceDatabase, fromRegion: reverse.source.name, to: reverse.targetDatabase, toRegion: reverse.target.name });
    },

    /** Waits until the rebuilt home database has confirmed everything the secondary committed when the wait began (or `timeoutSeconds`). */
    async waitCaughtUp(input: { instanceId: string; timeoutSeconds: number }): Promise<{ lagBytes: number }> {
      const inst = await loadInstance(deps, input.instanceId);
      const p = replicationPair(deps.regions, inst, 'reverse');
      const r = await drain(p, input.timeoutSeconds);
      if (r.lagBytes < 0) throw new Error(`the reverse replication slot ${p.subscription} is missing in region ${p.source.name}`);
      if (!r.caughtUp) throw new Error(`the home copy is still ${r.lagBytes} bytes behind after ${input.timeoutSeconds} s`);
      return { lagBytes: 0 };
    },

    /**
     * Blocks writes on the serving secondary and waits until the home copy
     * confirmed everything it committed. Returns when writes were blocked.
     */
    async blockServingAndDrain(input: { instanceId: string; timeoutSeconds: number }): Promise<{ blockedAt: string }> {
      const inst = await loadInstance(deps, input.instanceId);
      const p = replicationPair(deps.regions, inst, 'reverse');
      const blockedAt = new Date();
      await p.source.engine.blockWrites(p.sourceDatabase);
      await audited('instance.writes-blocked', inst, { database: p.sourceDatabase, region: p.source.name, reason: 'failback switch' });
      const r = await drain(p, input.timeoutSeconds);
      if (r.lagBytes < 0) throw new Error(`the reverse replication slot ${p.subscription} is missing in region ${p.source.name}`);
      if (!r.caughtUp) throw new Error(`the home copy did not catch up within ${input.timeoutSeconds} s of blocking writes (${r.lagBytes} bytes behind)`);
      return { blockedAt: blockedAt.toISOString() };
    },

    /** Per-table checksums of the serving secondary and the home copy; fails (retryably) while they differ. */
    async verifyEqual(input: { instanceId: string; when: 'before-switch' | 'after-switch' }): Promise<{ tables: number; rows: number }> {
      const inst = await loadInstance(deps, input.instanceId);
      const home = region(deps, inst.homeRegion);
      const alt = region(deps, home.pair);
      const [a, b] = await heartbeating(
        () => ({ phase: 'checksums', when: input.when }),
        () => Promise.all([alt.engine.tableChecksums(inst.name), home.engine.tableChecksums(inst.name)]),
      );
      const differ = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((t) => a[t]?.rows !== b[t]?.rows || a[t]?.digest !== b[t]?.digest);
      if (differ.length) throw new Error(`${input.when}: the home copy differs from the secondary in ${differ.length} table(s): ${differ.slice(0, 5).join(', ')}`);
      return { tables: Object.keys(a).length, rows: Object.values(a).reduce((n, t) => n + t.rows, 0) };
    },

    /**
     * The switch back, with writes blocked on both sides: the reverse
     * subscription goes, the home copy's sequences move past the secondary's,
     * and forward replication is restored from the home database to the
     * alternate without a new copy (both are equal and neither takes writes,
     * so the new slot starts exactly where they agree). Idempotent.
     */
    async restoreForward(input: { instanceId: string }): Promise<void> {
      const inst = await loadInstance(deps, input.instanceId);
      const forward = replicationPair(deps.regions, inst, 'forward');
      const reverse = replicationPair(deps.regions, inst, 'reverse');
      const row = await replicaRow(inst.id);
      if (row?.direction === 'reverse') {
        const marks = await reverse.source.engine.sequencesInUse(reverse.sourceDatabase);
        await reverse.target.engine.advanceSequences(reverse.targetDatabase, marks);
        await removeReplication(reverse, inst.id, { dropTarget: false });
        await recordReplica(deps.db, forward, inst.id, { state: 'seeding' });
      }
      // The alternate becomes the read-only copy again; its apply worker needs the database open to connections.
      await forward.target.engine.setReadOnly(forward.targetDatabase, true);
      await forward.target.engine.setConnectionsAllowed(forward.targetDatabase, true);
      await forward.target.engine.terminateSessions(forward.targetDatabase);
      await ensureReplication(forward, inst.id, { copyData: false, keepTarget: true, timeoutMs: 120_000 });
      await recordReplica(deps.db, forward, inst.id, { state: 'streaming', error: null, caughtUpAt: new Date() });
    },

    /** Opens the home database for writes again (after the endpoint switched back). Returns when. */
    async openHome(input: { instanceId: string }): Promise<{ openedAt: string }> {
      const inst = await loadInstance(deps, input.instanceId);
      const home = region(deps, inst.homeRegion);
      await home.engine.setReadOnly(inst.name, false);
      await home.engine.setConnectionsAllowed(inst.name, true);
      // Sessions opened while it was read-only keep that default.
      await home.engine.terminateSessions(inst.name);
      await unfence(inst, {});
      return { openedAt: new Date().toISOString() };
    },

    /**
     * Lets a database take writes again after a block that led nowhere (a
     * rejected or expired sign-off, a failback that stopped before its
     * switch): `serving` is the instance's current database. Idempotent.
     */
    async reopenWrites(input: { instanceId: string; which: 'home' | 'alternate' }): Promise<void> {
      const inst = await loadInstance(deps, input.instanceId);
      const home = region(deps, inst.homeRegion);
      const r = input.which === 'home' ? home : region(deps, home.pair);
      const database = inst.name;
      if (!(await r.engine.databaseExists(database))) return;
      if (input.which === 'home') {
        const p = replicationPair(deps.regions, inst, 'forward');
        // A secondary that cannot be asked (its region is down) was not promoted by this run's switchover.
        const promoted = await (async () =>
          (await p.target.engine.databaseExists(p.targetDatabase)) &&
          !(await p.target.engine.readOnly(p.targetDatabase)) &&
          (await p.target.engine.subscriptionState(p.targetDatabase, p.subscription)) === null)().catch(() => false);
        if (promoted) {
          // The secondary was promoted but the switch did not follow: opening home too would make both sides writable.
          await audited('failover.stranded', inst, { database, region: r.name, next: 'the old primary stays fenced; run the region failover again to finish the switch' });
          return;
        }
      }
      await r.engine.setReadOnly(database, false);
      await r.engine.setConnectionsAllowed(database, true);
      if (input.which === 'home') await unfence(inst, { database, region: r.name, reason: 'a switchover that did not promote' });
      await audited('instance.writes-reopened', inst, { database, region: r.name });
    },

    /** Records the failback on the failover: when, and how long writes were blocked. */
    async recordFailback(input: { instanceId: string; failoverId: string | null; writeBlockedSeconds: number }): Promise<void> {
      const inst = await loadInstance(deps, input.instanceId);
      await deps.db.transaction(async (tx) => {
        if (input.failoverId) {
          await tx
            .update(failovers)
            .set({ status: 'failed_back', failedBackAt: new Date(), writeBlockedSeconds: input.writeBlockedSeconds, failbackWorkflowId: callerWorkflowId() })
            .where(eq(failovers.id, input.failoverId));
        }
        await audit(tx, { actor: 'system:runbook', action: 'instance.failed-back', instanceId: inst.id, subject: inst.name, details: { failoverId: input.failoverId, writeBlockedSeconds: input.writeBlockedSeconds, workflowId: callerWorkflowId() } });
      });
    },
  };
}
