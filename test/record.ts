import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';
import type { TestContext } from './helpers.js';

/** Folder of recorded workflow histories the replay test checks. */
export const historiesDir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'histories');

/**
 * With RECORD_HISTORIES=1, saves a finished run's history as
 * `test/histories/<name>.json` for the replay test. Otherwise does nothing:
 * committed histories are never overwritten by an ordinary test run.
 */
export async function recordHistory(ctx: TestContext, workflowId: string, name: string): Promise<void> {
  if (process.env.RECORD_HISTORIES !== '1') return;
  const history = await ctx.temporal.workflow.getHandle(workflowId).fetchHistory();
  writeFileSync(path.join(historiesDir, `${name}.json`), `${JSON.stringify(JSON.parse(historyToJSON(history)), null, 1)}\n`);
  const ids = recordedWorkflowIds();
  ids[name] = workflowId;
  writeFileSync(workflowIdsFile, `${JSON.stringify(Object.fromEntries(Object.entries(ids).sort()), null, 1)}\n`);
}

/** The workflow id each recorded history ran under: a run that derives ids from its own (child runs) must replay under it. */
export const workflowIdsFile = path.join(historiesDir, 'workflow-ids.json');

export function recordedWorkflowIds(): Record<string, string> {
  return existsSync(workflowIdsFile) ? (JSON.parse(readFileSync(workflowIdsFile, 'utf8')) as Record<string, string>) : {};
}
