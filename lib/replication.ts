import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { and, eq, inArray, sql } from 'drizzle-orm';
import type { RegionHandles } from '../activities/deps.js';
import { ownerTag } from '../activities/names.js';
import type { Database } from '../db/client.js';
import { instances, replicas, type InstanceRow, type ReplicaRow } from '../db/schema/index.js';
import { Runbooks } from '../workflows/contract.js';
import { audit } from './audit.js';
import type { InstanceEngine } from './engine/types.js';

/** The publication every replicated database carries (FOR ALL TABLES, so new tables are published too). */
export const PUBLICATION = 'bcdr_pub';

/**
 * The alternate's name (the Dynamics convention `<name>--s`). Its database
 * keeps the instance's own name on the paired region's server, so one
 * multi-host URI (`target_session_attrs=read-write`) reaches whichever side
 * takes writes.
 */
export const alternateName = (name: string) => `${name}--s`;

/**
 * One URI for both sides of an instance (`postgres://u@h1:p1,h2:p2/db`) that
 * lands on whichever takes writes. The user is the first side's; the
 * connect timeout keeps a side that does not answer from stalling clients.
 */
export function multiHostUri(endpoints: string[]): string {
  const urls = endpoints.map((e) => new URL(e));
  const first = urls[0]!;
  const user = first.username ? `${first.username}@` : '';
  const hosts = urls.map((u) => `${u.hostname}:${u.port || '5432'}`).join(',');
  return `postgres://${user}${hosts}${first.pathname}?target_session_attrs=read-write&connect_timeout=5`;
}

/**
 * Which production instances of a region a failover moves (active, with a
 * geo-secondary that finished seeding) and why the others are skipped.
 * `rows`: the production instances served from their home region.
 */
export function classifyFailoverTargets(rows: InstanceRow[], reps: ReplicaRow[]): { targets: InstanceRow[]; skipped: { instanceId: string; name: string; reason: string }[] } {
  const targets: InstanceRow[] = [];
  const skipped: { instanceId: string; name: string; reason: string }[] = [];
  for (const inst of [...rows].sort((a, b) => a.id.localeCompare(b.id))) {
    const rep = reps.find((x) => x.instanceId === inst.id);
    if (inst.state !== 'active') skipped.push({ instanceId: inst.id, name: inst.name, reason: `it is ${inst.state}, not active: it takes no writes to move` });
    else if (!rep || rep.direction !== 'forward' || rep.state === 'seeding') skipped.push({ instanceId: inst.id, name: inst.name, reason: 'it has no geo-secondary that finished seeding' });
    else targets.push(inst);
  }
  return { targets, skipped };
}

/** The production instances served from their home `region`, with their replicas, classified for a failover (see classifyFailoverTargets). */
export async function failoverCandidates(db: Database, region: string): Promise<ReturnType<typeof classifyFailoverTargets> & { reps: ReplicaRow[] }> {
  const rows = await db.select().from(instances).where(and(eq(instances.activeRegion, region), eq(instances.homeRegion, region), eq(instances.type, 'production')));
  const reps = rows.length ? await db.select().from(replicas).where(inArray(replicas.instanceId, rows.map((i) => i.id))) : [];
  return { ...classifyFailoverTargets(rows, reps), reps };
}

/** The database of a geo-secondary before 0.2 had the alternate's name (`<name>--s`): renamed to the instance's own. */
export const legacySecondaryDatabase = alternateName;

/** Subscription (and publisher slot) name of an instance's replication, one per direction; unique per cluster. */
export function subscriptionName(instanceId: string, direction: 'forward' | 'reverse'): string {
  const h = createHash('sha256').update(instanceId).digest('hex').slice(0, 20);
  return `bcdr_${h}${direction === 'reverse' ? '_r' : ''}`;
}

/** Where an instance's data flows: from `source` (serving) to `target` (its copy). */
export interface ReplicationPair {
  direction: 'forward' | 'reverse';
  source: RegionHandles;
  sourceDatabase: string;
  target: RegionHandles;
  targetDatabase: string;
  subscription: string;
}

/** Forward: the home database to the alternate in the paired region. Reverse (failback): the alternate back home. */
export function replicationPair(regions: Map<string, RegionHandles>, inst: Pick<InstanceRow, 'id' | 'name' | 'homeRegion'>, direction: 'forward' | 'reverse'): ReplicationPair {
  const home = regions.get(inst.homeRegion);
  if (!home) throw new Error(`region ${inst.homeRegion} is not configured`);
  const pair = regions.get(home.pair);
  if (!pair) throw new Error(`region ${home.pair} (the pair of ${home.name}) is not configured`);
  // Both sides use the instance's name: paired regions are different servers (the config refuses one server for both).
  const homeDb = inst.name;
  const alt = inst.name;
  const subscription = subscriptionName(inst.id, direction);
  return direction === 'forward'
    ? { direction, source: home, sourceDatabase: homeDb, target: pair, targetDatabase: alt, subscription }
    : { direction, source: pair, sourceDatabase: alt, target: home, targetDatabase: homeDb, subscription };
}

/** Copies the schema of `tables` (all when absent) from the source database into the target, through a local file. */
export async function copySchema(from: InstanceEngine, fromDb: string, to: InstanceEngine, toDb: string, tables?: string[]): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bcdr-schema-'));
  try {
    const file = path.join(dir, 'schema.dump');
    const fd = openSync(file, 'w');
    try {
      const dump = await from.dump(fromDb, { fd, schemaOnly: true, ...(tables ? { tables } : {}) });
      await dump.done;
    } finally {
      closeSync(fd);
    }
    await to.restore(toDb, file).done;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** How seeding goes, for heartbeats. */
export type SeedProgress = { phase: 'schema' | 'copying' | 'repairing' | 'streaming'; tablesReady: number; tables: number };

/**
 * Creates (or completes) the replication of `p`: publication on the source,
 * a read-only target database seeded with the schema, then a subscription
 * that copies the rows. A target without its subscription is a half-made
 * copy from a killed attempt and is made again; a publisher slot without a
 * subscription is dropped first. Schema drift (source tables the target
 * lacks) is repaired: the tables are created and the subscription
 * refreshed. Waits until every table streams. Idempotent.
 */
export async function ensureReplication(
  p: ReplicationPair,
  instanceId: string,
  opts: {
    copyData: boolean;
    /** The target already holds the source's data (a failback's switch): subscribe it as it is, never remake it. */
    keepTarget?: boolean;
    onProgress?: (s: SeedProgress) => void;
    timeoutMs?: number;
    /** Stops waiting for the copy (the run was cancelled: an operator's runbook wants the instance). */
    signal?: AbortSignal;
    /** Called before the target is made afresh, so the caller can record that it is seeding (never promotable meanwhile). */
    onRecreate?: () => Promise<void>;
  },
): Promise<{ created: boolean; repaired: string[]; identityFull: string[] }> {
  const tag = ownerTag(instanceId);
  const { source, target } = p;
  const identityFull = await source.engine.publish(p.sourceDatabase, PUBLICATION);
  let created = false;
  let subscribed = (await target.engine.databaseExists(p.targetDatabase)) && (await target.engine.subscriptionState(p.targetDatabase, p.subscription)) !== null;
  if (subscribed && !(await source.engine.slotPosition(p.subscription))) {
    // A subscription whose slot is gone never receives anything again: it is made afresh.
    await target.engine.unsubscribe(p.targetDatabase, p.subscription);
    subscribed = false;
  }
  // A disabled subscription (by hand, or a killed attempt) is enabled again: its slot kept every change meanwhile.
  if (subscribed) await target.engine.setSubscriptionEnabled(p.targetDatabase, p.subscription, true);
  if (!subscribed && opts.keepTarget) {
    await source.engine.dropSlot(p.subscription);
    await source.engine.createSlot(p.sourceDatabase, p.subscription);
    await target.engine.subscribe(p.targetDatabase, { subscription: p.subscription, publication: PUBLICATION, source: source.engine.replicationSource(p.sourceDatabase), copyData: opts.copyData });
    created = true;
  } else if (!subscribed) {
    if ((await target.engine.databaseExists(p.targetDatabase)) && !(await target.engine.readOnly(p.targetDatabase))) {
      // A copy is read-only from its first moment: a writable target without its subscription was promoted, and may hold writes.
      throw new Error(
        `${p.targetDatabase} in region ${target.name} is writable and has no subscription: it was promoted by a failover that did not finish its switch. ` +
          'It is kept: run the region failover again to finish it, or make it read-only by hand once its writes are saved',
      );
    }
    created = true;
    await opts.onRecreate?.();
    opts.onProgress?.({ phase: 'schema', tablesReady: 0, tables: 0 });
    await target.engine.dropDatabase(p.targetDatabase, tag);
    await source.engine.dropSlot(p.subscription);
    // Read-only from its first moment: a client given the multi-host URI must never write into a copy.
    await target.engine.createDatabase(p.targetDatabase, tag, { readOnly: true });
    if ((await target.engine.ownerTag(p.targetDatabase)) !== tag) throw new Error(`database ${p.targetDatabase} in region ${target.name} does not belong to instance ${instanceId}`);
    await target.engine.setReadOnly(p.targetDatabase, true);
    await copySchema(source.engine, p.sourceDatabase, target.engine, p.targetDatabase);
    await source.engine.createSlot(p.sourceDatabase, p.subscription);
    await target.engine.subscribe(p.targetDatabase, { subscription: p.subscription, publication: PUBLICATION, source: source.engine.replicationSource(p.sourceDatabase), copyData: opts.copyData });
  }
  const missing = await missingTables(p);
  if (missing.length) {
    opts.onProgress?.({ phase: 'repairing', tablesReady: 0, tables: missing.length });
    await copySchema(source.engine, p.sourceDatabase, target.engine, p.targetDatabase, missing);
    await source.engine.publish(p.sourceDatabase, PUBLICATION);
  }
  const state = await target.engine.subscriptionState(p.targetDatabase, p.subscription);
  const known = Object.keys(state?.tables ?? {});
  const sourceTables = await source.engine.tables(p.sourceDatabase);
  if (missing.length || sourceTables.some((t) => !known.includes(t))) await target.engine.refreshSubscription(p.targetDatabase, p.subscription);
  // A kept target is complete already: its slot holds every change from here on, whenever its worker starts.
  if (!opts.keepTarget) await waitReady(p, opts);
  return { created, repaired: missing, identityFull };
}

/** Tables of the source the target lacks (schema drift). */
export async function missingTables(p: ReplicationPair): Promise<string[]> {
  const [src, dst] = await Promise.all([p.source.engine.tables(p.sourceDatabase), p.target.engine.tables(p.targetDatabase)]);
  return src.filter((t) => !dst.includes(t));
}

async function waitReady(p: ReplicationPair, opts: { onProgress?: (s: SeedProgress) => void; timeoutMs?: number; signal?: AbortSignal }): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 6 * 3600_000);
  for (;;) {
    if (opts.signal?.aborted) throw new Error(`stopped waiting for the copy of ${p.sourceDatabase} to ${p.targetDatabase}: cancelled`);
    const st = await p.target.engine.subscriptionState(p.targetDatabase, p.subscription);
    if (!st) throw new Error(`subscription ${p.subscription} vanished from ${p.targetDatabase}`);
    const states = Object.values(st.tables);
    const ready = states.filter((s) => s === 'r').length;
    opts.onProgress?.({ phase: ready === states.length ? 'streaming' : 'copying', tablesReady: ready, tables: states.length });
    if (ready === states.length && st.workerRunning) return;
    if (Date.now() > deadline) throw new Error(`replication of ${p.sourceDatabase} to ${p.targetDatabase} is not streaming after ${Math.round((opts.timeoutMs ?? 0) / 1000)} s (${ready}/${states.length} tables ready)`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * Removes a replication completely: the subscription on the target, its
 * slot and the publication on the source (a forgotten slot fills the
 * source's disk), and, with `dropTarget`, the target database. Steps whose
 * server does not answer throw, so a caller retries until the slot is gone. Idempotent.
 */
export async function removeReplication(p: ReplicationPair, instanceId: string, opts: { dropTarget: boolean }): Promise<void> {
  await p.target.engine.unsubscribe(p.targetDatabase, p.subscription);
  await p.source.engine.dropSlot(p.subscription);
  await p.source.engine.unpublish(p.sourceDatabase, PUBLICATION);
  if (opts.dropTarget) await p.target.engine.dropDatabase(p.targetDatabase, ownerTag(instanceId));
}

/** Records (or updates) the catalog row of an instance's replication. */
export async function recordReplica(db: Database, p: ReplicationPair, instanceId: string, set: Partial<Pick<ReplicaRow, 'state' | 'drift' | 'error' | 'caughtUpAt'>>): Promise<void> {
  const values = {
    instanceId,
    direction: p.direction,
    sourceRegion: p.source.name,
    sourceDatabase: p.sourceDatabase,
    targetRegion: p.target.name,
    targetDatabase: p.targetDatabase,
    subscription: p.subscription,
    state: set.state ?? 'seeding',
    ...set,
  };
  await db
    .insert(replicas)
    .values(values)
    .onConflictDoUpdate({ target: replicas.instanceId, set: { ...values, updatedAt: sql`now()` } });
}

/**
 * Removes an instance's geo-secondary (whichever direction its catalog row
 * names, else forward), audited. Used when an instance becomes a sandbox or
 * is deleted. Idempotent.
 */
export async function removeGeoSecondary(db: Database, regions: Map<string, RegionHandles>, inst: Pick<InstanceRow, 'id' | 'name' | 'homeRegion'>, actor: string): Promise<boolean> {
  const [row] = await db.select().from(replicas).where(eq(replicas.instanceId, inst.id));
  // A failback's reverse copy lands in the home database itself: only its subscription goes, never the database.
  if (row?.direction === 'reverse') await removeReplication(replicationPair(regions, inst, 'reverse'), inst.id, { dropTarget: false });
  const forward = replicationPair(regions, inst, 'forward');
  // A secondary made before 0.2 has its own database name (`<name>--s`): that one goes.
  if (row?.direction === 'forward' && row.targetDatabase !== forward.targetDatabase) await removeReplication({ ...forward, targetDatabase: row.targetDatabase }, inst.id, { dropTarget: true });
  await removeReplication(forward, inst.id, { dropTarget: true });
  if (!row) return false;
  await db.transaction(async (tx) => {
    await tx.delete(replicas).where(eq(replicas.instanceId, inst.id));
    await audit(tx, { actor, action: 'replication.removed', instanceId: inst.id, subject: inst.name, details: { targetRegion: row.targetRegion, targetDatabase: row.targetDatabase } });
  });
  return true;
}

/**
 * Cancels the geo-secondary run holding the instance, if one does, and waits
 * (up to `waitMs`) until it has let go. Housekeeping yields to runbooks.
 */
export async function yieldGeoSecondary(db: Database, temporal: Client, instanceId: string, waitMs = 30_000): Promise<boolean> {
  const [row] = await db.select({ run: instances.lockedByRun, runbook: instances.lockedRunbook }).from(instances).where(eq(instances.id, instanceId));
  if (!row?.run || row.runbook !== Runbooks.geoSecondary) return false;
  try {
    await temporal.workflow.getHandle(row.run).cancel();
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
  }
  for (const deadline = Date.now() + waitMs; Date.now() < deadline; await new Promise((r) => setTimeout(r, 200))) {
    const [now] = await db.select({ run: instances.lockedByRun }).from(instances).where(eq(instances.id, instanceId));
    if (now?.run !== row.run) return true;
  }
  return true;
}
