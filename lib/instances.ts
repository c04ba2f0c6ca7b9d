import { and, eq, ne, sql } from 'drizzle-orm';
import type { RegionHandles } from '../activities/deps.js';
import type { Database } from '../db/client.js';
import { instances, type InstanceRow } from '../db/schema/index.js';
import { audit } from './audit.js';

/**
 * Lets clients connect to a suspended instance again and marks it `active`,
 * audited as `actor`. The caller holds the instance (its lock), so nothing
 * else changes it meanwhile. Idempotent.
 */
export async function resumeInstance(db: Database, region: RegionHandles, inst: Pick<InstanceRow, 'id' | 'name' | 'databaseName'>, actor: string): Promise<void> {
  await region.engine.setConnectionsAllowed(inst.databaseName, true);
  await db.transaction(async (tx) => {
    const rows = await tx
      .update(instances)
      .set({ state: 'active', updatedAt: sql`now()` })
      .where(and(eq(instances.id, inst.id), eq(instances.state, 'suspended')))
      .returning({ id: instances.id });
    if (rows.length) await audit(tx, { actor, action: 'instance.resume', instanceId: inst.id, subject: inst.name });
  });
}

/**
 * Stops all writes to an instance: refuses new connections, ends the open
 * sessions and marks it `suspended`, audited as `actor`. Idempotent.
 */
export async function suspendInstance(db: Database, region: RegionHandles, inst: Pick<InstanceRow, 'id' | 'name' | 'databaseName'>, actor: string): Promise<void> {
  // A database a failed reset left missing takes no writes anyway.
  if (await region.engine.databaseExists(inst.databaseName)) {
    await region.engine.setConnectionsAllowed(inst.databaseName, false);
    await region.engine.terminateSessions(inst.databaseName);
  }
  await db.transaction(async (tx) => {
    const rows = await tx
      .update(instances)
      .set({ state: 'suspended', updatedAt: sql`now()` })
      .where(and(eq(instances.id, inst.id), ne(instances.state, 'suspended')))
      .returning({ id: instances.id });
    if (rows.length) await audit(tx, { actor, action: 'instance.suspend', instanceId: inst.id, subject: inst.name });
  });
}

/**
 * The instance whose endpoint `instanceId` serves (after a failed production
 * restore), or null. Such a sandbox holds production's live data: nothing may
 * restore into it, reset, delete or retype it until production is repaired.
 */
export async function servedBy(db: Database, instanceId: string): Promise<Pick<InstanceRow, 'id' | 'name'> | null> {
  const [row] = await db.select({ id: instances.id, name: instances.name }).from(instances).where(eq(instances.servedBy, instanceId)).limit(1);
  return row ?? null;
}

/** The message refusing a change to a sandbox that serves production. */
export const servingRefusal = (name: string, production: string) =>
  `instance ${name} serves the endpoint of degraded production instance ${production} and holds its live data; repair ${production} first (POST /v1/runbooks/production-restore naming both)`;
