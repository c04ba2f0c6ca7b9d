import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInstance, openContext, uniqueName, type TestContext } from './helpers.js';
import { APPROVER } from './tokens.js';

/**
 * Every route, every string it takes, with hostile values: control
 * characters, lone surrogates, huge strings, SQL and query-language
 * metacharacters. None may ever get a 500; control characters get a 400.
 */
let ctx: TestContext;
let inst: { id: string; name: string };
beforeAll(async () => {
  ctx = await openContext();
  inst = await createInstance(ctx, uniqueName('hostile'));
});
afterAll(async () => {
  await ctx.close();
});

const CONTROL = ['\u0000', 'a\u0000b', 'bell\u0007', 'c1\u0085', 'esc\u001b[31m'];
const OTHER = ['\ud800', 'x'.repeat(100_000), "'; DROP TABLE instances; --", "a' OR ExecutionStatus = 'Running", '%00', '../../etc/passwd', '\u202eevil', '😀'];

/** A request with `value` put at one place; `where` names it for the failure message. */
interface Probe {
  where: string;
  method: string;
  path: (v: string) => string;
  body?: (v: string) => unknown;
  token?: string;
}

/** URL-encodes; a lone surrogate cannot be, so it goes as the raw (invalid UTF-8) bytes a hostile client would send. */
const e = (v: string) => {
  try {
    return encodeURIComponent(v);
  } catch {
    return '%ED%A0%80';
  }
};
const probes = (): Probe[] => [
  { where: 'POST /instances name', method: 'POST', path: () => '/v1/instances', body: (v) => ({ name: v, type: 'sandbox', edition: 'basic', homeRegion: 'primary' }) },
  { where: 'POST /instances homeRegion', method: 'POST', path: () => '/v1/instances', body: (v) => ({ name: 'h-x', type: 'sandbox', edition: 'basic', homeRegion: v }) },
  { where: 'POST backups label', method: 'POST', path: () => '/v1/instances/no-such-instance/backups', body: (v) => ({ label: v }) },
  { where: 'PATCH backup label', method: 'PATCH', path: () => '/v1/backups/bk-none', body: (v) => ({ label: v }) },
  { where: 'restore backupId', method: 'POST', path: () => '/v1/runbooks/restore', body: (v) => ({ backupId: v, target: { instance: inst.id } }) },
  { where: 'restore target.instance', method: 'POST', path: () => '/v1/runbooks/restore', body: (v) => ({ backupId: 'bk-none', target: { instance: v } }) },
  { where: 'restore newInstance.name', method: 'POST', path: () => '/v1/runbooks/restore', body: (v) => ({ backupId: 'bk-none', target: { newInstance: { name: v, edition: 'basic', region: 'primary' } } }) },
  { where: 'restore newInstance.region', method: 'POST', path: () => '/v1/runbooks/restore', body: (v) => ({ backupId: 'bk-none', target: { newInstance: { name: 'n-x', edition: 'basic', region: v } } }) },
  { where: 'reset instance', method: 'POST', path: () => '/v1/runbooks/reset', body: (v) => ({ instance: v }) },
  { where: 'reset backupId', method: 'POST', path: () => '/v1/runbooks/reset', body: (v) => ({ instance: 'no-such-instance', backupId: v }) },
  { where: 'swap production', method: 'POST', path: () => '/v1/runbooks/production-restore', body: (v) => ({ production: v, sandbox: inst.id }) },
  { where: 'swap notBefore', method: 'POST', path: () => '/v1/runbooks/production-restore', body: (v) => ({ production: 'no-such', sandbox: inst.id, notBefore: v }) },
  { where: 'signoff statement', method: 'POST', path: () => '/v1/runs/no-such-run/signoff', body: (v) => ({ decision: 'approve', statement: v }), token: APPROVER },
  { where: 'signoff run id', method: 'POST', path: (v) => `/v1/runs/${e(v)}/signoff`, body: () => ({ decision: 'approve', statement: 'ok' }), token: APPROVER },
  { where: 'PATCH instance id', method: 'PATCH', path: (v) => `/v1/instances/${e(v)}`, body: () => ({ type: 'sandbox' }) },
  { where: 'GET instance', method: 'GET', path: (v) => `/v1/instances/${e(v)}` },
  { where: 'GET endpoint', method: 'GET', path: (v) => `/v1/instances/${e(v)}/endpoint` },
  { where: 'POST resume', method: 'POST', path: (v) => `/v1/instances/${e(v)}/resume` },
  { where: 'GET backup', method: 'GET', path: (v) => `/v1/backups/${e(v)}` },
  { where: 'GET run', method: 'GET', path: (v) => `/v1/runs/${e(v)}` },
  { where: 'POST cancel', method: 'POST', path: (v) => `/v1/runs/${e(v)}/cancel` },
  { where: 'GET runs ?instance', method: 'GET', path: (v) => `/v1/runs?instance=${e(v)}` },
  { where: 'GET runs ?runbook', method: 'GET', path: (v) => `/v1/runs?runbook=${e(v)}` },
  { where: 'GET signoffs ?run', method: 'GET', path: (v) => `/v1/signoffs?run=${e(v)}` },
  { where: 'GET audit ?actor', method: 'GET', path: (v) => `/v1/audit?actor=${e(v)}` },
  { where: 'GET instances ?state', method: 'GET', path: (v) => `/v1/instances?state=${e(v)}` },
  { where: 'GET schedule', method: 'GET', path: (v) => `/v1/instances/${e(v)}/backup-schedule` },
  { where: 'dry-run failover reason', method: 'POST', path: () => '/v1/runbooks/region-failover', body: (v) => ({ region: 'primary', dryRun: true, reason: v }) },
  { where: 'dry-run failover region', method: 'POST', path: () => '/v1/runbooks/region-failover', body: (v) => ({ region: v, dryRun: true }) },
  { where: 'GET divergence', method: 'GET', path: (v) => `/v1/instances/${e(v)}/divergence` },
  { where: 'GET divergence ?failover', method: 'GET', path: (v) => `/v1/instances/${inst.id}/divergence?failover=${e(v)}` },
  { where: 'replay statement', method: 'POST', path: () => `/v1/instances/${inst.id}/divergence/replay`, body: (v) => ({ all: true, statement: v }) },
  { where: 'replay rows', method: 'POST', path: () => `/v1/instances/${inst.id}/divergence/replay`, body: (v) => ({ rows: [v], statement: 'ok' }) },
  { where: 'replay failover', method: 'POST', path: () => `/v1/instances/${inst.id}/divergence/replay`, body: (v) => ({ all: true, statement: 'ok', failover: v }) },
  { where: 'replay instance', method: 'POST', path: (v) => `/v1/instances/${e(v)}/divergence/replay`, body: () => ({ all: true, statement: 'ok' }) },
];

describe('hostile input', () => {
  it('never gets a 500 on any route, and control characters get a 400 before anything is looked up', async () => {
    const failures: string[] = [];
    for (const p of probes()) {
      for (const v of [...CONTROL, ...OTHER]) {
        const res = await ctx.call(p.method, p.path(v), { body: p.body?.(v), token: p.token });
        const shown = JSON.stringify(v.length > 40 ? `${v.slice(0, 20)}…(${v.length})` : v);
        if (res.status >= 500) failures.push(`${p.where} ${shown}: ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
        if (CONTROL.includes(v) && res.status !== 400) failures.push(`${p.where} ${shown}: expected 400, got ${res.status}`);
        if (res.status >= 400 && typeof res.body !== 'object') failures.push(`${p.where} ${shown}: error body is not JSON`);
      }
    }
    expect(failures).toEqual([]);
    // The refused requests changed nothing: the one instance is as it was, and no run was started on it.
    const runs = await ctx.call('GET', `/v1/runs?instance=${inst.id}`);
    expect(runs.body.runs.map((r: { runbook: string }) => r.runbook)).toEqual(['provision-instance']);
  });
});
