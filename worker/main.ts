import { loadConfigOrExit } from '../lib/config.js';
import { initLogging, logger, routeConsoleToLogger } from '../lib/log.js';
import { serveWorkerMetrics, type WorkerMetricsServer } from '../lib/worker-metrics.js';
import { createBcdrWorker } from './create.js';
import { freeLoopbackPort, installTemporalRuntime } from './logging.js';

/**
 * Worker process: structured logs (the Temporal SDK's included), Prometheus
 * /metrics, and the worker itself; runs until SIGINT/SIGTERM, then finishes
 * in-flight tasks and exits.
 */
async function main(): Promise<void> {
  const cfg = loadConfigOrExit();
  const log = initLogging(cfg, 'worker');
  routeConsoleToLogger(log);
  const metricsOn = cfg.WORKER_METRICS_PORT > 0;
  // The SDK's own worker metrics: a Prometheus exporter on loopback that /metrics appends. Before any NativeConnection.
  const sdkMetricsPort = metricsOn ? cfg.WORKER_SDK_METRICS_PORT || (await freeLoopbackPort()) : 0;
  installTemporalRuntime({ logger: () => logger, sdkMetricsPort });
  const { worker, close } = await createBcdrWorker(cfg);
  let metrics: WorkerMetricsServer | undefined;
  if (metricsOn) {
    if (cfg.API_TOKENS.length === 0) log.warn('API_TOKENS is empty: every /metrics request will get 401');
    try {
      metrics = await serveWorkerMetrics({
        host: cfg.WORKER_METRICS_HOST,
        port: cfg.WORKER_METRICS_PORT,
        tokens: cfg.API_TOKENS,
        sdkMetricsUrl: `http://127.0.0.1:${sdkMetricsPort}/metrics`,
      });
      log.info({ host: cfg.WORKER_METRICS_HOST, port: metrics.port }, `worker metrics on http://${cfg.WORKER_METRICS_HOST}:${metrics.port}/metrics (bearer token)`);
    } catch (err) {
      // Runbooks matter more than their metrics: keep working, and say so loudly.
      log.error({ err }, `worker metrics not served on ${cfg.WORKER_METRICS_HOST}:${cfg.WORKER_METRICS_PORT}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  log.info(
    { taskQueue: cfg.TEMPORAL_TASK_QUEUE, temporalAddress: cfg.TEMPORAL_ADDRESS, namespace: cfg.TEMPORAL_NAMESPACE },
    `worker polling task queue ${cfg.TEMPORAL_TASK_QUEUE} on ${cfg.TEMPORAL_ADDRESS} (namespace ${cfg.TEMPORAL_NAMESPACE})`,
  );
  await worker.run(); // the SDK shuts down gracefully on SIGINT/SIGTERM
  await metrics?.close();
  await close();
  log.info('worker stopped');
}

main().catch((err: unknown) => {
  logger.fatal({ err }, `worker failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
