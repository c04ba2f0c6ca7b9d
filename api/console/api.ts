import type { z } from '@hono/zod-openapi';
import type { SignoffSchema } from '../routes/signoffs.js';
import type { RunDto } from '../schemas.js';

/** Calls the JSON API in-process: the same routes, roles, validation and four-eyes rule as any client. */
export type ApiRequester = (path: string, init?: RequestInit) => Response | Promise<Response>;

export interface ApiErrorBody {
  code: string;
  message: string;
}

export type ApiResult<T> = { ok: true; status: number; body: T } | { ok: false; status: number; error: ApiErrorBody };

/** A bound client for one session's bearer token. */
export type Api = <T>(method: 'GET' | 'POST', path: string, body?: unknown) => Promise<ApiResult<T>>;

export function apiFor(request: ApiRequester, token: string): Api {
  return async <T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<ApiResult<T>> => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await request(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      return { ok: false, status: 502, error: { code: 'console_request_failed', message: `the console could not reach the API: ${String(err)}` } };
    }
    const text = await res.text();
    let parsed: unknown = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    if (res.ok) return { ok: true, status: res.status, body: parsed as T };
    const e = (parsed as { error?: Partial<ApiErrorBody> } | null)?.error;
    return {
      ok: false,
      status: res.status,
      error: { code: typeof e?.code === 'string' ? e.code : `http_${res.status}`, message: typeof e?.message === 'string' ? e.message : text.slice(0, 500) || res.statusText },
    };
  };
}

/** The API's own response types: the console is served by the same API, so its JSON always has these fields. */
export type { InstanceListItemDto as InstanceView, InstanceDetailDto as InstanceDetailView } from '../routes/instances.js';
export type { BackupDto as BackupView } from '../schemas.js';
export type RunSummaryView = Pick<RunDto, 'workflowId' | 'runbook' | 'instanceId' | 'status' | 'startTime' | 'closeTime' | 'url'>;
export type SignoffView = z.infer<typeof SignoffSchema>;

export interface RegionView {
  name: string;
  pair: string;
  health: string;
  latencyMs: number | null;
  monitor: { health: string; failedChecks: number; checkedAt: string | null; outageSince: string | null; lastError: string | null } | null;
}
