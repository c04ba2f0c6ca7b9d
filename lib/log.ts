import type { MiddlewareHandler } from 'hono';

/** API request log (issue 7): one structured line per request, never a header value. Being written. */
export function requestLog(): MiddlewareHandler {
  return async (_c, next) => {
    await next();
  };
}
