import { Connection, Client } from '@temporalio/client';
import type { Config } from './config.js';

export { InstanceIdKey, RunbookKey, runSearchAttributes } from '../workflows/search-attributes.js';

/** Opens a Temporal client for the configured server and namespace. */
export async function connectTemporal(cfg: Pick<Config, 'TEMPORAL_ADDRESS' | 'TEMPORAL_NAMESPACE'>): Promise<{ client: Client; connection: Connection }> {
  const connection = await Connection.connect({ address: cfg.TEMPORAL_ADDRESS, connectTimeout: '10s' });
  return { client: new Client({ connection, namespace: cfg.TEMPORAL_NAMESPACE }), connection };
}

/**
 * Registers the `InstanceId` and `Runbook` search attributes on the namespace.
 * Idempotent: attributes already there are left alone, so it runs at every worker start.
 */
export async function ensureSearchAttributes(connection: Connection, namespace: string): Promise<void> {
  const wanted = { InstanceId: 1, Runbook: 1 }; // 1 = INDEXED_VALUE_TYPE_KEYWORD
  const existing = await connection.operatorService.listSearchAttributes({ namespace });
  const have = { ...(existing.customAttributes ?? {}) };
  const missing = Object.fromEntries(Object.entries(wanted).filter(([name]) => !(name in have)));
  if (Object.keys(missing).length === 0) return;
  try {
    await connection.operatorService.addSearchAttributes({ namespace, searchAttributes: missing });
  } catch (err) {
    // ALREADY_EXISTS (6): another worker registered them concurrently.
    if ((err as { code?: number }).code !== 6) throw err;
  }
}

/** A link to one run in the Temporal Web UI. */
export function runUrl(uiUrl: string, namespace: string, workflowId: string): string {
  return `${uiUrl.replace(/\/$/, '')}/namespaces/${encodeURIComponent(namespace)}/workflows/${encodeURIComponent(workflowId)}`;
}
