import { Command } from 'commander';
import { act, followStarted, parse, type RunRef } from '../context.js';
import { bytes, kv, table, trunc, when } from '../format.js';
import { seg, UsageError } from '../http.js';

interface Backup {
  id: string;
  instanceName: string;
  kind: string;
  label: string | null;
  status: string;
  sizeBytes: number | null;
  createdAt: string;
  expiresAt: string;
}

/** `bcdr backup <instance> --label …`: the on-demand backup runbook (POST /v1/instances/:id/backups). */
function addCreate(cmd: Command): Command {
  return cmd
    .description('take an on-demand backup of an instance (needs a label; kept 3 days unless --retention-days)')
    .argument('<instance>', 'name or id')
    .requiredOption('-l, --label <label>', 'what the backup is for (one line, at most 200 characters)')
    .option('--retention-days <days>', 'keep it this many days (1-365, default 3)', parse.int(1, 365))
    .option('-w, --wait', 'follow the run to its end: progress on stderr, then the result (exit 1 if it fails)')
    .action(
      act(async (ctx, id: string, o: { label: string; retentionDays?: number; wait?: boolean }) => {
        const { body } = await ctx.api.post<{ backupId: string; run: RunRef }>(`/v1/instances/${seg(id)}/backups`, { label: o.label, ...(o.retentionDays !== undefined ? { retentionDays: o.retentionDays } : {}) });
        return followStarted(ctx, body, body.run, o.wait, () => `backup ${body.backupId} started: run ${body.run.workflowId}`);
      }),
    );
}

export function backupCommand(): Command {
  return addCreate(new Command('backup'));
}

export function backupsCommand(): Command {
  const cmd = new Command('backups').description('backups: list per instance, show, relabel, delete, take one');

  cmd
    .command('list')
    .alias('ls')
    .description("list an instance's backups, newest first")
    .argument('<instance>', 'name or id')
    .action(
      act(async (ctx, id: string) => {
        const { body } = await ctx.api.get<{ backups: Backup[] }>(`/v1/instances/${seg(id)}/backups`);
        ctx.print(body, () =>
          body.backups.length
            ? table(
                ['id', 'kind', 'status', 'size', 'label', 'created', 'expires'],
                body.backups.map((b) => [b.id, b.kind, b.status, bytes(b.sizeBytes), trunc(b.label, 40), when(b.createdAt), when(b.expiresAt)]),
              )
            : 'no backups',
        );
      }),
    );

  cmd
    .command('get')
    .alias('show')
    .description('show a backup: status, size, sha256, sequences, expiry')
    .argument('<backup>', 'backup id (bk-…)')
    .action(
      act(async (ctx, id: string) => {
        const { body } = await ctx.api.get(`/v1/backups/${seg(id)}`);
        ctx.print(body, () => kv(body));
      }),
    );

  addCreate(cmd.command('create'));

  cmd
    .command('relabel')
    .description('relabel an on-demand backup (system backups are refused)')
    .argument('<backup>', 'backup id')
    .argument('<label>', 'the new label')
    .action(
      act(async (ctx, id: string, label: string) => {
        const { body } = await ctx.api.patch<Backup>(`/v1/backups/${seg(id)}`, { label });
        ctx.print(body, () => `relabelled backup ${body.id}: ${body.label ?? ''}`);
      }),
    );

  cmd
    .command('delete')
    .alias('rm')
    .description('delete an on-demand backup: archive, manifest and record (system backups are refused)')
    .argument('<backup>', 'backup id')
    .action(
      act(async (ctx, id: string) => {
        const { body } = await ctx.api.delete<{ deleted: string }>(`/v1/backups/${seg(id)}`);
        ctx.print(body, () => `deleted backup ${body.deleted}`);
      }),
    );

  return cmd;
}

export function scheduleCommand(): Command {
  const cmd = new Command('schedule').description("an instance's daily backup schedule: show or change it");

  cmd
    .command('get')
    .alias('show')
    .description('the policy, its last run (with the failure reason) and its next runs')
    .argument('<instance>', 'name or id')
    .action(
      act(async (ctx, id: string) => {
        const { body } = await ctx.api.get(`/v1/instances/${seg(id)}/backup-schedule`);
        ctx.print(body, () => kv(body));
      }),
    );

  cmd
    .command('set')
    .description('change the policy; what you leave out keeps its value (retention must be greater than the interval)')
    .argument('<instance>', 'name or id')
    .option('--start-time <HH:MM>', 'start time, UTC, 24-hour')
    .option('--interval-days <days>', 'every this many days (1-30)', parse.int(1, 30))
    .option('--retention-days <days>', 'keep system backups this many days (1-365)', parse.int(1, 365))
    .option('--keep-at-least-one', 'always keep the newest backup, even expired')
    .option('--no-keep-at-least-one', 'let retention delete every expired backup')
    .option('--enable', 'enable the schedule')
    .option('--disable', 'pause the schedule')
    .action(
      act(async (ctx, id: string, o: { startTime?: string; intervalDays?: number; retentionDays?: number; keepAtLeastOne?: boolean; enable?: boolean; disable?: boolean }) => {
        if (o.enable && o.disable) throw new UsageError('give --enable or --disable, not both');
        const body: Record<string, unknown> = {};
        if (o.startTime !== undefined) body.startTime = o.startTime;
        if (o.intervalDays !== undefined) body.intervalDays = o.intervalDays;
        if (o.retentionDays !== undefined) body.retentionDays = o.retentionDays;
        if (o.keepAtLeastOne !== undefined) body.keepAtLeastOne = o.keepAtLeastOne;
        if (o.enable) body.enabled = true;
        if (o.disable) body.enabled = false;
        if (!Object.keys(body).length) throw new UsageError('nothing to change: give at least one option (see bcdr schedule set --help)');
        const res = await ctx.api.put(`/v1/instances/${seg(id)}/backup-schedule`, body);
        ctx.print(res.body, () => `schedule updated\n${kv(res.body)}`);
      }),
    );

  return cmd;
}
