import { Hono } from 'hono';
import type { ApiDeps } from '../deps.js';

/** The ops console under /console (issue 7): server-rendered pages over the same API. Being written. */
export function consoleApp(_deps: ApiDeps) {
  const app = new Hono();
  app.get('/', (c) => c.html(<p>The console is being written.</p>));
  return app;
}
