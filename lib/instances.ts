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
  await region.engine.setConnectionsAllowed(inst.databaseName, false);
  await region.engine.terminateSessions(inst.databaseName);
  await db.transaction(async (tx) => {
    const rows = await tx
      .update(instances)
      .set({ state: 'suspended', updatedAt: sql`now()` })
      .where(and(eq(instances.id, inst.id), ne(instances.state, 'suspended')))
      .returning({ id: instances.id });
    if (rows.length) await audit(tx, { actor, action: 'instance.suspend', instanceId: inst.id, subject: inst.name });
  });
}
