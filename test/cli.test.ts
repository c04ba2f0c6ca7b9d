/**
 * The `bcdr` command line against the real API (served over HTTP on a free
 * port), the real worker, Temporal and PostgreSQL: each call is a subprocess
 * of cli/bcdr.js, as an operator's shell would run it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import path from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instances } from '../db/schema/index.js';
import { describeProgress } from '../cli/watch.js';
import { armFault, createInstance, eventually, openContext, uniqueName, type TestContext } from './helpers.js';
import { APPROVER, OPERATOR, SELF_APPROVER, VIEWER } from './tokens.js';

const ROOT = path.join(import.meta.dirname, '..');
const TOKENS = [OPERATOR, VIEWER, APPROVER, SELF_APPROVER];

let ctx: TestContext;
let server: ServerType;
let api: string;
/** Everything any CLI call printed, to check that no token ever appears. */
const printed: string[] = [];

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `bcdr …` as a subprocess with BCDR_API and BCDR_TOKEN set (operator unless told otherwise; null: no token). */
function bcdr(args: string[], opts: { token?: string | null; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<Result> {
  const token = opts.token === undefined ? OPERATOR : opts.token;
  const env: Record<string, string | undefined> = { ...process.env, BCDR_API: api, BCDR_TOKEN: token ?? undefined, ...opts.env };
  if (token === null) delete env.BCDR_TOKEN;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['cli/bcdr.js', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // A hung command is killed (and its exit code is then null), so the test fails rather than waits.
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      printed.push(stdout, stderr);
      resolve({ code, stdout, stderr });
    });
  });
}

/** What a failed call shows, for assertion messages. */
const show = (r: Result) => `exit ${r.code}\n--- stdout\n${r.stdout.slice(0, 2000)}\n--- stderr\n${r.stderr.slice(0, 2000)}`;

/** No stack trace: no "    at fn (file:line)" frames, no Node error dump. */
function expectNoStack(r: Result) {
  expect(r.stderr + r.stdout).not.toMatch(/^\s+at .+[:(]/m);
  expect(r.stderr).not.toMatch(/node:internal|Error: .*\n\s+at /);
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

beforeAll(async () => {
  ctx = await openContext();
  await new Promise<void>((resolve) => {
    server = serve({ fetch: ctx.app.fetch, hostname: '127.0.0.1', port: 0 }, (info) => {
      api = `http://127.0.0.1:${info.port}`;
      resolve();
    });
  });
});

afterAll(async () => {
  // The token of any role must never be printed, whatever the command.
  for (const out of printed) for (const t of TOKENS) expect(out).not.toContain(t);
  await new Promise((r) => server?.close(r));
  await ctx?.close();
});

describe('bcdr without the stack', () => {
  it('--help names BCDR_API, BCDR_TOKEN and the exit codes; exit 0', async () => {
    const r = await bcdr(['--help']);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toContain('BCDR_API');
    expect(r.stdout).toContain('BCDR_TOKEN');
    expect(r.stdout).toMatch(/Exit codes:[\s\S]*\b2\s+usage error[\s\S]*\b3\s+the API refused/);
    for (const c of ['instances', 'backup', 'restore', 'reset', 'production-restore', 'region-failover', 'failback', 'runs', 'signoffs', 'audit', 'regions', 'divergence']) {
      expect(r.stdout).toContain(c);
    }
  });

  it('usage errors exit 2 with a one-line reason and no request: a missing label, an unknown command, a bad number, two targets', async () => {
    const cases: [string[], RegExp][] = [
      [['backup', 'some-instance'], /required option '-l, --label <label>' not specified/],
      [['nope'], /unknown command 'nope'/],
      [['runs', 'list', '--limit', 'lots'], /--limit <n>.*must be a whole number/],
      [['restore', 'bk-x', '--into', 'a', '--new', 'b'], /exactly one of --into <instance> and --new <name>/],
      [['runs', 'signoff', 'run-x', 'maybe', '-m', 'ok'], /'maybe' is invalid for argument 'decision'. Allowed choices are approve, reject/],
    ];
    for (const [args, message] of cases) {
      const r = await bcdr(args);
      expect(r.code, show(r)).toBe(2);
      expect(r.stderr).toMatch(message);
      expectNoStack(r);
    }
  });

  it('a token a header cannot carry is refused before any request (exit 2), and not echoed', async () => {
    const r = await bcdr(['regions'], { token: `${OPERATOR}\u0007x` });
    expect(r.code, show(r)).toBe(2);
    expect(r.stderr).toMatch(/BCDR_TOKEN \(or --token\) holds spaces or control characters/);
    // (afterAll checks that no output ever held a token)
  });

  it('an unreachable API exits 4 and says which URL it tried', async () => {
    const port = await freePort();
    const r = await bcdr(['regions'], { env: { BCDR_API: `http://127.0.0.1:${port}` } });
    expect(r.code, show(r)).toBe(4);
    expect(r.stderr).toContain(`cannot reach the API at http://127.0.0.1:${port}`);
    expectNoStack(r);
  });

  it('describes the progress the backup and restore activities heartbeat', () => {
    expect(describeProgress({ phase: 'dumping', bytesWritten: 5 * 1024 * 1024, databaseBytes: 20 * 1024 * 1024 })).toEqual({
      line: 'dumping: 5.00 MiB written (database 20.0 MiB)',
      ratio: 0.25,
    });
    expect(describeProgress({ phase: 'verifying', archiveBytes: 1000, bytesVerified: 500, bytesRestored: 0, jobs: 0 })?.ratio).toBe(0.5);
    expect(describeProgress({ phase: 'restoring', archiveBytes: 2048, bytesVerified: 2048, bytesRestored: 4096, jobs: 2 })?.line).toBe('restoring: 4.00 KiB restored (archive 2.00 KiB, 2 jobs)');
    expect(describeProgress({ phase: 'schema', tablesReady: 1, tables: 4 })).toEqual({ line: 'schema: 1/4 tables ready', ratio: 0.25 });
    expect(describeProgress({ lagBytes: 0 })?.line).toBe('catching up: 0 B behind');
    expect(describeProgress(null)).toBeNull();
  });
});

describe('bcdr against the real API', () => {
  const name = uniqueName('cli');
  let backupId: string;
  let backupRun: string;

  it('creates an instance (--json: the API body, parseable)', async () => {
    const r = await bcdr(['instances', 'create', name, '--type', 'sandbox', '--edition', 'standard', '--region', 'primary', '--json']);
    expect(r.code, show(r)).toBe(0);
    const body = JSON.parse(r.stdout);
    expect(body).toMatchObject({ name, type: 'sandbox', edition: 'standard', homeRegion: 'primary', state: 'active' });
    expect(body.id).toMatch(/^i-[0-9a-f]{12}$/);
  });

  it('lists and shows it for people: a table with its name, and key-value lines', async () => {
    const list = await bcdr(['instances', 'list', '--type', 'sandbox']);
    expect(list.code, show(list)).toBe(0);
    expect(list.stdout).toMatch(/^NAME\s+ID\s+TYPE/m);
    const row = list.stdout.split('\n').find((l) => l.startsWith(`${name} `));
    expect(row, list.stdout).toMatch(/sandbox\s+standard\s+active\s+primary/);
    const get = await bcdr(['instances', 'get', name]);
    expect(get.code, show(get)).toBe(0);
    expect(get.stdout).toMatch(new RegExp(`^name:\\s+${name}$`, 'm'));
    expect(get.stdout).toMatch(/^endpoint:\s+postgres:\/\//m);
  });

  it('backup --wait: progress on stderr, the result on stdout, exit 0', async () => {
    const r = await bcdr(['backup', name, '--label', 'cli backup', '--wait']);
    expect(r.code, show(r)).toBe(0);
    const started = /backup (bk-[0-9a-f-]+) started: run (\S+)/.exec(r.stdout);
    expect(started, show(r)).not.toBeNull();
    [, backupId, backupRun] = started as unknown as [string, string, string];
    // Progress: plain lines on stderr (not a terminal): the steps as they change, then how it ended.
    expect(r.stderr).toContain(`watching run ${backupRun} (on-demand-backup)`);
    expect(r.stderr).toMatch(/^(step|done): \S+/m);
    expect(r.stderr).toMatch(new RegExp(`run ${backupRun} completed in `));
    expect(r.stderr).not.toMatch(/\u001b\[/); // no terminal redrawing when stderr is a pipe
    // The result, for people.
    expect(r.stdout).toMatch(/^status:\s+completed$/m);
    expect(r.stdout).toMatch(new RegExp(`^result\\.backupId:\\s+${backupId}$`, 'm'));
    expect(r.stdout).toMatch(/^result\.sha256:\s+[0-9a-f]{64}$/m);
    expect(r.stdout).toMatch(/^Temporal UI: http\S+\/workflows\//m);
  });

  it('backups get and list --json answer with the API body', async () => {
    const get = await bcdr(['backups', 'get', backupId, '--json']);
    expect(get.code, show(get)).toBe(0);
    expect(JSON.parse(get.stdout)).toMatchObject({ id: backupId, status: 'completed', kind: 'on_demand', label: 'cli backup', instanceName: name });
    const list = await bcdr(['--json', 'backups', 'list', name]);
    expect(list.code, show(list)).toBe(0);
    expect(JSON.parse(list.stdout).backups.map((b: { id: string }) => b.id)).toContain(backupId);
  });

  it('backup --wait --json: stdout is the final run (parseable), progress still on stderr', async () => {
    const r = await bcdr(['backup', name, '-l', 'json backup', '--retention-days', '1', '--wait', '--json']);
    expect(r.code, show(r)).toBe(0);
    const run = JSON.parse(r.stdout);
    expect(run).toMatchObject({ runbook: 'on-demand-backup', status: 'completed', error: null });
    expect(run.result.backupId).toMatch(/^bk-/);
    expect(run.url).toContain('/workflows/');
    expect(r.stderr).toMatch(/completed in /);
  });

  it('runs watch on a finished run exits 0 at once and prints the result', async () => {
    const r = await bcdr(['runs', 'watch', backupRun]);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toMatch(/^status:\s+completed$/m);
    expect(r.stdout).toContain(`result.backupId:`);
    expect(r.stdout).toMatch(/Temporal UI: http/);
  });

  it('runs list --json filters by instance and runbook; runs get shows the run', async () => {
    const list = await bcdr(['runs', 'list', '--instance', name, '--runbook', 'on-demand-backup', '--json']);
    expect(list.code, show(list)).toBe(0);
    const runs = JSON.parse(list.stdout).runs as { workflowId: string; status: string }[];
    expect(runs.map((x) => x.workflowId)).toContain(backupRun);
    const get = await bcdr(['runs', 'get', backupRun]);
    expect(get.code, show(get)).toBe(0);
    expect(get.stdout).toMatch(/^stepsDone:\s+\S+/m);
  });

  it('a viewer starting a backup: exit 3, the API message, no stack; --json gives the error body', async () => {
    const r = await bcdr(['backup', name, '-l', 'not allowed'], { token: VIEWER });
    expect(r.code, show(r)).toBe(3);
    expect(r.stderr).toMatch(/^error 403 forbidden: victor\.viewer lacks the operator role/m);
    expectNoStack(r);
    const j = await bcdr(['backup', name, '-l', 'not allowed', '--json'], { token: VIEWER });
    expect(j.code, show(j)).toBe(3);
    expect(JSON.parse(j.stdout)).toMatchObject({ error: { code: 'forbidden' } });
  });

  it('a bad name: exit 3 with the field and the rule the API names', async () => {
    const r = await bcdr(['instances', 'create', 'Bad_Name', '--type', 'sandbox', '--region', 'primary']);
    expect(r.code, show(r)).toBe(3);
    expect(r.stderr).toMatch(/^error 400 validation_failed: name: must be a DNS label/m);
    expect(r.stderr).toMatch(/^ {2}name: must be a DNS label/m);
    expectNoStack(r);
  });

  it('whoami names the identity and roles of the token, never the token', async () => {
    const r = await bcdr(['whoami'], { token: APPROVER });
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toBe(`anna.approver (approver) at ${api}\n`);
  });

  it('no token: exit 3, 401, and a hint to set BCDR_TOKEN', async () => {
    const r = await bcdr(['instances', 'list'], { token: null });
    expect(r.code, show(r)).toBe(3);
    expect(r.stderr).toMatch(/error 401 unauthorized: missing bearer token/);
    expect(r.stderr).toContain('BCDR_TOKEN');
  });

  it('cancel of a finished run: exit 3 with 409 run_not_running', async () => {
    const r = await bcdr(['runs', 'cancel', backupRun]);
    expect(r.code, show(r)).toBe(3);
    expect(r.stderr).toMatch(/^error 409 run_not_running: run \S+ is completed, not running/m);
  });

  it('a restore that fails: --wait exits 1 with the failure; runs watch of it exits 1 too', async () => {
    const inst = JSON.parse((await bcdr(['instances', 'get', name, '--json'])).stdout) as { id: string };
    armFault(ctx, 'restore-staging', inst.id, 1);
    const r = await bcdr(['restore', backupId, '--into', name, '--wait']);
    expect(r.code, show(r)).toBe(1);
    const run = /run (restore-\S+)/.exec(r.stdout)?.[1];
    expect(run, show(r)).toBeDefined();
    expect(r.stderr).toMatch(new RegExp(`run ${run} failed after .*injected fault`));
    expect(r.stdout).toMatch(/^status:\s+failed$/m);
    expect(r.stdout).toMatch(/^error: .*injected fault/m);
    const watch = await bcdr(['runs', 'watch', run!, '--json']);
    expect(watch.code, show(watch)).toBe(1);
    expect(JSON.parse(watch.stdout)).toMatchObject({ workflowId: run, status: 'failed' });
  });

  it('schedule get and set; audit shows the backup; regions and signoffs answer', async () => {
    const set = await bcdr(['schedule', 'set', name, '--start-time', '03:15', '--retention-days', '5', '--json']);
    expect(set.code, show(set)).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({ startTime: '03:15', retentionDays: 5 });
    const bad = await bcdr(['schedule', 'set', name, '--interval-days', '9']);
    expect(bad.code, show(bad)).toBe(3);
    expect(bad.stderr).toMatch(/retentionDays: must be greater than intervalDays \(9\)/);
    const audit = await bcdr(['audit', '--instance', name, '--action', 'backup.create']);
    expect(audit.code, show(audit)).toBe(0);
    expect(audit.stdout).toContain(backupId);
    const regions = await bcdr(['regions', '--json']);
    expect(regions.code, show(regions)).toBe(0);
    expect(JSON.parse(regions.stdout).regions.map((x: { name: string }) => x.name).sort()).toEqual(['primary', 'secondary']);
    const signoffs = await bcdr(['signoffs', '--status', 'pending', '--json'], { token: APPROVER });
    expect(signoffs.code, show(signoffs)).toBe(0);
    expect(Array.isArray(JSON.parse(signoffs.stdout).signoffs)).toBe(true);
  });

  it('shows a backup with its copies and key, holds it, refuses a release by the one who set it (exit 3) and releases it as another approver', async () => {
    const shown = await bcdr(['backups', 'show', backupId]);
    expect(shown.code, show(shown)).toBe(0);
    expect(shown.stdout).toMatch(/secondary/);
    expect(shown.stdout).toContain(ctx.cfg.BACKUP_KEY_ACTIVE!);
    const held = await bcdr(['backups', 'hold', backupId, '-m', 'audit, case 7']);
    expect(held.code, show(held)).toBe(0);
    const json = JSON.parse((await bcdr(['backups', 'show', backupId, '--json'])).stdout);
    expect(json.hold).toMatchObject({ reason: 'audit, case 7', by: 'olivia.operator' });
    expect(json.copies.map((c: { status: string }) => c.status)).toEqual(['home', 'verified']);
    const same = await bcdr(['backups', 'release', backupId, '-m', 'mine'], { token: SELF_APPROVER });
    expect(same.code, show(same)).toBe(3);
    expect(same.stderr).toMatch(/403/);
    expectNoStack(same);
    const released = await bcdr(['backups', 'release', backupId, '-m', 'case closed'], { token: APPROVER });
    expect(released.code, show(released)).toBe(0);
    const keys = await bcdr(['keys', 'list', '--json']);
    expect(keys.code, show(keys)).toBe(0);
    expect(keys.stdout).not.toContain(JSON.parse(ctx.cfg.BACKUP_KEYS!)[ctx.cfg.BACKUP_KEY_ACTIVE!]);
  });

  it('relabels and deletes the backup, then deletes the instance', async () => {
    const relabel = await bcdr(['backups', 'relabel', backupId, 'kept by the cli']);
    expect(relabel.code, show(relabel)).toBe(0);
    expect(relabel.stdout).toContain('kept by the cli');
    const del = await bcdr(['backups', 'delete', backupId, '--json']);
    expect(del.code, show(del)).toBe(0);
    expect(JSON.parse(del.stdout)).toEqual({ deleted: backupId });
    const inst = await bcdr(['instances', 'delete', name, '--wait']);
    expect(inst.code, show(inst)).toBe(0);
    expect(inst.stdout).toMatch(/delet(ed|ing) instance i-/);
    const gone = await bcdr(['instances', 'get', name]);
    expect(gone.code, show(gone)).toBe(3);
    expect(gone.stderr).toMatch(/error 404 instance_not_found/);
  });
});

describe('bcdr --wait on a database big enough to watch', () => {
  it('backup, then restore into a new instance: steps and bytes as they go (plain lines on stderr), the results, resume', async () => {
    const name = uniqueName('cli-progress');
    const copy = uniqueName('cli-copy');
    const inst = await createInstance(ctx, name);
    const url = new URL(ctx.cfg.REGIONS[0]!.postgresUrl);
    // pgbench scale 20: about 300 MB; its dump is quick (it compresses well), its restore takes a few seconds.
    const init = spawnSync(path.join(ctx.cfg.PG_BIN_DIR!, 'pgbench'), ['-i', '-q', '-s', '20', '-h', url.hostname, '-p', url.port, '-U', 'postgres', name], { encoding: 'utf8' });
    expect(init.status, init.stderr).toBe(0);
    try {
      const backup = await bcdr(['backup', name, '--label', 'watched from the cli', '--wait']);
      expect(backup.code, show(backup)).toBe(0);
      expect(backup.stderr).toMatch(/completed in /);
      expect(backup.stdout).toMatch(/^result\.sizeBytes:\s+\d+ \([\d.]+ MiB\)$/m);
      const backupId = /^result\.backupId:\s+(\S+)$/m.exec(backup.stdout)![1]!;

      const restore = await bcdr(['restore', backupId, '--new', copy, '--edition', 'standard', '--region', 'primary', '--wait']);
      expect(restore.code, show(restore)).toBe(0);
      expect(restore.stderr).toMatch(/^step: restore-staging$/m);
      // The bytes the staging database holds so far, as the restore activity heartbeats them (Temporal passes a
      // heartbeat on at most every 3 s, so how many such lines a run shows depends on how long its step lasts).
      expect(restore.stderr).toMatch(/^progress: restore-staging: restoring: [\d.]+ (B|KiB|MiB|GiB) restored \(archive [\d.]+ MiB\)$/m);
      expect(restore.stdout).toMatch(/^result\.state:\s+suspended$/m);

      const resume = await bcdr(['instances', 'resume', copy]);
      expect(resume.code, show(resume)).toBe(0);
      expect(resume.stdout).toBe(`resumed instance ${copy}: active\n`);
    } finally {
      await ctx.call('DELETE', `/v1/instances/${copy}`);
      await ctx.call('DELETE', `/v1/instances/${inst.id}`);
    }
  });
});

describe('bcdr on staleness, events, endpoint and divergence', () => {
  it('marks an instance without a good backup past its threshold STALE, lists it with --stale, and changes its threshold', async () => {
    const name = uniqueName('cli-stale');
    const inst = await createInstance(ctx, name);
    // Three days old, and never backed up: past the default threshold (26 hours).
    await ctx.db.update(instances).set({ createdAt: new Date(Date.now() - 3 * 24 * 3600_000) }).where(eq(instances.id, inst.id));
    const stale = await bcdr(['instances', 'list', '--stale']);
    expect(stale.code, show(stale)).toBe(0);
    const row = stale.stdout.split('\n').find((l) => l.startsWith(`${name} `));
    expect(row, stale.stdout).toMatch(/\bnever\b.*\bSTALE\b/);
    const fresh = await bcdr(['instances', 'list', '--fresh', '--json']);
    expect(JSON.parse(fresh.stdout).instances.map((i: { name: string }) => i.name)).not.toContain(name);
    const set = await bcdr(['instances', 'update', name, '--stale-after-hours', '100', '--json']);
    expect(set.code, show(set)).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({ name, staleAfterHours: 100, stale: false });
    const get = await bcdr(['instances', 'get', name]);
    expect(get.stdout).toMatch(/^stale:\s+false$/m);
    const bad = await bcdr(['instances', 'update', name, '--stale-after-hours', 'soon']);
    expect(bad.code, show(bad)).toBe(2);
    expect(bad.stderr).toMatch(/--stale-after-hours.*must be a number/);
  });

  it('events --json prints one JSON object a line; endpoint and divergence answer', async () => {
    const name = uniqueName('cli-events');
    const inst = await createInstance(ctx, name);
    const ev = await bcdr(['events', '--instance', name, '--after', '0', '--count', '1', '--json'], { timeoutMs: 60_000 });
    expect(ev.code, show(ev)).toBe(0);
    const lines = ev.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ event: 'instance.create', instanceId: inst.id, subject: name });
    const endpoint = await bcdr(['instances', 'endpoint', name]);
    expect(endpoint.code, show(endpoint)).toBe(0);
    expect(endpoint.stdout).toMatch(new RegExp(`^endpoint:\\s+postgres://\\S+/${name}$`, 'm'));
    const div = await bcdr(['divergence', 'list', name, '--json']);
    expect(div.code, show(div)).toBe(0);
    expect(JSON.parse(div.stdout)).toMatchObject({ name, failover: null, total: 0 });
  });
});

describe('bcdr on a swap that waits: sign-off and cancel', () => {
  let prod: { id: string; name: string };
  let sbx: { id: string; name: string };
  beforeAll(async () => {
    prod = await createInstance(ctx, uniqueName('cli-prod'), { type: 'production' });
    sbx = await createInstance(ctx, uniqueName('cli-sbx'));
  });
  afterAll(async () => {
    for (const i of [sbx, prod]) if (i) await ctx.call('DELETE', `/v1/instances/${i.id}`);
  });

  it('a watcher sees the run wait for sign-off; the operator cannot sign it off (403); an approver rejects it with a statement; the watch exits 1', async () => {
    const start = await bcdr(['production-restore', prod.name, sbx.name, '--require-signoff', '--json']);
    expect(start.code, show(start)).toBe(0);
    const id = JSON.parse(start.stdout).run.workflowId as string;
    const watching = bcdr(['runs', 'watch', id], { timeoutMs: 150_000 });
    await eventually('the sign-off request', async () => (await ctx.call('GET', `/v1/signoffs?status=pending&run=${id}`)).body.signoffs?.length === 1);
    const pending = await bcdr(['signoffs', 'list', '--status', 'pending', '--run', id], { token: APPROVER });
    expect(pending.code, show(pending)).toBe(0);
    expect(pending.stdout).toMatch(new RegExp(`^${id}\\s+production-restore\\s+pending\\s+olivia\\.operator`, 'm'));
    const self = await bcdr(['runs', 'signoff', id, 'approve', '-m', 'my own run']);
    expect(self.code, show(self)).toBe(3);
    expect(self.stderr).toMatch(/^error 403 forbidden: olivia\.operator lacks the approver role/m);
    const reject = await bcdr(['runs', 'signoff', id, 'reject', '--statement', 'Not tonight: the tenant runs payroll.'], { token: APPROVER });
    expect(reject.code, show(reject)).toBe(0);
    expect(reject.stdout).toMatch(/sign-off rejected by anna\.approver/);
    const watched = await watching;
    expect(watched.code, show(watched)).toBe(1);
    expect(watched.stderr).toMatch(/^waiting for sign-off until \S+: /m);
    expect(watched.stderr).toContain(`an approver signs off with: bcdr runs signoff ${id} approve`);
    expect(watched.stderr).toMatch(/completed in .* \(outcome: rejected\)/);
    expect(watched.stdout).toMatch(/^result\.outcome:\s+rejected$/m);
  });

  it('runs cancel --wait on a swap waiting for its window: exit 0 once it is cancelled', async () => {
    const notBefore = new Date(Date.now() + 24 * 3600_000).toISOString();
    const start = await bcdr(['swap', prod.name, sbx.name, '--not-before', notBefore]);
    expect(start.code, show(start)).toBe(0);
    const id = /run (production-restore-\S+)/.exec(start.stdout)?.[1];
    expect(id, show(start)).toBeDefined();
    expect(start.stdout).toContain(`bcdr runs watch ${id}`);
    await eventually('the wait for the window', async () => (await ctx.call('GET', `/v1/runs/${id}`)).body.waiting?.kind === 'window');
    const get = await bcdr(['runs', 'get', id!]);
    expect(get.stdout).toMatch(/^waiting\.kind:\s+window$/m);
    const cancel = await bcdr(['runs', 'cancel', id!, '--wait']);
    expect(cancel.code, show(cancel)).toBe(0);
    expect(cancel.stdout).toMatch(/^status:\s+cancelled$/m);
    const watch = await bcdr(['runs', 'watch', id!]);
    expect(watch.code, show(watch)).toBe(1);
  });
});
