import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { and, desc, eq, type SQL } from 'drizzle-orm';
import { signoffs, SignoffStatuses, type SignoffRow } from '../../db/schema/index.js';
import type { ApiDeps, ApiEnv } from '../deps.js';
import { uiLink } from '../deps.js';
import { ErrorSchema, json } from '../errors.js';
import { Ref } from '../schemas.js';

export const SignoffSchema = z
  .object({
    id: z.string(),
    workflowId: z.string(),
    runbook: z.string(),
    instanceIds: z.array(z.string()),
    requestedBy: z.string(),
    summary: z.string(),
    risk: z.record(z.string(), z.unknown()).nullable(),
    status: z.enum(SignoffStatuses),
    deadline: z.string(),
    decidedBy: z.string().nullable(),
    statement: z.string().nullable(),
    decidedAt: z.string().nullable(),
    createdAt: z.string(),
    url: z.string(),
    links: z.record(z.string(), z.string()),
  })
  .openapi('Signoff');

export function signoffDto(deps: ApiDeps, r: SignoffRow): z.infer<typeof SignoffSchema> {
  return {
    ...r,
    deadline: r.deadline.toISOString(),
    decidedAt: r.decidedAt?.toISOString() ?? null,
    createdAt: r.createdAt.toISOString(),
    url: uiLink(deps, r.workflowId),
    links: { run: `/v1/runs/${encodeURIComponent(r.workflowId)}`, signoff: `/v1/runs/${encodeURIComponent(r.workflowId)}/signoff` },
  };
}

/** /v1/signoffs: what waits for sign-off (and what was decided), newest first. */
export function signoffsApp(deps: ApiDeps) {
  const app = new OpenAPIHono<ApiEnv>();
  app.openapi(
    createRoute({
      method: 'get',
      path: '/',
      tags: ['signoffs'],
      summary: 'Sign-offs, newest first: filter status=pending for what waits for an approver',
      request: {
        query: z.object({
          status: z.enum(SignoffStatuses).optional(),
          run: Ref(300).optional(),
          limit: z.coerce.number().int().min(1, 'must be at least 1').max(500, 'must be at most 500').default(100),
        }),
      },
      responses: { 200: json(z.object({ signoffs: z.array(SignoffSchema) }), 'sign-offs'), 400: json(ErrorSchema, 'bad filter'), 401: json(ErrorSchema, 'missing or unknown token') },
    }),
    async (c) => {
      const q = c.req.valid('query');
      const where: SQL[] = [];
      if (q.status) where.push(eq(signoffs.status, q.status));
      if (q.run) where.push(eq(signoffs.workflowId, q.run));
      const rows = await deps.db.select().from(signoffs).where(and(...where)).orderBy(desc(signoffs.createdAt)).limit(q.limit);
      return c.json({ signoffs: rows.map((r) => signoffDto(deps, r)) }, 200);
    },
  );
  return app;
}
