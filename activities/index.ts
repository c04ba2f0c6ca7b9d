import { backupActivities } from './backups.js';
import type { ActivityDeps } from './deps.js';
import { instanceActivities } from './instances.js';
import { keyActivities } from './keys.js';
import { replicationActivities } from './replication.js';
import { restoreActivities } from './restores.js';
import { signoffActivities } from './signoffs.js';

/** Every activity the worker registers, bound to its dependencies. */
export function createActivities(deps: ActivityDeps) {
  return { ...instanceActivities(deps), ...backupActivities(deps), ...restoreActivities(deps), ...signoffActivities(deps), ...replicationActivities(deps), ...keyActivities(deps) };
}

/** The activity interface workflows proxy (type-only import in workflow code). */
export type Activities = ReturnType<typeof createActivities>;
