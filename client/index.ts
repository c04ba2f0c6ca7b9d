import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';

/**
 * A client helper for tenant applications: connect to an instance through the
 * endpoint the BCDR API gives, and follow a region failover by themselves (the
 * Dynamics 365 `EndpointAutoSwitchEnabled` / `EndpointSwitchRequired` /
 * `EndpointSwitched` pattern). When a call fails because the endpoint is gone,
 * the helper asks the API for the current endpoint, switches its pool to it,
 * and retries the call once if the caller said that is safe.
 */

/** What `GET /v1/instances/:id/endpoint` answers, as far as the helper uses it. */
export interface EndpointInfo {
  /** `postgres://user@host:port/db`: never a password. */
  endpoint: string;
  activeRegion: string;
  /** True while the geo-secondary serves (limited mode). */
  failedOver: boolean;
  /** True when the instance has a failover alternate, so its endpoint can switch region. */
  autoSwitchEnabled: boolean;
}

/** Options of `connectInstance`. */
export interface InstanceClientOptions {
  /** Base URL of the BCDR API, e.g. `https://bcdr.example.com`. */
  api: string;
  /** A bearer token (the viewer role is enough). Never logged, never put in an error message or event. */
  token: string;
  /** Instance id or name. */
  instance: string;
  /** Passed to postgres.js for every pool (password, max, ...). Where to connect (host, port, database) always comes from the endpoint. */
  postgres?: postgres.Options<Record<string, postgres.PostgresType>>;
  /** After a failure, how long to keep asking the API for a new endpoint while it is unchanged (default 0: ask once). */
  waitForSwitchMs?: number;
  /** Interval between two questions to the API while waiting (default 500). */
  pollMs?: number;
  /** The fetch to call the API with (for tests). */
  fetch?: typeof fetch;
}

/** Payload of `EndpointSwitchRequired`: a call failed because the endpoint is gone. */
export interface EndpointSwitchRequiredEvent {
  instance: string;
  from: string;
  /** The failure's message only. */
  error: string;
}

/** Payload of `EndpointSwitched`: the pool now connects to `to`. */
export interface EndpointSwitchedEvent {
  instance: string;
  from: string;
  to: string;
  activeRegion: string;
}

/** The events an `InstanceClient` emits. */
export interface InstanceClientEvents {
  EndpointSwitchRequired: [EndpointSwitchRequiredEvent];
  EndpointSwitched: [EndpointSwitchedEvent];
}

/** Thrown when the endpoint is gone and the API could not say where it went (unreachable or refusing); `cause` is the call's error. */
export class EndpointSwitchError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EndpointSwitchError';
  }
}

/** Socket and postgres.js connection failures: the server is not there (any more). */
const networkCodes = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
]);

/** SQLSTATEs saying this server no longer serves the database: shutdown, recovery, dropped, or fenced read-only. */
const goneStates = new Set([
  '57P01', // admin_shutdown (pg_terminate_backend, a fast shutdown)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, in recovery)
  '3D000', // invalid_catalog_name: the database does not exist here
  '25006', // read_only_sql_transaction: a fenced old primary refuses writes
]);

/**
 * True when `err` means the endpoint is gone: a network failure, or a
 * PostgreSQL error saying this server no longer serves the database (class
 * 08, 57P01-03, 3D000, 25006, or 55000 "is not currently accepting
 * connections"). False for everything else (constraint violations, syntax
 * errors, ...), which a switch would not fix.
 */
export function isEndpointGone(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string') return false;
  if (networkCodes.has(code) || goneStates.has(code) || code.startsWith('08')) return true;
  const message = (err as { message?: unknown }).message;
  return code === '55000' && typeof message === 'string' && message.includes('is not currently accepting connections');
}

/**
 * Asks the API for the instance's current endpoint and opens a pool on it.
 * Throws (with the API's message) when the API refuses or cannot be reached.
 */
export async function connectInstance(opts: InstanceClientOptions): Promise<InstanceClient> {
  const info = await askEndpoint(opts);
  return new InstanceClient(opts, info);
}

/**
 * One tenant connection pool that follows its instance's endpoint. Use
 * `run` for every call: it switches the pool when the endpoint is gone.
 * Events: `EndpointSwitchRequired`, then `EndpointSwitched` when the API
 * gave a new endpoint.
 */
export class InstanceClient extends EventEmitter<InstanceClientEvents> {
  #opts: InstanceClientOptions;
  #info: EndpointInfo;
  #sql: postgres.Sql;
  /** The switch in flight, shared by every call that fails meanwhile: resolves true when the pool switched. */
  #switching: Promise<boolean> | null = null;
  /** Old pools being ended, awaited by `close`. */
  #retiring = new Set<Promise<void>>();
  #closed = false;

  /** Use `connectInstance`. */
  constructor(opts: InstanceClientOptions, info: EndpointInfo) {
    super();
    this.#opts = opts;
    this.#info = info;
    this.#sql = openPool(info.endpoint, opts);
  }

  /** True when the instance has a failover alternate; from the API at connect time, refreshed at each switch. */
  get autoSwitchEnabled(): boolean {
    return this.#info.autoSwitchEnabled;
  }

  /** The endpoint URI the pool connects to now. */
  get endpoint(): string {
    return this.#info.endpoint;
  }

  /** The current pool. It changes at a switch: take it from here, or from `run`, each time. */
  get sql(): postgres.Sql {
    return this.#sql;
  }

  /**
   * Runs `call` on the current pool. When it fails because the endpoint is
   * gone, asks the API for the current endpoint (sharing one switch between
   * concurrent failures); if it changed, switches the pool and, when
   * `retrySafe`, runs `call` once more on the new pool. Otherwise, and for
   * every other error, the error is rethrown as it came. `call` runs at most
   * twice.
   */
  async run<T>(call: (sql: postgres.Sql) => Promise<T>, opts: { retrySafe?: boolean } = {}): Promise<T> {
    const sql = this.#sql;
    try {
      return await call(sql);
    } catch (err) {
      if (this.#closed || !isEndpointGone(err)) throw err;
      const switched = await this.#switchFrom(sql, err);
      if (!switched || !opts.retrySafe) throw err;
      return call(this.#sql);
    }
  }

  /** Ends the current pool (and any old one still ending). */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#switching?.catch(() => {});
    await Promise.all([this.#sql.end({ timeout: 5 }), ...this.#retiring]);
  }

  /** Moves off `failed` (the pool the call failed on): at once if another call already did, else by the one shared switch. */
  #switchFrom(failed: postgres.Sql, err: unknown): Promise<boolean> {
    if (this.#sql !== failed) return Promise.resolve(true);
    this.#switching ??= this.#switch(err).finally(() => {
      this.#switching = null;
    });
    return this.#switching;
  }

  async #switch(err: unknown): Promise<boolean> {
    const { instance, waitForSwitchMs = 0, pollMs = 500 } = this.#opts;
    const from = this.#info.endpoint;
    const reason = redact(messageOf(err), this.#opts.token);
    this.emit('EndpointSwitchRequired', { instance, from, error: reason });
    const deadline = Date.now() + waitForSwitchMs;
    for (;;) {
      let info: EndpointInfo | undefined;
      let apiError: unknown;
      try {
        info = await askEndpoint(this.#opts);
      } catch (e) {
        apiError = e;
      }
      if (info && info.endpoint !== from) {
        if (this.#closed) return false;
        const old = this.#sql;
        this.#info = info;
        this.#sql = openPool(info.endpoint, this.#opts);
        // Calls still running on the old pool (reads on a fenced old primary) get a grace period to finish.
        const ending = old.end({ timeout: 30 }).catch(() => {});
        this.#retiring.add(ending);
        void ending.finally(() => this.#retiring.delete(ending));
        this.emit('EndpointSwitched', { instance, from, to: info.endpoint, activeRegion: info.activeRegion });
        return true;
      }
      if (info) this.#info = info;
      if (Date.now() + pollMs > deadline) {
        if (info) return false;
        throw new EndpointSwitchError(`the endpoint of instance ${instance} is gone (${reason}) and the BCDR API did not give a new one: ${messageOf(apiError)}`, { cause: err });
      }
      await sleep(pollMs);
      if (this.#closed) return false;
    }
  }
}

/** Opens a postgres.js pool on `endpoint`; the endpoint, not the options, says where to connect. */
function openPool(endpoint: string, opts: InstanceClientOptions): postgres.Sql {
  const rest: Record<string, unknown> = { ...opts.postgres };
  for (const key of ['host', 'hostname', 'port', 'path', 'database', 'db']) delete rest[key];
  return postgres(endpoint, rest);
}

/** `GET {api}/v1/instances/{instance}/endpoint`; errors carry the API's message, never the token. */
async function askEndpoint(opts: InstanceClientOptions): Promise<EndpointInfo> {
  const url = `${opts.api.replace(/\/+$/, '')}/v1/instances/${encodeURIComponent(opts.instance)}/endpoint`;
  const doFetch = opts.fetch ?? fetch;
  let res: Response;
  try {
    res = await doFetch(url, { headers: { authorization: `Bearer ${opts.token}`, accept: 'application/json' }, signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw new Error(redact(`BCDR API unreachable at ${opts.api}: ${messageOf(err)}`, opts.token));
  }
  const text = await res.text();
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (!res.ok) {
    const apiMessage = body?.error?.message ?? body?.message ?? (text.slice(0, 200) || res.statusText);
    throw new Error(redact(`BCDR API refused the endpoint of instance ${opts.instance} (${res.status}): ${apiMessage}`, opts.token));
  }
  if (typeof body?.endpoint !== 'string' || typeof body.activeRegion !== 'string') {
    throw new Error(`BCDR API answered the endpoint of instance ${opts.instance} without an endpoint and an active region`);
  }
  return {
    endpoint: body.endpoint,
    activeRegion: body.activeRegion,
    failedOver: body.failedOver === true,
    // An API that predates the flag: switching is possible when there is an alternate.
    autoSwitchEnabled: typeof body.autoSwitchEnabled === 'boolean' ? body.autoSwitchEnabled : body.alternate != null,
  };
}

const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** Removes the token from a message, whatever the API or the network put in it. */
const redact = (message: string, token: string) => (token ? message.split(token).join('[token]') : message);
