import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { and, desc, eq, gte, inArray, lte, sql, type SQL } from 'drizzle-orm';
import { auditEvents, instances, type AuditEventRow } from '../../db/schema/index.js';
import type { ApiDeps, ApiEnv } from '../deps.js';
import { ApiError, ErrorSchema, json } from '../errors.js';
import { FreeText } from '../schemas.js';

/** An ISO 8601 date (`2025-01-31`, midnight UTC) or date-time with `Z` or an offset. */
const ISO_TIMESTAMP = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2}))?$/;
const Timestamp = (description: string) =>
  z
    .string()
    .refine((s) => ISO_TIMESTAMP.test(s) && !Number.isNaN(Date.parse(s)), 'must be an ISO 8601 timestamp with a time zone, e.g. 2025-01-31T12:00:00Z, or a date, e.g. 2025-01-31')
    .optional()
    .openapi({ description, example: '2025-01-31T12:00:00Z' });

/** A filter value: free of control characters (PostgreSQL cannot even compare text holding NUL). */
const Filter = (description: string, example: string) => FreeText({ max: 200 }).optional().openapi({ description, example });

const AuditQuery = z.object({
  instance: Filter('instance id or name; a name no current instance has matches the deleted instances that had it', 'contoso-sandbox'),
  actor: Filter('who made the change: a token identity, or system:<part> for the runbooks, schedules and retention', 'dev-operator'),
  action: Filter('what happened, e.g. instance.create, backup.create, backup.relabel, backup.delete, backup.completed, backup.expired, schedule.update', 'backup.create'),
  since: Timestamp('only events at or after this time'),
  until: Timestamp('only events at or before this time'),
  limit: z.coerce
    .number()
    .int('must be a whole number')
    .min(1, 'must be at least 1')
    .max(500, 'must be at most 500')
    .default(100)
    .openapi({ description: 'events per page (1 to 500, default 100)' }),
  before: z
    .string()
    .regex(/^[1-9]\d{0,15}$/, 'must be an audit event id (a positive whole number), as given in nextBefore')
    .optional()
    .openapi({ description: 'the page after this one: pass the nextBefore of the previous answer' }),
});

const AuditEventSchema = z
  .object({
    id: z.number(),
    at: z.string(),
    actor: z.string(),
    action: z.string(),
    instanceId: z.string().nullable(),
    subject: z.string().nullable().openapi({ description: 'what the change was about: a backup id, an instance name, a schedule id' }),
    details: z.record(z.string(), z.unknown()).nullable(),
  })
  .openapi('AuditEvent');

const AuditPage = z
  .object({
    events: z.array(AuditEventSchema),
    nextBefore: z.number().nullable().openapi({ description: 'pass as `before` for the next (older) page; null on the last page' }),
  })
  .openapi('AuditPage');

const eventDto = (r: AuditEventRow): z.infer<typeof AuditEventSchema> => ({ ...r, at: r.at.toISOString() });

/** /v1/audit: the audit trail, newest first, filtered by instance, actor, action and time; any role can read it. */
export function auditApp(deps: ApiDeps) {
  const app = new OpenAPIHono<ApiEnv>();

  /** The instance ids a filter value stands for: itself (an id), the current instance of that name, or else the deleted ones that had it. */
  async function instanceIds(idOrName: string): Promise<string[]> {
    const [current] = await deps.db.select({ id: instances.id }).from(instances).where(eq(instances.name, idOrName));
    if (current) return [idOrName, current.id];
    const created = await deps.db
      .selectDistinct({ id: auditEvents.instanceId })
      .from(auditEvents)
      .where(and(eq(auditEvents.action, 'instance.create'), eq(auditEvents.subject, idOrName)));
    return [idOrName, ...created.flatMap((r) => (r.id ? [r.id] : []))];
  }

  app.openapi(
    createRoute({
      method: 'get',
      path: '/',
      tags: ['audit'],
      summary: 'The audit trail: every change, who made it and when; newest first, filtered by instance, actor, action and time, paged',
      request: { query: AuditQuery },
      responses: {
        200: json(AuditPage, 'a page of audit events, newest first'),
        400: json(ErrorSchema, 'bad filter, naming it'),
        401: json(ErrorSchema, 'missing or unknown token'),
      },
    }),
    async (c) => {
      const q = c.req.valid('query');
      const since = q.since ? new Date(q.since) : undefined;
      const until = q.until ? new Date(q.until) : undefined;
      if (since && until && since > until) {
        throw new ApiError(400, 'validation_failed', `until: must not be before since (${q.since})`, { issues: [{ field: 'until', rule: `must not be before since (${q.since})` }] });
      }
      const where: SQL[] = [];
      if (q.instance) where.push(inArray(auditEvents.instanceId, await instanceIds(q.instance)));
      if (q.actor) where.push(eq(auditEvents.actor, q.actor));
      if (q.action) where.push(eq(auditEvents.action, q.action));
      if (since) where.push(gte(auditEvents.at, since));
      if (until) where.push(lte(auditEvents.at, until));
      if (q.before) {
        // Keyset paging on (at, id), the order of the answer: the cursor is the last event of the previous page.
        const before = Number(q.before);
        const [cursor] = await deps.db.select({ id: auditEvents.id }).from(auditEvents).where(eq(auditEvents.id, before));
        if (!cursor) {
          throw new ApiError(400, 'validation_failed', `before: no audit event ${q.before}; pass the nextBefore of a previous answer`, {
            issues: [{ field: 'before', rule: 'must be the id of an audit event, as given in nextBefore' }],
          });
        }
        // Compared in SQL: \`at\` has microseconds, which a JS Date would lose.
        where.push(sql`(${auditEvents.at}, ${auditEvents.id}) < (select c.at, c.id from ${auditEvents} c where c.id = ${before})`);
      }
      // One more than asked, to know whether there is a next page.
      const rows = await deps.db
        .select()
        .from(auditEvents)
        .where(where.length ? and(...where) : sql`true`)
        .orderBy(desc(auditEvents.at), desc(auditEvents.id))
        .limit(q.limit + 1);
      const page = rows.slice(0, q.limit);
      const nextBefore = rows.length > q.limit ? page[page.length - 1]!.id : null;
      return c.json({ events: page.map(eventDto), nextBefore }, 200);
    },
  );

  return app;
}
