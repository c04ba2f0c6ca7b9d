import type { MiddlewareHandler } from 'hono';

/** API metrics (issue 7): request counts and latencies by route and status. Being written. */
export function requestMetrics(): MiddlewareHandler {
  return async (_c, next) => {
    await next();
  };
}
