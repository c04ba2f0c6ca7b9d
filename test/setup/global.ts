import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { loadConfig } from '../../lib/config.js';
import { retentionSweepScheduleId } from '../../lib/schedules.js';
import { connectTemporal } from '../../lib/temporal.js';
import { freePort, prepareLocalStack, startCluster, startLocalStores, startTemporal } from '../../scripts/lib/services.js';
import { ensureVersitygw } from '../../scripts/lib/s3-server.js';
import { ensurePostgres, ensureTemporalCli } from '../../scripts/lib/tools.js';
import { createLogger, secretsOf } from '../../lib/log.js';
import { createBcdrWorker } from '../../worker/create.js';
import { freeLoopbackPort, installTemporalRuntime } from '../../worker/logging.js';
import { testTokens } from '../tokens.js';

declare module 'vitest' {
  export interface ProvidedContext {
    bcdrEnv: Record<string, string>;
  }
}

/**
 * Starts, once per test run, a real Temporal dev server, three real
 * PostgreSQL clusters (catalog, primary, secondary) and a real worker.
 */
export default async function setup(project: TestProject) {
  const started = Date.now();
  const root = mkdtempSync(path.join(os.tmpdir(), 'bcdr-test-'));
  chmodSync(root, 0o755);
  const pgBin = ensurePostgres();
  const cli = ensureTemporalCli();
  const [tPort, uiPort, cPort, pPort, sPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const versitygw = ensureVersitygw();
  const [temporal, catalog, primary, secondary, stores] = await Promise.all([
    startTemporal({ cli, port: tPort, uiPort, logFile: path.join(root, 'temporal.log'), timeoutMs: 120_000 }),
    startCluster({ name: 'catalog', pgBin, dataDir: path.join(root, 'pg', 'catalog'), port: cPort }),
    startCluster({ name: 'primary', pgBin, dataDir: path.join(root, 'pg', 'primary'), port: pPort }),
    startCluster({ name: 'secondary', pgBin, dataDir: path.join(root, 'pg', 'secondary'), port: sPort }),
    // Region primary keeps its backups in a folder, secondary in a real S3 server (Object Lock on); Azurite is up for tests of Azure regions.
    startLocalStores({ dataDir: path.join(root, 'stores'), blobRoot: path.join(root, 'blobs'), logDir: root, versitygw }),
  ]);
  // Test files run in forks of this process and spawn workers of their own: they all reach the stores with these.
  Object.assign(process.env, stores.env);
  const env: Record<string, string> = {
    ...(await prepareLocalStack({ temporal, catalog, primary, secondary, pgBin, blobRoot: path.join(root, 'blobs'), taskQueue: 'bcdr-test', stores })),
    BCDR_TEST_S3_ENDPOINT: stores.s3.endpoint,
    API_TOKENS: JSON.stringify(testTokens),
    WORKER_SHUTDOWN_GRACE_SECONDS: '5',
    // Tests check that no replaced copy is left: drop it at once rather than a minute after the swap.
    DROP_RETIRED_AFTER_SECONDS: '0',
    // Region monitors check every 2 s, so geo-secondaries of instances a test switches to production come quickly.
    REGION_CHECK_SECONDS: '2',
    // Test-only fault hooks (activities/faults.ts): tests arm them by writing this file.
    BCDR_FAULT_FILE: path.join(root, 'faults.json'),
    // Scheduled runs must not fire in the middle of the tests: daily backups start 12 hours from now.
    DEFAULT_BACKUP_START_TIME: new Date(Date.now() + 12 * 3600_000).toISOString().slice(11, 16),
    // Worker processes that tests spawn serve no /metrics unless a test asks (one fixed port would collide).
    WORKER_METRICS_PORT: '0',
  };
  const cfg = loadConfig(env);
  // Expected failures (killed dumps, refused provisioning) are asserted by the tests; keep the log to real problems.
  // The same pino bridge as the worker process, at error level, with the SDK's metrics exporter on (as in production).
  const sdkLogger = createLogger({ name: 'test-worker', level: 'error', secrets: secretsOf(cfg) });
  installTemporalRuntime({ logger: () => sdkLogger, sdkMetricsPort: await freeLoopbackPort() });
  const worker = await createBcdrWorker(cfg);
  const running = worker.worker.run();
  // The fleet-wide sweep is exercised by its own test; on its hourly schedule it could expire a test's rows mid-test.
  {
    const { client, connection } = await connectTemporal(cfg);
    await client.schedule.getHandle(retentionSweepScheduleId).pause('paused for the test run');
    await connection.close();
  }
  project.provide('bcdrEnv', env);
  console.log(`test servers ready in ${((Date.now() - started) / 1000).toFixed(1)} s (data in ${root})`);

  return async () => {
    worker.worker.shutdown();
    await running.catch(() => {});
    await worker.close();
    await Promise.all([temporal.stop(), catalog.stop(), primary.stop(), secondary.stop(), stores.stop()]);
    if (!process.env.KEEP_TEST_DATA) rmSync(root, { recursive: true, force: true });
  };
}
