import { format } from 'node:util';
import type { MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import { pino, type Logger, type LoggerOptions } from 'pino';
import pretty from 'pino-pretty';

/**
 * Structured logs (pino) for the API and the worker: one JSON object per line,
 * or human-readable lines with LOG_FORMAT=pretty (what `npm start` uses).
 *
 * Secrets never reach the output: every line is scrubbed just before it is
 * written (known secret values such as bearer tokens and database passwords,
 * the password of any URI, `password=` pairs), header and secret fields are
 * redacted by path, and errors are reduced to type, message, code and stack.
 */

export type LogFormat = 'json' | 'pretty';
export type { Logger } from 'pino';

/** Field paths removed from every line, whatever logged them. */
const redactPaths = [
  'authorization',
  'cookie',
  'headers.authorization',
  'headers.cookie',
  'req.headers.authorization',
  'req.headers.cookie',
  'password',
  '*.password',
  'token',
  '*.token',
  'API_TOKENS',
  'CATALOG_DATABASE_URL',
  'REGIONS',
  'postgresUrl',
  '*.postgresUrl',
  'env',
];

/** Exact values never written (tokens, passwords), added by `registerSecrets`. Longest first, so a value containing another is masked whole. */
let secretValues: string[] = [];

/** Adds values (bearer tokens, database passwords) that must never appear in a log line. */
export function registerSecrets(values: Iterable<string | undefined | null>): void {
  const all = new Set(secretValues);
  for (const v of values) {
    if (!v || v.length < 4) continue;
    all.add(v);
    // Lines are scrubbed once serialised: a value with quotes, backslashes or control characters appears JSON-escaped there.
    const escaped = JSON.stringify(v).slice(1, -1);
    if (escaped !== v) all.add(escaped);
  }
  secretValues = [...all].sort((a, b) => b.length - a.length);
}

/** The secrets of a configuration: every API token and the password of every database URI (raw and decoded). */
export function secretsOf(cfg: { API_TOKENS?: { token: string }[]; CATALOG_DATABASE_URL?: string; REGIONS?: { postgresUrl: string }[] }): string[] {
  const out: string[] = [];
  for (const t of cfg.API_TOKENS ?? []) out.push(t.token);
  for (const url of [cfg.CATALOG_DATABASE_URL, ...(cfg.REGIONS ?? []).map((r) => r.postgresUrl)]) {
    if (!url) continue;
    try {
      const u = new URL(url);
      if (u.password) out.push(u.password, decodeURIComponent(u.password));
      const qp = u.searchParams.get('password');
      if (qp) out.push(qp);
    } catch {
      /* not a URL: nothing to extract */
    }
  }
  return out;
}

/** `scheme://user:password@host` → `scheme://user:***@host`; for database URIs the query (it may hold `password=`) is masked too. */
const uriPattern = /\b([a-z][a-z0-9+.-]*):\/\/([^\s/?#@"'<>\\]*@)?([^\s/?#"'<>\\]*)([^\s?#"'<>\\]*)(\?[^\s#"'<>\\]*)?/gi;
const pairPattern = /\b(password|passwd|pgpassword)(\\?["']?\s*[=:]\s*\\?["']?)([^\s&"'\\,;}]+)/gi;

/** Masks secrets in free text: registered secret values, URI passwords, `password=…` pairs. */
export function scrub(text: string): string {
  let out = text;
  for (const v of secretValues) if (out.includes(v)) out = out.split(v).join('[REDACTED]');
  out = out.replace(uriPattern, (_m, scheme: string, userinfo: string | undefined, host: string, pathPart: string, query: string | undefined) => {
    let user = '';
    if (userinfo) {
      const bare = userinfo.slice(0, -1);
      const colon = bare.indexOf(':');
      user = colon >= 0 ? `${bare.slice(0, colon)}:***@` : `${bare}@`;
    }
    const isDb = /^postgres(ql)?$/i.test(scheme);
    return `${scheme}://${user}${host}${pathPart}${query ? (isDb ? '?***' : query) : ''}`;
  });
  return out.replace(pairPattern, (_m, key: string, sep: string) => `${key}${sep}***`);
}

/** Errors as fields: type, message, code and stack (scrubbed), and the cause's message; never their other properties (a query, parameters, a config). */
function serializeError(err: unknown, depth = 0): unknown {
  if (!(err instanceof Error)) return typeof err === 'string' ? scrub(err) : err;
  const e = err as Error & { code?: unknown; type?: unknown };
  const out: Record<string, unknown> = { type: e.name, message: scrub(e.message) };
  if (typeof e.code === 'string' || typeof e.code === 'number') out.code = e.code;
  if (typeof e.type === 'string' && e.type !== e.name) out.failureType = e.type;
  if (e.stack) out.stack = scrub(e.stack);
  if (e.cause !== undefined && depth < 3) out.cause = serializeError(e.cause, depth + 1);
  return out;
}

export interface LoggerSettings {
  /** Component name, in every line (`api`, `worker`). */
  name: string;
  level?: string;
  format?: LogFormat;
  /** Values never to write (added to the process-wide list). */
  secrets?: Iterable<string | undefined | null>;
  /** Where lines go (default stdout). */
  destination?: NodeJS.WritableStream;
}

/** A pino logger that writes scrubbed JSON lines, or pretty lines. */
export function createLogger(settings: LoggerSettings): Logger {
  if (settings.secrets) registerSecrets(settings.secrets);
  const options: LoggerOptions = {
    name: settings.name,
    level: settings.level ?? 'info',
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: redactPaths, censor: '[REDACTED]' },
    serializers: { err: serializeError, error: serializeError },
    formatters: { level: (label) => ({ level: label }) },
    // The last word on secrets: every line, whatever built it, is scrubbed as it is written.
    hooks: { streamWrite: (s) => scrub(s) },
  };
  if (settings.format === 'pretty') {
    const out = settings.destination ?? process.stdout;
    const stream = pretty({
      destination: out,
      sync: true,
      colorize: Boolean((out as NodeJS.WriteStream).isTTY),
      translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
      ignore: 'pid,hostname',
      singleLine: true,
    });
    return pino(options, stream);
  }
  return pino(options, settings.destination ?? pino.destination({ dest: 1, sync: true }));
}

/**
 * The process's logger. Until `initLogging` runs it follows LOG_LEVEL/LOG_FORMAT from
 * the environment; inside the test runner (in-process API apps) it is silent unless LOG_LEVEL is set.
 */
export let logger: Logger = createLogger({
  name: 'bcdr',
  level: process.env.LOG_LEVEL ?? (process.env.VITEST ? 'silent' : 'info'),
  format: process.env.LOG_FORMAT === 'pretty' ? 'pretty' : 'json',
});

/** Sets up the process's logger from the configuration (level, format, secrets to mask) and returns it. */
export function initLogging(
  cfg: { LOG_LEVEL: string; LOG_FORMAT: LogFormat; API_TOKENS?: { token: string }[]; CATALOG_DATABASE_URL?: string; REGIONS?: { postgresUrl: string }[] },
  name: string,
): Logger {
  logger = createLogger({ name, level: cfg.LOG_LEVEL, format: cfg.LOG_FORMAT, secrets: secretsOf(cfg) });
  return logger;
}

/** Routes console.* through the logger, so a stray console line (a library, an error handler) is a scrubbed JSON line too. */
export function routeConsoleToLogger(log: Logger = logger): void {
  const write = (level: 'info' | 'warn' | 'error' | 'debug') => (...args: unknown[]) => {
    const err = args.find((a): a is Error => a instanceof Error);
    const text = format(...args.map((a) => (a instanceof Error ? a.message : a)));
    if (err) log[level]({ err, console: true }, text);
    else log[level]({ console: true }, text);
  };
  console.log = write('info');
  console.info = write('info');
  console.warn = write('warn');
  console.error = write('error');
  console.debug = write('debug');
}

/** Hono variables the request log reads (set by the auth middleware). */
interface RequestLogVariables {
  principal?: { identity: string };
}

/**
 * API request log: one line per request with method, route pattern, path (never
 * the query string), status, duration and the caller's identity when known.
 * No header value is ever logged.
 */
export function requestLog(log?: () => Logger): MiddlewareHandler<{ Variables: RequestLogVariables }> {
  return async (c, next) => {
    const started = performance.now();
    try {
      await next();
    } finally {
      const status = c.res.status;
      let route: string | undefined;
      try {
        route = routePath(c, -1);
      } catch {
        route = undefined;
      }
      const fields: Record<string, unknown> = {
        method: c.req.method,
        route: route && route !== '*' && route !== '/*' ? route : undefined,
        path: c.req.path,
        status,
        durationMs: Math.round((performance.now() - started) * 10) / 10,
      };
      const principal = c.get('principal');
      if (principal?.identity) fields.principal = principal.identity;
      if (status >= 500 && c.error) fields.err = c.error;
      const l = log ? log() : logger;
      const msg = `${c.req.method} ${c.req.path} ${status}`;
      if (status >= 500) l.error(fields, msg);
      else l.info(fields, msg);
    }
  };
}
