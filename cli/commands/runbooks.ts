import { Command, Option } from 'commander';
import { act, followStarted, parse, type RunRef } from '../context.js';
import { kv, table, text } from '../format.js';
import { UsageError } from '../http.js';

const EDITIONS = ['basic', 'standard', 'premium'];
const WAIT = 'follow the run to its end: progress on stderr, then the result (exit 1 unless it completes)';

interface Started {
  run: RunRef;
  target?: { name: string; id: string };
}

const startedLine = (what: string, b: Started) => `${what} started: run ${b.run.workflowId}${b.target ? ` (target ${text(b.target.name)}, ${b.target.id})` : ''}`;

export function restoreCommand(): Command {
  return new Command('restore')
    .description('restore a completed backup into an existing sandbox (--into) or a new instance (--new); it lands suspended until `bcdr instances resume`')
    .argument('<backup>', 'backup id (bk-…)')
    .option('--into <instance>', 'an existing sandbox instance, by name or id')
    .option('--new <name>', 'a new instance of this name')
    .addOption(new Option('--edition <edition>', 'edition of the new instance (--new)').choices(EDITIONS))
    .option('--region <region>', 'region of the new instance (--new)')
    .option('--jobs <n>', 'pg_restore parallel jobs (1-16)', parse.int(1, 16))
    .option('--advance-sequences', 'move sequences past what the target had issued, so no number is issued twice')
    .option('-w, --wait', WAIT)
    .action(
      act(async (ctx, backupId: string, o: { into?: string; new?: string; edition?: string; region?: string; jobs?: number; advanceSequences?: boolean; wait?: boolean }) => {
        if ((o.into === undefined) === (o.new === undefined)) throw new UsageError('give exactly one of --into <instance> and --new <name>');
        if (o.new !== undefined && (!o.edition || !o.region)) throw new UsageError('--new needs --edition and --region');
        if (o.into !== undefined && (o.edition || o.region)) throw new UsageError('--edition and --region go with --new, not --into');
        const target = o.into !== undefined ? { instance: o.into } : { newInstance: { name: o.new, edition: o.edition, region: o.region } };
        const { body } = await ctx.api.post<Started>('/v1/runbooks/restore', { backupId, target, ...(o.jobs ? { jobs: o.jobs } : {}), ...(o.advanceSequences ? { advanceSequences: true } : {}) });
        return followStarted(ctx, body, body.run, o.wait, () => startedLine('restore', body));
      }),
    );
}

export function resetCommand(): Command {
  return new Command('reset')
    .description('reset a sandbox: empty database, active; optionally restore a backup in the same run (production is refused)')
    .argument('<instance>', 'sandbox name or id')
    .option('--backup <id>', 'restore this backup once the database is empty')
    .option('--jobs <n>', 'pg_restore parallel jobs (1-16)', parse.int(1, 16))
    .option('--advance-sequences', 'move sequences past what the target had issued')
    .option('-w, --wait', WAIT)
    .action(
      act(async (ctx, instance: string, o: { backup?: string; jobs?: number; advanceSequences?: boolean; wait?: boolean }) => {
        const { body } = await ctx.api.post<Started>('/v1/runbooks/reset', {
          instance,
          ...(o.backup ? { backupId: o.backup } : {}),
          ...(o.jobs ? { jobs: o.jobs } : {}),
          ...(o.advanceSequences ? { advanceSequences: true } : {}),
        });
        return followStarted(ctx, body, body.run, o.wait, () => startedLine('reset', body));
      }),
    );
}

export function productionRestoreCommand(): Command {
  return new Command('production-restore')
    .alias('swap')
    .description('restore production through a sandbox (the five-step swap), optionally after sign-off and in a maintenance window')
    .argument('<production>', 'production instance, name or id')
    .argument('<sandbox>', 'sandbox instance to restore through, name or id')
    .option('--backup <id>', "a completed backup of production (default: the swap's own fresh backup)")
    .option('--not-before <time>', 'start no earlier than this ISO date-time, e.g. 2026-11-24T02:00:00Z (within 30 days)')
    .option('--require-signoff', "wait for an approver's written sign-off first")
    .option('--signoff-timeout-minutes <minutes>', 'sign-off deadline (1-10080, default 1440)', parse.int(1, 7 * 24 * 60))
    .option('--delete-temporary-backups', 'delete the step-1 backups at the end (otherwise kept 7 days)')
    .option('--jobs <n>', 'pg_restore parallel jobs (1-16)', parse.int(1, 16))
    .option('--advance-sequences', 'move sequences past what production had issued')
    .option('-w, --wait', WAIT)
    .action(
      act(
        async (
          ctx,
          production: string,
          sandbox: string,
          o: { backup?: string; notBefore?: string; requireSignoff?: boolean; signoffTimeoutMinutes?: number; deleteTemporaryBackups?: boolean; jobs?: number; advanceSequences?: boolean; wait?: boolean },
        ) => {
          const { body } = await ctx.api.post<Started>('/v1/runbooks/production-restore', {
            production,
            sandbox,
            ...(o.backup ? { backupId: o.backup } : {}),
            ...(o.notBefore ? { notBefore: o.notBefore } : {}),
            ...(o.requireSignoff ? { requireSignoff: true } : {}),
            ...(o.signoffTimeoutMinutes !== undefined ? { signoffTimeoutMinutes: o.signoffTimeoutMinutes } : {}),
            ...(o.deleteTemporaryBackups ? { deleteTemporaryBackups: true } : {}),
            ...(o.jobs ? { jobs: o.jobs } : {}),
            ...(o.advanceSequences ? { advanceSequences: true } : {}),
          });
          return followStarted(ctx, body, body.run, o.wait, () => startedLine('production-restore', body));
        },
      ),
    );
}

interface DryRun {
  region: string;
  reachable: boolean;
  kind: string;
  signoffRequired: boolean;
  instances: { name: string; readiness: { state: string; reasons: string[] } | null; couldLose: { lagSeconds: number | null; couldLoseSeconds: number | null } }[];
  skipped: { name: string; reason: string }[];
}

function dryRunText(d: DryRun): string {
  const head = kv({ region: d.region, reachable: d.reachable, kind: d.kind, signoffRequired: d.signoffRequired });
  const rows = d.instances.map((i) => [i.name, i.readiness?.state ?? '-', i.readiness?.reasons ?? [], i.couldLose.lagSeconds, i.couldLose.couldLoseSeconds]);
  const parts = [head, rows.length ? table(['instance', 'readiness', 'reasons', 'lag s', 'could lose s'], rows) : 'no production instances to fail over'];
  if (d.skipped.length) parts.push(table(['skipped', 'reason'], d.skipped.map((s) => [s.name, s.reason])));
  return parts.join('\n');
}

export function failoverCommand(): Command {
  return new Command('region-failover')
    .alias('failover')
    .description("fail a region over to its pair: a planned switchover when it answers, otherwise after an approver's sign-off")
    .argument('<region>', 'the region whose production instances move to their paired region')
    .option('--reason <text>', 'why (required unless --dry-run)')
    .option('--dry-run', "show each instance's readiness and what it could lose; start nothing, change nothing")
    .addOption(new Option('--mode <mode>', 'auto: planned when the region answers; unplanned: always a sign-off').choices(['auto', 'unplanned']))
    .option('--signoff-timeout-minutes <minutes>', 'sign-off deadline', parse.number(0.25, 7 * 24 * 60))
    .option('--signoff-remind-every-minutes <minutes>', 'sign-off reminder period', parse.number(0.25, 24 * 60))
    .option('--concurrency <n>', 'instances worked on at once (1-64)', parse.int(1, 64))
    .option('-w, --wait', WAIT)
    .action(
      act(async (ctx, region: string, o: { reason?: string; dryRun?: boolean; mode?: string; signoffTimeoutMinutes?: number; signoffRemindEveryMinutes?: number; concurrency?: number; wait?: boolean }) => {
        if (!o.dryRun && !o.reason) throw new UsageError('--reason is required (say why the region fails over), unless --dry-run');
        const { status, body } = await ctx.api.post('/v1/runbooks/region-failover', {
          region,
          ...(o.reason ? { reason: o.reason } : {}),
          ...(o.dryRun ? { dryRun: true } : {}),
          ...(o.mode ? { mode: o.mode } : {}),
          ...(o.signoffTimeoutMinutes !== undefined ? { signoffTimeoutMinutes: o.signoffTimeoutMinutes } : {}),
          ...(o.signoffRemindEveryMinutes !== undefined ? { signoffRemindEveryMinutes: o.signoffRemindEveryMinutes } : {}),
          ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}),
        });
        if (status === 200 || (body as { dryRun?: boolean }).dryRun) {
          ctx.print(body, () => dryRunText(body as DryRun));
          return 0;
        }
        const b = body as Started;
        return followStarted(ctx, b, b.run, o.wait, () => startedLine(`region failover of ${region}`, b));
      }),
    );
}

export function failbackCommand(): Command {
  return new Command('failback')
    .description('bring failed-over instances home to their (healthy again) home region')
    .argument('<region>', 'the home region')
    .option('--instances <names...>', 'only these instances (names or ids, space- or comma-separated); default: all failed over from the region')
    .option('--concurrency <n>', 'instances worked on at once (1-64)', parse.int(1, 64))
    .option('-w, --wait', WAIT)
    .action(
      act(async (ctx, region: string, o: { instances?: string[]; concurrency?: number; wait?: boolean }) => {
        const instances = o.instances?.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
        const { body } = await ctx.api.post<Started>('/v1/runbooks/failback', {
          region,
          ...(instances?.length ? { instances } : {}),
          ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}),
        });
        return followStarted(ctx, body, body.run, o.wait, () => startedLine(`failback to ${region}`, body));
      }),
    );
}
