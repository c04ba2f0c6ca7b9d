import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import { afterAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../lib/paths.js';
import { freePort, portIsFree, waitFor } from '../scripts/lib/services.js';

/**
 * Runs the real local stack script (what `npm start` runs after `npm install`)
 * on free ports in a fresh folder, crashes its worker and API with SIGKILL, and
 * checks that it restarts them and that Ctrl-C still stops everything.
 */

let stack: ChildProcess | undefined;
let output = '';
let dataDir = '';

/** Distinct free ports, one per name. */
async function ports(names: string[]): Promise<Record<string, number>> {
  const taken = new Set<number>();
  const out: Record<string, number> = {};
  for (const n of names) {
    let p = await freePort();
    while (taken.has(p)) p = await freePort();
    taken.add(p);
    out[n] = p;
  }
  return out;
}

/** Waits until the stack's output matches `re` (searching only what came after `from`); returns the match. */
async function waitForOutput(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpMatchArray> {
  let m: RegExpMatchArray | null = null;
  await waitFor(`stack output ${re}`, async () => {
    if (stack?.exitCode !== null) throw new Error(`the stack exited (${stack?.exitCode}) before printing ${re}:\n${output}`);
    m = output.slice(from).match(re);
    return m !== null;
  }, timeoutMs).catch((err: Error) => {
    throw new Error(`${err.message}\n--- stack output ---\n${output}`);
  });
  return m!;
}

/** The pids of the stack's direct children whose command line contains `needle`. */
function childPids(parent: number, needle: string): number[] {
  const r = spawnSync('ps', ['-o', 'pid=,args=', '--ppid', String(parent)], { encoding: 'utf8' });
  return r.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.includes(needle))
    .map((l) => Number(l.split(/\s+/)[0]));
}

function theChild(needle: string): number {
  const pids = childPids(stack!.pid!, needle);
  expect(pids, `children of the stack running ${needle}`).toHaveLength(1);
  return pids[0]!;
}

/** True while `pid` is a live process (a zombie no one has reaped yet counts as gone). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** The postmaster pids of the stack's three clusters, from their postmaster.pid files. */
function postmasters(): number[] {
  return ['catalog', 'primary', 'secondary'].flatMap((n) => {
    const f = path.join(dataDir, 'pg', n, 'postmaster.pid');
    return existsSync(f) ? [Number(readFileSync(f, 'utf8').split('\n')[0])] : [];
  });
}

/** The pollers Temporal lists on the stack's workflow task queue, by identity (`<pid>@<host>`). */
async function pollerIdentities(address: string): Promise<string[]> {
  const conn = await Connection.connect({ address, connectTimeout: '2s' });
  try {
    const res = await conn.workflowService.describeTaskQueue({ namespace: 'default', taskQueue: { name: 'bcdr' }, taskQueueType: 1 });
    return (res.pollers ?? []).map((p) => p.identity ?? '');
  } finally {
    await conn.close();
  }
}

afterAll(async () => {
  // Only when the test failed part way: stop whatever is left, hard.
  if (stack && stack.exitCode === null && stack.signalCode === null) {
    stack.kill('SIGINT');
    await Promise.race([new Promise((r) => stack!.once('exit', r)), sleep(90_000)]);
    if (stack.exitCode === null && stack.signalCode === null) {
      try {
        process.kill(-stack.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  for (const pid of dataDir ? postmasters() : []) {
    try {
      process.kill(pid, 'SIGQUIT');
    } catch {
      /* gone */
    }
  }
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('local stack (scripts/stack.ts)', () => {
  it('restarts a crashed worker and API with a back-off, and Ctrl-C still stops everything', async () => {
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'bcdr-stack-'));
    chmodSync(dataDir, 0o755); // the clusters run as the postgres user when we are root
    const p = await ports(['api', 'temporal', 'ui', 'catalog', 'primary', 'secondary']);
    const env: NodeJS.ProcessEnv = { ...process.env };
    // Nothing of the test run's own servers may leak into the stack.
    for (const k of Object.keys(env)) if (/^(API_|TEMPORAL_(ADDRESS|NAMESPACE|TASK_QUEUE|UI_URL)|CATALOG_|REGIONS$|BCDR_)/.test(k)) delete env[k];
    Object.assign(env, {
      BCDR_DATA_DIR: dataDir,
      BCDR_API_PORT: String(p.api),
      BCDR_TEMPORAL_PORT: String(p.temporal),
      BCDR_TEMPORAL_UI_PORT: String(p.ui),
      BCDR_PG_PORT_CATALOG: String(p.catalog),
      BCDR_PG_PORT_PRIMARY: String(p.primary),
      BCDR_PG_PORT_SECONDARY: String(p.secondary),
    });
    stack = spawn(process.execPath, ['--import', 'tsx', path.join(projectRoot, 'scripts', 'stack.ts')], {
      cwd: projectRoot,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group, as under a terminal; signals come only from this test
    });
    stack.stdout!.on('data', (b: Buffer) => (output += b.toString()));
    stack.stderr!.on('data', (b: Buffer) => (output += b.toString()));
    const exited = new Promise<number | null>((resolve) => stack!.once('exit', (code) => resolve(code)));

    await waitForOutput(/BCDR stack ready in/, 170_000);
    const temporalAddress = `127.0.0.1:${p.temporal}`;
    const api = `http://127.0.0.1:${p.api}`;
    const temporalPid = theChild('server start-dev');
    const apiPid = theChild('api/main.ts');
    const firstWorker = theChild('worker/main.ts');
    expect(await pollerIdentities(temporalAddress)).toContainEqual(expect.stringMatching(new RegExp(`^${firstWorker}@`)));

    // The worker dies hard: it is restarted after 1 s and polls again, as a new process.
    let mark = output.length;
    process.kill(firstWorker, 'SIGKILL');
    await waitForOutput(/\[bcdr\] worker exited unexpectedly \(SIGKILL\); restarting in 1 s \(see \S*logs\/worker\.log\)/, 10_000, mark);
    const restarted = Number((await waitForOutput(/\[bcdr\] worker restarted \(pid (\d+)\)/, 15_000, mark))[1]);
    expect(restarted).not.toBe(firstWorker);
    expect(theChild('worker/main.ts')).toBe(restarted);
    await waitFor('the restarted worker to poll', async () => (await pollerIdentities(temporalAddress)).some((id) => id.startsWith(`${restarted}@`)), 120_000);

    // The API too; it answers again on the same port.
    mark = output.length;
    process.kill(apiPid, 'SIGKILL');
    await waitForOutput(/\[bcdr\] api exited unexpectedly \(SIGKILL\); restarting in 1 s \(see \S*logs\/api\.log\)/, 10_000, mark);
    const apiAgain = Number((await waitForOutput(/\[bcdr\] api restarted \(pid (\d+)\)/, 15_000, mark))[1]);
    await waitFor('the restarted API', async () => (await fetch(`${api}/readyz`)).ok, 60_000);
    const audit = await fetch(`${api}/v1/audit?limit=1`, { headers: { authorization: 'Bearer dev-viewer-token' } });
    expect(audit.status).toBe(200);

    // A worker that crashes again soon after it started: the back-off doubles (from 1 s, or from 2 s if
    // the previous one ran less than a minute).
    mark = output.length;
    process.kill(restarted, 'SIGKILL');
    const delay = Number((await waitForOutput(/\[bcdr\] worker exited unexpectedly \(SIGKILL\); restarting in (\d+) s/, 10_000, mark))[1]);
    expect([1, 2]).toContain(delay);
    const third = Number((await waitForOutput(/\[bcdr\] worker restarted \(pid (\d+)\)/, 15_000, mark))[1]);
    mark = output.length;
    process.kill(third, 'SIGKILL');
    await waitForOutput(new RegExp(`\\[bcdr\\] worker exited unexpectedly \\(SIGKILL\\); restarting in ${delay * 2} s`), 10_000, mark);

    // Ctrl-C while that restart is pending: it is cancelled, and everything stops in order, with exit code 0.
    const clusters = postmasters();
    expect(clusters).toHaveLength(3);
    stack.kill('SIGINT');
    const code = await Promise.race([exited, sleep(150_000).then(() => 'timed out')]);
    expect(code, output).toBe(0);
    const after = output.slice(mark);
    expect(after).toMatch(/\[bcdr\] stopping \.\.\./);
    expect(after).toMatch(/\[bcdr\] stopped; data kept in/);
    expect(after).not.toMatch(/worker restarted/);

    for (const pid of [temporalPid, apiAgain, ...clusters]) expect(alive(pid), `pid ${pid} after Ctrl-C`).toBe(false);
    for (const port of Object.values(p)) expect(await portIsFree(port), `port ${port} after Ctrl-C`).toBe(true);
    expect(spawnSync('pgrep', ['-f', dataDir]).stdout.toString().trim(), 'processes still using the data folder').toBe('');
  });
});
