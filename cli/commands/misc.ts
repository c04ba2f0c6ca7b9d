import { Command, Option } from 'commander';
import { act, parse } from '../context.js';
import { kv, table, text, trunc, when } from '../format.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiError, NetworkError, seg, UsageError } from '../http.js';
import { statementOf } from './runs.js';

interface AuditEvent {
  id: number;
  at: string;
  actor: string;
  action: string;
  instanceId: string | null;
  subject: string | null;
  details: Record<string, unknown> | null;
}

export function auditCommand(): Command {
  return new Command('audit')
    .description('the audit trail, newest first: who changed what and when (one page; --before for the next)')
    .option('--instance <instance>', 'events of this instance (name or id; deleted instances too)')
    .option('--actor <actor>', 'events by this identity (or system:<part>)')
    .option('--action <action>', 'events of this action, e.g. backup.create')
    .option('--since <time>', 'at or after this ISO time or date')
    .option('--until <time>', 'at or before this ISO time or date')
    .option('--limit <n>', 'events per page (1-500, default 100)', parse.int(1, 500))
    .option('--before <id>', 'the next (older) page: the nextBefore of the previous answer')
    .option('--details', 'show each event in full, with its details')
    .action(
      act(async (ctx, o: { instance?: string; actor?: string; action?: string; since?: string; until?: string; limit?: number; before?: string; details?: boolean }) => {
        const { body } = await ctx.api.get<{ events: AuditEvent[]; nextBefore: number | null }>('/v1/audit', {
          instance: o.instance,
          actor: o.actor,
          action: o.action,
          since: o.since,
          until: o.until,
          limit: o.limit,
          before: o.before,
        });
        ctx.print(body, () => {
          if (!body.events.length) return 'no audit events';
          const out = o.details
            ? body.events.map((e) => kv(e)).join('\n\n')
            : table(
                ['id', 'at', 'actor', 'action', 'instance', 'subject'],
                body.events.map((e) => [e.id, when(e.at), e.actor, e.action, e.instanceId, trunc(e.subject, 50)]),
              );
          return body.nextBefore !== null ? `${out}\nmore: --before ${body.nextBefore}` : out;
        });
      }),
    );
}

interface Region {
  name: string;
  pair: string;
  health: string;
  latencyMs: number | null;
  monitor: { health: string; failedChecks: number; checkedAt: string | null; outageSince: string | null; lastError: string | null } | null;
}

export function regionsCommand(): Command {
  return new Command('regions').description('each region, its pair and its health (a live check, and what its monitor last saw)').action(
    act(async (ctx) => {
      const { body } = await ctx.api.get<{ regions: Region[] }>('/v1/regions');
      ctx.print(body, () =>
        table(
          ['region', 'pair', 'health', 'latency ms', 'monitor', 'failed checks', 'outage since', 'last error'],
          body.regions.map((r) => [r.name, r.pair, r.health, r.latencyMs, r.monitor?.health, r.monitor?.failedChecks, when(r.monitor?.outageSince), trunc(r.monitor?.lastError, 40)]),
        ),
      );
    }),
  );
}

export function eventsCommand(): Command {
  return new Command('events')
    .description('follow the event stream live (run steps, sign-offs, outages, endpoint switches); --json prints one JSON object a line')
    .option('--instance <instance>', 'only events of this instance (name or id)')
    .option('--after <id>', 'resume after this event id (Last-Event-ID)')
    .option('--count <n>', 'stop after this many events', parse.int(1, 1_000_000))
    .action(
      act(async (ctx, o: { instance?: string; after?: string; count?: number }) => {
        if (o.after !== undefined && !/^\d{1,15}$/.test(o.after)) throw new UsageError('--after must be an event id (a whole number)');
        // The stream filters by instance id: a name is looked up first.
        const instance = o.instance && !/^i-[0-9a-f]{12}$/.test(o.instance) ? (await ctx.api.get<{ id: string }>(`/v1/instances/${seg(o.instance)}`)).body.id : o.instance;
        let seen = 0;
        let last = o.after;
        let troubleSince: number | null = null;
        // The stream is resumable: after a dropped connection, reconnect from the last event seen (for up to a minute of failures).
        for (;;) {
          try {
            await ctx.api.stream('/v1/events', { instance }, last, (e) => {
              troubleSince = null;
              if (e.event === 'ready') return;
              if (e.id) last = e.id;
              printEvent(ctx.json, e);
              seen++;
              return o.count === undefined || seen < o.count;
            });
            if (o.count !== undefined && seen >= o.count) return;
          } catch (err) {
            if (!(err instanceof NetworkError) && !(err instanceof ApiError && err.status >= 500)) throw err;
            troubleSince ??= Date.now();
            if (Date.now() - troubleSince > 60_000) throw err;
          }
          if (!ctx.quiet) process.stderr.write(`event stream interrupted; reconnecting${last ? ` after event ${last}` : ''}\n`);
          await sleep(2000);
        }
      }),
    );
}

/** One event: for people a line (id, time, action, actor, instance, subject, details); with --json the event as one JSON line. */
function printEvent(json: boolean, e: { id?: string; event: string; data: string }): void {
  let data: Record<string, unknown> | string = e.data;
  try {
    data = JSON.parse(e.data) as Record<string, unknown>;
  } catch {
    /* keep the text */
  }
  if (json) {
    process.stdout.write(`${JSON.stringify(typeof data === 'string' ? { id: e.id, event: e.event, data } : { ...data, event: e.event })}\n`);
    return;
  }
  const d = typeof data === 'string' ? { data } : data;
  const rest = d.details ? ` ${trunc(JSON.stringify(d.details), 120)}` : '';
  process.stdout.write(`${text(e.id)}  ${when(d.at)}  ${text(e.event)}  ${text(d.actor)}  ${text(d.instanceId)}  ${text(d.subject)}${rest}\n`);
}

interface Divergence {
  name: string;
  failover: { id: string; kind: string; declaredAt: string; measured: boolean; oldPrimaryBackupId: string | null } | null;
  message: string | null;
  total: number;
  tables: { table: string; rows: { id: string; key: Record<string, string | null>; op: string; status: string; committedAt: string | null; note: string | null }[] }[];
}

interface ReplayResult {
  failoverId: string;
  replayedInto: { region: string; database: string };
  counts: Record<string, number>;
  results: { id: string; table: string; key: Record<string, string | null>; outcome: string; note: string | null }[];
}

const keyText = (k: Record<string, string | null>) => Object.entries(k).map(([c, v]) => `${c}=${v ?? 'null'}`).join(',');

export function divergenceCommand(): Command {
  const cmd = new Command('divergence').description('salvage after an unplanned failover: rows the old primary had that never reached the secondary');

  cmd
    .command('list', { isDefault: true })
    .alias('ls')
    .description('the divergent rows of an instance, per table, by key')
    .argument('<instance>', 'name or id')
    .option('--failover <id>', 'a failover id (default: the latest)')
    .addOption(new Option('--status <status>', 'only rows in this status').choices(['pending', 'replayed', 'present', 'conflict', 'skipped']))
    .action(
      act(async (ctx, id: string, o: { failover?: string; status?: string }) => {
        const { body } = await ctx.api.get<Divergence>(`/v1/instances/${seg(id)}/divergence`, { failover: o.failover, status: o.status });
        ctx.print(body, () => {
          const parts = [kv({ instance: body.name, failover: body.failover ?? null, total: body.total, ...(body.message ? { message: body.message } : {}) })];
          for (const t of body.tables) {
            parts.push(`\n${text(t.table)}`);
            parts.push(table(['id', 'op', 'key', 'status', 'committed', 'note'], t.rows.map((r) => [r.id, r.op, trunc(keyText(r.key), 40), r.status, when(r.committedAt), trunc(r.note, 40)])));
          }
          return parts.join('\n');
        });
      }),
    );

  cmd
    .command('replay')
    .description('replay chosen divergent rows into the serving database (a key that holds other values is a conflict, left alone)')
    .argument('<instance>', 'name or id')
    .option('--row <ids>', 'row ids from `bcdr divergence list` (repeatable, comma-separated)', parse.list)
    .option('--all', 'every pending row of the failover (at most 1000 per call)')
    .option('--failover <id>', 'the failover whose rows to replay (default: the latest)')
    .option('-m, --statement <text>', 'why these rows are replayed (kept in the audit trail)')
    .option('--statement-file <path>', 'read the statement from a file (- for stdin)')
    .action(
      act(async (ctx, id: string, o: { row?: string[]; all?: boolean; failover?: string; statement?: string; statementFile?: string }) => {
        if (!!o.row?.length === !!o.all) throw new UsageError('give the rows to replay with --row, or --all (not both)');
        const statement = statementOf(o);
        const { body } = await ctx.api.post<ReplayResult>(`/v1/instances/${seg(id)}/divergence/replay`, {
          statement,
          ...(o.row?.length ? { rows: o.row } : { all: true }),
          ...(o.failover ? { failover: o.failover } : {}),
        });
        ctx.print(body, () =>
          [
            kv({ failover: body.failoverId, replayedInto: body.replayedInto, counts: body.counts }),
            body.results.length ? table(['id', 'table', 'key', 'outcome', 'note'], body.results.map((r) => [r.id, r.table, trunc(keyText(r.key), 40), r.outcome, trunc(r.note, 50)])) : 'no rows',
          ].join('\n'),
        );
      }),
    );

  return cmd;
}

export function healthCommand(): Command {
  return new Command('health').description('is the API up (GET /healthz), and are Temporal and the catalog reachable (GET /readyz)').action(
    act(async (ctx) => {
      const health = await ctx.api.get('/healthz');
      const ready = await ctx.api.get('/readyz');
      ctx.print({ healthz: health.body, readyz: ready.body }, () => kv({ healthz: health.body, readyz: ready.body }));
    }),
  );
}

export function whoamiCommand(): Command {
  return new Command('whoami').description("who the token belongs to: its identity and roles (GET /v1/me)").action(
    act(async (ctx) => {
      const { body } = await ctx.api.get<{ identity: string; roles: string[] }>('/v1/me');
      ctx.print(body, () => `${text(body.identity)} (${text(body.roles)}) at ${ctx.api.base}`);
    }),
  );
}
