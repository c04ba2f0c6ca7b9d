import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { regions as regionsTable } from '../../db/schema/index.js';
import type { ApiDeps, ApiEnv } from '../deps.js';
import { errorResponses, json } from '../errors.js';

const RegionSchema = z
  .object({
    name: z.string(),
    pair: z.string(),
    health: z.enum(['healthy', 'unreachable']).openapi({ description: 'this request\'s own connect-and-query check' }),
    latencyMs: z.number().nullable(),
    monitor: z
      .object({
        health: z.string().openapi({ description: 'unknown, healthy, unreachable, or outage (declared after consecutive failed checks)' }),
        failedChecks: z.number(),
        checkedAt: z.string().nullable(),
        outageSince: z.string().nullable(),
        lastError: z.string().nullable(),
      })
      .nullable(),
  })
  .openapi('Region');

/** /v1/regions: each region, its pair and its health (a live check, and the monitor's view). */
export function regionsApp(deps: ApiDeps) {
  const app = new OpenAPIHono<ApiEnv>();
  app.openapi(
    createRoute({
      method: 'get',
      path: '/',
      tags: ['regions'],
      summary: 'Each region, its pair, and its health: a connect-and-query check with its latency, and what the region monitor last saw',
      responses: { 200: json(z.object({ regions: z.array(RegionSchema) }), 'regions'), ...errorResponses('no such region', 'conflict') },
    }),
    async (c) => {
      const rows = await deps.db.select().from(regionsTable);
      const out = await Promise.all(
        [...deps.regions.values()].map(async (r) => {
          const started = performance.now();
          // ping is bounded (3 s, on a connection of its own): a region that does not answer cannot hang the request.
          const up = await r.engine.ping();
          const row = rows.find((x) => x.name === r.name);
          return {
            name: r.name,
            pair: r.pair,
            health: up ? ('healthy' as const) : ('unreachable' as const),
            latencyMs: up ? Math.round((performance.now() - started) * 10) / 10 : null,
            monitor: row
              ? { health: row.health, failedChecks: row.failedChecks, checkedAt: row.checkedAt?.toISOString() ?? null, outageSince: row.outageSince?.toISOString() ?? null, lastError: row.lastError }
              : null,
          };
        }),
      );
      return c.json({ regions: out }, 200);
    },
  );
  return app;
}
