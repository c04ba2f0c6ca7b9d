import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { sql } from 'drizzle-orm';
import { bodyLimit } from 'hono/body-limit';
import { bearerAuth, requireRole } from './auth.js';
import { consoleApp } from './console/index.js';
import { docsApp } from './docs.js';
import { requestLog } from '../lib/log.js';
import { apiMetrics } from '../lib/metrics.js';
import { catalogCache } from '../lib/catalog-cache.js';
import type { ApiDeps, ApiEnv } from './deps.js';
import { ErrorSchema, json, onError, zodIssues } from './errors.js';
import { auditApp } from './routes/audit.js';
import { backupsApp } from './routes/backups.js';
import { divergenceApp } from './routes/divergence.js';
import { eventsApp } from './routes/events.js';
import { instancesApp } from './routes/instances.js';
import { keysApp } from './routes/keys.js';
import { regionsApp } from './routes/regions.js';
import { runbooksApp } from './routes/runbooks.js';
import { runsApp } from './routes/runs.js';
import { signoffsApp } from './routes/signoffs.js';
import { schedulesApp } from './routes/schedules.js';

/**
 * The HTTP API. Public: /healthz, /readyz, /openapi.json, /docs. Everything
 * under /v1 needs a bearer token; reads need any role, changes need `operator`.
 */
export function createApp(deps: ApiDeps) {
  const app = new OpenAPIHono<ApiEnv>({
    defaultHook: (result, c) => {
      if (!result.success) {
        const issues = zodIssues(result.error, result.target === 'json' ? 'body' : result.target);
        const message = issues.map((i) => `${i.field}: ${i.rule}`).join('; ');
        return c.json({ error: { code: 'validation_failed', message, issues } }, 400);
      }
      return undefined;
    },
  });
  app.onError(onError);
  app.notFound((c) => c.json({ error: { code: 'not_found', message: `no route for ${c.req.method} ${c.req.path}` } }, 404));

  const metrics = apiMetrics({ db: deps.db, defaultStaleHours: deps.cfg.BACKUP_MAX_AGE_HOURS, processMetrics: deps.processMetrics });
  app.use('*', metrics.middleware);
  app.use('*', requestLog());

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    const checks = { catalog: false, temporal: false };
    await Promise.all([
      deps.db.execute(sql`select 1`).then(() => (checks.catalog = true), () => {}),
      deps.temporalConnection.workflowService.getSystemInfo({}).then(() => (checks.temporal = true), () => {}),
    ]);
    const ready = checks.catalog && checks.temporal;
    return c.json({ status: ready ? 'ready' : 'not_ready', checks }, ready ? 200 : 503);
  });

  // Prometheus text format; any role's token (scrape with `authorization: { credentials: <token> }`).
  app.get('/metrics', bearerAuth(deps.cfg.API_TOKENS), requireRole('viewer', 'operator', 'approver'), async (c) => {
    const { contentType, body } = await metrics.render();
    return c.body(body, 200, { 'content-type': contentType });
  });

  const v1 = new OpenAPIHono<ApiEnv>({ defaultHook: app.defaultHook });
  const limit = bodyLimit({ maxSize: 1024 * 1024, onError: (c) => c.json({ error: { code: 'payload_too_large', message: 'request body is over 1 MB; nothing was changed' } }, 413) });
  // Only requests that carry a body: looking for one makes the Node adapter build a full Request, a third of a read's cost.
  v1.use('*', (c, next) => (c.req.method === 'GET' || c.req.method === 'HEAD' ? next() : limit(c, next)));
  v1.use('*', bearerAuth(deps.cfg.API_TOKENS));
  v1.use('*', requireRole('viewer', 'operator', 'approver'));
  // What this process changes in the catalog is seen by its next read at once (the catalog's notification comes a moment later).
  const cache = catalogCache(deps.db, { maxAgeMs: 5_000 });
  v1.use('*', async (c, next) => {
    await next();
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') cache.invalidate();
  });
  const backups = backupsApp(deps);
  v1.route('/instances', instancesApp(deps, cache));
  v1.route('/instances', backups.byInstance);
  v1.route('/instances', schedulesApp(deps));
  v1.route('/instances', divergenceApp(deps));
  v1.route('/backups', backups.byId);
  v1.route('/runs', runsApp(deps));
  v1.route('/audit', auditApp(deps));
  v1.route('/runbooks', runbooksApp(deps));
  v1.route('/signoffs', signoffsApp(deps));
  v1.route('/regions', regionsApp(deps));
  v1.route('/keys', keysApp(deps));
  v1.route('/events', eventsApp(deps));
  v1.openapi(
    createRoute({
      method: 'get',
      path: '/me',
      tags: ['auth'],
      summary: "Who the token belongs to: its identity and roles (for a console or a CLI to say who is signed in)",
      responses: { 200: json(z.object({ identity: z.string(), roles: z.array(z.string()) }), 'the caller'), 401: json(ErrorSchema, 'missing or unknown token') },
    }),
    (c) => c.json({ identity: c.get('principal').identity, roles: c.get('principal').roles }, 200),
  );
  app.route('/v1', v1);

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer' });
  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: { title: 'BCDR runbooks API', version: '1', description: 'Start backup and recovery runbooks on tenant PostgreSQL databases and follow their runs.' },
    security: [{ bearer: [] }],
  });
  app.route('/docs', docsApp('/openapi.json', 'BCDR runbooks API'));
  app.route('/console', consoleApp(deps, (path, init) => app.request(path, init)));
  return app;
}
