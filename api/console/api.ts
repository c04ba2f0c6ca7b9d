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

/** Instance JSON as the list and detail routes give it; the fields marked optional may not be there yet. */
export interface InstanceView {
  id: string;
  name: string;
  type: string;
  edition: string;
  homeRegion: string;
  activeRegion: string;
  state: string;
  endpoint: string;
  servedBy: string | null;
  fencedSince: string | null;
  lockedBy: { workflowId: string; runbook: string } | null;
  rpoTargetSeconds: number | null;
  readiness: {
    state: 'ready' | 'degraded';
    reasons: string[];
    checkedAt: string;
    lagBytes: number | null;
    lagSeconds: number | null;
    caughtUpAt: string | null;
    lastGoodBackupAt: string | null;
  } | null;
  createdAt: string;
  updatedAt: string;
  stale?: boolean;
  lastGoodBackupAt?: string | null;
  staleAfterHours?: number;
  replication?: {
    state: string;
    direction: string;
    sourceRegion: string;
    targetRegion: string;
    targetDatabase: string;
    lagBytes: number | null;
    lagSeconds: number | null;
    caughtUpAt: string | null;
    checkedAt: string | null;
    drift: string[] | null;
    error: string | null;
  } | null;
  lastFailover?: Record<string, unknown> | null;
}

export interface BackupView {
  id: string;
  kind: string;
  label: string | null;
  status: string;
  region: string;
  sizeBytes: number | null;
  sha256: string | null;
  error: string | null;
  workflowId: string;
  createdAt: string;
  completedAt: string | null;
  expiresAt: string;
}

export interface RunSummaryView {
  workflowId: string;
  runbook: string | null;
  instanceId: string | null;
  status: string;
  startTime: string;
  closeTime: string | null;
  url: string;
}

export interface SignoffView {
  id: string;
  workflowId: string;
  runbook: string;
  instanceIds: string[];
  requestedBy: string;
  summary: string;
  risk: Record<string, unknown> | null;
  status: string;
  deadline: string;
  decidedBy: string | null;
  statement: string | null;
  decidedAt: string | null;
  createdAt: string;
  url: string;
}

export interface RegionView {
  name: string;
  pair: string;
  health: string;
  latencyMs: number | null;
  monitor: { health: string; failedChecks: number; checkedAt: string | null; outageSince: string | null; lastError: string | null } | null;
}
