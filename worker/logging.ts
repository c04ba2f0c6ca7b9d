import { createServer } from 'node:net';
import { LogTimestamp, Runtime, type LogLevel, type LogMetadata, type Logger as TemporalLogger } from '@temporalio/worker';
import type { Logger } from '../lib/log.js';

const levels: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' };

/**
 * The Temporal SDK's logger, written to pino: every SDK line (the worker's, the
 * workflow logger's, the activity logger's, forwarded Core lines) becomes one
 * structured line with the metadata as fields. Activity lines name their run
 * `runId` like workflow lines do (the SDK says `workflowRunId`); the task token is dropped.
 */
export class PinoTemporalLogger implements TemporalLogger {
  constructor(private readonly pino: () => Logger) {}

  log(level: LogLevel, message: string, meta?: LogMetadata): void {
    const log = this.pino();
    // The bundler's webpack statistics (a long multi-line text) are for debugging, not for every start.
    const method = level === 'INFO' && message.startsWith('asset workflow-bundle') ? 'debug' : (levels[level] ?? 'info');
    if (!log.isLevelEnabled(method)) return;
    const fields: Record<string, unknown> = {};
    if (meta) {
      for (const [k, v] of Object.entries(meta)) {
        if (k === 'taskToken') continue;
        if (k === 'workflowRunId') fields.runId ??= v;
        else if (k === 'error' || k === 'failure') fields.err = v;
        else fields[k] = v;
      }
      void meta[LogTimestamp]; // pino stamps its own time
    }
    log[method](fields, message);
  }
  trace(message: string, meta?: LogMetadata) {
    this.log('TRACE', message, meta);
  }
  debug(message: string, meta?: LogMetadata) {
    this.log('DEBUG', message, meta);
  }
  info(message: string, meta?: LogMetadata) {
    this.log('INFO', message, meta);
  }
  warn(message: string, meta?: LogMetadata) {
    this.log('WARN', message, meta);
  }
  error(message: string, meta?: LogMetadata) {
    this.log('ERROR', message, meta);
  }
}

/** The filter for Core's forwarded lines: as verbose as pino when debugging, otherwise WARN (Core at INFO is chatty about its internals). */
function coreLevel(pinoLevel: string): LogLevel {
  if (pinoLevel === 'trace') return 'TRACE';
  if (pinoLevel === 'debug') return 'DEBUG';
  if (pinoLevel === 'error' || pinoLevel === 'fatal' || pinoLevel === 'silent') return 'ERROR';
  return 'WARN';
}

/** A free TCP port on the loopback address (for the SDK's Prometheus exporter, which Core binds itself). */
export async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Installs the Temporal runtime once for this process, before any Worker or
 * NativeConnection: the SDK logger goes to pino (Core's own lines forwarded too),
 * and with `sdkMetricsPort` the SDK's worker metrics are exported in Prometheus
 * format on 127.0.0.1:<port> (read back by the worker's /metrics).
 */
export function installTemporalRuntime(opts: { logger: () => Logger; sdkMetricsPort?: number }): Runtime {
  const level = opts.logger().level;
  return Runtime.install({
    logger: new PinoTemporalLogger(opts.logger),
    telemetryOptions: {
      logging: { filter: { core: coreLevel(level), other: 'ERROR' }, forward: {} },
      ...(opts.sdkMetricsPort ? { metrics: { prometheus: { bindAddress: `127.0.0.1:${opts.sdkMetricsPort}` } } } : {}),
    },
  });
}
