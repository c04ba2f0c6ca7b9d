import { serve, type ServerType } from '@hono/node-server';
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instances, signoffs } from '../db/schema/index.js';
import { backupNow, createInstance, eventually, openContext, uniqueName, type TestContext } from './helpers.js';
import { APPROVER, OPERATOR, SELF_APPROVER, VIEWER } from './tokens.js';

const ARTIFACTS = path.join(import.meta.dirname, '..', 'test-artifacts');
/** Text no page may turn into markup. */
const HOSTILE_LABEL = `<img src=x onerror="window.__pwned=1"> & "quotes" 'single' </td></table>`;

let ctx: TestContext;
let server: ServerType;
let base: string;
let browser: Browser;
let prod: { id: string; name: string };
let sbx: { id: string; name: string };
let old: { id: string; name: string };
let runId: string;
const contexts: BrowserContext[] = [];

/** Debian's chromium (what .ci/run installs): CHROMIUM_PATH, else the one on PATH, else /usr/bin/chromium. */
const chromiumPath = () => process.env.CHROMIUM_PATH || spawnSync('sh', ['-c', 'command -v chromium'], { encoding: 'utf8' }).stdout.trim() || '/usr/bin/chromium';

const listen = (s: Server | ServerType) =>
  new Promise<number>((resolve) => {
    const done = () => resolve((s.address() as AddressInfo).port);
    if (s.listening) done();
    else s.once('listening', done);
  });

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  ctx = await openContext();
  server = serve({ fetch: ctx.app.fetch, hostname: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${await listen(server)}`;
  browser = await chromium.launch({ executablePath: chromiumPath(), args: ['--no-sandbox'] });

  // A production instance and a sandbox with a backup, then a production-restore that waits for sign-off.
  prod = await createInstance(ctx, uniqueName('cprod'));
  sbx = await createInstance(ctx, uniqueName('csbx'));
  await backupNow(ctx, sbx.id, HOSTILE_LABEL);
  // A sandbox created 30 hours ago that never had a backup: stale.
  old = await createInstance(ctx, uniqueName('cold'));
  await ctx.db.update(instances).set({ createdAt: new Date(Date.now() - 30 * 3600_000) }).where(eq(instances.id, old.id));
  const patched = await ctx.call('PATCH', `/v1/instances/${prod.id}`, { body: { type: 'production' } });
  expect(patched.status).toBe(200);
  const started = await ctx.call('POST', '/v1/runbooks/production-restore', { token: OPERATOR, body: { production: prod.id, sandbox: sbx.id, requireSignoff: true } });
  expect(started.status).toBe(202);
  runId = started.body.run.workflowId;
  await eventually('the sign-off is pending', async () => (await ctx.call('GET', `/v1/signoffs?status=pending&run=${encodeURIComponent(runId)}`)).body.signoffs?.[0]);
});

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
  // The approved run restores production; let it end (or cancel it) before the servers go.
  if (runId) {
    const handle = ctx.temporal.workflow.getHandle(runId);
    const ended = await Promise.race([handle.result().then(() => true, () => true), new Promise<false>((r) => setTimeout(() => r(false), 120_000))]);
    if (!ended) await ctx.call('POST', `/v1/runs/${runId}/cancel`);
    await handle.result().catch(() => {});
  }
  await new Promise<void>((r) => server?.close(() => r()));
  await ctx?.close();
});

async function newPage(): Promise<{ context: BrowserContext; page: Page }> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  contexts.push(context);
  const page = await context.newPage();
  // The console asks for confirmation before sending a sign-off decision.
  page.on('dialog', (d) => void d.accept());
  return { context, page };
}

async function signIn(token: string) {
  const p = await newPage();
  await p.page.goto(`${base}/console/login`);
  await p.page.fill('#token', token);
  await Promise.all([p.page.waitForURL(`${base}/console`), p.page.getByRole('button', { name: 'Sign in' }).click()]);
  return p;
}

const shot = (page: Page, name: string) => page.screenshot({ path: path.join(ARTIFACTS, `console-${name}.png`), fullPage: true });

const signoffOf = async (run: string) => (await ctx.call('GET', `/v1/signoffs?run=${encodeURIComponent(run)}`)).body.signoffs[0];

/** The session cookie and the CSRF token of a signed-in browser context, for requests sent from the test itself. */
async function sessionOf(context: BrowserContext, page: Page) {
  const cookie = (await context.cookies()).find((c) => c.name === 'bcdr_console')!;
  const csrf = await page.locator('form[action="/console/logout"] input[name=csrf]').inputValue();
  return { cookie: `bcdr_console=${cookie.value}`, csrf };
}

const post = (pathname: string, opts: { cookie: string; origin?: string; form: Record<string, string>; type?: string }) =>
  fetch(`${base}${pathname}`, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie: opts.cookie, 'content-type': opts.type ?? 'application/x-www-form-urlencoded', ...(opts.origin ? { origin: opts.origin } : {}) },
    body: opts.type === 'application/json' ? JSON.stringify(opts.form) : new URLSearchParams(opts.form).toString(),
  });

describe('ops console in a real browser', () => {
  it('signs in: a bad token shows an error, a good one lands on the fleet page with an HttpOnly, SameSite=Strict cookie', async () => {
    const { context, page } = await newPage();
    await page.goto(`${base}/console`);
    expect(page.url()).toBe(`${base}/console/login`);
    await shot(page, 'login');

    await page.fill('#token', 'not-a-configured-token');
    const [refused] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${base}/console/login` && r.request().method() === 'POST'),
      page.getByRole('button', { name: 'Sign in' }).click(),
    ]);
    expect(refused.status()).toBe(401);
    expect(await page.locator('.notice.error').innerText()).toContain('Sign-in refused');
    expect((await context.cookies()).find((c) => c.name === 'bcdr_console')).toBeUndefined();
    await shot(page, 'login-error');

    await page.fill('#token', OPERATOR);
    await Promise.all([page.waitForURL(`${base}/console`), page.getByRole('button', { name: 'Sign in' }).click()]);
    const cookie = (await context.cookies()).find((c) => c.name === 'bcdr_console');
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/console', secure: false });
    expect(await page.locator('[data-identity]').innerText()).toBe('olivia.operator');
    expect(await page.locator('[data-roles]').innerText()).toContain('operator');
    // The cookie is out of reach of page scripts.
    expect(await page.evaluate(() => document.cookie)).not.toContain('bcdr_console=');

    // Signing out clears it, and pages send you back to sign in.
    await Promise.all([page.waitForURL(`${base}/console/login`), page.getByRole('button', { name: 'Sign out' }).click()]);
    expect((await context.cookies()).find((c) => c.name === 'bcdr_console')).toBeUndefined();
    await page.goto(`${base}/console/signoffs`);
    expect(page.url()).toBe(`${base}/console/login`);
  });

  it('lists the fleet, and an instance page shows its backups and runs with links to the Temporal UI', async () => {
    const { page } = await signIn(OPERATOR);
    const prodRow = page.locator(`#fleet tr[data-instance="${prod.name}"]`);
    const sbxRow = page.locator(`#fleet tr[data-instance="${sbx.name}"]`);
    expect(await prodRow.innerText()).toContain('production');
    expect(await sbxRow.innerText()).toContain('sandbox');
    // The sandbox was backed up a moment ago: its age shows, and it is not stale.
    expect(await sbxRow.locator('[data-backup-age] time').count()).toBe(1);
    expect(await sbxRow.getAttribute('class')).not.toContain('stale');
    // The instance without a good backup for 30 hours stands out.
    const oldRow = page.locator(`#fleet tr[data-instance="${old.name}"]`);
    expect(await oldRow.getAttribute('class')).toContain('stale');
    expect(await oldRow.locator('.badge.bad', { hasText: 'stale' }).count()).toBe(1);
    // The production-restore holds both instances while it waits.
    expect(await prodRow.innerText()).toContain('production-restore');
    expect(await page.locator('a[href="/console/signoffs"]').first().isVisible()).toBe(true);
    await shot(page, 'fleet');

    await Promise.all([page.waitForURL(`${base}/console/instances/${sbx.id}`), sbxRow.locator(`a[href="/console/instances/${sbx.id}"]`).click()]);
    expect(await page.locator('h1').innerText()).toBe(`Instance ${sbx.name}`);
    const label = page.locator('#backups td.label').first();
    expect(await label.innerText()).toBe(HOSTILE_LABEL);
    expect(await page.locator('#backups img').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    const runs = await page.locator('#runs').innerText();
    expect(runs).toContain('on-demand-backup');
    expect(runs).toContain('provision-instance');
    const links = await page.locator('#runs a.temporal').evaluateAll((as) => as.map((a) => a.getAttribute('href')));
    expect(links.length).toBeGreaterThan(0);
    for (const href of links) expect(href!.startsWith(ctx.cfg.TEMPORAL_UI_URL.replace(/\/$/, ''))).toBe(true);
    expect(await page.locator('a[data-doc="on-demand-backup"]').count()).toBeGreaterThan(0);
    await shot(page, 'instance');
  });

  it('shows the pending sign-off: the runbook, its instances, what they could lose, who started it, the deadline and the run', async () => {
    const { page } = await signIn(APPROVER);
    await page.goto(`${base}/console/signoffs`);
    const card = page.locator(`.signoff[data-run="${runId}"]`);
    const text = await card.innerText();
    expect(text).toContain('production-restore');
    expect(text).toContain(prod.name);
    expect(text).toContain(sbx.name);
    expect(await card.locator('[data-requested-by]').innerText()).toBe('olivia.operator');
    const signoff = await signoffOf(runId);
    expect(await card.locator('time').evaluateAll((ts) => ts.map((t) => t.getAttribute('datetime')))).toContain(signoff.deadline);
    expect(await card.locator('a.temporal').getAttribute('href')).toBe(signoff.url);
    expect(await card.locator('textarea[name=statement]').count()).toBe(1);
    expect(await page.locator('a[data-doc="production-restore"]').count()).toBeGreaterThan(0);
    await shot(page, 'signoffs');
  });

  it('refuses self-approval with the four-eyes message and leaves the sign-off pending', async () => {
    const { page } = await signIn(SELF_APPROVER);
    await page.goto(`${base}/console/signoffs`);
    const card = page.locator(`.signoff[data-run="${runId}"]`);
    expect(await card.innerText()).toContain('You (olivia.operator) started this run');
    await card.locator('textarea[name=statement]').fill('I started it, and I approve it myself.');
    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${base}/console/signoffs/decide`),
      card.getByRole('button', { name: 'Approve' }).click(),
    ]);
    expect(answer.status()).toBe(403);
    const notice = page.locator('.notice.error[data-code="four_eyes"]');
    const shown = await notice.innerText();
    expect(shown).toContain('you started this run');
    expect(shown).toContain('four eyes');
    expect(shown).toContain(`olivia.operator started run ${runId} and cannot sign it off`);
    // What the approver wrote is kept for another try.
    expect(await page.locator(`.signoff[data-run="${runId}"] textarea[name=statement]`).inputValue()).toBe('I started it, and I approve it myself.');
    await shot(page, 'signoffs-four-eyes');
    expect((await signoffOf(runId)).status).toBe('pending');
  });

  it('shows a viewer everything but no form, and refuses a forged sign-off POST from a viewer', async () => {
    const { context, page } = await signIn(VIEWER);
    await page.goto(`${base}/console/signoffs`);
    const card = page.locator(`.signoff[data-run="${runId}"]`);
    expect(await card.innerText()).toContain(prod.name);
    expect(await card.locator('form').count()).toBe(0);
    expect(await page.locator('textarea').count()).toBe(0);
    expect(await card.locator('[data-no-form]').count()).toBe(1);
    await shot(page, 'signoffs-viewer');

    const s = await sessionOf(context, page);
    const res = await post('/console/signoffs/decide', { cookie: s.cookie, origin: base, form: { csrf: s.csrf, run: runId, decision: 'approve', statement: 'forged by a viewer' } });
    expect(res.status).toBe(403);
    expect(await res.text()).toContain('victor.viewer lacks the approver role');
    expect((await signoffOf(runId)).status).toBe('pending');
  });

  it('refuses a POST without the CSRF token, from a foreign Origin, or from another site in the browser', async () => {
    const { context, page } = await signIn(APPROVER);
    await page.goto(`${base}/console/signoffs`);
    const s = await sessionOf(context, page);
    const form = { run: runId, decision: 'approve', statement: 'not from the console' };

    const noToken = await post('/console/signoffs/decide', { cookie: s.cookie, origin: base, form });
    expect(noToken.status).toBe(403);
    expect(await noToken.text()).toContain('no valid CSRF token');
    const wrongToken = await post('/console/signoffs/decide', { cookie: s.cookie, origin: base, form: { ...form, csrf: `${s.csrf.slice(0, -2)}xx` } });
    expect(wrongToken.status).toBe(403);
    const foreign = await post('/console/signoffs/decide', { cookie: s.cookie, origin: 'http://evil.example', form: { ...form, csrf: s.csrf } });
    expect(foreign.status).toBe(403);
    const asJson = await post('/console/signoffs/decide', { cookie: s.cookie, origin: base, type: 'application/json', form: { ...form, csrf: s.csrf } });
    expect(asJson.status).toBe(403);
    const logout = await post('/console/logout', { cookie: s.cookie, origin: 'http://evil.example', form: { csrf: s.csrf } });
    expect(logout.status).toBe(403);

    // A page of another site that posts the form by itself, in the approver's own signed-in browser.
    const evil = createServer((_req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(
        `<!DOCTYPE html><form id="f" method="post" action="${base}/console/signoffs/decide">` +
          `<input name="run" value="${runId}"><input name="decision" value="approve"><input name="statement" value="cross-site"></form>` +
          `<script>document.getElementById('f').submit()</script>`,
      );
    });
    evil.listen(0, '127.0.0.1');
    const evilPort = await listen(evil);
    try {
      const attacked = await context.newPage();
      const [answer] = await Promise.all([
        attacked.waitForResponse((r) => r.url() === `${base}/console/signoffs/decide`),
        attacked.goto(`http://localhost:${evilPort}/`),
      ]);
      expect(answer.status()).toBe(403);
      await attacked.waitForLoadState();
      await shot(attacked, 'csrf-refused');
    } finally {
      await new Promise<void>((r) => evil.close(() => r()));
    }
    expect((await signoffOf(runId)).status).toBe('pending');
  });

  it('lets an approver approve with a written statement; the sign-off is approved and the run goes on', async () => {
    const { page } = await signIn(APPROVER);
    await page.goto(`${base}/console/signoffs`);
    const card = page.locator(`.signoff[data-run="${runId}"]`);
    const statement = 'Checked the backups and the window <script>window.__pwned=1</script>: approved.';
    await card.locator('textarea[name=statement]').fill(statement);
    await Promise.all([page.waitForURL(/\/console\/signoffs\?decided=/), card.getByRole('button', { name: 'Approve' }).click()]);
    expect(await page.locator('.notice.ok').innerText()).toContain(`The sign-off of run ${runId} is approved by anna.approver`);
    expect(await page.locator(`#decided tr[data-run="${runId}"]`).innerText()).toContain(statement);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
    await shot(page, 'signoffs-approved');

    const signoff = await signoffOf(runId);
    expect(signoff).toMatchObject({ status: 'approved', decidedBy: 'anna.approver', statement });
    expect((await ctx.call('GET', '/v1/signoffs?status=pending')).body.signoffs.map((s: { workflowId: string }) => s.workflowId)).not.toContain(runId);
    await eventually('the run goes on past its sign-off', async () => {
      const run = (await ctx.call('GET', `/v1/runs/${runId}`)).body;
      return run.stepsDone?.includes('signoff') && run.step !== 'signoff';
    }, 60_000);
  });

  it('serves the runbook docs read-only, and only the docs that exist', async () => {
    const { page } = await signIn(VIEWER);
    await page.goto(`${base}/console/docs`);
    expect(await page.locator('a[href="/console/docs/production-restore"]').count()).toBeGreaterThan(0);
    await page.goto(`${base}/console/docs/production-restore`);
    expect(await page.locator('h1').innerText()).toBe('Runbook: production-restore');
    expect(await page.locator('.doc h2').count()).toBeGreaterThan(0);
    await shot(page, 'docs');
    const { context } = { context: page.context() };
    const cookie = (await context.cookies()).find((c) => c.name === 'bcdr_console')!;
    for (const bad of ['..%2F..%2Fpackage.json', '..%2FREADME', '..%5C..%5Cpackage', '.hidden', 'nope', 'README.md%00']) {
      const res = await fetch(`${base}/console/docs/${bad}`, { headers: { cookie: `bcdr_console=${cookie.value}` }, redirect: 'manual' });
      expect(res.status, bad).toBe(404);
      expect(await res.text()).not.toContain('"name": "bcdr-runbooks"');
    }
  });

  it('shows what each instance of a region failover could lose, and survives control characters and huge values', async () => {
    // A failover sign-off as the region-failover runbook records it (risk: the loss estimate per instance name),
    // written straight into the catalog: a real outage is not needed to show how the page reads it.
    const workflowId = `region-failover-console-${prod.id}`;
    const now = Date.now();
    const huge = 'x'.repeat(100_000);
    await ctx.db.insert(signoffs).values({
      id: `${workflowId}/failover`,
      workflowId,
      runbook: 'region-failover',
      instanceIds: [prod.id],
      requestedBy: 'system:region-monitor',
      summary: 'Promote the geo-secondaries \u0007\u001b[31m <script>window.__pwned=1</script> of region primary',
      risk: {
        [prod.name]: {
          planned: false,
          lagBytes: 123_456,
          lagSeconds: 4.2,
          caughtUpAt: new Date(now - 7_500).toISOString(),
          checkedAt: new Date(now - 2_000).toISOString(),
          couldLoseSeconds: 7.5,
          readiness: { state: 'degraded', reasons: ['replication lag 4.2 s is above the RPO target of 1 s', huge], checkedAt: new Date(now - 3_000).toISOString() },
        },
      },
      status: 'pending',
      deadline: new Date(now + 3600_000),
    });
    try {
      const { page } = await signIn(APPROVER);
      await page.goto(`${base}/console/signoffs`);
      const card = page.locator(`.signoff[data-run="${workflowId}"]`);
      const text = await card.innerText();
      expect(text).toContain('region-failover');
      expect(text).toContain('\\u0007\\u001b[31m <script>window.__pwned=1</script>');
      const row = card.locator(`tr[data-instance="${prod.name}"]`);
      const lose = await row.innerText();
      expect(lose).toContain('up to 7.5 s of writes');
      expect(lose).toContain('120.6 KiB · 4.2 s');
      expect(lose).toContain('degraded');
      expect(lose).toContain('replication lag 4.2 s is above the RPO target');
      expect(lose).toContain('more characters)');
      expect(lose.length).toBeLessThan(5_000);
      expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
      // The page is whole: the decision form of this card and the table of decided sign-offs below it.
      expect(await card.locator('textarea[name=statement]').count()).toBe(1);
      expect(await page.locator('h2', { hasText: 'Recently decided' }).count()).toBe(1);
      expect(await page.locator('a[data-doc="region-failover"]').count()).toBeGreaterThan(0);
      await shot(page, 'signoffs-failover');
    } finally {
      await ctx.db.delete(signoffs).where(eq(signoffs.id, `${workflowId}/failover`));
    }
  });

  it('marks both cookies Secure over https (directly or behind a proxy that says so)', async () => {
    const origin = 'https://console.example';
    const login = await ctx.app.request(`${origin}/console/login`);
    const nonceCookie = login.headers.get('set-cookie')!;
    expect(nonceCookie).toMatch(/^bcdr_console_login=[^;]+;.*Path=\/console.*HttpOnly.*Secure.*SameSite=Strict/);
    const csrf = /name="csrf" value="([^"]+)"/.exec(await login.text())![1]!;
    const res = await ctx.app.request(`${origin}/console/login`, {
      method: 'POST',
      headers: { cookie: nonceCookie.split(';')[0]!, origin, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ csrf, token: VIEWER }).toString(),
    });
    expect(res.status).toBe(303);
    const session = res.headers.getSetCookie().find((c) => c.startsWith('bcdr_console='))!;
    expect(session).toMatch(/Path=\/console/);
    expect(session).toMatch(/HttpOnly/);
    expect(session).toMatch(/Secure/);
    expect(session).toMatch(/SameSite=Strict/);
    // Behind a TLS-terminating proxy: the app sees http, the browser's Origin is https; a foreign Origin is still refused.
    const proxied = await ctx.app.request('http://console.example/console/login', { headers: { 'x-forwarded-proto': 'https' } });
    const proxiedNonce = proxied.headers.get('set-cookie')!;
    expect(proxiedNonce).toMatch(/Secure/);
    const proxiedCsrf = /name="csrf" value="([^"]+)"/.exec(await proxied.text())![1]!;
    const viaProxy = (from: string) =>
      ctx.app.request('http://console.example/console/login', {
        method: 'POST',
        headers: { cookie: proxiedNonce.split(';')[0]!, origin: from, 'x-forwarded-proto': 'https', 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ csrf: proxiedCsrf, token: VIEWER }).toString(),
      });
    expect((await viaProxy(origin)).status).toBe(303);
    expect((await viaProxy('https://evil.example')).status).toBe(403);
  });
});
