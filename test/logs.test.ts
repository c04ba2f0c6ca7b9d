import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MockActivityEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { loadConfig, type Config } from '../lib/config.js';
import { createLogger, registerSecrets, scrub, secretsOf } from '../lib/log.js';
import { connectTemporal } from '../lib/temporal.js';
import { freePort } from '../scripts/lib/services.js';
import { runbookMetricsSinks, workflowInterceptorModules, workflowsPath } from '../worker/create.js';
import { activityInterceptors } from '../worker/activity-interceptors.js';
import { installTemporalRuntime, PinoTemporalLogger } from '../worker/logging.js';
import { historiesDir, recordedWorkflowIds, workflowIdsFile } from './record.js';
import { OPERATOR, testTokens, VIEWER } from './tokens.js';
import { uniqueName } from './helpers.js';

/** One metric family as parse-prometheus-text-format gives it (the package has no types). */
interface MetricFamily {
  name: string;
  type: string;
  metrics: { value?: string; labels?: Record<string, string>; buckets?: Record<string, string>; count?: string; sum?: string }[];
}
const parsePrometheus = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => MetricFamily[];

/** A real process (tsx entry point) whose stdout and stderr are kept whole, from its first byte. */
interface Proc {
  child: ChildProcess;
  output: () => string;
}

const here = import.meta.dirname;

async function startProcess(entry: string, env: Record<string, string>, ready: string, spawned: ChildProcess[]): Promise<Proc> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, '..', entry)], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  spawned.push(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  for (const deadline = Date.now() + 90_000; !out.includes(ready); await sleep(100)) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`${entry} did not start: ${out}`);
  }
  return { child, output: () => out };
}

async function stop(p: Proc): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill('SIGTERM');
  await Promise.race([exited, sleep(30_000)]);
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
}

/** Adds a password to a postgres URI: the test clusters trust local connections, so it is never checked, only carried. */
function withPassword(url: string, password: string): string {
  const u = new URL(url);
  u.password = password;
  return u.toString();
}

describe('structured logs and worker metrics (real worker and API processes)', () => {
  const spawned: ChildProcess[] = [];
  const password = `pw-${randomBytes(6).toString('hex')}`;
  let env: Record<string, string>;
  let cfg: Config;
  let worker: Proc;
  let api: Proc;
  let apiUrl: string;
  let metricsUrl: string;
  let workflowId: string;
  let runId: string;
  let instanceId: string;
  let metricsText: string;
  let unauthorizedStatus: number;

  beforeAll(async () => {
    const base = inject('bcdrEnv');
    const regions = (JSON.parse(base.REGIONS!) as { postgresUrl: string }[]).map((r) => ({ ...r, postgresUrl: withPassword(r.postgresUrl, password) }));
    const [apiPort, metricsPort] = await Promise.all([freePort(), freePort()]);
    env = {
      ...base,
      CATALOG_DATABASE_URL: withPassword(base.CATALOG_DATABASE_URL!, password),
      REGIONS: JSON.stringify(regions),
      TEMPORAL_TASK_QUEUE: `bcdr-logs-${randomBytes(4).toString('hex')}`,
      REGION_MONITORS: 'false',
      FLEET_SCHEDULES: 'false',
      API_PORT: String(apiPort),
      WORKER_METRICS_PORT: String(metricsPort),
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'json',
    };
    cfg = loadConfig(env);
    apiUrl = `http://127.0.0.1:${apiPort}`;
    metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    // The API starts runbooks on its TEMPORAL_TASK_QUEUE: the same queue as this worker, so the run happens here.
    [worker, api] = await Promise.all([
      startProcess('worker/main.ts', env, 'worker polling', spawned),
      startProcess('api/main.ts', env, 'API listening', spawned),
    ]);

    const call = async (method: string, p: string, body?: unknown, token: string | null = OPERATOR) => {
      const headers: Record<string, string> = {};
      if (token) headers.authorization = `Bearer ${token}`;
      if (body !== undefined) headers['content-type'] = 'application/json';
      const res = await fetch(`${apiUrl}${p}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      return { status: res.status, body: (await res.json().catch(() => null)) as any };
    };
    const name = uniqueName('logs');
    const created = await call('POST', '/v1/instances', { name, type: 'sandbox', edition: 'standard', homeRegion: 'primary' });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    instanceId = created.body.id;
    // A query string that carries a token must not reach the log either.
    expect((await call('GET', `/v1/instances/${name}?token=${VIEWER}`, undefined, VIEWER)).status).toBe(200);
    expect((await call('GET', '/v1/instances', undefined, null)).status).toBe(401);
    const started = await call('POST', `/v1/instances/${name}/backups`, { label: 'logs test' });
    expect(started.status, JSON.stringify(started.body)).toBe(202);
    workflowId = started.body.run.workflowId;

    const { client, connection } = await connectTemporal(cfg);
    try {
      const handle = client.workflow.getHandle(workflowId);
      await handle.result();
      runId = (await handle.describe()).runId;
    } finally {
      await connection.close();
    }
    expect((await call('GET', `/v1/runs/${workflowId}`)).body.status).toBe('completed');
    // A restore of that backup into the same sandbox, for the restore throughput (and its housekeeping run).
    const restore = await call('POST', '/v1/runbooks/restore', { backupId: started.body.backupId, target: { instance: name } });
    expect(restore.status, JSON.stringify(restore.body)).toBe(202);
    {
      const t = await connectTemporal(cfg);
      try {
        await t.client.workflow.getHandle(restore.body.run.workflowId).result();
        await t.client.workflow.getHandle(`${restore.body.run.workflowId}-drop-retired`).result().catch(() => {});
      } finally {
        await t.connection.close();
      }
    }

    unauthorizedStatus = (await fetch(metricsUrl)).status;
    const scraped = await fetch(metricsUrl, { headers: { authorization: `Bearer ${VIEWER}` } });
    expect(scraped.status).toBe(200);
    metricsText = await scraped.text();

    // Leave nothing behind on this queue: the instance (and its daily schedule) goes with the worker that ran it.
    const deleted = await call('DELETE', `/v1/instances/${name}`);
    if (deleted.status === 202 && deleted.body?.run?.workflowId) {
      const t = await connectTemporal(cfg);
      await t.client.workflow.getHandle(deleted.body.run.workflowId).result().catch(() => {});
      await t.connection.close();
    }
    await Promise.all([stop(api), stop(worker)]);
    // LOGS_TEST_DUMP=<dir>: keep both processes' output and the scrape for a look.
    if (process.env.LOGS_TEST_DUMP) {
      writeFileSync(path.join(process.env.LOGS_TEST_DUMP, 'worker.log'), worker.output());
      writeFileSync(path.join(process.env.LOGS_TEST_DUMP, 'api.log'), api.output());
      writeFileSync(path.join(process.env.LOGS_TEST_DUMP, 'metrics.txt'), metricsText);
    }
  });

  afterAll(async () => {
    for (const c of spawned) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  const linesOf = (p: Proc) => p.output().split('\n').filter((l) => l.trim() !== '');
  const parsed = (p: Proc) => linesOf(p).map((l) => JSON.parse(l) as Record<string, any>);

  it('writes every line of both processes as JSON', () => {
    for (const p of [worker, api]) {
      const lines = linesOf(p);
      expect(lines.length).toBeGreaterThan(3);
      for (const line of lines) {
        expect(() => JSON.parse(line), `not JSON: ${line}`).not.toThrow();
        const o = JSON.parse(line);
        expect(typeof o.level).toBe('string');
        expect(typeof o.msg).toBe('string');
        expect(typeof o.time).toBe('string');
      }
    }
  });

  it("tags every line of the run with its workflowId and runId, and activity lines with the activity type and instance id", () => {
    const lines = parsed(worker).filter((o) => o.workflowId === workflowId);
    expect(lines.length).toBeGreaterThan(0);
    for (const o of lines) {
      expect(o.runId, JSON.stringify(o)).toBe(runId);
      expect(o.instanceId, JSON.stringify(o)).toBe(instanceId);
    }
    const activityLines = lines.filter((o) => o.activityType);
    expect(activityLines.map((o) => o.activityType)).toEqual(expect.arrayContaining(['beginBackup', 'dumpBackup', 'applyRetention']));
    for (const o of activityLines) {
      expect(o.instanceId, JSON.stringify(o)).toBe(instanceId);
      expect(o.workflowType).toBe('onDemandBackupWorkflow');
    }
    // Info-level lines from the activities themselves (the SDK's own are debug).
    expect(activityLines.some((o) => o.activityType === 'dumpBackup' && o.level === 'info' && /^activity completed \(\d+ ms\)$/.test(o.msg))).toBe(true);
    expect(activityLines.some((o) => o.msg === 'activity started')).toBe(true);
    // Workflow lines: the run says it started and how it ended.
    const workflowLines = lines.filter((o) => !o.activityType);
    expect(workflowLines.map((o) => o.msg)).toEqual(expect.arrayContaining(['runbook started', expect.stringMatching(/^runbook completed \(\d+ ms\)$/)]));
    expect(workflowLines.find((o) => o.msg === 'runbook started')).toMatchObject({ runbook: 'on-demand-backup', sdkComponent: 'workflow' });
  });

  it('logs one line per API request: method, route, path without the query, status, duration and identity, no header value', () => {
    const requests = parsed(api).filter((o) => typeof o.status === 'number' && o.method);
    const backup = requests.find((o) => o.method === 'POST' && o.status === 202);
    expect(backup).toMatchObject({ path: expect.stringMatching(/^\/v1\/instances\/logs-[0-9a-f]+\/backups$/), principal: 'olivia.operator', level: 'info' });
    expect(backup!.route).toMatch(/^\/v1\/instances\/(:id|\{id\})\/backups$/);
    expect(typeof backup!.durationMs).toBe('number');
    const denied = requests.find((o) => o.status === 401);
    expect(denied).toMatchObject({ method: 'GET', path: '/v1/instances' });
    expect(denied!.principal).toBeUndefined();
    const withQuery = requests.find((o) => o.method === 'GET' && o.principal === 'victor.viewer');
    expect(withQuery!.path).not.toContain('?');
    for (const o of requests) {
      expect(JSON.stringify(o)).not.toMatch(/authorization|cookie|bearer/i);
    }
  });

  it('never writes a token, a database password or a connection URI with its password', () => {
    const all = worker.output() + api.output();
    for (const t of testTokens) expect(all).not.toContain(t.token);
    const passwords = [cfg.CATALOG_DATABASE_URL, ...cfg.REGIONS.map((r) => r.postgresUrl)].map((u) => new URL(u).password).filter(Boolean);
    expect(passwords).toContain(password);
    for (const p of passwords) {
      expect(all).not.toContain(p);
      expect(all).not.toContain(decodeURIComponent(p));
    }
    for (const u of [cfg.CATALOG_DATABASE_URL, ...cfg.REGIONS.map((r) => r.postgresUrl)]) expect(all).not.toContain(u);
  });

  it('serves the worker metrics behind a bearer token: runbook outcomes, backup sizes, the SDK metrics', () => {
    expect(unauthorizedStatus).toBe(401);
    const families = parsePrometheus(metricsText);
    const runs = families.find((f) => f.name === 'bcdr_runbook_runs_total');
    const completed = runs?.metrics.find((m) => m.labels?.runbook === 'on-demand-backup' && m.labels?.outcome === 'completed');
    expect(Number(completed?.value)).toBeGreaterThanOrEqual(1);
    // The parser merges the series of a labelled histogram (and drops their counts): read that count from the text.
    expect(families.some((f) => f.name === 'bcdr_runbook_duration_seconds' && f.type === 'HISTOGRAM')).toBe(true);
    const durationCount = /^bcdr_runbook_duration_seconds_count\{runbook="on-demand-backup",outcome="completed"\} (\d+)$/m.exec(metricsText);
    expect(Number(durationCount?.[1])).toBeGreaterThanOrEqual(1);
    const sizes = families.find((f) => f.name === 'bcdr_backup_size_bytes');
    expect(Number(sizes?.metrics[0]?.count)).toBeGreaterThanOrEqual(1);
    expect(Number(sizes?.metrics[0]?.sum)).toBeGreaterThan(0);
    const dump = families.find((f) => f.name === 'bcdr_dump_throughput_bytes_per_second');
    expect(Number(dump?.metrics[0]?.count)).toBeGreaterThanOrEqual(1);
    const restored = families.find((f) => f.name === 'bcdr_restore_throughput_bytes_per_second');
    expect(Number(restored?.metrics[0]?.count)).toBeGreaterThanOrEqual(1);
    expect(Number(restored?.metrics[0]?.sum)).toBeGreaterThan(0);
    expect(/^bcdr_runbook_runs_total\{runbook="restore",outcome="completed"\} 1$/m.test(metricsText)).toBe(true);
    expect(families.filter((f) => f.name.startsWith('temporal_')).length).toBeGreaterThan(0);
    expect(families.some((f) => f.name === 'process_cpu_user_seconds_total')).toBe(true);
    // Bounded labels: no workflow, backup or instance id anywhere in the text.
    expect(metricsText).not.toContain(workflowId);
    expect(metricsText).not.toContain(instanceId);
  });
});

describe('log scrubbing', () => {
  it('masks registered secrets, URI passwords, password= pairs and database URI queries', () => {
    registerSecrets(secretsOf({ API_TOKENS: [{ token: 'scrub-test-token-123' }], CATALOG_DATABASE_URL: 'postgres://app:s%40cret@db:5432/x' }));
    const out = scrub('token scrub-test-token-123 url postgres://app:s%40cret@db:5432/x?sslmode=require&password=q conninfo password=hunter2 raw s@cret');
    expect(out).not.toMatch(/scrub-test-token-123|s%40cret|s@cret|hunter2|password=q/);
    expect(out).toContain('postgres://app:***@db:5432/x?***');
  });

  it('masks a token with quotes, backslashes or control characters in a plain field, where the line holds it JSON-escaped', () => {
    const token = 'tok"en\\value\u0001-123';
    const written: string[] = [];
    const log = createLogger({ name: 'api', level: 'info', secrets: [token], destination: new Writable({ write: (c: Buffer, _e, done) => (written.push(c.toString()), done()) }) });
    log.info({ detail: `presented ${token} here` }, `and ${token} in the message`);
    expect(written.join('')).toContain('[REDACTED]');
    expect(written.join('')).not.toContain(JSON.stringify(token).slice(1, -1));
    expect(written.join('')).not.toContain('value');
  });
});

describe('activity lines', () => {
  it('say at info that an activity failed, with its instance id, and never the password of a URI in the error', async () => {
    const lines: Record<string, any>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l));
        done();
      },
    });
    const log = createLogger({ name: 'worker', level: 'info', destination: sink });
    const env = new MockActivityEnvironment(
      { activityType: 'restoreToStaging', workflowExecution: { workflowId: 'restore-x', runId: 'run-1' }, workflowType: 'restoreWorkflow' },
      { logger: new PinoTemporalLogger(() => log), interceptors: [activityInterceptors({})] },
    );
    const failing = async (_input: { instanceId: string }) => {
      throw new Error('could not connect to postgres://postgres:hunter2-secret@10.0.0.9:5432/tenant?sslmode=require');
    };
    await expect(env.run(failing, { instanceId: 'i-123' })).rejects.toThrow();
    expect(lines.map((o) => o.msg)).toEqual(expect.arrayContaining(['activity started', expect.stringMatching(/^activity failed: could not connect to postgres:\/\/postgres:\*\*\*@10\.0\.0\.9:5432\/tenant\?\*\*\*$/)]));
    for (const o of lines) expect(o).toMatchObject({ instanceId: 'i-123', activityType: 'restoreToStaging', workflowId: 'restore-x', runId: 'run-1' });
    expect(lines.some((o) => o.level === 'warn' && o.err?.message)).toBe(true); // the SDK's own line, with the error
    expect(JSON.stringify(lines)).not.toContain('hunter2-secret');
    expect(JSON.stringify(lines)).not.toContain('taskToken');
  });
});

describe('workflow interceptors', () => {
  const files = readdirSync(historiesDir).filter((f) => f.endsWith('.json') && f !== path.basename(workflowIdsFile)).sort();
  let bundle: { code: string };
  beforeAll(async () => {
    // Replay workers log through the runtime's logger: keep this process's output to real problems.
    const quiet = createLogger({ name: 'replay', level: 'warn' });
    installTemporalRuntime({ logger: () => quiet });
    bundle = await bundleWorkflowCode({
      workflowsPath,
      workflowInterceptorModules,
      logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} } as never,
    });
  });
  it.each(files)('replay %s unchanged with the interceptors bundled in', async (file) => {
    const history = JSON.parse(readFileSync(path.join(historiesDir, file), 'utf8'));
    const name = path.basename(file, '.json');
    // With the worker's sinks, as in production (sinks are never called during replay).
    await expect(Worker.runReplayHistory({ workflowBundle: bundle, sinks: runbookMetricsSinks }, history, recordedWorkflowIds()[name] ?? name)).resolves.toBeUndefined();
  });
});
