import { Command } from 'commander';
import { act, followStarted, parse, type RunRef } from '../context.js';
import { bytes, kv, table, text, trunc, when } from '../format.js';
import { seg, UsageError } from '../http.js';

interface Backup {
  id: string;
  instanceName: string;
  region: string;
  kind: string;
  label: string | null;
  status: string;
  sizeBytes: number | null;
  createdAt: string;
  expiresAt: string;
  encryption?: { alg: string; keyId: string } | null;
  copies?: { region: string; storeKind: string | null; status: string; verifiedAt: string | null; error: string | null }[];
  hold?: { reason: string; by: string; at: string } | null;
  lock?: { until: string; mode: string | null } | null;
}

/** A backup for people: its fields (key id, hold, lock among them), then where its copies are. */
export function backupText(b: Backup): string {
  const { copies, encryption, hold, lock, ...rest } = b;
  const parts = [
    kv({
      ...rest,
      encryption: encryption ? `${encryption.alg}, key ${encryption.keyId}` : 'none (stored in clear)',
      hold: hold ? `held by ${hold.by} since ${when(hold.at)}: ${hold.reason}` : 'none',
      lock: lock ? `${lock.mode ?? 'retention'} lock until ${when(lock.until)}` : 'none',
    }),
  ];
  if (copies?.length) parts.push(table(['region', 'store', 'copy', 'verified', 'error'], copies.map((c) => [c.region, c.storeKind, c.status, when(c.verifiedAt), trunc(c.error, 60)])));
  return parts.join('\n\n');
}

/** `-m, --reason <text>`: why a hold is set or released (kept in the audit trail). */
function reasonOption(cmd: Command): Command {
  return cmd.requiredOption('-m, --reason <text>', 'why (one line, at most 500 characters; kept in the audit trail)');
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
                ['id', 'kind', 'status', 'size', 'label', 'created', 'expires', 'key', 'copies', 'held'],
                body.backups.map((b) => [
                  b.id,
                  b.kind,
                  b.status,
                  bytes(b.sizeBytes),
                  trunc(b.label, 40),
                  when(b.createdAt),
                  when(b.expiresAt),
                  b.encryption?.keyId,
                  (b.copies ?? []).filter((c) => c.status !== 'home').map((c) => `${c.region}:${c.status}`),
                  b.hold ? 'held' : '',
                ]),
              )
            : 'no backups',
        );
      }),
    );

  cmd
    .command('get')
    .alias('show')
    .description('show a backup: status, size, sha256, sequences, expiry, encryption key id, hold, lock and its copies')
    .argument('<backup>', 'backup id (bk-…)')
    .action(
      act(async (ctx, id: string) => {
        const { body } = await ctx.api.get<Backup>(`/v1/backups/${seg(id)}`);
        ctx.print(body, () => backupText(body));
      }),
    );

  reasonOption(
    cmd
      .command('hold')
      .description('put a completed backup on legal hold: nothing removes it or its copies until another approver releases it (operator role)')
      .argument('<backup>', 'backup id'),
  ).action(
    act(async (ctx, id: string, o: { reason: string }) => {
      const { body } = await ctx.api.post<Backup>(`/v1/backups/${seg(id)}/hold`, { reason: o.reason });
      ctx.print(body, () => `backup ${body.id} is on legal hold\n${backupText(body)}`);
    }),
  );

  reasonOption(
    cmd
      .command('release')
      .description("release a backup's legal hold (approver role; never the one who set it: four eyes)")
      .argument('<backup>', 'backup id'),
  ).action(
    act(async (ctx, id: string, o: { reason: string }) => {
      const { body } = await ctx.api.post<Backup>(`/v1/backups/${seg(id)}/release`, { reason: o.reason });
      ctx.print(body, () => `backup ${body.id} is released from legal hold`);
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

interface Keys {
  activeKeyId: string | null;
  keys: { id: string; active: boolean; configured: boolean; backups: number }[];
  unencryptedBackups: number;
  toRewrap: number;
}

/** `bcdr keys`: the backup keys (ids and use, never material) and key rotation (the rotate-keys runbook). */
export function keysCommand(): Command {
  const cmd = new Command('keys').description('backup encryption keys: list (ids and use, never key material), rotate');

  cmd
    .command('list', { isDefault: true })
    .alias('ls')
    .description('key ids configured, the active one, and how many backups use each')
    .action(
      act(async (ctx) => {
        const { body } = await ctx.api.get<Keys>('/v1/keys');
        ctx.print(body, () =>
          [
            table(
              ['key', 'active', 'configured', 'backups'],
              body.keys.map((k) => [k.id, k.active ? 'yes' : '', k.configured ? 'yes' : 'MISSING', k.backups]),
            ),
            `active: ${text(body.activeKeyId)} · in clear: ${body.unencryptedBackups} · to rewrap: ${body.toRewrap}`,
          ].join('\n'),
        );
      }),
    );

  cmd
    .command('rotate')
    .description("rewrap every backup's data key under the active key (approver role); archives are not re-encrypted")
    .option('-w, --wait', 'follow the run to its end: progress on stderr, then the result with rewrapped and failed counts (exit 1 unless it completes)')
    .action(
      act(async (ctx, o: { wait?: boolean }) => {
        const { body } = await ctx.api.post<{ run: RunRef }>('/v1/keys/rotate');
        return followStarted(ctx, body, body.run, o.wait, () => `key rotation started: run ${body.run.workflowId}`);
      }),
    );

  return cmd;
}
