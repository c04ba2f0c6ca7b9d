import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Hono } from 'hono';

/** Swagger UI's static files, served from the installed package so the docs page works without Internet access. */
const assets = new Map<string, string>(Object.entries({
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
}));
const assetDir = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));

/** The rendered API docs at `/docs`, reading the OpenAPI document at `specUrl`. Public, like the document itself. */
export function docsApp(specUrl: string, title: string) {
  const app = new Hono();
  const page = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title}</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="docs"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({ url: ${JSON.stringify(specUrl)}, dom_id: '#docs', persistAuthorization: true });</script>
</body></html>`;
  app.get('/', (c) => c.html(page));
  app.get('/assets/:file', async (c) => {
    const file = c.req.param('file');
    const type = assets.get(file);
    if (!type) return c.json({ error: { code: 'not_found', message: `no docs asset ${file}` } }, 404);
    const body = await readFile(path.join(assetDir, file));
    return c.body(body, 200, { 'content-type': type, 'cache-control': 'public, max-age=86400' });
  });
  return app;
}
