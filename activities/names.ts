import { createHash } from 'node:crypto';

/** The tag marking a database as owned by instance `id`, so no runbook adopts or drops a database it did not create. */
export const ownerTag = (instanceId: string) => `bcdr:instance=${instanceId}`;

/**
 * The databases a restore touches, all on the target's server: the one
 * clients use, the staging copy pg_restore fills, and the replaced copy
 * dropped after the swap. Underscores never occur in instance names, so these
 * never collide with another instance's database.
 */
export const restoreNames = (databaseName: string) => ({
  current: databaseName,
  incoming: derivedName(databaseName, '__bcdr_restore'),
  retired: derivedName(databaseName, '__bcdr_retired'),
});

/**
 * PostgreSQL cuts names at 63 bytes, and the engine creates a database under
 * its name plus `__bcdr_new` (10) first: a derived name keeps to 53 bytes,
 * shortening a long instance name and adding a digest of it so two long names
 * never share one.
 */
function derivedName(databaseName: string, suffix: string): string {
  const MAX = 53;
  if (databaseName.length + suffix.length <= MAX) return `${databaseName}${suffix}`;
  const digest = createHash('sha256').update(databaseName).digest('hex').slice(0, 8);
  return `${databaseName.slice(0, MAX - suffix.length - digest.length - 1)}_${digest}${suffix}`;
}

