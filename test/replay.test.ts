import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { bundleWorkflowCode, Worker } from '@temporalio/worker';
import { beforeAll, describe, expect, it } from 'vitest';
import { workflowsPath } from '../worker/create.js';
import { historiesDir, recordedWorkflowIds, workflowIdsFile } from './record.js';

/**
 * Replays recorded histories of every runbook against today's workflow code.
 * A change that would break a running workflow (non-determinism) fails here.
 * Re-record with: RECORD_HISTORIES=1 npm test
 */
const files = readdirSync(historiesDir).filter((f) => f.endsWith('.json') && f !== path.basename(workflowIdsFile)).sort();

describe('workflow determinism', () => {
  let bundle: { code: string };
  beforeAll(async () => {
    bundle = await bundleWorkflowCode({ workflowsPath, logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} } as never });
  });

  it('has a recorded history for every runbook', () => {
    const names = files.map((f) => f.replace(/\.json$/, ''));
    expect(names).toEqual(
      expect.arrayContaining([
        'on-demand-backup',
        'daily-backup',
        'daily-backup-failed',
        'provision-instance',
        'provision-instance-failed',
        'delete-instance',
        'retention-sweep',
        'restore',
        'drop-retired',
        'restore-new-instance',
        'restore-corrupt-archive',
        'restore-sequence-warning',
        'reset',
        'reset-with-restore',
        'production-restore',
        'production-restore-degraded',
        'production-restore-signoff',
        'production-restore-rejected',
        'production-restore-repair',
        'provision-instance-production',
        'geo-secondary',
        'region-failover-rejected',
        'region-failover-expired',
        'region-failover-planned',
        'region-failover-unplanned',
        'failback-after-outage',
        'rotate-keys',
        'on-demand-backup-v0.5',
        'restore-v0.5',
        'production-restore-v0.5',
      ]),
    );
  });

  it.each(files)('keeps connection strings and tokens out of the %s history', (file) => {
    const text = readFileSync(path.join(historiesDir, file), 'utf8');
    // Payloads are base64 JSON; decode them all so a secret cannot hide in an encoded input or result.
    const decoded = [...text.matchAll(/"data":\s*"([A-Za-z0-9+/=]+)"/g)].map((m) => Buffer.from(m[1]!, 'base64').toString('utf8'));
    expect(decoded.length).toBeGreaterThan(0);
    for (const s of [text, ...decoded]) {
      expect(s).not.toMatch(/postgres(ql)?:\/\//);
      expect(s).not.toMatch(/-token\b/);
      expect(s).not.toMatch(/PGPASSWORD/);
    }
  });

  it.each(files)('replays %s without non-determinism', async (file) => {
    const history = JSON.parse(readFileSync(path.join(historiesDir, file), 'utf8'));
    const name = path.basename(file, '.json');
    await expect(Worker.runReplayHistory({ workflowBundle: bundle }, history, recordedWorkflowIds()[name] ?? name)).resolves.toBeUndefined();
  });
});
