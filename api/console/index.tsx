import { randomBytes } from 'node:crypto';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { csrf } from 'hono/csrf';
import { html as htmlTemplate } from 'hono/html';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { uiLink, type ApiDeps } from '../deps.js';
import { apiFor, type ApiRequester, type ApiResult, type BackupView, type InstanceDetailView, type InstanceView, type RegionView, type RunSummaryView, type SignoffView } from './api.js';
import { Markdown, RunbookDocs } from './docs.js';
import type { Notice } from './layout.js';
import { DocPage, FleetPage, InstancePage, LoginPage, MessagePage, SignoffsPage } from './pages.js';
import { COOKIE_PATH, CsrfTokens, endSession, loginNonce, readLoginNonce, readSession, startSession, TOKEN_SHAPE, type Session } from './session.js';

export type { ApiRequester } from './api.js';

interface ConsoleEnv {
  Variables: {
    nonce: string;
    session: Session | null;
    form: Record<string, string>;
  };
}

const errorNotice = (title: string, r: { status: number; error: { code: string; message: string } }): Notice => ({
  kind: 'error',
  title,
  detail: r.error.message,
  code: r.error.code,
  status: r.status,
});

/**
 * The Origin a form of this console comes from: the request's own, or, behind a
 * TLS-terminating proxy, the https origin the proxy says it served. A browser
 * cannot be made to send another site's Origin, so widening the check to the
 * proxy's view of this same site lets no other site in.
 */
function sameOrigin(origin: string, c: Context): boolean {
  const url = new URL(c.req.url);
  if (origin === url.origin) return true;
  const proto = c.req.header('x-forwarded-proto')?.split(',')[0]?.trim();
  const host = c.req.header('x-forwarded-host')?.split(',')[0]?.trim() || url.host;
  return (proto === 'https' || proto === 'http') && !!host && origin === `${proto}://${host}`;
}

/**
 * The ops console under /console (issue 7): server-rendered pages over the
 * JSON API, which it calls in-process through `request` with the signed-in
 * token, so roles, validation and four eyes hold exactly as for any client.
 */
export function consoleApp(deps: ApiDeps, requester?: ApiRequester, opts: { docsDir?: string } = {}) {
  const app = new Hono<ConsoleEnv>();
  // Without a requester (an app that mounts the console the old way) every API call answers 503, shown on the page.
  const request: ApiRequester =
    requester ?? (() => Response.json({ error: { code: 'console_not_wired', message: 'the console was mounted without a way to call the API: mount it with consoleApp(deps, (path, init) => app.request(path, init))' } }, { status: 503 }));
  const tokens = new CsrfTokens();
  const docs = new RunbookDocs(opts.docsDir);
  const link = (workflowId: string) => uiLink(deps, workflowId);

  /** A full page, in standards mode. */
  const html = (c: Context<ConsoleEnv>, body: unknown, status: ContentfulStatusCode = 200) => c.html(htmlTemplate`<!DOCTYPE html>${body}`, status);
  const base = (c: Context<ConsoleEnv>) => ({ nonce: c.get('nonce'), session: c.get('session') });

  app.onError((err, c) => {
    const status = err instanceof HTTPException ? err.status : 500;
    if (status >= 500) console.error('console error:', err);
    const notice: Notice =
      status === 403 && err.message === 'forms only'
        ? { kind: 'error', title: 'Refused: the console takes only form posts (use the JSON API under /v1 for scripts).', status }
        : status === 403
        ? { kind: 'error', title: 'Refused: this form did not come from a console page of this site (cross-site request).', detail: 'Open the page again and send the form from it.', status }
        : status === 413
          ? { kind: 'error', title: 'The form is too large.', status }
          : { kind: 'error', title: 'Something went wrong in the console; see the API log.', status };
    return html(c, <MessagePage nonce={c.get('nonce') ?? ''} session={null} title="Error" notices={[notice]} />, status as ContentfulStatusCode);
  });

  // Every page: a fresh nonce for its inline script and style, a strict policy, no caching, no framing.
  app.use('*', async (c, next) => {
    const nonce = randomBytes(16).toString('base64');
    c.set('nonce', nonce);
    await next();
    c.header('Content-Security-Policy', `default-src 'none'; script-src 'nonce-${nonce}'; style-src 'nonce-${nonce}'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'`);
    c.header('X-Frame-Options', 'DENY');
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('Referrer-Policy', 'same-origin');
    c.header('Cache-Control', 'no-store');
  });

  // Every POST: a small form, from this origin (Origin / Sec-Fetch-Site), carrying the CSRF token of its session.
  app.post('*', bodyLimit({ maxSize: 64 * 1024 }), csrf({ origin: sameOrigin }), async (c, next) => {
    const type = c.req.header('content-type') ?? '';
    if (!/^(application\/x-www-form-urlencoded|multipart\/form-data)\b/i.test(type)) throw new HTTPException(403, { message: 'forms only' });
    const body = await c.req.parseBody();
    const form: Record<string, string> = {};
    for (const [k, v] of Object.entries(body)) if (typeof v === 'string') form[k] = v;
    c.set('form', form);
    if (c.req.path === `${COOKIE_PATH}/login`) {
      const nonce = readLoginNonce(c);
      if (!nonce || !CsrfTokens.same(form.csrf, tokens.forLogin(nonce))) {
        return html(c, <MessagePage nonce={c.get('nonce')} session={null} title="Sign in" notices={[{ kind: 'error', title: 'The sign-in form expired or did not come from this console.', detail: 'Open the sign-in page again.', status: 403 }]} />, 403);
      }
      c.set('session', null);
      return next();
    }
    const session = readSession(c, deps.cfg.API_TOKENS, tokens);
    if (!session) return html(c, <MessagePage nonce={c.get('nonce')} session={null} title="Not signed in" notices={[{ kind: 'error', title: 'You are not signed in (or your session ended).', detail: 'Sign in again at /console/login.', status: 403 }]} />, 403);
    if (!CsrfTokens.same(form.csrf, session.csrf)) {
      return html(c, <MessagePage nonce={c.get('nonce')} session={session} title="Refused" notices={[{ kind: 'error', title: 'Refused: the form carries no valid CSRF token.', detail: 'Open the page again (the console may have restarted) and send the form from it.', status: 403 }]} />, 403);
    }
    c.set('session', session);
    return next();
  });

  // Pages: signed in, or off to the sign-in page.
  app.get('*', async (c, next) => {
    if (c.req.path === `${COOKIE_PATH}/login`) {
      c.set('session', null);
      return next();
    }
    const session = readSession(c, deps.cfg.API_TOKENS, tokens);
    if (!session) return c.redirect('/console/login', 303);
    c.set('session', session);
    return next();
  });

  // ------------------------------------------------------------ sign in / out

  const loginPage = (c: Context<ConsoleEnv>, notices: Notice[] = [], status: ContentfulStatusCode = 200) =>
    html(c, <LoginPage {...base(c)} csrf={tokens.forLogin(loginNonce(c))} notices={notices} />, status);

  app.get('/login', (c) => {
    if (readSession(c, deps.cfg.API_TOKENS, tokens)) return c.redirect('/console', 303);
    return loginPage(c);
  });

  app.post('/login', async (c) => {
    const token = (c.get('form').token ?? '').trim();
    if (!TOKEN_SHAPE.test(token)) return loginPage(c, [{ kind: 'error', title: 'That is not a token: give the API bearer token (printable characters, no spaces).', status: 400 }], 400);
    // The API decides: a token it refuses (401) never becomes a session.
    const check = await apiFor(request, token)<unknown>('GET', '/v1/signoffs?limit=1');
    if (!check.ok) {
      const title = check.status === 401 ? 'Sign-in refused: the API does not accept that token.' : 'Sign-in failed: the API could not check the token.';
      return loginPage(c, [errorNotice(title, check)], check.status === 401 ? 401 : 502);
    }
    startSession(c, token);
    return c.redirect('/console', 303);
  });

  app.post('/logout', (c) => {
    endSession(c);
    return c.redirect('/console/login', 303);
  });

  // ------------------------------------------------------------ fleet

  const fleet = async (c: Context<ConsoleEnv>) => {
    const session = c.get('session')!;
    const api = apiFor(request, session.token);
    const [list, regions, pending] = await Promise.all([
      api<{ instances: InstanceView[] }>('GET', '/v1/instances'),
      api<{ regions: RegionView[] }>('GET', '/v1/regions'),
      api<{ signoffs: SignoffView[] }>('GET', '/v1/signoffs?status=pending&limit=500'),
    ]);
    const notices: Notice[] = [];
    if (!list.ok) notices.push(errorNotice('The instances could not be read.', list));
    if (!regions.ok) notices.push(errorNotice('The regions could not be read.', regions));
    return html(
      c,
      <FleetPage {...base(c)} notices={notices} instances={list.ok ? list.body.instances : []} regions={regions.ok ? regions.body.regions : null} pending={pending.ok ? pending.body.signoffs.length : null} docs={docs} uiLink={link} />,
      list.ok ? 200 : (list.status as ContentfulStatusCode),
    );
  };

  app.get('/', fleet);
  app.get('/fleet', fleet);

  // ------------------------------------------------------------ one instance

  app.get('/instances/:id', async (c) => {
    const session = c.get('session')!;
    const api = apiFor(request, session.token);
    const id = c.req.param('id');
    const ref = encodeURIComponent(id);
    const inst = await api<InstanceDetailView>('GET', `/v1/instances/${ref}`);
    if (!inst.ok) {
      return html(c, <MessagePage {...base(c)} title="Instance" notices={[errorNotice('The instance could not be read.', inst)]} />, inst.status as ContentfulStatusCode);
    }
    const [backups, runs] = await Promise.all([
      api<{ backups: BackupView[] }>('GET', `/v1/instances/${encodeURIComponent(inst.body.id)}/backups`),
      api<{ runs: RunSummaryView[] }>('GET', `/v1/runs?instance=${encodeURIComponent(inst.body.id)}&limit=50`),
    ]);
    const notices: Notice[] = [];
    if (!backups.ok) notices.push(errorNotice('The backups could not be read.', backups));
    if (!runs.ok) notices.push(errorNotice('The runs could not be read.', runs));
    return html(
      c,
      <InstancePage {...base(c)} notices={notices} inst={inst.body} backups={backups.ok ? backups.body.backups : null} runs={runs.ok ? runs.body.runs : null} docs={docs} uiLink={link} />,
    );
  });

  // ------------------------------------------------------------ sign-offs

  async function signoffsPage(c: Context<ConsoleEnv>, extra: { notices?: Notice[]; draft?: { run: string; statement: string }; status?: ContentfulStatusCode; refresh?: boolean } = {}) {
    const session = c.get('session')!;
    const api = apiFor(request, session.token);
    const [pending, recent, list] = await Promise.all([
      api<{ signoffs: SignoffView[] }>('GET', '/v1/signoffs?status=pending&limit=500'),
      api<{ signoffs: SignoffView[] }>('GET', '/v1/signoffs?limit=40'),
      api<{ instances: InstanceView[] }>('GET', '/v1/instances'),
    ]);
    const notices = [...(extra.notices ?? [])];
    if (!pending.ok) notices.push(errorNotice('The pending sign-offs could not be read.', pending));
    const byId = new Map((list.ok ? list.body.instances : []).map((i) => [i.id, i]));
    return html(
      c,
      <SignoffsPage
        {...base(c)}
        notices={notices}
        pending={pending.ok ? pending.body.signoffs : null}
        recent={recent.ok ? recent.body.signoffs.filter((s) => s.status !== 'pending').slice(0, 20) : null}
        byId={byId}
        docs={docs}
        draft={extra.draft}
        refresh={extra.refresh ?? true}
      />,
      extra.status ?? 200,
    );
  }

  app.get('/signoffs', async (c) => {
    const decided = c.req.query('decided');
    const notices: Notice[] = [];
    if (decided && decided.length <= 300) {
      // Says what the catalog now holds for that run, never text from the address.
      const session = c.get('session')!;
      const r = await apiFor(request, session.token)<{ signoffs: SignoffView[] }>('GET', `/v1/signoffs?run=${encodeURIComponent(decided)}&limit=1`);
      const s = r.ok ? r.body.signoffs[0] : undefined;
      if (s && s.status !== 'pending') notices.push({ kind: 'ok', title: `The sign-off of run ${s.workflowId} is ${s.status}${s.decidedBy ? ` by ${s.decidedBy}` : ''}.`, detail: s.statement ?? undefined });
      else if (s) notices.push({ kind: 'info', title: `Your decision on run ${s.workflowId} was sent; the run has not recorded it yet. This page refreshes.` });
    }
    return signoffsPage(c, { notices });
  });

  app.post('/signoffs/decide', async (c) => {
    const form = c.get('form');
    const run = form.run ?? '';
    const decision = form.decision ?? '';
    const statement = form.statement ?? '';
    const draft = { run, statement };
    if (!run || run.length > 300) return signoffsPage(c, { notices: [{ kind: 'error', title: 'No run named: send the form from the sign-off page.', status: 400 }], status: 400, refresh: false });
    const session = c.get('session')!;
    // The API decides who may sign off (approver role, never the run's own requester) and what a statement must be.
    const r: ApiResult<{ signoff: SignoffView }> = await apiFor(request, session.token)<{ signoff: SignoffView }>('POST', `/v1/runs/${encodeURIComponent(run)}/signoff`, { decision, statement });
    if (r.ok) return c.redirect(`/console/signoffs?decided=${encodeURIComponent(run)}`, 303);
    const title =
      r.error.code === 'four_eyes'
        ? 'Refused: you started this run, so you cannot sign it off. Another approver must (four eyes).'
        : r.status === 403
          ? 'Refused: your token may not sign off runs (the approver role is needed).'
          : r.status === 400
            ? 'The sign-off was not sent: the decision or the statement is not valid.'
            : r.status === 409
              ? 'The run no longer waits for sign-off.'
              : 'The sign-off could not be sent.';
    return signoffsPage(c, { notices: [errorNotice(title, r)], draft, status: r.status as ContentfulStatusCode, refresh: false });
  });

  // ------------------------------------------------------------ runbook docs

  const docPage = (c: Context<ConsoleEnv>, name: string) => {
    const source = docs.read(name);
    if (source === null) {
      return html(c, <MessagePage {...base(c)} title="No such doc" notices={[{ kind: 'error', title: `There is no runbook doc of that name. Known: ${docs.list().join(', ') || 'none'}.`, status: 404 }]} />, 404);
    }
    return html(c, <DocPage {...base(c)} name={name} names={docs.list()} body={<Markdown source={source} docs={docs} />} />);
  };
  app.get('/docs', (c) => docPage(c, 'README'));
  app.get('/docs/:name', (c) => docPage(c, c.req.param('name').replace(/\.md$/, '')));

  app.all('*', (c) => {
    if (c.req.method === 'GET' && c.req.path === `${COOKIE_PATH}/`) return c.redirect(COOKIE_PATH, 301);
    return html(c, <MessagePage nonce={c.get('nonce') ?? ''} session={c.get('session') ?? null} title="Not found" notices={[{ kind: 'error', title: 'No console page here.', status: 404 }]} />, 404);
  });

  return app;
}
