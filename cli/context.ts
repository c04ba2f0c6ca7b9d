/** What every command shares: the API client from the global options, output in --json or for people, and --wait. */
import { InvalidArgumentError, type Command } from 'commander';
import { ApiClient, Exit } from './http.js';
import { between, kv, text } from './format.js';
import { succeeded, watchRun, type Run } from './watch.js';

export const DEFAULT_API = 'http://127.0.0.1:8080';

/** The global options (`bcdr --help`). */
export interface Globals {
  api?: string;
  token?: string;
  json?: boolean;
  quiet?: boolean;
}

/** Set once a command runs, so the top-level error handler knows whether to answer in JSON. */
export const state = { json: false };

export class Ctx {
  readonly api: ApiClient;
  readonly json: boolean;
  readonly quiet: boolean;

  constructor(g: Globals) {
    this.json = !!g.json;
    this.quiet = !!g.quiet;
    state.json = this.json;
    this.api = new ApiClient({ api: g.api || process.env.BCDR_API || DEFAULT_API, token: g.token || process.env.BCDR_TOKEN });
  }

  /** Prints the API's body as JSON (--json), or what `human` makes of it. */
  print(body: unknown, human: () => string): void {
    if (this.json) process.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
    else {
      const s = human();
      if (s) process.stdout.write(`${s}\n`);
    }
  }
}

/**
 * Wraps a command action: builds the context from the global options and
 * sets the exit code it returns. Errors go up to the top-level handler.
 */
export function act<A extends unknown[]>(fn: (ctx: Ctx, ...args: A) => Promise<number | void>) {
  return async (...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    const ctx = new Ctx(cmd.optsWithGlobals<Globals>());
    const code = await fn(ctx, ...(args.slice(0, -1) as A));
    if (code) process.exitCode = code;
  };
}

/** A run reference as the API returns it when a runbook starts. */
export interface RunRef {
  workflowId: string;
  runbook: string;
  url: string;
}

/** A run's state, for people: one aligned key-value list, then the warnings and the Temporal UI link. */
export function runSummary(run: Run): string {
  const running = run.status === 'running';
  const view: Record<string, unknown> = {
    run: run.workflowId,
    runbook: run.runbook,
    instance: run.instanceId,
    status: run.status,
    ...(running ? { step: run.step } : {}),
    started: run.startTime,
    closed: run.closeTime,
    took: between(run.startTime, run.closeTime),
    ...(run.requestedBy ? { requestedBy: run.requestedBy } : {}),
    stepsDone: run.stepsDone,
    ...(run.waiting ? { waiting: run.waiting } : {}),
    ...(run.instances && Object.keys(run.instances).length ? { instances: run.instances } : {}),
    ...(running && run.progress !== null && run.progress !== undefined ? { progress: run.progress } : {}),
    ...(run.result !== null && run.result !== undefined ? { result: run.result } : {}),
    ...(run.error ? { error: run.error } : {}),
  };
  const parts = [kv(view)];
  if (run.warnings.length) parts.push(run.warnings.map((w) => `warning: ${text(w)}`).join('\n'));
  parts.push(`Temporal UI: ${run.url}`);
  return parts.join('\n');
}

/**
 * After a command started a run: without --wait, prints the answer and how to
 * follow the run (exit 0). With --wait, follows the run to its end and prints
 * it (the final GET /v1/runs/:id body with --json); exit 0 when it ended in
 * one of `ok` (default: completed) with a good outcome, 1 otherwise.
 */
export async function followStarted(ctx: Ctx, body: unknown, run: RunRef | undefined, wait: boolean | undefined, human: () => string, ok: string[] = ['completed']): Promise<number> {
  if (!wait || !run) {
    ctx.print(body, () => {
      const s = human();
      return run ? `${s}\nfollow it:   bcdr runs watch ${run.workflowId}\nTemporal UI: ${run.url}` : s;
    });
    return Exit.ok;
  }
  if (!ctx.json) process.stdout.write(`${human()}\n`);
  return waitFor(ctx, run.workflowId, ok);
}

/** Follows a run to its end; prints it; exit 0 when its status is in `ok`, 1 otherwise. */
export async function waitFor(ctx: Ctx, workflowId: string, ok: string[] = ['completed']): Promise<number> {
  const run = await watchRun(ctx.api, workflowId, { progress: !ctx.quiet });
  ctx.print(run, () => runSummary(run));
  return succeeded(run, ok) ? Exit.ok : Exit.runFailed;
}

/** Option parsers: invalid values are usage errors (exit 2) naming the option. */
export const parse = {
  int: (min: number, max: number) => (v: string) => {
    if (!/^-?\d+$/.test(v)) throw new InvalidArgumentError('must be a whole number.');
    const n = Number(v);
    if (n < min || n > max) throw new InvalidArgumentError(`must be between ${min} and ${max}.`);
    return n;
  },
  number: (min: number, max: number) => (v: string) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError('must be a number.');
    if (n < min || n > max) throw new InvalidArgumentError(`must be between ${min} and ${max}.`);
    return n;
  },
  /** Repeatable and comma-separated: `--row a --row b,c`. */
  list: (v: string, prev: string[] | undefined) => [...(prev ?? []), ...v.split(',').map((s) => s.trim()).filter(Boolean)],
};
