import type { Sql } from 'postgres';
import type { Database } from '../db/client.js';

/** The channel migration 0004's triggers notify when `instances` or `replicas` change. */
export const CatalogChannel = 'bcdr_catalog';

/**
 * Values read from the catalog, kept in memory until the catalog says they
 * may have changed: a statement on `instances` or `replicas` notifies
 * `bcdr_catalog` (a trigger), and `invalidate()` marks this process's own
 * writes at once (a notification arrives a moment after the commit). Each
 * value is also read again after `maxAgeMs`, so a lost notification (the
 * listening connection dropped) cannot keep one stale for longer. Concurrent
 * reads of a missing value share one load.
 */
export function catalogCache(db: Database, opts: { maxAgeMs: number }) {
  let generation = 0;
  let listening: Promise<unknown> | null = null;
  let listened = false;
  const values = new Map<string, { at: number; generation: number; value: unknown }>();
  const loads = new Map<string, { generation: number; promise: Promise<unknown> }>();

  const listen = () => {
    if (listening) return;
    const client = (db as Database & { $client?: Sql }).$client;
    if (!client) return; // no way to hear of changes: every read loads
    // postgres.js listens on its own connection and listens again after a reconnect (onlisten runs again: nothing missed is trusted).
    listening = client
      .listen(CatalogChannel, () => void generation++, () => {
        generation++;
        listened = true;
      })
      .catch(() => {
        listening = null;
        listened = false;
      });
  };

  return {
    /** The value under `key`, loading it when missing, outdated or older than `maxAgeMs` (`maxAgeMs` of the call, if shorter). */
    async get<T>(key: string, load: () => Promise<T>, maxAgeMs = opts.maxAgeMs): Promise<T> {
      listen();
      const hit = values.get(key);
      if (hit && listened && hit.generation === generation && Date.now() - hit.at < Math.min(maxAgeMs, opts.maxAgeMs)) return hit.value as T;
      const running = loads.get(key);
      if (running && running.generation === generation) return running.promise as Promise<T>;
      const gen = generation;
      const promise = load().then((value) => {
        values.set(key, { at: Date.now(), generation: gen, value });
        return value;
      });
      loads.set(key, { generation: gen, promise });
      void promise.finally(() => {
        if (loads.get(key)?.promise === promise) loads.delete(key);
      }).catch(() => {});
      return promise;
    },
    /** This process changed the catalog: nothing read before counts. */
    invalidate() {
      generation++;
    },
  };
}
export type CatalogCache = ReturnType<typeof catalogCache>;
