import type { Child } from 'hono/jsx';
import type { Session } from './session.js';

/** Longest run of free text a page shows from one value; the rest is summarised. */
const MAX_TEXT = 2000;

/**
 * Free text from the API as a page shows it: control characters made visible
 * (as \uXXXX; line breaks and tabs kept), lone surrogates replaced, and huge
 * values cut, so no value can break or swamp a page. JSX escapes the rest.
 */
export function clean(value: unknown, max = MAX_TEXT): string {
  const s = typeof value === 'string' ? value : value === null || value === undefined ? '' : String(value);
  const cut = s.length > max ? s.slice(0, max) : s;
  const shown = cut
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`)
    .replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
  return s.length > max ? `${shown}… (${s.length - max} more characters)` : shown;
}

/** Only http(s) links from the API become hrefs; anything else (javascript:, data:) is shown as text. */
export function safeUrl(url: unknown): string | null {
  if (typeof url !== 'string') return null;
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.toString() : null;
  } catch {
    return null;
  }
}

export function formatBytes(n: unknown): string {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function formatSeconds(s: unknown): string {
  if (typeof s !== 'number' || !Number.isFinite(s)) return '—';
  if (s < 60) return `${Math.round(s * 10) / 10} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d ${Math.floor((s % 86_400) / 3600)} h`;
}

/** "3 h 2 min ago" / "in 58 min" for an ISO time, with the exact time on hover. */
export function When(p: { at: unknown; now?: number }) {
  if (typeof p.at !== 'string' || Number.isNaN(Date.parse(p.at))) return <span class="muted">—</span>;
  const diff = (Date.parse(p.at) - (p.now ?? Date.now())) / 1000;
  const rel = Math.abs(diff) < 1 ? 'now' : diff < 0 ? `${formatSeconds(-diff)} ago` : `in ${formatSeconds(diff)}`;
  return (
    <time datetime={p.at} title={p.at}>
      {rel}
    </time>
  );
}

/** A link to a run in the Temporal Web UI, when the API gave a usable one. */
export function TemporalLink(p: { url: unknown; label?: string }) {
  const href = safeUrl(p.url);
  if (!href) return <span class="muted">—</span>;
  return (
    <a href={href} target="_blank" rel="noopener noreferrer" class="temporal">
      {p.label ?? 'Temporal UI'}
    </a>
  );
}

/** An error from the API (or the console) shown at the top of a page. */
export interface Notice {
  kind: 'error' | 'ok' | 'info';
  title: string;
  detail?: string;
  code?: string;
  status?: number;
}

export function NoticeBox(p: { notice: Notice }) {
  const n = p.notice;
  return (
    <div class={`notice ${n.kind}`} role={n.kind === 'error' ? 'alert' : 'status'} data-code={n.code ?? ''}>
      <strong>{clean(n.title)}</strong>
      {n.detail ? <p>{clean(n.detail)}</p> : null}
      {n.code || n.status ? (
        <p class="muted small">
          {n.status ? `HTTP ${n.status}` : ''}
          {n.code ? ` · ${clean(n.code, 100)}` : ''}
        </p>
      ) : null}
    </div>
  );
}

const CSS = `
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center;flex-wrap:wrap}
header a{color:#cfe0ff;text-decoration:none}header a:hover{text-decoration:underline}
header .brand{font-weight:600;color:#fff}
header .who{margin-left:auto;display:flex;gap:8px;align-items:center}
header form{margin:0}
main{padding:16px;max-width:1400px;margin:0 auto}
h1{font-size:20px;margin:8px 0 12px}h2{font-size:16px;margin:20px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d8dce3}
th,td{padding:6px 8px;border-bottom:1px solid #e6e8ec;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#eef0f4;font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
.muted{color:#6b7385}.small{font-size:12px}
.badge{display:inline-block;padding:1px 6px;border-radius:8px;font-size:12px;background:#e6e8ec}
.badge.bad{background:#fde2e1;color:#a1160a}.badge.good{background:#dcf3e3;color:#17623a}.badge.warn{background:#fff1cc;color:#7a5300}
tr.stale td{background:#fff6f5}
.notice{border-radius:6px;padding:10px 12px;margin:0 0 12px;border:1px solid}
.notice p{margin:4px 0 0;white-space:pre-wrap;overflow-wrap:anywhere}
.notice.error{background:#fde2e1;border-color:#f3a39c}.notice.ok{background:#dcf3e3;border-color:#9ad2ad}.notice.info{background:#e6efff;border-color:#a9c2f0}
.card{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:12px 14px;margin:0 0 14px}
.card h2{margin-top:0}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px;margin:0}dl.kv dt{color:#6b7385}dl.kv dd{margin:0;overflow-wrap:anywhere}
textarea{width:100%;min-height:70px;font:inherit}
input[type=password],input[type=text]{font:inherit;padding:6px;width:min(420px,100%)}
button{font:inherit;padding:5px 12px;border-radius:4px;border:1px solid #8a93a6;background:#fff;cursor:pointer}
button.approve{background:#17623a;color:#fff;border-color:#17623a}button.reject{background:#a1160a;color:#fff;border-color:#a1160a}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f0f2f5;padding:8px;border-radius:4px}
.doc{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:4px 20px 16px}
.doc code{background:#f0f2f5;padding:0 3px;border-radius:3px}
.regions{display:flex;gap:10px;flex-wrap:wrap;margin-bottom:12px}
table.risk,table#fleet{table-layout:fixed}
table#fleet th:nth-child(1){width:16%}table#fleet th:nth-child(2){width:9%}table#fleet th:nth-child(3){width:15%}table#fleet th:nth-child(4){width:9%}table#fleet th:nth-child(5){width:12%}table#fleet th:nth-child(6){width:14%}
table.risk th:nth-child(1){width:20%}table.risk th:nth-child(2){width:16%}
`;

/**
 * Progressive enhancement, nothing required: a confirm before a sign-off
 * decision, one submission per form, and a page refresh every
 * data-refresh seconds while nobody is typing.
 */
const JS = `
document.querySelectorAll('form[data-confirm]').forEach(function (f) {
  f.addEventListener('submit', function (e) {
    var b = e.submitter, what = b && b.value ? b.value : 'submit';
    if (f.dataset.sent || !window.confirm(f.dataset.confirm.replace('%s', what))) { e.preventDefault(); return; }
    f.dataset.sent = '1';
  });
});
(function () {
  var s = Number(document.body.dataset.refresh || 0);
  if (!(s > 0)) return;
  setInterval(function () {
    var busy = Array.prototype.some.call(document.querySelectorAll('textarea,input[type=text],input[type=password]'), function (e) { return e.value || e === document.activeElement; });
    if (!busy && document.visibilityState === 'visible') location.reload();
  }, s * 1000);
})();
`;

export function Layout(p: { title: string; nonce: string; session?: Session | null; refreshSeconds?: number; doc?: { name: string; label: string } | null; children?: Child }) {
  const s = p.session;
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="referrer" content="same-origin" />
        <title>{`${p.title} · BCDR console`}</title>
        <style nonce={p.nonce} dangerouslySetInnerHTML={{ __html: CSS }} />
      </head>
      <body data-refresh={p.refreshSeconds ? String(p.refreshSeconds) : undefined}>
        <header>
          <a class="brand" href="/console">
            BCDR console
          </a>
          {s ? (
            <nav>
              <a href="/console">Fleet</a> · <a href="/console/signoffs">Sign-offs</a> · <a href="/console/docs">Runbook docs</a>
              {p.doc && p.doc.name !== 'README' ? (
                <>
                  {' · '}
                  <a href={`/console/docs/${p.doc.name}`} data-doc={p.doc.name}>
                    {p.doc.label}
                  </a>
                </>
              ) : null}
            </nav>
          ) : null}
          {s ? (
            <span class="who">
              <span>
                Signed in as <strong data-identity>{clean(s.principal.identity, 200)}</strong> <span class="muted" data-roles>({s.principal.roles.join(', ')})</span>
              </span>
              <form method="post" action="/console/logout">
                <input type="hidden" name="csrf" value={s.csrf} />
                <button type="submit">Sign out</button>
              </form>
            </span>
          ) : null}
        </header>
        <main>
          <h1>{p.title}</h1>
          {p.children}
        </main>
        <script nonce={p.nonce} dangerouslySetInnerHTML={{ __html: JS }} />
      </body>
    </html>
  );
}
