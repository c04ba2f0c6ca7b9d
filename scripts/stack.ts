/**
 * The whole local stack on embedded defaults, in one command (`npm start`):
 * a Temporal dev server with its Web UI (SQLite under .data/), three local
 * PostgreSQL clusters (catalog, region primary, region secondary), a blob
 * store folder per region, the worker and the API. A worker or API that
 * crashes is restarted with a back-off. Ctrl-C stops all of it;
 * starting again keeps the data. `npm start -- --fresh` starts from scratch.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, type TokenConfig } from '../lib/config.js';
import { projectRoot } from '../lib/paths.js';
import { portIsFree, prepareLocalStack, freePort, startCluster, startLocalStores, startTemporal, stopChild, waitFor, type LocalStores, type PgCluster, type TemporalServer } from './lib/services.js';
import { ensureVersitygw } from './lib/s3-server.js';
import { ensurePostgres, ensureTemporalCli, MissingToolError } from './lib/tools.js';

const { values: args } = parseArgs({
  options: { fresh: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } },
});
if (args.help) {
  console.log(`usage: npm start [-- --fresh]

  --fresh   delete the local data folder (${process.env.BCDR_DATA_DIR ?? '.data'}) first and start from scratch

Environment overrides: BCDR_DATA_DIR, BCDR_API_PORT, BCDR_TEMPORAL_PORT, BCDR_TEMPORAL_UI_PORT,
BCDR_PG_PORT_CATALOG, BCDR_PG_PORT_PRIMARY, BCDR_PG_PORT_SECONDARY, BCDR_WORKER_METRICS_PORT, API_TOKENS (JSON).
The worker and the API log pretty lines to ${process.env.BCDR_DATA_DIR ?? '.data'}/logs (LOG_FORMAT=json for JSON lines, LOG_LEVEL=debug for more).`);
  process.exit(0);
}

const dataDir = path.resolve(process.env.BCDR_DATA_DIR ?? path.join(projectRoot, '.data'));
const logsDir = path.join(dataDir, 'logs');
const say = (msg: string) => console.log(`[bcdr] ${msg}`);

/** Development tokens, one per role; printed at start. Override with API_TOKENS. */
const devTokens: TokenConfig[] = [
  { token: 'dev-operator-token', identity: 'dev-operator', roles: ['operator'] },
  { token: 'dev-viewer-token', identity: 'dev-viewer', roles: ['viewer'] },
  { token: 'dev-approver-token', identity: 'dev-approver', roles: ['approver'] },
];

type PortName = 'api' | 'temporal' | 'temporalUi' | 'catalog' | 'primary' | 'secondary' | 'workerMetrics';
const portDefaults: Record<PortName, [envVar: string, preferred: number]> = {
  api: ['BCDR_API_PORT', 8080],
  temporal: ['BCDR_TEMPORAL_PORT', 7233],
  temporalUi: ['BCDR_TEMPORAL_UI_PORT', 8233],
  catalog: ['BCDR_PG_PORT_CATALOG', 55432],
  primary: ['BCDR_PG_PORT_PRIMARY', 55433],
  secondary: ['BCDR_PG_PORT_SECONDARY', 55434],
  workerMetrics: ['BCDR_WORKER_METRICS_PORT', 9464],
};

/** Configured ports win; otherwise the port used last time, the usual default, or any free port, in that order. */
async function choosePorts(): Promise<Record<PortName, number>> {
  const file = path.join(dataDir, 'ports.json');
  const previous = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Partial<Record<PortName, number>>) : {};
  const chosen = {} as Record<PortName, number>;
  for (const [name, [envVar, preferred]] of Object.entries(portDefaults) as [PortName, [string, number]][]) {
    const configured = process.env[envVar];
    if (configured) {
      chosen[name] = Number(configured);
      if (!(await portIsFree(chosen[name]))) throw new Error(`${envVar}=${configured} is already in use`);
      continue;
    }
    const candidates = [previous[name], preferred].filter((p): p is number => typeof p === 'number');
    let port: number | undefined;
    for (const p of candidates) if (await portIsFree(p)) { port = p; break; }
    chosen[name] = port ?? (await freePort());
  }
  writeFileSync(file, JSON.stringify(chosen, null, 2));
  return chosen;
}

/** Starts a TypeScript entry point as a child process, logging to .data/logs/<name>.log. */
function startNode(name: string, entry: string, env: NodeJS.ProcessEnv): ChildProcess {
  const log = createWriteStream(logFile(name), { flags: 'a' });
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(projectRoot, entry)], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group: Ctrl-C reaches us, and we stop it in order
  });
  // Two streams into one file: neither may end it (a write after its end would crash this script); the child's close does.
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  child.once('close', () => log.end());
  return child;
}

const logFile = (name: string) => path.join(logsDir, `${name}.log`);
/** A log file as the user would type it: relative to the current folder when it is inside it. */
const shown = (file: string) => {
  const rel = path.relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : file;
};

/** Restart back-off for a crashed worker or API: 1 s, doubling to 30 s, back to 1 s once a process has stayed up 60 s. */
const restartPolicy = { firstDelayMs: 1_000, maxDelayMs: 30_000, stableAfterMs: 60_000 };

/**
 * Runs a TypeScript entry point and keeps it running: once the stack is ready,
 * a process that exits on its own is restarted after a back-off. Before then, an
 * exit stops the stack (a process that cannot start is reported, not retried
 * forever). Registers a stopper that cancels a pending restart and stops the
 * process, so Ctrl-C never races with a restart.
 */
function supervise(name: string, entry: string, env: NodeJS.ProcessEnv, graceMs: number): void {
  let child: ChildProcess | undefined;
  let startedAt = 0;
  let delayMs = restartPolicy.firstDelayMs;
  let pending: NodeJS.Timeout | undefined;

  const start = (): ChildProcess | undefined => {
    pending = undefined;
    if (stopping) return undefined;
    startedAt = Date.now();
    const c = startNode(name, entry, env);
    child = c;
    c.once('exit', (code, signal) => {
      if (stopping || child !== c) return;
      const how = signal ?? `code ${code}`;
      if (!ready) {
        say(`${name} exited unexpectedly (${how}) before the stack was ready; see ${shown(logFile(name))}`);
        void shutdown(1);
        return;
      }
      if (Date.now() - startedAt >= restartPolicy.stableAfterMs) delayMs = restartPolicy.firstDelayMs;
      say(`${name} exited unexpectedly (${how}); restarting in ${delayMs / 1000} s (see ${shown(logFile(name))})`);
      pending = setTimeout(() => {
        const again = start();
        if (again) say(`${name} restarted (pid ${again.pid})`);
      }, delayMs);
      delayMs = Math.min(delayMs * 2, restartPolicy.maxDelayMs);
    });
    return c;
  };

  stoppers.push(async () => {
    if (pending) clearTimeout(pending);
    pending = undefined;
    if (child) await stopChild(child, graceMs, 'SIGINT');
  });
  start();
}

const clusters: PgCluster[] = [];
const running: { temporal?: TemporalServer; stores?: LocalStores } = {};
/** What to stop, registered the moment each service exists (before it is ready), in start order. */
const stoppers: (() => Promise<void>)[] = [];
let stopping = false;
/** Set once the ready banner is out: from then on a crashed worker or API is restarted. */
let ready = false;

/** Stops, in reverse start order, everything this script started (API, worker, Temporal, clusters), then exits. */
async function shutdown(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  say('stopping ...');
  for (const stop of [...stoppers].reverse()) await stop().catch(() => {});
  if (code === 0) say('stopped; data kept in ' + dataDir);
  process.exit(code);
}

async function main(): Promise<void> {
  const t0 = Date.now();
  if (args.fresh && existsSync(dataDir)) {
    say(`--fresh: deleting ${dataDir}`);
    rmSync(dataDir, { recursive: true, force: true });
  }
  mkdirSync(logsDir, { recursive: true });

  const pgBin = ensurePostgres(say);
  const temporalCli = ensureTemporalCli(say);
  const ports = await choosePorts();

  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));

  say(`starting Temporal, PostgreSQL and the object stores (data in ${dataDir}) ...`);
  // Each service is registered as soon as it is up, so a failure part way still stops what did start.
  const cluster = (name: string, port: number) =>
    startCluster({ name, pgBin, dataDir: path.join(dataDir, 'pg', name), port, onStart: (stop) => stoppers.push(stop) }).then((c) => (clusters.push(c), c));
  const started = await Promise.allSettled([
    startTemporal({
      cli: temporalCli,
      port: ports.temporal,
      uiPort: ports.temporalUi,
      dbFile: path.join(dataDir, 'temporal', 'temporal.db'),
      logFile: path.join(logsDir, 'temporal.log'),
      timeoutMs: 120_000,
      onSpawn: (child) => stoppers.push(() => stopChild(child, 15_000)),
    }).then((t) => (running.temporal = t)),
    cluster('catalog', ports.catalog),
    cluster('primary', ports.primary),
    cluster('secondary', ports.secondary),
    startLocalStores({
      dataDir: path.join(dataDir, 'stores'),
      blobRoot: path.join(dataDir, 'blobs'),
      logDir: logsDir,
      versitygw: ensureVersitygw(say),
      objectLock: process.env.BCDR_OBJECT_LOCK === 'true',
      onSpawn: (child) => stoppers.push(() => stopChild(child, 10_000)),
    }).then((s) => (running.stores = s)),
  ]);
  const failure = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failure) throw failure.reason;
  const temporal = running.temporal!;
  const [catalog, primary, secondary] = ['catalog', 'primary', 'secondary'].map((n) => clusters.find((c) => c.name === n)!) as [PgCluster, PgCluster, PgCluster];

  const env: Record<string, string> = {
    ...(await prepareLocalStack({ temporal, catalog, primary, secondary, pgBin, blobRoot: path.join(dataDir, 'blobs'), taskQueue: process.env.TEMPORAL_TASK_QUEUE ?? 'bcdr', stores: running.stores })),
    API_TOKENS: process.env.API_TOKENS ?? JSON.stringify(devTokens),
    API_HOST: process.env.API_HOST ?? '127.0.0.1',
    API_PORT: String(ports.api),
    WORKER_METRICS_PORT: String(ports.workerMetrics),
    // Human-readable lines in .data/logs/*.log; JSON everywhere else (the default).
    LOG_FORMAT: process.env.LOG_FORMAT ?? 'pretty',
  };
  loadConfig(env); // fail here, readably, before starting processes with a bad setting

  // The worker gets time to let a running dump finish (its own shutdown grace), then is killed.
  supervise('worker', 'worker/main.ts', env, 60_000);
  supervise('api', 'api/main.ts', env, 60_000);

  const apiUrl = `http://${env.API_HOST}:${ports.api}`;
  await waitFor('API', async () => (await fetch(`${apiUrl}/readyz`)).ok, 120_000);
  // The worker registers the search attributes and polls; wait until Temporal sees a poller on the task queue.
  await waitFor('worker', async () => {
    const { Connection } = await import('@temporalio/client');
    const conn = await Connection.connect({ address: env.TEMPORAL_ADDRESS! });
    try {
      const res = await conn.workflowService.describeTaskQueue({ namespace: 'default', taskQueue: { name: env.TEMPORAL_TASK_QUEUE! }, taskQueueType: 1 });
      return (res.pollers?.length ?? 0) > 0;
    } finally {
      await conn.close();
    }
  }, 180_000);

  const tokens = JSON.parse(env.API_TOKENS!) as TokenConfig[];
  console.log(`
  BCDR stack ready in ${((Date.now() - t0) / 1000).toFixed(1)} s

  API           ${apiUrl}
  API docs      ${apiUrl}/docs   (OpenAPI: ${apiUrl}/openapi.json)
  Ops console   ${apiUrl}/console   (sign in with a token below)
  CLI           BCDR_API=${apiUrl} BCDR_TOKEN=<a token below> npx bcdr --help
  Metrics       ${apiUrl}/metrics and http://127.0.0.1:${ports.workerMetrics}/metrics   (API and worker, for Prometheus: any token below as Bearer)
  Temporal UI   ${temporal.uiUrl}
  Temporal      ${temporal.address} (namespace default, task queue ${env.TEMPORAL_TASK_QUEUE})
  PostgreSQL    catalog :${catalog.port}   primary :${primary.port}   secondary :${secondary.port}
  Stores        primary: folder ${path.join(dataDir, 'blobs', 'primary')}   secondary: S3 ${running.stores!.s3.endpoint} bucket bcdr-secondary${process.env.BCDR_OBJECT_LOCK === 'true' ? ' (Object Lock on)' : ''}
                Azurite ${running.stores!.azurite.accountUrl} container bcdr-backups (for regions you put on Azure)
  Data          ${dataDir}   (logs in ${logsDir})

  Tokens (local development only):
${tokens.map((t) => `    ${t.roles.join(',').padEnd(10)} ${t.token}`).join('\n')}

  Press Ctrl-C to stop. Data is kept; \`npm start -- --fresh\` starts from scratch.
  A worker or API that crashes is restarted (1 s back-off, doubling to 30 s).
`);
  ready = true;
}

main().catch(async (err: unknown) => {
  if (err instanceof MissingToolError) console.error(`[bcdr] ${err.message}`);
  else console.error('[bcdr] could not start the stack:', err instanceof Error ? err.message : err);
  await shutdown(1);
});
