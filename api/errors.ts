import { z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';

/** One broken rule: which field, and what it must be. */
export interface FieldIssue {
  field: string;
  rule: string;
}

/** The JSON body of every 4xx/5xx answer. */
export const ErrorSchema = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: 'validation_failed' }),
      message: z.string(),
      issues: z.array(z.object({ field: z.string(), rule: z.string() })).optional(),
      run: z.object({ workflowId: z.string(), runbook: z.string(), url: z.string() }).optional(),
    }),
  })
  .openapi('Error');

/** A JSON response entry for a route declaration. */
export const json = <T extends z.ZodType>(schema: T, description: string) => ({ content: { 'application/json': { schema } }, description });

/** The error responses a /v1 route declares; `notFound` and `conflict` say what its 404 and 409 are about. */
export const errorResponses = (notFound: string, conflict: string) =>
  ({
    400: json(ErrorSchema, 'invalid input, naming the field and the rule'),
    401: json(ErrorSchema, 'missing or unknown token'),
    403: json(ErrorSchema, 'the token lacks the role'),
    404: json(ErrorSchema, notFound),
    409: json(ErrorSchema, conflict),
    413: json(ErrorSchema, 'request body over 1 MB; nothing changed'),
    503: json(ErrorSchema, 'Temporal unreachable; nothing changed'),
  }) as const;

/** The 422 a restore-like route declares: the target's edition is lower than the backup's. */
export const editionError = { 422: json(ErrorSchema, "the target's edition is lower than the backup's") } as const;

/** A domain error the root handler turns into an HTTP answer. */
export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    readonly extra: { issues?: FieldIssue[]; run?: { workflowId: string; runbook: string; url: string } } = {},
  ) {
    super(message);
  }
}

/** 400 naming the field and the rule it breaks. */
export const badRequest = (field: string, rule: string) =>
  new ApiError(400, 'validation_failed', `${field}: ${rule}`, { issues: [{ field, rule }] });

/** Turns zod issues into field/rule pairs, naming the location (body, query, path) for top-level problems. */
export function zodIssues(error: z.ZodError, where: string): FieldIssue[] {
  return error.issues.map((i) => ({ field: i.path.length ? i.path.join('.') : where, rule: i.message }));
}

/** The one error handler at the root: domain errors, HTTP exceptions, and anything unexpected (logged, never leaked). */
export function onError(err: Error, c: Context): Response {
  if (err instanceof ApiError) {
    return c.json({ error: { code: err.code, message: err.message, ...err.extra } }, err.status);
  }
  if (err instanceof HTTPException) {
    const status = err.status;
    const message = err.message || (status === 401 ? 'authentication required' : 'request refused');
    const code = status === 400 ? 'bad_request' : status === 401 ? 'unauthorized' : status === 403 ? 'forbidden' : 'http_error';
    const issues = status === 400 ? [{ field: 'body', rule: message }] : undefined;
    return c.json({ error: { code, message, ...(issues ? { issues } : {}) } }, status);
  }
  console.error('unhandled API error:', err);
  return c.json({ error: { code: 'internal', message: 'internal error; see the API log' } }, 500);
}
