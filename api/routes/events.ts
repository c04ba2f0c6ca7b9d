import { and, asc, eq, gt, lt, sql } from 'drizzle-orm';
import { Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { auditEvents } from '../../db/schema/index.js';
import type { ApiDeps, ApiEnv } from '../deps.js';
import { badRequest } from '../errors.js';

/** How often the stream looks for new events. */
const POLL_MS = 500;
/**
 * Events younger than this are held back one poll: ids are taken when a
 * transaction inserts, so a slow transaction can commit a lower id after a
 * higher one was sent. Catalog transactions last milliseconds.
 */
const SETTLE_MS = 1000;

/**
 * GET /v1/events: the audit trail as server-sent events, live. Run changes
 * (starts, steps recorded by runbooks, endings), sign-off requests, reminders
 * and decisions, region outages, and endpoint switches (`EndpointSwitchRequired`,
 * `EndpointSwitched`). Each event's id is its audit id: reconnect with
 * `Last-Event-ID` (or `?after=`) to resume where the stream stopped.
 * `?instance=` narrows it to one instance.
 */
export function eventsApp(deps: ApiDeps) {
  const app = new Hono<ApiEnv>();
  app.get('/', (c) => {
    const raw = c.req.header('last-event-id') ?? c.req.query('after') ?? '0';
    if (!/^\d{1,15}$/.test(raw)) throw badRequest('Last-Event-ID', 'must be the id of an event (a whole number)');
    const instance = c.req.query('instance');
    if (instance !== undefined && (instance.length > 100 || /[\u0000-\u001f\u007f-\u009f]/.test(instance))) throw badRequest('instance', 'must be an instance id of at most 100 characters, without control characters');
    let last = Number(raw);
    return streamSSE(c, async (stream) => {
      let open = true;
      stream.onAbort(() => {
        open = false;
      });
      await stream.writeSSE({ event: 'ready', data: JSON.stringify({ after: last }) });
      while (open) {
        const rows = await deps.db
          .select()
          .from(auditEvents)
          .where(and(gt(auditEvents.id, last), lt(auditEvents.at, sql`now() - make_interval(secs => ${SETTLE_MS / 1000})`), instance ? eq(auditEvents.instanceId, instance) : undefined))
          .orderBy(asc(auditEvents.id))
          .limit(500);
        for (const r of rows) {
          await stream.writeSSE({
            id: String(r.id),
            event: r.action,
            data: JSON.stringify({ id: r.id, at: r.at.toISOString(), actor: r.actor, action: r.action, instanceId: r.instanceId, subject: r.subject, details: r.details }),
          });
          last = r.id;
        }
        if (rows.length < 500) await stream.sleep(POLL_MS);
      }
    });
  });
  return app;
}
