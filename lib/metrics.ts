import { eq, isNotNull, sql } from 'drizzle-orm';
import type { MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Database } from '../db/client.js';
import { backupCopies, backups, CopyStatuses, instances, replicas, signoffs } from '../db/schema/index.js';
import { stalenessOf } from './staleness.js';

/**
 * The API's Prometheus metrics, in a registry of its own (one per app, so
 * several apps in one process do not collide). Labels stay bounded: route
 * patterns (never paths with ids), status codes, and instance names (the
 * fleet's size, never backup or run ids).
 */
export function apiMetrics(opts: { db: Database; defaultStaleHours: number; processMetrics?: boolean }) {
  const registry = new Registry();
  if (opts.processMetrics) collectDefaultMetrics({ register: registry });
  const requests = new Counter({ name: 'bcdr_api_requests_total', help: 'API requests by method, route pattern and status', labelNames: ['method', 'route', 'status'] as const, registers: [registry] });
  const latency = new Histogram({
    name: 'bcdr_api_request_duration_seconds',
    help: 'API request latency by method, route pattern and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });

  // Per instance, read from the catalog at each scrape (Prometheus scrapes every 15 s or so).
  const backupAge = new Gauge({ name: 'bcdr_instance_last_good_backup_age_seconds', help: 'Seconds since the newest completed backup of the instance (since its creation when it has none)', labelNames: ['instance', 'type', 'region'] as const, registers: [registry] });
  const stale = new Gauge({ name: 'bcdr_instance_backup_stale', help: '1 when the instance has had no good backup for longer than its threshold (staleAfterHours), else 0', labelNames: ['instance', 'type', 'region'] as const, registers: [registry] });
  const staleThreshold = new Gauge({ name: 'bcdr_instance_stale_after_seconds', help: 'The staleness threshold that applies to the instance, in seconds', labelNames: ['instance'] as const, registers: [registry] });
  const staleCount = new Gauge({ name: 'bcdr_instances_stale', help: 'How many instances are stale', registers: [registry] });
  const lagBytes = new Gauge({ name: 'bcdr_replication_lag_bytes', help: 'Geo-replication lag of the instance, in bytes of WAL, as the region monitor last measured it', labelNames: ['instance', 'source_region', 'target_region'] as const, registers: [registry] });
  const lagSeconds = new Gauge({ name: 'bcdr_replication_lag_seconds', help: 'Seconds since the geo-secondary last held everything the primary had committed', labelNames: ['instance', 'source_region', 'target_region'] as const, registers: [registry] });
  const lagCheckAge = new Gauge({ name: 'bcdr_replication_check_age_seconds', help: 'Seconds since the region monitor last measured the instance\'s replication', labelNames: ['instance'] as const, registers: [registry] });
  const instancesByState = new Gauge({ name: 'bcdr_instances', help: 'Instances by type and state', labelNames: ['type', 'state'] as const, registers: [registry] });
  const pending = new Gauge({ name: 'bcdr_signoffs_pending', help: 'Sign-offs waiting for an approver', registers: [registry] });
  const copies = new Gauge({ name: 'bcdr_backup_copies', help: 'Offsite copies of backups by status: pending (being written), verified (read back and matched), failed', labelNames: ['status'] as const, registers: [registry] });
  const held = new Gauge({ name: 'bcdr_backups_held', help: 'Backups on legal hold (nothing removes them until released)', registers: [registry] });

  const collectCatalog = async () => {
    const [rows, reps, [waiting], copyCounts, [heldN]] = await Promise.all([
      opts.db.select().from(instances),
      opts.db.select().from(replicas),
      opts.db.select({ n: sql<number>`count(*)::int` }).from(signoffs).where(eq(signoffs.status, 'pending')),
      opts.db.select({ status: backupCopies.status, n: sql<number>`count(*)::int` }).from(backupCopies).groupBy(backupCopies.status),
      opts.db.select({ n: sql<number>`count(*)::int` }).from(backups).where(isNotNull(backups.heldAt)),
    ]);
    const now = Date.now();
    for (const g of [backupAge, stale, staleThreshold, lagBytes, lagSeconds, lagCheckAge, instancesByState]) g.reset();
    let staleN = 0;
    const names = new Map(rows.map((r) => [r.id, r.name]));
    const byState = new Map<string, number>();
    for (const r of rows) {
      byState.set(`${r.type}\u0000${r.state}`, (byState.get(`${r.type}\u0000${r.state}`) ?? 0) + 1);
      const s = stalenessOf(r, opts.defaultStaleHours, now);
      if (s.backupAgeSeconds === null) continue;
      const labels = { instance: r.name, type: r.type, region: r.activeRegion };
      backupAge.set(labels, s.backupAgeSeconds);
      stale.set(labels, s.stale ? 1 : 0);
      staleThreshold.set({ instance: r.name }, s.staleAfterHours * 3600);
      if (s.stale) staleN++;
    }
    for (const [k, n] of byState) {
      const [type, state] = k.split('\u0000') as [string, string];
      instancesByState.set({ type, state }, n);
    }
    staleCount.set(staleN);
    for (const rep of reps) {
      const instance = names.get(rep.instanceId);
      if (!instance) continue;
      const labels = { instance, source_region: rep.sourceRegion, target_region: rep.targetRegion };
      if (rep.lagBytes !== null) lagBytes.set(labels, rep.lagBytes);
      if (rep.lagSeconds !== null) lagSeconds.set(labels, rep.lagSeconds);
      if (rep.checkedAt) lagCheckAge.set({ instance }, (now - rep.checkedAt.getTime()) / 1000);
    }
    pending.set(waiting?.n ?? 0);
    // Every status always present (0 when none), so an alert on failed copies sees the series.
    for (const status of CopyStatuses) copies.set({ status }, copyCounts.find((c) => c.status === status)?.n ?? 0);
    held.set(heldN?.n ?? 0);
  };

  /** Counts and times every request by its route pattern (`/v1/runs/:id`), never its path. */
  const middleware: MiddlewareHandler = async (c, next) => {
    const started = process.hrtime.bigint();
    try {
      await next();
    } finally {
      const route = c.res.status === 404 && routePath(c, -1) === '/*' ? 'unmatched' : routePath(c, -1);
      const labels = { method: c.req.method, route, status: String(c.res.status) };
      requests.inc(labels);
      latency.observe(labels, Number(process.hrtime.bigint() - started) / 1e9);
    }
  };

  return {
    registry,
    middleware,
    /** The text exposition, with the catalog's gauges read now. */
    async render(): Promise<{ contentType: string; body: string }> {
      await collectCatalog();
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}
