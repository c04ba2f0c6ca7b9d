import type { Child } from 'hono/jsx';
import type { BackupView, InstanceDetailView, InstanceView, RegionView, RunSummaryView, SignoffView } from './api.js';
import type { RunbookDocs } from './docs.js';
import { clean, formatBytes, formatSeconds, Layout, NoticeBox, TemporalLink, When, type Notice } from './layout.js';
import type { Session } from './session.js';

export interface PageBase {
  nonce: string;
  session: Session | null;
  notices?: Notice[];
}

const Notices = (p: { notices?: Notice[] }) => <>{(p.notices ?? []).map((n) => <NoticeBox notice={n} />)}</>;

const instanceHref = (id: string) => `/console/instances/${encodeURIComponent(id)}`;

function DocLink(p: { docs: RunbookDocs; runbook: unknown; label?: string }) {
  const name = p.docs.forRunbook(p.runbook);
  return name ? (
    <a href={`/console/docs/${name}`} class="small" data-doc={name}>
      {p.label ?? 'runbook doc'}
    </a>
  ) : null;
}

function StateBadge(p: { state: string }) {
  const bad = ['failed', 'failed_over', 'degraded', 'unreachable', 'outage', 'broken'].includes(p.state);
  const good = ['active', 'ready', 'healthy', 'streaming', 'completed', 'approved'].includes(p.state);
  return <span class={`badge ${bad ? 'bad' : good ? 'good' : 'warn'}`}>{clean(p.state, 100)}</span>;
}

// ---------------------------------------------------------------- login

export function LoginPage(p: PageBase & { csrf: string }) {
  return (
    <Layout title="Sign in" nonce={p.nonce}>
      <Notices notices={p.notices} />
      <div class="card">
        <form method="post" action="/console/login" autocomplete="off">
          <input type="hidden" name="csrf" value={p.csrf} />
          <p>
            <label for="token">API token</label>
            <br />
            <input type="password" id="token" name="token" required maxlength={512} autofocus />
          </p>
          <p class="muted small">The token is checked against the API and kept in an HttpOnly cookie of this console only.</p>
          <button type="submit">Sign in</button>
        </form>
      </div>
    </Layout>
  );
}

// ---------------------------------------------------------------- fleet

function Lag(p: { inst: InstanceView }) {
  const r = p.inst.replication ?? null;
  const lagBytes = r ? r.lagBytes : (p.inst.readiness?.lagBytes ?? null);
  const lagSeconds = r ? r.lagSeconds : (p.inst.readiness?.lagSeconds ?? null);
  const caughtUpAt = r ? r.caughtUpAt : (p.inst.readiness?.caughtUpAt ?? null);
  if (!r && !p.inst.readiness) return <span class="muted">—</span>;
  return (
    <span data-lag>
      {formatBytes(lagBytes)} · {formatSeconds(lagSeconds)}
      {r ? (
        <>
          {' '}
          <StateBadge state={r.state} />
        </>
      ) : null}
      <br />
      <span class="muted small">
        caught up <When at={caughtUpAt} />
      </span>
    </span>
  );
}

function Readiness(p: { inst: InstanceView }) {
  const r = p.inst.readiness;
  if (!r) return <span class="muted">—</span>;
  return (
    <span>
      <StateBadge state={r.state} />
      {r.reasons.length ? (
        <ul class="small">
          {r.reasons.slice(0, 10).map((x) => (
            <li>{clean(x, 300)}</li>
          ))}
        </ul>
      ) : null}
    </span>
  );
}

export function FleetPage(
  p: PageBase & { instances: InstanceView[]; regions: RegionView[] | null; pending: number | null; docs: RunbookDocs; uiLink: (workflowId: string) => string },
) {
  const stale = p.instances.filter((i) => i.stale).length;
  return (
    <Layout title="Fleet" nonce={p.nonce} session={p.session} refreshSeconds={30} doc={{ name: 'README', label: 'Runbooks index' }}>
      <Notices notices={p.notices} />
      {p.pending ? (
        <div class="notice info">
          <strong>
            <a href="/console/signoffs">
              {p.pending} run{p.pending === 1 ? '' : 's'} wait{p.pending === 1 ? 's' : ''} for sign-off
            </a>
          </strong>
        </div>
      ) : null}
      {p.regions ? (
        <div class="regions">
          {p.regions.map((r) => (
            <span class="card small" data-region={r.name}>
              Region <strong>{clean(r.name, 100)}</strong> (pair {clean(r.pair, 100)}): <StateBadge state={r.health} />
              {r.latencyMs !== null ? ` ${r.latencyMs} ms` : ''}
              {r.monitor ? (
                <>
                  {' '}
                  · monitor <StateBadge state={r.monitor.health} />
                  {r.monitor.outageSince ? (
                    <>
                      {' '}
                      outage since <When at={r.monitor.outageSince} />
                    </>
                  ) : null}
                </>
              ) : null}
            </span>
          ))}
        </div>
      ) : null}
      <p class="muted">
        {p.instances.length} instance{p.instances.length === 1 ? '' : 's'}
        {stale ? `, ${stale} without a recent good backup` : ''}. A backup is stale when the newest good one is older than the instance's limit.
      </p>
      <table id="fleet">
        <thead>
          <tr>
            <th>Name</th>
            <th>Type</th>
            <th>State</th>
            <th>Region</th>
            <th>Last good backup</th>
            <th>Replication lag</th>
            <th>Failover readiness</th>
          </tr>
        </thead>
        <tbody>
          {p.instances.map((inst) => (
            <tr class={inst.stale ? 'stale' : ''} data-instance={inst.name}>
              <td>
                <a href={instanceHref(inst.id)}>{clean(inst.name, 100)}</a>
                <br />
                <span class="muted small">{clean(inst.id, 100)}</span>
              </td>
              <td>
                {clean(inst.type, 50)}
                <br />
                <span class="muted small">{clean(inst.edition, 50)}</span>
              </td>
              <td>
                <StateBadge state={inst.state} />
                {inst.lockedBy ? (
                  <div class="small">
                    held by {clean(inst.lockedBy.runbook, 100)} (<TemporalLink url={p.uiLink(inst.lockedBy.workflowId)} label="run" />)
                  </div>
                ) : null}
                {inst.fencedSince ? (
                  <div class="small">
                    old primary fenced <When at={inst.fencedSince} />
                  </div>
                ) : null}
              </td>
              <td>
                {clean(inst.activeRegion, 100)}
                {inst.activeRegion !== inst.homeRegion ? <span class="muted small"> (home {clean(inst.homeRegion, 100)})</span> : null}
              </td>
              <td data-backup-age>
                {inst.lastGoodBackupAt === null ? <span>none</span> : <When at={inst.lastGoodBackupAt} />}
                {inst.stale ? (
                  <>
                    {' '}
                    <span class="badge bad" title={`no good backup in the last ${inst.staleAfterHours} h`}>
                      stale
                    </span>
                  </>
                ) : null}
              </td>
              <td>
                <Lag inst={inst} />
              </td>
              <td>
                <Readiness inst={inst} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </Layout>
  );
}

// ---------------------------------------------------------------- instance

const COPY_BADGE: Record<string, string> = { home: 'badge', verified: 'badge good', pending: 'badge warn', failed: 'badge bad' };

/** Where a backup is: each region, its copy's status and when it was last verified. */
function BackupCopies(p: { copies: BackupView['copies'] }) {
  return (
    <>
      {p.copies.map((c) => (
        <div class="small" data-copy={clean(c.region, 100)}>
          {clean(c.region, 100)}
          {c.storeKind ? <span class="muted"> ({clean(c.storeKind, 20)})</span> : null}{' '}
          <span class={COPY_BADGE[c.status] ?? 'badge'}>{clean(c.status, 20)}</span>
          {c.verifiedAt ? (
            <>
              {' '}
              <span class="muted">
                verified <When at={c.verifiedAt} />
              </span>
            </>
          ) : null}
          {c.error ? <div class="muted">{clean(c.error, 300)}</div> : null}
        </div>
      ))}
    </>
  );
}

export function InstancePage(
  p: PageBase & { inst: InstanceDetailView; backups: BackupView[] | null; runs: RunSummaryView[] | null; docs: RunbookDocs; uiLink: (workflowId: string) => string },
) {
  const i = p.inst;
  const r = i.replication ?? null;
  const shownBackups = (p.backups ?? []).slice(0, 200);
  return (
    <Layout title={`Instance ${clean(i.name, 100)}`} nonce={p.nonce} session={p.session} refreshSeconds={30} doc={{ name: 'README', label: 'Runbooks index' }}>
      <Notices notices={p.notices} />
      <div class="card">
        <dl class="kv">
          <dt>Id</dt>
          <dd>{clean(i.id, 100)}</dd>
          <dt>Type · edition</dt>
          <dd>
            {clean(i.type, 50)} · {clean(i.edition, 50)}
          </dd>
          <dt>State</dt>
          <dd>
            <StateBadge state={i.state} />
            {i.lockedBy ? (
              <>
                {' '}
                held by {clean(i.lockedBy.runbook, 100)} (<TemporalLink url={p.uiLink(i.lockedBy.workflowId)} label="run" />)
              </>
            ) : null}
          </dd>
          <dt>Region</dt>
          <dd>
            active {clean(i.activeRegion, 100)}, home {clean(i.homeRegion, 100)}
          </dd>
          <dt>Endpoint</dt>
          <dd>
            <code>{clean(i.endpoint, 500)}</code>
          </dd>
          {i.servedBy ? (
            <>
              <dt>Served by</dt>
              <dd>
                <a href={instanceHref(i.servedBy)}>{clean(i.servedBy, 100)}</a>
              </dd>
            </>
          ) : null}
          {i.fencedSince ? (
            <>
              <dt>Old primary fenced</dt>
              <dd>
                <When at={i.fencedSince} />
              </dd>
            </>
          ) : null}
          <dt>Last good backup</dt>
          <dd>
            <When at={i.lastGoodBackupAt} />
            {i.stale ? <span class="badge bad">stale</span> : null}
          </dd>
          <dt>Failover readiness</dt>
          <dd>
            <Readiness inst={i} />
          </dd>
        </dl>
      </div>
      {r ? (
        <div class="card">
          <h2>Geo-replication</h2>
          <dl class="kv">
            <dt>State</dt>
            <dd>
              <StateBadge state={r.state} /> {clean(r.direction, 20)}: {clean(r.sourceRegion, 100)} → {clean(r.targetRegion, 100)} ({clean(r.targetDatabase, 200)})
            </dd>
            <dt>Lag</dt>
            <dd>
              {formatBytes(r.lagBytes)} · {formatSeconds(r.lagSeconds)}
            </dd>
            <dt>Last caught up</dt>
            <dd>
              <When at={r.caughtUpAt} />
            </dd>
            <dt>Checked</dt>
            <dd>
              <When at={r.checkedAt} />
            </dd>
            {r.drift?.length ? (
              <>
                <dt>Drift</dt>
                <dd>{clean(r.drift.join(', '), 1000)}</dd>
              </>
            ) : null}
            {r.error ? (
              <>
                <dt>Error</dt>
                <dd>{clean(r.error)}</dd>
              </>
            ) : null}
          </dl>
        </div>
      ) : null}
      <h2>
        Backups <DocLink docs={p.docs} runbook="on-demand-backup" label="on-demand backup doc" /> · <DocLink docs={p.docs} runbook="daily-backup" label="daily backup doc" /> ·{' '}
        <DocLink docs={p.docs} runbook="restore" label="restore doc" />
      </h2>
      {p.backups === null ? (
        <p class="muted">Backups could not be read.</p>
      ) : !p.backups.length ? (
        <p class="muted">No backups yet.</p>
      ) : (
        <table id="backups">
          <thead>
            <tr>
              <th>Created</th>
              <th>Kind</th>
              <th>Label</th>
              <th>Status</th>
              <th>Size</th>
              <th>Copies</th>
              <th>Key</th>
              <th>Expires</th>
              <th>Run</th>
            </tr>
          </thead>
          <tbody>
            {shownBackups.map((b) => (
              <tr data-backup={b.id}>
                <td>
                  <When at={b.createdAt} />
                  <br />
                  <span class="muted small">{clean(b.id, 100)}</span>
                </td>
                <td>{clean(b.kind, 50)}</td>
                <td class="label">{b.label === null ? <span class="muted">—</span> : clean(b.label, 300)}</td>
                <td>
                  <StateBadge state={b.status} />
                  {b.hold ? (
                    <>
                      {' '}
                      <span class="badge warn" data-held="true" title={`legal hold by ${clean(b.hold.by, 100)} since ${b.hold.at}: ${clean(b.hold.reason, 500)}`}>
                        held
                      </span>
                    </>
                  ) : null}
                  {b.lock ? <div class="muted small">locked until <When at={b.lock.until} /></div> : null}
                  {b.error ? <div class="small">{clean(b.error, 500)}</div> : null}
                </td>
                <td>
                  {formatBytes(b.sizeBytes)}
                  {b.sha256 ? <div class="muted small">sha256 {clean(b.sha256.slice(0, 12), 20)}…</div> : null}
                </td>
                <td data-copies>
                  <BackupCopies copies={b.copies} />
                </td>
                <td data-key>{b.encryption ? <code>{clean(b.encryption.keyId, 100)}</code> : <span class="muted">clear</span>}</td>
                <td>
                  <When at={b.expiresAt} />
                </td>
                <td>
                  <TemporalLink url={p.uiLink(b.workflowId)} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {p.backups && p.backups.length > shownBackups.length ? <p class="muted">{p.backups.length - shownBackups.length} older backups not shown.</p> : null}
      <h2>Runs</h2>
      {p.runs === null ? (
        <p class="muted">Runs could not be read.</p>
      ) : !p.runs.length ? (
        <p class="muted">No runs.</p>
      ) : (
        <table id="runs">
          <thead>
            <tr>
              <th>Runbook</th>
              <th>Status</th>
              <th>Started</th>
              <th>Closed</th>
              <th>Temporal</th>
            </tr>
          </thead>
          <tbody>
            {p.runs.map((run) => (
              <tr data-run={run.workflowId}>
                <td>
                  {clean(run.runbook ?? '—', 100)} <DocLink docs={p.docs} runbook={run.runbook} />
                  <br />
                  <span class="muted small">{clean(run.workflowId, 300)}</span>
                </td>
                <td>
                  <StateBadge state={run.status} />
                </td>
                <td>
                  <When at={run.startTime} />
                </td>
                <td>
                  <When at={run.closeTime} />
                </td>
                <td>
                  <TemporalLink url={run.url} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </Layout>
  );
}

// ---------------------------------------------------------------- sign-offs

interface Estimate {
  planned?: boolean;
  lagBytes?: number | null;
  lagSeconds?: number | null;
  caughtUpAt?: string | null;
  checkedAt?: string | null;
  couldLoseSeconds?: number | null;
  readiness?: { state?: string; reasons?: unknown[]; checkedAt?: string } | null;
}

const asEstimate = (v: unknown): Estimate | null => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Estimate) : null);

/** What one instance could lose: the run's own estimate when it recorded one, else what the catalog says now. */
function CouldLose(p: { estimate: Estimate | null; inst: InstanceView | undefined }) {
  const e = p.estimate;
  if (e) {
    if (e.planned) return <span>nothing: writes blocked until the secondary caught up (zero lag)</span>;
    const ready = e.readiness;
    return (
      <dl class="kv small">
        <dt>Could lose</dt>
        <dd data-could-lose>{typeof e.couldLoseSeconds === 'number' ? `up to ${formatSeconds(e.couldLoseSeconds)} of writes` : 'unknown (the primary is unreachable and no catch-up time is known)'}</dd>
        <dt>Lag</dt>
        <dd>
          {formatBytes(e.lagBytes)} · {formatSeconds(e.lagSeconds)}
        </dd>
        <dt>Last caught up</dt>
        <dd>
          <When at={e.caughtUpAt} />
        </dd>
        <dt>Measured</dt>
        <dd>
          <When at={e.checkedAt} />
        </dd>
        <dt>Readiness</dt>
        <dd>
          {ready ? (
            <>
              <StateBadge state={String(ready.state ?? 'unknown')} />
              {Array.isArray(ready.reasons) && ready.reasons.length ? (
                <ul class="small">
                  {ready.reasons.slice(0, 10).map((x) => (
                    <li>{clean(x, 300)}</li>
                  ))}
                </ul>
              ) : null}
            </>
          ) : (
            <span class="muted">—</span>
          )}
        </dd>
      </dl>
    );
  }
  const i = p.inst;
  if (!i) return <span class="muted">—</span>;
  const rd = i.readiness;
  return (
    <span class="small">
      <span class="muted">No loss estimate recorded by the run (see the summary).</span>
      {rd ? (
        <>
          <br />
          Now: <StateBadge state={rd.state} /> lag {formatBytes(rd.lagBytes)} · {formatSeconds(rd.lagSeconds)}, caught up <When at={rd.caughtUpAt} />
          {rd.reasons.length ? ` (${rd.reasons.slice(0, 10).map((x) => clean(x, 300)).join('; ')})` : ''}
        </>
      ) : null}
    </span>
  );
}

function SignoffCard(p: { s: SignoffView; byId: Map<string, InstanceView>; session: Session; docs: RunbookDocs; draft?: { statement: string } }) {
  const s = p.s;
  const risk = s.risk ?? {};
  const matched = new Set<string>();
  const rows = s.instanceIds.map((id) => {
    const inst = p.byId.get(id);
    const key = inst && inst.name in risk ? inst.name : id in risk ? id : null;
    if (key) matched.add(key);
    return { id, inst, estimate: key ? asEstimate(risk[key]) : null };
  });
  const others = Object.keys(risk).filter((k) => !matched.has(k));
  const me = p.session.principal;
  const canDecide = me.roles.includes('approver');
  const mine = s.requestedBy === me.identity;
  return (
    <div class="card signoff" data-run={s.workflowId} data-status={s.status}>
      <h2>
        {clean(s.runbook, 100)} <DocLink docs={p.docs} runbook={s.runbook} />
      </h2>
      <dl class="kv">
        <dt>Summary</dt>
        <dd>{clean(s.summary, 4000)}</dd>
        <dt>Started by</dt>
        <dd data-requested-by>{clean(s.requestedBy, 200)}</dd>
        <dt>Requested</dt>
        <dd>
          <When at={s.createdAt} />
        </dd>
        <dt>Deadline</dt>
        <dd>
          <When at={s.deadline} /> <span class="muted small">({clean(s.deadline, 40)})</span>
        </dd>
        <dt>Run</dt>
        <dd>
          <TemporalLink url={s.url} label={clean(s.workflowId, 300)} />
        </dd>
      </dl>
      <table class="risk">
        <thead>
          <tr>
            <th>Instance</th>
            <th>Type · state</th>
            <th>What it could lose</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr data-instance={r.inst?.name ?? r.id}>
              <td>
                <a href={instanceHref(r.id)}>{clean(r.inst?.name ?? r.id, 100)}</a>
                <br />
                <span class="muted small">{clean(r.id, 100)}</span>
              </td>
              <td>{r.inst ? `${clean(r.inst.type, 50)} · ${clean(r.inst.state, 50)}` : <span class="muted">deleted or unknown</span>}</td>
              <td>
                <CouldLose estimate={r.estimate} inst={r.inst} />
              </td>
            </tr>
          ))}
          {others.map((k) => (
            <tr>
              <td>{clean(k, 100)}</td>
              <td class="muted">—</td>
              <td>
                <pre>{clean(JSON.stringify(risk[k], null, 2), 3000)}</pre>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {s.status === 'pending' && canDecide ? (
        <form method="post" action="/console/signoffs/decide" class="decide" data-confirm={`Send %s for run ${clean(s.workflowId, 300)}?`}>
          <input type="hidden" name="run" value={s.workflowId} />
          <input type="hidden" name="csrf" value={p.session.csrf} />
          {mine ? (
            <p class="notice info small">
              You ({clean(me.identity, 200)}) started this run: the API refuses your own sign-off (four eyes). Another approver must decide.
            </p>
          ) : null}
          <p>
            <label>
              Written statement (required; what you checked and why you decide so)
              <textarea name="statement" required maxlength={4000}>
                {p.draft?.statement ?? ''}
              </textarea>
            </label>
          </p>
          <button type="submit" name="decision" value="approve" class="approve">
            Approve
          </button>{' '}
          <button type="submit" name="decision" value="reject" class="reject">
            Reject
          </button>
        </form>
      ) : s.status === 'pending' ? (
        <p class="muted small" data-no-form>
          Only an approver can sign this off; you can see it but not decide it.
        </p>
      ) : (
        <p class="small">
          <StateBadge state={s.status} /> {s.decidedBy ? `by ${clean(s.decidedBy, 200)}` : ''} {s.decidedAt ? <When at={s.decidedAt} /> : null}
          {s.statement ? <pre>{clean(s.statement, 4000)}</pre> : null}
        </p>
      )}
    </div>
  );
}

export function SignoffsPage(
  p: PageBase & {
    pending: SignoffView[] | null;
    recent: SignoffView[] | null;
    byId: Map<string, InstanceView>;
    docs: RunbookDocs;
    draft?: { run: string; statement: string };
    refresh: boolean;
  },
) {
  const session = p.session!;
  const docName = p.pending?.length === 1 ? p.docs.forRunbook(p.pending[0]!.runbook) : null;
  return (
    <Layout title="Sign-offs" nonce={p.nonce} session={session} refreshSeconds={p.refresh ? 15 : undefined} doc={docName ? { name: docName, label: `${docName} doc` } : { name: 'README', label: 'Runbooks index' }}>
      <Notices notices={p.notices} />
      <h2>Waiting for sign-off</h2>
      {p.pending === null ? (
        <p class="muted">Sign-offs could not be read.</p>
      ) : !p.pending.length ? (
        <p class="muted" id="none-pending">
          Nothing waits for sign-off.
        </p>
      ) : (
        <div id="pending">
          {p.pending.map((s) => (
            <SignoffCard s={s} byId={p.byId} session={session} docs={p.docs} draft={p.draft?.run === s.workflowId ? p.draft : undefined} />
          ))}
        </div>
      )}
      <h2>Recently decided</h2>
      {p.recent?.length ? (
        <table id="decided">
          <thead>
            <tr>
              <th>Run</th>
              <th>Decision</th>
              <th>By</th>
              <th>Statement</th>
            </tr>
          </thead>
          <tbody>
            {p.recent.map((s) => (
              <tr data-run={s.workflowId} data-status={s.status}>
                <td>
                  {clean(s.runbook, 100)} <TemporalLink url={s.url} label={clean(s.workflowId, 300)} />
                  <br />
                  <span class="muted small">started by {clean(s.requestedBy, 200)}</span>
                </td>
                <td>
                  <StateBadge state={s.status} /> <When at={s.decidedAt} />
                </td>
                <td>{clean(s.decidedBy ?? '—', 200)}</td>
                <td>{s.statement ? <pre>{clean(s.statement, 4000)}</pre> : <span class="muted">—</span>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : (
        <p class="muted">None.</p>
      )}
    </Layout>
  );
}

// ---------------------------------------------------------------- docs, errors

export function DocPage(p: PageBase & { name: string; names: string[]; body: Child }) {
  return (
    <Layout title={p.name === 'README' ? 'Runbook docs' : `Runbook: ${p.name}`} nonce={p.nonce} session={p.session}>
      <p class="small">
        {p.names.map((n, i) => (
          <>
            {i ? ' · ' : ''}
            {n === p.name ? <strong>{n}</strong> : <a href={`/console/docs/${n}`}>{n}</a>}
          </>
        ))}
      </p>
      {p.body}
    </Layout>
  );
}

export function MessagePage(p: PageBase & { title: string }) {
  return (
    <Layout title={p.title} nonce={p.nonce} session={p.session}>
      <Notices notices={p.notices} />
      <p>
        <a href="/console">Back to the fleet</a>
      </p>
    </Layout>
  );
}
