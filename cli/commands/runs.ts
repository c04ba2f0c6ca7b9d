import { readFileSync } from 'node:fs';
import { Argument, Command, Option } from 'commander';
import { act, parse, runSummary, waitFor, type RunRef } from '../context.js';
import { between, kv, table, text, trunc, when } from '../format.js';
import { seg, UsageError } from '../http.js';
import type { Run } from '../watch.js';

const RUNBOOKS = [
  'provision-instance',
  'delete-instance',
  'on-demand-backup',
  'daily-backup',
  'retention-sweep',
  'restore',
  'reset',
  'production-restore',
  'drop-retired',
  'geo-secondary',
  'region-monitor',
  'region-failover',
  'failback',
];
const RUN_STATUSES = ['running', 'completed', 'failed', 'cancelled', 'terminated', 'timed_out', 'continued_as_new'];
const SIGNOFF_STATUSES = ['pending', 'approved', 'rejected', 'expired', 'cancelled'];

/** The statement of a sign-off or a replay: --statement, or --statement-file (`-` for stdin). */
export function statementOf(o: { statement?: string; statementFile?: string }): string {
  if (o.statement !== undefined && o.statementFile !== undefined) throw new UsageError('give --statement or --statement-file, not both');
  if (o.statementFile !== undefined) {
    try {
      return readFileSync(o.statementFile === '-' ? 0 : o.statementFile, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read --statement-file ${o.statementFile}: ${(err as Error).message}`);
    }
  }
  if (o.statement === undefined) throw new UsageError('a written statement is required: --statement "…" or --statement-file <path>');
  return o.statement;
}

export function runsCommand(): Command {
  const cmd = new Command('runs').alias('run').description('runbook runs: list, show, watch, cancel, sign off');

  cmd
    .command('list')
    .alias('ls')
    .description('list runs, newest first')
    .option('--instance <instance>', 'runs of this instance (name or id)')
    .addOption(new Option('--runbook <runbook>', 'runs of this runbook').choices(RUNBOOKS))
    .addOption(new Option('--status <status>', 'runs in this status').choices(RUN_STATUSES))
    .option('--limit <n>', 'at most this many (1-200, default 50)', parse.int(1, 200))
    .action(
      act(async (ctx, o: { instance?: string; runbook?: string; status?: string; limit?: number }) => {
        const { body } = await ctx.api.get<{ runs: Run[] }>('/v1/runs', { instance: o.instance, runbook: o.runbook, status: o.status, limit: o.limit });
        ctx.print(body, () =>
          body.runs.length
            ? table(
                ['run', 'runbook', 'instance', 'status', 'started', 'took'],
                body.runs.map((r) => [r.workflowId, r.runbook, r.instanceId, r.status, when(r.startTime), between(r.startTime, r.closeTime)]),
              )
            : 'no runs',
        );
      }),
    );

  cmd
    .command('get')
    .alias('show')
    .description('one run: status, step, steps done, progress, warnings, result, Temporal UI link')
    .argument('<run>', 'workflow id')
    .action(
      act(async (ctx, id: string) => {
        const { body } = await ctx.api.get<Run>(`/v1/runs/${seg(id)}`);
        ctx.print(body, () => runSummary(body));
      }),
    );

  cmd
    .command('watch')
    .alias('wait')
    .description('follow a run to its end (polls once a second): progress on stderr, then the result; exit 0 if it completed with a good outcome, 1 otherwise')
    .argument('<run>', 'workflow id')
    .action(act(async (ctx, id: string) => waitFor(ctx, id)));

  cmd
    .command('cancel')
    .description('cancel a running run: it cleans up what it started and gives its instances back')
    .argument('<run>', 'workflow id')
    .option('-w, --wait', 'follow the run until it has ended (exit 0 once it is cancelled, 1 if it ended otherwise)')
    .action(
      act(async (ctx, id: string, o: { wait?: boolean }) => {
        const { body } = await ctx.api.post<{ cancelled: string; run: RunRef }>(`/v1/runs/${seg(id)}/cancel`);
        if (!o.wait) {
          ctx.print(body, () => `cancellation of run ${body.cancelled} requested\nfollow it:   bcdr runs watch ${body.cancelled}\nTemporal UI: ${body.run.url}`);
          return 0;
        }
        if (!ctx.json) process.stdout.write(`cancellation of run ${body.cancelled} requested\n`);
        return waitFor(ctx, id, ['cancelled']);
      }),
    );

  cmd
    .command('signoff')
    .description("approve or reject, with a written statement, a run waiting for sign-off (approver role; never the run's own requester)")
    .argument('<run>', 'workflow id')
    .addArgument(new Argument('<decision>', 'approve or reject').choices(['approve', 'reject']))
    .option('-m, --statement <text>', 'the written statement (kept in the audit trail)')
    .option('--statement-file <path>', 'read the statement from a file (- for stdin)')
    .action(
      act(async (ctx, id: string, decision: string, o: { statement?: string; statementFile?: string }) => {
        const statement = statementOf(o);
        const { status, body } = await ctx.api.post<{ signoff: { status: string; decidedBy: string | null } }>(`/v1/runs/${seg(id)}/signoff`, { decision, statement });
        ctx.print(body, () =>
          status === 200 ? `run ${id}: sign-off ${body.signoff.status} by ${text(body.signoff.decidedBy)}` : `run ${id}: decision (${decision}) sent; the run has not recorded it yet (bcdr runs get ${id})`,
        );
      }),
    );

  return cmd;
}

interface Signoff {
  id: string;
  workflowId: string;
  runbook: string;
  status: string;
  requestedBy: string;
  summary: string;
  deadline: string;
  decidedBy: string | null;
  createdAt: string;
}

export function signoffsCommand(): Command {
  const cmd = new Command('signoffs').description('what waits for sign-off (and what was decided)');
  cmd
    .command('list', { isDefault: true })
    .alias('ls')
    .description('sign-offs, newest first (--status pending: what waits for an approver)')
    .addOption(new Option('--status <status>', 'only this status').choices(SIGNOFF_STATUSES))
    .option('--run <run>', 'only the sign-offs of this run')
    .option('--limit <n>', 'at most this many (1-500, default 100)', parse.int(1, 500))
    .option('--details', 'show each sign-off in full (summary and what could be lost), not as a table')
    .action(
      act(async (ctx, o: { status?: string; run?: string; limit?: number; details?: boolean }) => {
        const { body } = await ctx.api.get<{ signoffs: Signoff[] }>('/v1/signoffs', { status: o.status, run: o.run, limit: o.limit });
        ctx.print(body, () => {
          if (!body.signoffs.length) return 'no sign-offs';
          if (o.details) return body.signoffs.map((s) => kv(s)).join('\n\n');
          return table(
            ['run', 'runbook', 'status', 'requested by', 'deadline', 'decided by', 'summary'],
            body.signoffs.map((s) => [s.workflowId, s.runbook, s.status, s.requestedBy, when(s.deadline), s.decidedBy, trunc(s.summary, 50)]),
          );
        });
      }),
    );
  return cmd;
}
