import { Command, Option } from 'commander';
import { act, followStarted, parse, type RunRef } from '../context.js';
import { duration, kv, table, text } from '../format.js';
import { seg, UsageError } from '../http.js';

const TYPES = ['production', 'sandbox'];
const EDITIONS = ['basic', 'standard', 'premium'];
const STATES = ['provisioning', 'active', 'busy', 'suspended', 'failed', 'resetting', 'failed_over', 'degraded'];

interface Instance {
  id: string;
  name: string;
  type: string;
  edition: string;
  homeRegion: string;
  activeRegion: string;
  state: string;
  servedBy: string | null;
  fencedSince: string | null;
  lockedBy: { workflowId: string; runbook: string } | null;
  readiness: { state: string; reasons: string[] } | null;
  /** Added by the staleness work: absent on APIs without it. */
  stale?: boolean;
  lastGoodBackupAt?: string | null;
  backupAgeSeconds?: number | null;
  replication?: { state: string; lagSeconds: number | null } | null;
  run?: RunRef;
}

/** Markers for the table: STALE (no recent good backup), fenced, served by another instance, held by a run. */
function flags(i: Instance): string {
  const f: string[] = [];
  if (i.stale === true) f.push('STALE');
  if (i.fencedSince) f.push('fenced');
  if (i.servedBy) f.push(`served-by:${i.servedBy}`);
  if (i.lockedBy) f.push(`busy:${i.lockedBy.runbook}`);
  return f.join(' ');
}

export function instanceTable(list: Instance[]): string {
  if (!list.length) return 'no instances';
  return table(
    ['name', 'id', 'type', 'edition', 'state', 'region', 'last backup', 'readiness', 'flags'],
    list.map((i) => [
      i.name,
      i.id,
      i.type,
      i.edition,
      i.state,
      i.activeRegion === i.homeRegion ? i.activeRegion : `${i.activeRegion} (home ${i.homeRegion})`,
      i.lastGoodBackupAt ? `${duration((i.backupAgeSeconds ?? (Date.now() - Date.parse(i.lastGoodBackupAt)) / 1000) * 1000)} ago` : i.lastGoodBackupAt === null ? 'never' : '-',
      i.readiness ? (i.readiness.state === 'ready' ? 'ready' : `${i.readiness.state}: ${i.readiness.reasons.length} reason(s)`) : '-',
      flags(i),
    ]),
  );
}

/** A number option that also takes "default": checked here, a usage error naming the option otherwise. */
function asNumber(option: string, v: string, min: number, max: number): number {
  try {
    return parse.number(min, max)(v);
  } catch (err) {
    throw new UsageError(`option '${option}' argument '${v}' is invalid. ${(err as Error).message} (or "default")`);
  }
}

export function instancesCommand(): Command {
  const cmd = new Command('instances').alias('instance').description('tenant databases: list, show, create, change, delete, resume, endpoint');

  cmd
    .command('list')
    .alias('ls')
    .description('list instances (STALE marks one without a recent good backup)')
    .addOption(new Option('--type <type>', 'only this type').choices(TYPES))
    .addOption(new Option('--state <state>', 'only this state').choices(STATES))
    .option('--region <region>', 'only instances active in this region')
    .option('--stale', 'only instances without a good backup for longer than their threshold')
    .option('--fresh', 'only instances that are not stale')
    .action(
      act(async (ctx, o: { type?: string; state?: string; region?: string; stale?: boolean; fresh?: boolean }) => {
        if (o.stale && o.fresh) throw new UsageError('give --stale or --fresh, not both');
        const stale = o.stale ? 'true' : o.fresh ? 'false' : undefined;
        const { body } = await ctx.api.get<{ instances: Instance[] }>('/v1/instances', { type: o.type, state: o.state, region: o.region, stale });
        ctx.print(body, () => instanceTable(body.instances));
      }),
    );

  cmd
    .command('get')
    .alias('show')
    .description('show an instance (by name or id): state, endpoint, readiness, geo-replication, last failover')
    .argument('<instance>', 'name or id')
    .action(
      act(async (ctx, id: string) => {
        const { body } = await ctx.api.get(`/v1/instances/${seg(id)}`);
        ctx.print(body, () => kv(body));
      }),
    );

  cmd
    .command('create')
    .description('create an instance: provisions its database in its home region and a daily backup schedule')
    .argument('<name>', 'DNS-label name (lowercase letters, digits, inner hyphens)')
    .addOption(new Option('--type <type>', 'instance type').choices(TYPES).makeOptionMandatory())
    .addOption(new Option('--edition <edition>', 'edition').choices(EDITIONS).default('standard'))
    .requiredOption('--region <region>', 'home region (see bcdr regions)')
    .option('--wait', 'if the API answers before provisioning ends (202), follow the run to its end')
    .action(
      act(async (ctx, name: string, o: { type: string; edition: string; region: string; wait?: boolean }) => {
        const { status, body } = await ctx.api.post<Instance>('/v1/instances', { name, type: o.type, edition: o.edition, homeRegion: o.region });
        const human = () => `${status === 201 ? 'created' : 'provisioning'} instance ${text(body.name)} (${body.id}), state ${text(body.state)}\n${kv(body, { skip: ['run'] })}`;
        if (status === 201) {
          ctx.print(body, human);
          return 0;
        }
        return followStarted(ctx, body, body.run, o.wait, human);
      }),
    );

  cmd
    .command('update')
    .alias('set')
    .description('switch the type, raise the edition (never lower it), or set the RPO target of an instance')
    .argument('<instance>', 'name or id')
    .addOption(new Option('--type <type>', 'switch the type').choices(TYPES))
    .addOption(new Option('--edition <edition>', 'raise the edition').choices(EDITIONS))
    .option('--rpo-target <seconds|default>', 'production: the lag (seconds) above which failover readiness is degraded; "default" for RPO_TARGET_SECONDS')
    .option('--stale-after-hours <hours|default>', 'hours without a good backup after which the instance is stale; "default" for BACKUP_MAX_AGE_HOURS')
    .action(
      act(async (ctx, id: string, o: { type?: string; edition?: string; rpoTarget?: string; staleAfterHours?: string }) => {
        const body: Record<string, unknown> = {};
        if (o.type) body.type = o.type;
        if (o.edition) body.edition = o.edition;
        if (o.rpoTarget !== undefined) {
          if (o.rpoTarget === 'default') body.rpoTargetSeconds = null;
          else body.rpoTargetSeconds = asNumber('--rpo-target', o.rpoTarget, 0.1, 86_400);
        }
        if (o.staleAfterHours !== undefined) {
          if (o.staleAfterHours === 'default') body.staleAfterHours = null;
          else body.staleAfterHours = asNumber('--stale-after-hours', o.staleAfterHours, 0.1, 24 * 366);
        }
        if (!Object.keys(body).length) throw new UsageError('give --type, --edition, --rpo-target or --stale-after-hours (or several)');
        const res = await ctx.api.patch<Instance>(`/v1/instances/${seg(id)}`, body);
        ctx.print(res.body, () => `updated instance ${text(res.body.name)}\n${kv(res.body)}`);
      }),
    );

  cmd
    .command('delete')
    .alias('rm')
    .description('delete an instance (its database and schedule); its backups stay until they expire')
    .argument('<instance>', 'name or id')
    .option('--wait', 'if the API answers before the deletion ends (202), follow the run to its end')
    .action(
      act(async (ctx, id: string, o: { wait?: boolean }) => {
        const { status, body } = await ctx.api.delete<{ deleted: string; run: RunRef }>(`/v1/instances/${seg(id)}`);
        const human = () => `${status === 200 ? 'deleted' : 'deleting'} instance ${body.deleted} (run ${body.run.workflowId})`;
        if (status === 200) {
          ctx.print(body, human);
          return 0;
        }
        return followStarted(ctx, body, body.run, o.wait, human);
      }),
    );

  cmd
    .command('resume')
    .description('resume a suspended (restored) instance: it accepts connections again')
    .argument('<instance>', 'name or id')
    .action(
      act(async (ctx, id: string) => {
        const { body } = await ctx.api.post<Instance>(`/v1/instances/${seg(id)}/resume`);
        ctx.print(body, () => `resumed instance ${text(body.name)}: ${text(body.state)}`);
      }),
    );

  cmd
    .command('endpoint')
    .description('where clients connect: the URI, the alternate and the multi-host URI (never a password)')
    .argument('<instance>', 'name or id')
    .action(
      act(async (ctx, id: string) => {
        const { body } = await ctx.api.get(`/v1/instances/${seg(id)}/endpoint`);
        ctx.print(body, () => kv(body));
      }),
    );

  return cmd;
}
