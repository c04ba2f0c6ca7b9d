import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';
import { Runbooks } from '../workflows/contract.js';
import type { TokenConfig } from './config.js';

/**
 * The worker's Prometheus metrics (issue 7). Labels are bounded: runbook names
 * and outcomes only, never an instance, backup or workflow id.
 */
export const workerRegistry = new Registry();

const runbookNames = new Set<string>(Object.values(Runbooks));
const outcomes = new Set(['completed', 'failed', 'cancelled', 'terminated', 'timed_out', 'continued_as_new', 'degraded', 'rejected', 'expired', 'partial', 'aborted', 'nothing-to-do']);
/** A label value from a closed set, so a bug upstream can never explode the series count. */
export const runbookLabel = (runbook: string) => (runbookNames.has(runbook) ? runbook : 'other');
export const outcomeLabel = (outcome: string) => (outcomes.has(outcome) ? outcome : 'other');

export const runbookRuns = new Counter({
  name: 'bcdr_runbook_runs_total',
  help: 'Runbook runs that ended on this worker, by runbook and outcome (completed, failed, cancelled, continued_as_new, degraded, rejected, expired)',
  labelNames: ['runbook', 'outcome'] as const,
  registers: [workerRegistry],
});

export const runbookDuration = new Histogram({
  name: 'bcdr_runbook_duration_seconds',
  help: 'Wall time of a runbook run, from its start to its end (workflow time), by runbook and outcome',
  labelNames: ['runbook', 'outcome'] as const,
  buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21_600, 86_400],
  registers: [workerRegistry],
});

export const backupSize = new Histogram({
  name: 'bcdr_backup_size_bytes',
  help: 'Size of each backup archive written by this worker (pg_dump custom format)',
  buckets: [1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12],
  registers: [workerRegistry],
});

const throughputBuckets = [1e5, 1e6, 5e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9];

export const dumpThroughput = new Histogram({
  name: 'bcdr_dump_throughput_bytes_per_second',
  help: 'Archive bytes written per second of each backup dump (the whole dump step: pg_dump, hash, fsync, commit)',
  buckets: throughputBuckets,
  registers: [workerRegistry],
});

export const restoreThroughput = new Histogram({
  name: 'bcdr_restore_throughput_bytes_per_second',
  help: 'Archive bytes restored per second of each restore into a staging database (the whole step: pg_restore and sequence checks)',
  buckets: throughputBuckets,
  registers: [workerRegistry],
});

/** Records a runbook run that ended (called from the workflow interceptor's sink, never during replay). */
export function recordRunbookEnd(runbook: string, outcome: string, durationMs: number): void {
  const labels = { runbook: runbookLabel(runbook), outcome: outcomeLabel(outcome) };
  runbookRuns.inc(labels);
  if (Number.isFinite(durationMs) && durationMs >= 0) runbookDuration.observe(labels, durationMs / 1000);
}

/** Records a dump that this worker performed: its archive size and its throughput. */
export function recordDump(sizeBytes: number, durationMs: number): void {
  if (!(sizeBytes >= 0)) return;
  backupSize.observe(sizeBytes);
  if (durationMs > 0) dumpThroughput.observe(sizeBytes / (durationMs / 1000));
}

/** Records a restore into staging that this worker performed. */
export function recordRestore(bytes: number, durationMs: number): void {
  if (bytes >= 0 && durationMs > 0) restoreThroughput.observe(bytes / (durationMs / 1000));
}

let defaultsCollected = false;

function sameToken(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** True when the request carries `Authorization: Bearer <token>` naming one of `tokens` (any role). */
export function authorized(req: IncomingMessage, tokens: TokenConfig[]): boolean {
  const match = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  const presented = match?.[1];
  return Boolean(presented && tokens.some((t) => sameToken(t.token, presented)));
}

/** The SDK exporter's text, or a comment saying why it is missing (never fails the scrape). */
async function sdkMetricsText(url: string | undefined): Promise<string> {
  if (!url) return '';
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    if (!res.ok) return `# temporal SDK metrics unavailable: HTTP ${res.status}\n`;
    return await res.text();
  } catch (err) {
    return `# temporal SDK metrics unavailable: ${err instanceof Error ? err.message : String(err)}\n`;
  }
}

export interface WorkerMetricsServer {
  server: Server;
  port: number;
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` (Prometheus text; bearer token of `tokens`, any role) with
 * this worker's metrics, default process metrics, and the Temporal SDK's own
 * worker metrics read from `sdkMetricsUrl`; `GET /healthz` needs no token.
 */
export async function serveWorkerMetrics(opts: { host: string; port: number; tokens: TokenConfig[]; sdkMetricsUrl?: string }): Promise<WorkerMetricsServer> {
  if (!defaultsCollected) {
    collectDefaultMetrics({ register: workerRegistry });
    defaultsCollected = true;
  }
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET', 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'method_not_allowed', message: 'only GET' } }));
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'ok' }));
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'not_found', message: `no route for ${req.method} ${path}` } }));
      return;
    }
    if (!authorized(req, opts.tokens)) {
      res
        .writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer' })
        .end(JSON.stringify({ error: { code: 'unauthorized', message: 'send Authorization: Bearer <token> (any API token)' } }));
      return;
    }
    const [own, sdk] = await Promise.all([workerRegistry.metrics(), sdkMetricsText(opts.sdkMetricsUrl)]);
    res.writeHead(200, { 'content-type': workerRegistry.contentType });
    res.end(`${own.trimEnd()}\n${sdk}`);
  };
  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'internal', message: 'metrics failed' } }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  return { server, port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}
