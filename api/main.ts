import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import { createDb } from '../db/client.js';
import { loadConfigOrExit } from '../lib/config.js';
import { initLogging, logger, routeConsoleToLogger } from '../lib/log.js';
import { openRegions } from '../lib/regions.js';
import { connectTemporal } from '../lib/temporal.js';
import { createApp } from './app.js';

/** API process: serves until SIGINT/SIGTERM. */
async function main(): Promise<void> {
  const cfg = loadConfigOrExit();
  const log = initLogging(cfg, 'api');
  // Anything still written with console (an error handler, a library) becomes a scrubbed JSON line too.
  routeConsoleToLogger(log);
  if (cfg.API_TOKENS.length === 0) log.warn('API_TOKENS is empty: every /v1 request will get 401');
  const catalog = createDb(cfg.CATALOG_DATABASE_URL);
  const { client, connection } = await connectTemporal(cfg);
  const regions = openRegions(cfg);
  const app = createApp({ cfg, db: catalog.db, temporal: client, temporalConnection: connection, regions: regions.regions, processMetrics: true });
  const server = serve({ fetch: app.fetch, hostname: cfg.API_HOST, port: cfg.API_PORT }, (info) => {
    log.info({ host: cfg.API_HOST, port: info.port }, `API listening on http://${cfg.API_HOST}:${info.port} (docs at /docs)`);
  });
  // Longer than typical client and load-balancer idle timeouts, so kept-alive sockets are not closed under a client.
  (server as Server).keepAliveTimeout = 65_000;
  const stop = () => {
    log.info('API stopping');
    server.close(() => {
      void Promise.all([catalog.close(), regions.close(), connection.close()]).finally(() => process.exit(0));
    });
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  logger.fatal({ err }, `API failed to start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
