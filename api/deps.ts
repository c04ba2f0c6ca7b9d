import type { Client, Connection } from '@temporalio/client';
import type { RegionHandles } from '../activities/deps.js';
import type { Database } from '../db/client.js';
import type { Config } from '../lib/config.js';
import { runUrl } from '../lib/temporal.js';
import type { AuthVariables } from './auth.js';

/** What the API handlers reach. */
export interface ApiDeps {
  cfg: Config;
  db: Database;
  temporal: Client;
  temporalConnection: Connection;
  regions: Map<string, RegionHandles>;
  /** How long a create/delete instance request waits for its run before answering 202. */
  syncWaitMs?: number;
  /** Deadline for starting a run; past it the request answers 503 and undoes what it prepared (default 10 s). */
  startDeadlineMs?: number;
  /** Also export the process's own metrics (CPU, memory, event loop) on /metrics: the API process sets it. */
  processMetrics?: boolean;
}

/** Hono environment of every API sub-app. */
export interface ApiEnv {
  Variables: AuthVariables;
}

/** Link to a run in the Temporal Web UI. */
export const uiLink = (deps: ApiDeps, workflowId: string) => runUrl(deps.cfg.TEMPORAL_UI_URL, deps.cfg.TEMPORAL_NAMESPACE, workflowId);
