/**
 * Following a run: polls GET /v1/runs/:id (at most once a second) and shows
 * the current step, the steps done and the activity's progress (bytes dumped,
 * verified or restored; replication lag; tables seeded). On a terminal it is a
 * redrawn cli-progress bar with finished steps logged above it; otherwise
 * (scripts, CI, tests) plain lines on stderr, one per change.
 */
import cliProgress from 'cli-progress';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiError, NetworkError, seg, type ApiClient } from './http.js';
import { between, bytes, clean, text } from './format.js';

/** A run as GET /v1/runs/:id gives it (only the fields the CLI reads). */
export interface Run {
  workflowId: string;
  runbook: string | null;
  instanceId: string | null;
  status: string;
  startTime: string;
  closeTime: string | null;
  step: string | null;
  stepsDone: string[];
  progress: unknown;
  warnings: string[];
  waiting: { kind: string; until: string; detail: string } | null;
  requestedBy?: string | null;
  instances: Record<string, { name: string; step: string; stepsDone: string[]; error?: string }> | null;
  result: unknown;
  error: string | null;
  url: string;
}

export interface WatchOptions {
  /** Show progress on stderr (false: say nothing until the end). */
  progress: boolean;
  /** Minimum time between two polls (default 1000 ms). */
  intervalMs?: number;
  /** How long the API may stay unreachable (or answer 5xx) before giving up (default 60 s). */
  outageMs?: number;
  /** Overrides the TTY detection of stderr (tests). */
  tty?: boolean;
}

/** A run's progress as one line, and a fraction when it has a known total. */
export function describeProgress(p: unknown): { line: string; ratio: number | null } | null {
  if (p === null || p === undefined) return null;
  if (typeof p !== 'object' || Array.isArray(p)) return { line: text(p), ratio: null };
  const o = p as Record<string, unknown>;
  const num = (k: string) => (typeof o[k] === 'number' ? (o[k] as number) : null);
  const phase = typeof o.phase === 'string' ? clean(o.phase) : null;
  const ratio = (a: number | null, b: number | null) => (a !== null && b ? Math.max(0, Math.min(1, a / b)) : null);
  // Backup (DumpProgress): the archive pg_dump writes, against the database's size (compressed: it ends below it).
  if (num('bytesWritten') !== null) {
    return { line: `${phase ?? 'dumping'}: ${bytes(num('bytesWritten'))} written (database ${bytes(num('databaseBytes'))})`, ratio: ratio(num('bytesWritten'), num('databaseBytes')) };
  }
  // Restore (RestoreProgress): the archive verified, then the staging database growing.
  if (num('archiveBytes') !== null) {
    if (phase === 'verifying') return { line: `verifying archive: ${bytes(num('bytesVerified'))} of ${bytes(num('archiveBytes'))}`, ratio: ratio(num('bytesVerified'), num('archiveBytes')) };
    const jobs = num('jobs');
    return { line: `${phase ?? 'restoring'}: ${bytes(num('bytesRestored'))} restored (archive ${bytes(num('archiveBytes'))}${jobs && jobs > 1 ? `, ${jobs} jobs` : ''})`, ratio: null };
  }
  // Geo-secondary seeding: tables ready.
  if (num('tables') !== null && num('tablesReady') !== null) {
    return { line: `${phase ?? 'seeding'}: ${num('tablesReady')}/${num('tables')} tables ready`, ratio: ratio(num('tablesReady'), num('tables')) };
  }
  // Draining replication before a switch.
  if (num('lagBytes') !== null) return { line: `${phase ?? 'catching up'}: ${num('lagBytes')! < 0 ? 'lag unknown' : `${bytes(num('lagBytes'))} behind`}`, ratio: null };
  const rest = Object.entries(o)
    .filter(([k]) => k !== 'phase')
    .map(([k, v]) => `${k}=${typeof v === 'number' && /bytes/i.test(k) ? bytes(v) : text(v)}`);
  return { line: [phase, ...rest].filter(Boolean).join(' '), ratio: null };
}

/** What happened between two polls of a run, as lines for people. */
function changes(prev: Run | null, run: Run): string[] {
  const out: string[] = [];
  const done = prev?.stepsDone ?? [];
  for (const s of run.stepsDone.slice(done.length)) out.push(`done: ${clean(s)}`);
  // 'completed' and 'failed' are how a run's last step reads while it closes: the end line says it.
  if (run.status === 'running' && run.step && run.step !== prev?.step && run.step !== 'completed' && run.step !== 'failed') out.push(`step: ${clean(run.step)}`);
  for (const w of run.warnings.slice(prev?.warnings.length ?? 0)) out.push(`warning: ${clean(w)}`);
  const wait = run.waiting ? `${run.waiting.kind}|${run.waiting.until}|${run.waiting.detail}` : '';
  const pwait = prev?.waiting ? `${prev.waiting.kind}|${prev.waiting.until}|${prev.waiting.detail}` : '';
  if (wait && wait !== pwait) {
    out.push(`waiting for ${run.waiting!.kind === 'signoff' ? 'sign-off' : 'the maintenance window'} until ${run.waiting!.until}: ${clean(run.waiting!.detail)}`);
    if (run.waiting!.kind === 'signoff') out.push(`  an approver signs off with: bcdr runs signoff ${run.workflowId} approve --statement "…"`);
  }
  for (const [id, inst] of Object.entries(run.instances ?? {})) {
    const before = prev?.instances?.[id];
    if (!before || before.step !== inst.step) out.push(`${clean(inst.name)}: ${clean(inst.step)}${inst.error ? ` (${clean(inst.error)})` : ''}`);
  }
  return out;
}

/** Outcomes a completed run reports in its result when it did what was asked (anything else: rejected, expired, aborted, partial, degraded). */
const GOOD_OUTCOMES = new Set(['completed', 'nothing-to-do']);

/** The `outcome` a completed run's result names, if any (the swap, the failover and the failback report one). */
export function outcomeOf(run: Run): string | null {
  const o = (run.result as { outcome?: unknown } | null)?.outcome;
  return typeof o === 'string' ? o : null;
}

/**
 * Did the run do what was asked? Its status is one of `ok` and, when it
 * completed, its result's outcome (if it has one) is completed or nothing-to-do.
 */
export function succeeded(run: Run, ok: string[] = ['completed']): boolean {
  if (!ok.includes(run.status)) return false;
  const outcome = run.status === 'completed' ? outcomeOf(run) : null;
  return outcome === null || GOOD_OUTCOMES.has(outcome);
}

/** The last line of a watch: how the run ended. */
export function endLine(run: Run): string {
  const took = between(run.startTime, run.closeTime);
  const outcome = outcomeOf(run);
  if (run.status === 'completed') return `run ${run.workflowId} completed in ${took}${outcome && outcome !== 'completed' ? ` (outcome: ${clean(outcome)})` : ''}`;
  return `run ${run.workflowId} ${run.status} after ${took}${run.error ? `: ${clean(run.error)}` : ''}`;
}

/**
 * Polls the run until it is no longer running and returns its last state.
 * Transient trouble (the API unreachable, 5xx) is retried for `outageMs`;
 * a 4xx (no such run, bad token) ends the watch at once.
 */
export async function watchRun(api: ApiClient, id: string, opts: WatchOptions): Promise<Run> {
  const interval = opts.intervalMs ?? 1000;
  const outageMs = opts.outageMs ?? 60_000;
  const tty = opts.tty ?? !!process.stderr.isTTY;
  const view = !opts.progress ? null : tty ? new BarView(id) : new LineView(id);
  let prev: Run | null = null;
  let troubleSince: number | null = null;
  const onSigint = () => {
    view?.stop();
    process.stderr.write(`\nstopped watching; the run goes on. Follow it again with: bcdr runs watch ${id}\n`);
    process.exit(130);
  };
  process.once('SIGINT', onSigint);
  try {
    for (;;) {
      const began = Date.now();
      let run: Run | null = null;
      try {
        run = (await api.request<Run>('GET', `/v1/runs/${seg(id)}`, { timeoutMs: 30_000 })).body;
        if (troubleSince !== null) view?.log('API reachable again');
        troubleSince = null;
      } catch (err) {
        const transient = err instanceof NetworkError || (err instanceof ApiError && err.status >= 500);
        if (!transient) throw err;
        troubleSince ??= Date.now();
        if (Date.now() - troubleSince > outageMs) throw err;
        view?.log(`${err.message.split('\n')[0]}; retrying`);
      }
      if (run) {
        view?.update(prev, run);
        prev = run;
        if (run.status !== 'running') {
          view?.stop();
          return run;
        }
      }
      const wait = interval - (Date.now() - began);
      await sleep(Math.max(wait, troubleSince !== null ? 2000 : 0));
    }
  } finally {
    view?.stop();
    process.removeListener('SIGINT', onSigint);
  }
}

interface View {
  update(prev: Run | null, run: Run): void;
  log(line: string): void;
  stop(): void;
}

/** Plain lines on stderr, one per change: readable in logs and by tests. */
class LineView implements View {
  private lastProgress = '';
  constructor(private readonly id: string) {}

  update(prev: Run | null, run: Run): void {
    if (!prev) this.log(`watching run ${this.id}${run.runbook ? ` (${run.runbook})` : ''}: ${run.status}`);
    // A run already over at the first look: only how it ended, not its whole history.
    if (prev || run.status === 'running') for (const l of changes(prev, run)) this.log(l);
    const p = run.status === 'running' ? describeProgress(run.progress) : null;
    const line = p ? `progress: ${run.step ? `${clean(run.step)}: ` : ''}${p.line}` : '';
    if (line && line !== this.lastProgress) this.log(line);
    this.lastProgress = line;
    if (run.status !== 'running') this.log(endLine(run));
  }

  log(line: string): void {
    process.stderr.write(`${line}\n`);
  }

  stop(): void {}
}

/** A redrawn bar on a terminal: step, bar (when the progress has a total), details, elapsed time; changes logged above it. */
class BarView implements View {
  private readonly multi: cliProgress.MultiBar;
  private readonly bar: cliProgress.SingleBar;
  private stopped = false;

  constructor(private readonly id: string) {
    this.multi = new cliProgress.MultiBar(
      {
        stream: process.stderr,
        hideCursor: true,
        clearOnComplete: true,
        linewrap: true,
        fps: 5,
        barsize: 24,
        format: (options, params, payload: { step: string; detail: string; elapsed: string; hasRatio: boolean }) => {
          const bar = payload.hasRatio ? ` [${cliProgress.Format.BarFormat(params.progress, options)}] ${Math.round(params.progress * 100)}%` : '';
          return `${payload.step}${bar} | ${payload.elapsed}${payload.detail ? ` | ${payload.detail}` : ''}`;
        },
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar = this.multi.create(1000, 0, { step: 'starting', detail: '', elapsed: '', hasRatio: false });
  }

  update(prev: Run | null, run: Run): void {
    if (!prev) this.log(`watching run ${this.id}${run.runbook ? ` (${run.runbook})` : ''}`);
    if (prev || run.status === 'running') for (const l of changes(prev, run)) this.log(l);
    const p = run.status === 'running' ? describeProgress(run.progress) : null;
    const done = run.stepsDone.length;
    this.bar.update(p?.ratio !== null && p?.ratio !== undefined ? Math.round(p.ratio * 1000) : 0, {
      step: `${clean(run.step ?? run.status)} (${done} step${done === 1 ? '' : 's'} done)`,
      detail: run.waiting ? `waiting for ${run.waiting.kind} until ${run.waiting.until}` : (p?.line ?? ''),
      elapsed: between(run.startTime, run.closeTime),
      hasRatio: p?.ratio !== null && p?.ratio !== undefined,
    });
    if (run.status !== 'running') {
      this.stop();
      process.stderr.write(`${endLine(run)}\n`);
    }
  }

  log(line: string): void {
    if (this.stopped) process.stderr.write(`${line}\n`);
    else this.multi.log(`${line}\n`);
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.multi.stop();
  }
}
