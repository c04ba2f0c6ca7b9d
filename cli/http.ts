/**
 * The CLI's HTTP client: one request helper over the API, with its error
 * kinds. The token goes only into the Authorization header, never into a
 * message.
 */

/** Process exit codes, also listed in `bcdr --help`. */
export const Exit = {
  ok: 0,
  /** A run the command waited for ended other than as asked (failed, cancelled, terminated, timed out). */
  runFailed: 1,
  /** Bad command line: unknown command or option, a missing or invalid argument. */
  usage: 2,
  /** The API answered with an error (4xx or 5xx); its code and message are printed. */
  api: 3,
  /** The API could not be reached (connection refused, DNS, timeout). */
  network: 4,
  /** An unexpected error of the CLI itself (a bug): one line on stderr, BCDR_DEBUG=1 for the stack. */
  internal: 5,
  /** Interrupted (Ctrl-C) while waiting; the run itself goes on. */
  interrupted: 130,
} as const;

/** The API's error body: `{error:{code,message,issues,run}}`. */
export interface ApiErrorBody {
  error: {
    code: string;
    message: string;
    issues?: { field: string; rule: string }[];
    run?: { workflowId: string; runbook: string; url: string };
  };
}

/** An error answer of the API (4xx/5xx). `body` is the parsed JSON body, or its text when it was not JSON. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    super(describeApiError(status, body));
  }

  get code(): string | undefined {
    return isErrorBody(this.body) ? this.body.error.code : undefined;
  }
}

/** The API could not be reached, or did not answer in time. */
export class NetworkError extends Error {}

/** A command-line mistake found after parsing (e.g. two options that exclude each other). */
export class UsageError extends Error {}

export function isErrorBody(body: unknown): body is ApiErrorBody {
  const e = (body as { error?: unknown } | null)?.error as { code?: unknown; message?: unknown } | undefined;
  return typeof e === 'object' && e !== null && typeof e.code === 'string';
}

/** `error 409 run_not_running: …`, plus one line per issue and the run holding an instance. */
export function describeApiError(status: number, body: unknown): string {
  if (isErrorBody(body)) {
    const lines = [`error ${status} ${body.error.code}: ${body.error.message ?? ''}`.trimEnd()];
    for (const i of body.error.issues ?? []) lines.push(`  ${i.field}: ${i.rule}`);
    if (body.error.run) lines.push(`  run: ${body.error.run.workflowId} (${body.error.run.runbook}) ${body.error.run.url}`);
    return lines.join('\n');
  }
  const text = typeof body === 'string' ? body.trim().slice(0, 300) : JSON.stringify(body)?.slice(0, 300);
  return `error ${status}${text ? `: ${text}` : ''}`;
}

export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  /** Abort after this long (default: the client's). */
  timeoutMs?: number;
}

export interface ApiClientOptions {
  api: string;
  token?: string;
  /** Per-request timeout (default 5 minutes: creating or deleting an instance waits for its run up to a minute). */
  timeoutMs?: number;
}

/** Values never to be printed (the token): `redact` masks them in any message. */
const secrets = new Set<string>();

/** `s` with every known secret replaced by `***`. */
export function redact(s: string): string {
  let out = s;
  for (const v of secrets) if (v.length >= 4) out = out.split(v).join('***');
  return out;
}

/** A path segment: ids and names are encoded, so nothing in them changes the path. */
export const seg = (s: string) => encodeURIComponent(s);

export class ApiClient {
  readonly base: string;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;

  constructor(opts: ApiClientOptions) {
    let url: URL;
    try {
      url = new URL(opts.api);
    } catch {
      throw new UsageError(`--api / BCDR_API must be a URL such as http://127.0.0.1:8080 (got ${JSON.stringify(opts.api)})`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`--api / BCDR_API must be an http or https URL (got ${url.protocol})`);
    this.base = opts.api.replace(/\/+$/, '');
    // A token read from a file often ends in a newline; anything else a header cannot carry is refused here,
    // before fetch could put the value into an error message.
    const token = opts.token?.trim();
    if (token && !/^[\x21-\x7e]+$/.test(token)) throw new UsageError('BCDR_TOKEN (or --token) holds spaces or control characters, which a bearer token cannot');
    this.token = token || undefined;
    secrets.add(token ?? '');
    this.timeoutMs = opts.timeoutMs ?? 300_000;
  }

  url(path: string, query?: Query): string {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined && v !== '') qs.set(k, String(v));
    const q = qs.toString();
    return `${this.base}${path}${q ? `?${q}` : ''}`;
  }

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { accept: 'application/json', ...(this.token ? { authorization: `Bearer ${this.token}` } : {}), ...extra };
  }

  /** Sends a request; returns the status and the parsed body of a 2xx answer, throws ApiError or NetworkError otherwise. */
  async request<T = any>(method: string, path: string, opts: RequestOptions = {}): Promise<{ status: number; body: T }> {
    const url = this.url(path, opts.query);
    const hasBody = opts.body !== undefined;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: this.headers(hasBody ? { 'content-type': 'application/json' } : {}),
        body: hasBody ? JSON.stringify(opts.body) : undefined,
        signal: AbortSignal.timeout(opts.timeoutMs ?? this.timeoutMs),
      });
    } catch (err) {
      throw networkError(this.base, err);
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw networkError(this.base, err);
    }
    let body: unknown = text;
    if (text.length) {
      try {
        body = JSON.parse(text);
      } catch {
        /* not JSON: keep the text */
      }
    } else {
      body = null;
    }
    if (!res.ok) throw new ApiError(res.status, body);
    return { status: res.status, body: body as T };
  }

  get<T = any>(path: string, query?: Query) {
    return this.request<T>('GET', path, { query });
  }
  post<T = any>(path: string, body?: unknown) {
    return this.request<T>('POST', path, { body });
  }
  put<T = any>(path: string, body: unknown) {
    return this.request<T>('PUT', path, { body });
  }
  patch<T = any>(path: string, body: unknown) {
    return this.request<T>('PATCH', path, { body });
  }
  delete<T = any>(path: string) {
    return this.request<T>('DELETE', path);
  }

  /**
   * Reads a server-sent event stream until `onEvent` returns false or the
   * server closes it. Throws ApiError for an error answer, NetworkError when
   * the API cannot be reached.
   */
  async stream(path: string, query: Query, lastEventId: string | undefined, onEvent: (e: { id?: string; event: string; data: string }) => boolean | void): Promise<void> {
    const controller = new AbortController();
    let res: Response;
    try {
      res = await fetch(this.url(path, query), {
        headers: this.headers({ accept: 'text/event-stream', ...(lastEventId ? { 'last-event-id': lastEventId } : {}) }),
        signal: controller.signal,
      });
    } catch (err) {
      throw networkError(this.base, err);
    }
    if (!res.ok) {
      const text = await res.text().catch(() => '');
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        /* text */
      }
      throw new ApiError(res.status, body);
    }
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buf = '';
    let ev: { id?: string; event: string; data: string[] } = { event: 'message', data: [] };
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true });
        let nl: number;
        while ((nl = buf.search(/\r?\n/)) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(buf[nl] === '\r' ? nl + 2 : nl + 1);
          if (line === '') {
            if (ev.data.length) {
              if (onEvent({ id: ev.id, event: ev.event, data: ev.data.join('\n') }) === false) {
                controller.abort();
                return;
              }
            }
            ev = { event: 'message', data: [] };
            continue;
          }
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'data') ev.data.push(value);
          else if (field === 'event') ev.event = value;
          else if (field === 'id') ev.id = value;
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      throw networkError(this.base, err);
    }
  }
}

/** A fetch failure as a NetworkError naming the API and the cause (never the token: it is only in a header). */
function networkError(base: string, err: unknown): NetworkError {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return new NetworkError(`the API at ${base} did not answer in time`);
  const cause = e?.cause?.code ?? e?.cause?.message ?? e?.message ?? String(err);
  return new NetworkError(`cannot reach the API at ${base}: ${cause}`);
}
