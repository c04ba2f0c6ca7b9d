/**
 * API read load: requests per second and p99 latency of the reads a console,
 * a CLI watching runs and a Prometheus scraper make, at 10 and 50 concurrent
 * clients (autocannon, keep-alive, loopback). The baseline, measured in the
 * same run, is GET /healthz (no catalog, no Temporal): the ratio says what a
 * read costs beyond the HTTP stack itself.
 *
 *   npx tsx bench/api-load.ts [--instances 200] [--duration 10] [--profile DIR]
 *
 * Starts its own stack (Temporal dev server, three PostgreSQL clusters), the
 * API and the worker as separate processes, as `npm start` runs them; the
 * bench process only sends requests. The instance list is read with
 * `--instances` instances in the catalog (two real ones, the rest catalog rows).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { createDb } from '../db/client.js';
import { instances } from '../db/schema/index.js';
import { projectRoot } from '../lib/paths.js';
import { freePort, prepareLocalStack, startCluster, startTemporal, stopChild } from '../scripts/lib/services.js';
import { ensurePostgres, ensureTemporalCli } from '../scripts/lib/tools.js';
import { fmt } from './lib.js';

const { values: opt } = parseArgs({ options: { instances: { type: 'string', default: '200' }, duration: { type: 'string', default: '10' }, keep: { type: 'boolean', default: false }, profile: { type: 'string' } } });
const N = Number(opt.instances);
const DURATION = Number(opt.duration);
if (!Number.isInteger(N) || N < 2 || !Number.isFinite(DURATION) || DURATION <= 0) throw new Error('usage: npx tsx bench/api-load.ts [--instances N>=2] [--duration seconds]');
const TOKEN = 'bench-operator-token';
const log = (msg: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

const root = mkdtempSync(path.join(os.tmpdir(), 'bcdr-bench-api-'));
chmodSync(root, 0o755);
const cleanup: (() => Promise<unknown>)[] = [];
try {
  const pgBin = ensurePostgres();
  const cli = ensureTemporalCli();
  const [tPort, uiPort, cPort, pPort, sPort, apiPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);
  const [temporal, catalog, primary, secondary] = await Promise.all([
    startTemporal({ cli, port: tPort, uiPort, logFile: path.join(root, 'temporal.log'), timeoutMs: 120_000 }),
    startCluster({ name: 'catalog', pgBin, dataDir: path.join(root, 'catalog'), port: cPort }),
    startCluster({ name: 'primary', pgBin, dataDir: path.join(root, 'primary'), port: pPort }),
    startCluster({ name: 'secondary', pgBin, dataDir: path.join(root, 'secondary'), port: sPort }),
  ]);
  cleanup.push(() => temporal.stop(), () => catalog.stop(), () => primary.stop(), () => secondary.stop());
  const env: Record<string, string> = {
    ...(await prepareLocalStack({ temporal, catalog, primary, secondary, pgBin, blobRoot: path.join(root, 'blobs'), taskQueue: 'bcdr-bench-api' })),
    API_TOKENS: JSON.stringify([{ token: TOKEN, identity: 'bench.operator', roles: ['operator'] }]),
    API_HOST: '127.0.0.1',
    API_PORT: String(apiPort),
    LOG_LEVEL: 'warn',
    DEFAULT_BACKUP_START_TIME: new Date(Date.now() + 12 * 3600_000).toISOString().slice(11, 16),
  };
  const spawnTs = (entry: string, node: string[] = []): ChildProcess => {
    const child = spawn(process.execPath, [...node, '--import', 'tsx', path.join(projectRoot, entry)], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
    cleanup.push(() => stopChild(child, 10_000));
    return child;
  };
  spawnTs('worker/main.ts');
  // --profile DIR: a CPU profile of the API process, written when it stops.
  spawnTs('api/main.ts', opt.profile ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(opt.profile)}`] : []);
  const base = `http://127.0.0.1:${apiPort}`;
  const call = async (method: string, p: string, body?: unknown): Promise<any> => {
    const res = await fetch(`${base}${p}`, { method, headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    const json: unknown = await res.json();
    if (res.status >= 300) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  for (const deadline = Date.now() + 120_000; ; await sleep(250)) {
    const ok = await fetch(`${base}/readyz`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline) throw new Error('the API did not become ready');
  }
  const waitRun = async (id: string, until: (r: any) => boolean) => {
    for (const deadline = Date.now() + 180_000; ; await sleep(250)) {
      const r = await call('GET', `/v1/runs/${id}`);
      if (until(r)) return r;
      if (Date.now() > deadline) throw new Error(`run ${id}: ${JSON.stringify(r)}`);
    }
  };

  // Two real instances (a production one with a closed backup run, and a sandbox), the rest catalog rows.
  const prod = await call('POST', '/v1/instances', { name: 'load-prod', type: 'sandbox', edition: 'standard', homeRegion: 'primary' });
  const sbx = await call('POST', '/v1/instances', { name: 'load-sbx', type: 'sandbox', edition: 'standard', homeRegion: 'primary' });
  const backup = await call('POST', `/v1/instances/${prod.id}/backups`, { label: 'load' });
  const closedRun = backup.run.workflowId as string;
  await waitRun(closedRun, (r) => r.status === 'completed');
  await call('PATCH', `/v1/instances/${prod.id}`, { type: 'production' });
  const open = await call('POST', '/v1/runbooks/production-restore', { production: prod.id, sandbox: sbx.id, requireSignoff: true });
  const openRun = open.run.workflowId as string;
  await waitRun(openRun, (r) => r.step === 'signoff');
  const catalogDb = createDb(env.CATALOG_DATABASE_URL!, { max: 1 });
  cleanup.push(() => catalogDb.close());
  await catalogDb.db.insert(instances).values(
    Array.from({ length: N - 2 }, (_, i) => {
      const name = `load-${String(i).padStart(4, '0')}`;
      return { id: `i-load${String(i).padStart(6, '0')}`, name, type: 'sandbox' as const, edition: 'standard' as const, homeRegion: 'primary', activeRegion: 'primary', state: 'active' as const, databaseName: name, endpoint: `postgres://tenant@127.0.0.1:${pPort}/${name}`, lastGoodBackupAt: new Date(Date.now() - (i % 30) * 3600_000) };
    }),
  );
  const list = await call('GET', '/v1/instances');
  log(`${list.instances.length} instances in the catalog (${(JSON.stringify(list).length / 1024).toFixed(0)} KiB per list); closed run ${closedRun}; open run ${openRun} waits for sign-off`);

  const targets = [
    { name: 'GET /healthz (baseline)', path: '/healthz' },
    { name: `GET /v1/instances (${list.instances.length})`, path: '/v1/instances' },
    { name: 'GET /v1/runs/:id closed', path: `/v1/runs/${closedRun}` },
    { name: 'GET /v1/runs/:id open', path: `/v1/runs/${openRun}` },
  ];
  const rows: { name: string; c: number; rps: number; p50: number; p99: number; non2xx: number; errors: number }[] = [];
  for (const t of targets) {
    for (const c of [10, 50]) {
      // A short warm-up (first reads fill caches, JIT), then the measured run.
      await autocannon({ url: `${base}${t.path}`, connections: c, duration: 2, headers: { authorization: `Bearer ${TOKEN}` } });
      const r = await autocannon({ url: `${base}${t.path}`, connections: c, duration: DURATION, headers: { authorization: `Bearer ${TOKEN}` } });
      rows.push({ name: t.name, c, rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors + r.timeouts });
      log(`${t.name} c=${c}: ${r.requests.average.toFixed(0)} req/s, p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms, non-2xx ${r.non2xx}, errors ${r.errors + r.timeouts}`);
    }
  }
  const baseline = (c: number) => rows.find((r) => r.c === c && r.name.startsWith('GET /healthz'))!.rps;
  console.log(`\nAPI read load, ${DURATION} s per figure, loopback, ${os.cpus().length} cores (autocannon, API and worker in separate processes)`);
  console.log('| read | clients | req/s | p50 ms | p99 ms | non-2xx | errors | req/s vs /healthz |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.name} | ${r.c} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.non2xx} | ${r.errors} | ${fmt(r.rps / baseline(r.c))} |`);
  console.log('Targets (issue 7): instance list and closed run >= 2000 req/s with p99 <= 25 ms; open run >= 500 req/s.');
} finally {
  for (const f of cleanup.reverse()) await f().catch(() => {});
  if (!opt.keep) rmSync(root, { recursive: true, force: true });
}
