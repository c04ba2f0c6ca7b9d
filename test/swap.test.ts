import { spawnSync } from 'node:child_process';
import { eq } from 'drizzle-orm';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backups, instances, signoffs } from '../db/schema/index.js';
import { FaultPoints } from '../activities/faults.js';
import type { ProductionRestoreInput } from '../workflows/contract.js';
import { runSearchAttributes } from '../lib/temporal.js';
import {
  armFault,
  backupNow,
  canConnect,
  contentChecksums,
  createInstance,
  leftovers,
  finishedRun,
  openContext,
  runActivity,
  seedMixed,
  uniqueName,
  withInstanceDb,
  type TestContext,
} from './helpers.js';
import { recordHistory } from './record.js';
import { APPROVER, SELF_APPROVER, VIEWER } from './tokens.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx.close();
});

const row = async (id: string) => (await ctx.db.select().from(instances).where(eq(instances.id, id)))[0]!;

/** A production instance with a backup of content A, then changed to A'; and a sandbox with its own content. */
async function pair(prefix: string) {
  const prodName = uniqueName(`${prefix}p`);
  const sbxName = uniqueName(`${prefix}s`);
  const prod = await createInstance(ctx, prodName, { type: 'production' });
  const sbx = await createInstance(ctx, sbxName);
  await seedMixed(ctx, prodName, 500);
  const atBackup = await contentChecksums(ctx, prodName);
  const { row: backup } = await backupNow(ctx, prod.id, 'known good');
  await withInstanceDb(ctx, prodName, (sql) => sql`DELETE FROM invoices WHERE id < 100`); // the damage to undo
  await seedMixed(ctx, sbxName, 20);
  const sandboxBefore = await contentChecksums(ctx, sbxName);
  return { prod, sbx, prodName, sbxName, backup, atBackup, sandboxBefore };
}

const swap = (body: Record<string, unknown>, token?: string) => ctx.call('POST', '/v1/runbooks/production-restore', { body, token });

describe('production-restore swap', () => {
  it('restores production through the sandbox after the maintenance window: production ends production, active, with the backup data', async () => {
    const p = await pair('sw');
    const notBefore = new Date(Date.now() + 4_000).toISOString();
    const res = await swap({ production: p.prodName, sandbox: p.sbxName, backupId: p.backup.id, notBefore });
    expect(res.status).toBe(202);
    const id = res.body.run.workflowId;
    let waiting: any;
    for (const deadline = Date.now() + 10_000; Date.now() < deadline && !waiting; await sleep(100)) {
      const run = (await ctx.call('GET', `/v1/runs/${id}`)).body;
      if (run.waiting?.kind === 'window') waiting = run;
    }
    expect(waiting).toMatchObject({ step: 'wait-for-window', waiting: { kind: 'window', until: notBefore } });
    expect(await contentChecksums(ctx, p.sbxName)).toEqual(p.sandboxBefore); // nothing touched before the window

    const run = await finishedRun(ctx, id);
    expect(run).toMatchObject({ status: 'completed', result: { outcome: 'completed', backupId: p.backup.id, temporaryBackups: { deleted: false } } });
    expect(run.stepsDone).toEqual([
      'lock-instances',
      'wait-for-window',
      'stop-writes-on-production',
      'backup-production:record-backup',
      'backup-production:dump',
      'backup-production:offsite-copy',
      'backup-sandbox:record-backup',
      'backup-sandbox:dump',
      'backup-sandbox:offsite-copy',
      'sandbox:check-rules',
      'sandbox:verify-archive',
      'sandbox:restore-staging',
      'sandbox:swap',
      'switch-production-to-sandbox',
      'production:check-rules',
      'production:verify-archive',
      'production:restore-staging',
      'production:swap',
      'switch-back-to-production',
      'resume-production',
    ]);
    expect(await row(p.prod.id)).toMatchObject({ type: 'production', state: 'active', servedBy: null, lockedByRun: null });
    expect(await row(p.sbx.id)).toMatchObject({ type: 'sandbox', state: 'suspended', lockedByRun: null });
    expect(await contentChecksums(ctx, p.prodName)).toEqual(p.atBackup);
    await ctx.call('POST', `/v1/instances/${p.sbx.id}/resume`);
    expect(await contentChecksums(ctx, p.sbxName)).toEqual(p.atBackup);
    // The step-1 backups are kept, labelled so an operator finds them.
    const temp = await ctx.db.select().from(backups).where(eq(backups.id, run.result.temporaryBackups.production));
    expect(temp[0]).toMatchObject({ kind: 'on_demand', status: 'completed', label: `production-restore ${id}: production before the swap` });
    await recordHistory(ctx, id, 'production-restore');
  });

  it('resets and retries production once when its restore fails, and can delete the temporary backups', async () => {
    const p = await pair('rt');
    armFault(ctx, FaultPoints.restoreStaging, p.prod.id, 1);
    const res = await swap({ production: p.prod.id, sandbox: p.sbx.id, backupId: p.backup.id, deleteTemporaryBackups: true });
    const run = await finishedRun(ctx, res.body.run.workflowId);
    expect(run).toMatchObject({ status: 'completed', result: { outcome: 'completed', temporaryBackups: { deleted: true } } });
    expect(run.stepsDone).toEqual(expect.arrayContaining(['reset-production', 'production-retry:swap', 'delete-temporary-backups']));
    expect(run.warnings.join(' ')).toMatch(/restoring production failed \(production\): injected fault/);
    expect(await row(p.prod.id)).toMatchObject({ type: 'production', state: 'active' });
    expect(await contentChecksums(ctx, p.prodName)).toEqual(p.atBackup);
    for (const b of [run.result.temporaryBackups.production, run.result.temporaryBackups.sandbox]) {
      expect(await ctx.db.select().from(backups).where(eq(backups.id, b))).toEqual([]);
    }
  });

  it('when production fails twice, serves its endpoint from the sandbox copy, marks it degraded, and still puts its type back', async () => {
    const p = await pair('dg');
    armFault(ctx, FaultPoints.restoreStaging, p.prod.id, 2);
    const res = await swap({ production: p.prod.id, sandbox: p.sbx.id, backupId: p.backup.id, deleteTemporaryBackups: true });
    const run = await finishedRun(ctx, res.body.run.workflowId);
    expect(run).toMatchObject({ status: 'completed', result: { outcome: 'degraded', temporaryBackups: { deleted: false } } });
    expect(run.result.next).toMatch(/serves its endpoint/);
    expect(run.stepsDone).toEqual(expect.arrayContaining(['switch-production-to-sandbox', 'reset-production', 'fallback-serve-from-sandbox', 'switch-back-to-production']));
    expect(await row(p.prod.id)).toMatchObject({ type: 'production', state: 'degraded', servedBy: p.sbx.id, lockedByRun: null });
    expect(await row(p.sbx.id)).toMatchObject({ type: 'sandbox', state: 'active' });
    const endpoint = await ctx.call('GET', `/v1/instances/${p.prod.id}/endpoint`);
    expect(endpoint.body).toMatchObject({ servedBy: { id: p.sbx.id, name: p.sbxName }, acceptsConnections: true });
    expect(endpoint.body.endpoint).toMatch(new RegExp(`^postgres://postgres@127\\.0\\.0\\.1:\\d+/${p.sbxName}$`));
    expect(await canConnect(ctx, p.sbxName)).toBe(true);
    expect(await canConnect(ctx, p.prodName)).toBe(false); // nobody writes into production's own, unread database
    expect(await contentChecksums(ctx, p.sbxName)).toEqual(p.atBackup);
    await recordHistory(ctx, res.body.run.workflowId, 'production-restore-degraded');
    // The sandbox now holds production's live data: nothing may overwrite, reset, retype or delete it.
    for (const [method, path, body] of [
      ['POST', '/v1/runbooks/restore', { backupId: p.backup.id, target: { instance: p.sbx.id } }],
      ['POST', '/v1/runbooks/reset', { instance: p.sbx.id }],
      ['PATCH', `/v1/instances/${p.sbx.id}`, { type: 'production' }],
      ['DELETE', `/v1/instances/${p.sbx.id}`, undefined],
    ] as const) {
      const refused = await ctx.call(method, path, { body });
      expect(refused.status, `${method} ${path}`).toBe(409);
      expect(refused.body.error.code).toBe('serving_production');
    }
    expect(await contentChecksums(ctx, p.sbxName)).toEqual(p.atBackup);

  });

  it('repairs a degraded production from the sandbox serving it, keeping the writes made there, then serves production again', async () => {
    const p = await pair('rp');
    armFault(ctx, FaultPoints.restoreStaging, p.prod.id, 2);
    const degraded = await swap({ production: p.prod.id, sandbox: p.sbx.id, backupId: p.backup.id });
    expect((await finishedRun(ctx, degraded.body.run.workflowId)).result.outcome).toBe('degraded');
    // Clients wrote to the sandbox copy while it served production.
    await withInstanceDb(ctx, p.sbxName, (sql) => sql`INSERT INTO invoices (number, note) SELECT nextval('invoice_numbers'), 'written while degraded' FROM generate_series(1, 25)`);
    const live = await contentChecksums(ctx, p.sbxName);

    const withBackup = await swap({ production: p.prod.id, sandbox: p.sbx.id, backupId: p.backup.id });
    expect(withBackup.status).toBe(400);
    expect(withBackup.body.error.issues[0].field).toBe('backupId');
    const other = await createInstance(ctx, uniqueName('rpo'));
    const wrongSandbox = await swap({ production: p.prod.id, sandbox: other.id });
    expect(wrongSandbox.status).toBe(409);

    const res = await swap({ production: p.prod.id, sandbox: p.sbx.id });
    expect(res.status).toBe(202);
    const run = await finishedRun(ctx, res.body.run.workflowId);
    expect(run).toMatchObject({ status: 'completed', result: { outcome: 'completed', backupId: run.result.temporaryBackups.sandbox } });
    expect(run.stepsDone).toEqual(expect.arrayContaining(['stop-writes-on-sandbox', 'production:swap', 'serve-from-production', 'resume-production']));
    expect(run.stepsDone).not.toContain('sandbox:swap');
    expect(await row(p.prod.id)).toMatchObject({ type: 'production', state: 'active', servedBy: null });
    expect(await row(p.sbx.id)).toMatchObject({ state: 'suspended' });
    expect(await canConnect(ctx, p.sbxName)).toBe(false); // nobody writes where nobody reads
    expect(await contentChecksums(ctx, p.prodName)).toEqual(live);
    const endpoint = await ctx.call('GET', `/v1/instances/${p.prod.id}/endpoint`);
    expect(endpoint.body).toMatchObject({ servedBy: null, acceptsConnections: true });
    expect(endpoint.body.endpoint).toMatch(new RegExp(`/${p.prodName}$`));
    await recordHistory(ctx, res.body.run.workflowId, 'production-restore-repair');
  });
});

describe('control numbers in the swap', () => {
  it('leaves production suspended when its sequences would run backwards, and resumes it when they are advanced', async () => {
    const p = await pair('sq');
    await withInstanceDb(ctx, p.prodName, (sql) => sql`INSERT INTO invoices (number) SELECT nextval('invoice_numbers') FROM generate_series(1, 50)`);
    const held = await swap({ production: p.prod.id, sandbox: p.sbx.id, backupId: p.backup.id });
    const run = await finishedRun(ctx, held.body.run.workflowId);
    expect(run).toMatchObject({ status: 'completed', result: { outcome: 'completed' } });
    expect(run.result.next).toMatch(/left suspended because its sequences run backwards/);
    expect(run.warnings.join(' ')).toMatch(/public\.invoice_numbers/);
    expect(run.stepsDone).not.toContain('resume-production');
    expect(await row(p.prod.id)).toMatchObject({ type: 'production', state: 'suspended' });

    await ctx.call('POST', `/v1/instances/${p.prod.id}/resume`);
    await withInstanceDb(ctx, p.prodName, (sql) => sql`INSERT INTO invoices (number) SELECT nextval('invoice_numbers') FROM generate_series(1, 50)`);
    const issued = await withInstanceDb(ctx, p.prodName, async (sql) => (await sql<{ n: string }[]>`SELECT last_value::text AS n FROM invoice_numbers`)[0]!.n);
    const advanced = await swap({ production: p.prod.id, sandbox: p.sbx.id, backupId: p.backup.id, advanceSequences: true });
    const run2 = await finishedRun(ctx, advanced.body.run.workflowId);
    expect(run2.stepsDone).toContain('resume-production');
    expect(await row(p.prod.id)).toMatchObject({ state: 'active' });
    const next = await withInstanceDb(ctx, p.prodName, async (sql) => (await sql<{ n: string }[]>`SELECT nextval('invoice_numbers')::text AS n`)[0]!.n);
    expect(BigInt(next)).toBeGreaterThan(BigInt(issued));
  });
});

describe('swap cancelled half way', () => {
  it('undoes what it did: production keeps its type and data, the sandbox gets its own data back', async () => {
    const prodName = uniqueName('cxp');
    const sbxName = uniqueName('cxs');
    const prod = await createInstance(ctx, prodName, { type: 'production' });
    const sbx = await createInstance(ctx, sbxName);
    const url = new URL(ctx.cfg.REGIONS[0]!.postgresUrl);
    const init = spawnSync(`${ctx.cfg.PG_BIN_DIR}/pgbench`, ['-i', '-q', '-s', '25', '-h', url.hostname, '-p', url.port, '-U', 'postgres', prodName], { encoding: 'utf8' });
    expect(init.status).toBe(0);
    const prodBefore = await contentChecksums(ctx, prodName);
    await seedMixed(ctx, sbxName, 20);
    const sandboxBefore = await contentChecksums(ctx, sbxName);

    const res = await swap({ production: prod.id, sandbox: sbx.id });
    const id = res.body.run.workflowId;
    for (const deadline = Date.now() + 180_000; ; await sleep(200)) {
      const run = (await ctx.call('GET', `/v1/runs/${id}`)).body;
      if (run.step === 'production:restore-staging') break;
      if (run.status !== 'running' || Date.now() > deadline) throw new Error(`never reached the production restore: ${JSON.stringify(run)}`);
    }
    expect(await row(prod.id)).toMatchObject({ type: 'sandbox' }); // step 3 done
    expect((await ctx.call('POST', `/v1/runs/${id}/cancel`)).status).toBe(202);
    const run = await finishedRun(ctx, id);
    expect(run.status).toBe('cancelled');
    expect(await row(prod.id)).toMatchObject({ type: 'production', state: 'active', lockedByRun: null });
    expect(await row(sbx.id)).toMatchObject({ type: 'sandbox', state: 'active', lockedByRun: null });
    expect(await contentChecksums(ctx, prodName)).toEqual(prodBefore);
    expect(await contentChecksums(ctx, sbxName)).toEqual(sandboxBefore);
    expect(await leftovers(ctx, `${prodName}__`)).toEqual([]);
    expect(await leftovers(ctx, `${sbxName}__`)).toEqual([]);
  });
});

describe('sign-off', () => {
  it('holds the swap until a second person approves; refuses viewers, operators and self-approval', async () => {
    const p = await pair('so');
    const res = await swap({ production: p.prodName, sandbox: p.sbxName, backupId: p.backup.id, requireSignoff: true });
    const id = res.body.run.workflowId;
    let pending: any[] = [];
    for (const deadline = Date.now() + 20_000; Date.now() < deadline && !pending.length; await sleep(100)) {
      pending = (await ctx.call('GET', `/v1/signoffs?status=pending&run=${id}`)).body.signoffs;
    }
    expect(pending).toHaveLength(1);
    expect(pending[0]).toMatchObject({ workflowId: id, requestedBy: 'olivia.operator', instanceIds: [p.prod.id, p.sbx.id], status: 'pending' });
    const status = (await ctx.call('GET', `/v1/runs/${id}`)).body;
    expect(status).toMatchObject({ step: 'signoff', waiting: { kind: 'signoff', until: pending[0].deadline } });
    // The instances are held while it waits.
    const busy = await ctx.call('POST', `/v1/instances/${p.sbx.id}/backups`, { body: { label: 'meanwhile' } });
    expect(busy.status).toBe(409);
    expect(busy.body.error.run.workflowId).toBe(id);
    expect((await ctx.call('PATCH', `/v1/instances/${p.prod.id}`, { body: { type: 'sandbox' } })).status).toBe(409);

    const statement = 'Checked the backup and the window.\nApproved.';
    expect((await ctx.call('POST', `/v1/runs/${id}/signoff`, { token: VIEWER, body: { decision: 'approve', statement } })).status).toBe(403);
    expect((await ctx.call('POST', `/v1/runs/${id}/signoff`, { body: { decision: 'approve', statement } })).status).toBe(403); // operator only
    const self = await ctx.call('POST', `/v1/runs/${id}/signoff`, { token: SELF_APPROVER, body: { decision: 'approve', statement } });
    expect(self.status).toBe(403);
    expect(self.body.error.code).toBe('four_eyes');
    const nul = await ctx.call('POST', `/v1/runs/${id}/signoff`, { token: APPROVER, body: { decision: 'approve', statement: 'ok\u0000' } });
    expect(nul.status).toBe(400);
    expect(nul.body.error.issues[0].field).toBe('statement');
    expect(await contentChecksums(ctx, p.sbxName)).toEqual(p.sandboxBefore); // still nothing touched

    const ok = await ctx.call('POST', `/v1/runs/${id}/signoff`, { token: APPROVER, body: { decision: 'approve', statement } });
    expect(ok.status).toBe(200);
    expect(ok.body.signoff).toMatchObject({ status: 'approved', decidedBy: 'anna.approver', statement });
    const run = await finishedRun(ctx, id);
    expect(run).toMatchObject({ status: 'completed', result: { outcome: 'completed' } });
    expect(await contentChecksums(ctx, p.prodName)).toEqual(p.atBackup);
    const trail = (await ctx.call('GET', `/v1/audit?action=signoff.approved&actor=anna.approver`)).body.events;
    expect(trail.find((e: any) => e.subject === pending[0].id)?.details.statement).toBe(statement);
    await recordHistory(ctx, id, 'production-restore-signoff');
  });

  it('ends rejected with nothing changed when the approver refuses', async () => {
    const p = await pair('rj');
    const prodBefore = await contentChecksums(ctx, p.prodName);
    const res = await swap({ production: p.prod.id, sandbox: p.sbx.id, requireSignoff: true });
    const id = res.body.run.workflowId;
    await waitForPending(id);
    const no = await ctx.call('POST', `/v1/runs/${id}/signoff`, { token: APPROVER, body: { decision: 'reject', statement: 'Not during quarter close.' } });
    expect(no.status).toBe(200);
    const run = await finishedRun(ctx, id);
    expect(run).toMatchObject({ status: 'completed', result: { outcome: 'rejected' } });
    expect(run.result.next).toMatch(/nothing was changed/);
    expect(await row(p.prod.id)).toMatchObject({ type: 'production', state: 'active', lockedByRun: null });
    expect(await row(p.sbx.id)).toMatchObject({ type: 'sandbox', state: 'active', lockedByRun: null });
    expect(await contentChecksums(ctx, p.prodName)).toEqual(prodBefore);
    expect(await contentChecksums(ctx, p.sbxName)).toEqual(p.sandboxBefore);
    expect((await ctx.db.select().from(backups).where(eq(backups.instanceId, p.sbx.id)))).toEqual([]);
    expect((await ctx.call('POST', `/v1/runs/${id}/signoff`, { token: APPROVER, body: { decision: 'approve', statement: 'late' } })).status).toBe(409);
    await recordHistory(ctx, id, 'production-restore-rejected');
  });

  it('ends expired, changing nothing, when nobody signs off before the deadline', async () => {
    const p = await pair('ex');
    const workflowId = `production-restore-expiry-${p.prod.id}`;
    // Started directly with a 5-second deadline and a reminder every second (the API's minimum is a minute); the run takes the locks itself.
    const input: ProductionRestoreInput = { productionId: p.prod.id, sandboxId: p.sbx.id, requireSignoff: true, signoffTimeoutMinutes: 5 / 60, signoffRemindEveryMinutes: 1 / 60, deleteTemporaryBackups: false, jobs: 1, advanceSequences: false, requestedBy: 'olivia.operator' };
    const handle = await ctx.temporal.workflow.start('productionRestoreWorkflow', { workflowId, taskQueue: ctx.cfg.TEMPORAL_TASK_QUEUE, args: [input], typedSearchAttributes: runSearchAttributes(p.prod.id, 'production-restore') });
    expect(await handle.result()).toMatchObject({ outcome: 'expired' });
    const [gate] = await ctx.db.select().from(signoffs).where(eq(signoffs.workflowId, workflowId));
    expect(gate).toMatchObject({ status: 'expired', decidedBy: null });
    const trail = (await ctx.call('GET', `/v1/audit?instance=${p.prod.id}`)).body.events.filter((e: { subject: string }) => e.subject === gate!.id).map((e: { action: string }) => e.action);
    expect(trail.filter((a: string) => a === 'signoff.reminder').length).toBeGreaterThanOrEqual(3);
    expect(trail).toEqual(expect.arrayContaining(['signoff.requested', 'signoff.expired']));
    expect(await row(p.prod.id)).toMatchObject({ type: 'production', state: 'active', lockedByRun: null });
    expect(await contentChecksums(ctx, p.sbxName)).toEqual(p.sandboxBefore);
  });

  it('cancelled while it waits, records the gate cancelled and gives both instances back', async () => {
    const p = await pair('cn');
    const res = await swap({ production: p.prod.id, sandbox: p.sbx.id, requireSignoff: true });
    const id = res.body.run.workflowId;
    await waitForPending(id);
    expect((await ctx.call('POST', `/v1/runs/${id}/cancel`)).status).toBe(202);
    expect((await finishedRun(ctx, id)).status).toBe('cancelled');
    const [gate] = await ctx.db.select().from(signoffs).where(eq(signoffs.workflowId, id));
    expect(gate!.status).toBe('cancelled');
    expect(await row(p.prod.id)).toMatchObject({ type: 'production', lockedByRun: null });
    expect(await row(p.sbx.id)).toMatchObject({ lockedByRun: null });
  });
});

describe('abandoned sign-offs', () => {
  it('closes the sign-off of a run that was terminated while it waited, so pending lists only what can still be approved', async () => {
    const p = await pair('ab');
    const res = await swap({ production: p.prod.id, sandbox: p.sbx.id, requireSignoff: true });
    const id = res.body.run.workflowId;
    await waitForPending(id);
    await ctx.temporal.workflow.getHandle(id).terminate('test: a run killed while it waited');
    expect((await ctx.call('GET', `/v1/signoffs?status=pending&run=${id}`)).body.signoffs).toHaveLength(1);
    expect(await runActivity(`sweep-${p.prod.id}`, ctx.activities.closeAbandonedSignoffs)).toBeGreaterThanOrEqual(1);
    expect((await ctx.call('GET', `/v1/signoffs?status=pending&run=${id}`)).body.signoffs).toEqual([]);
    const [gate] = await ctx.db.select().from(signoffs).where(eq(signoffs.workflowId, id));
    expect(gate!.status).toBe('cancelled');
  });
});

describe('type switch', () => {
  it('switches the type and raises the edition, never lowers it', async () => {
    const inst = await createInstance(ctx, uniqueName('ts'), { edition: 'standard' });
    const up = await ctx.call('PATCH', `/v1/instances/${inst.id}`, { body: { type: 'production', edition: 'premium' } });
    expect(up.status).toBe(200);
    expect(up.body).toMatchObject({ type: 'production', edition: 'premium' });
    const down = await ctx.call('PATCH', `/v1/instances/${inst.id}`, { body: { edition: 'basic' } });
    expect(down.status).toBe(422);
    expect(down.body.error.code).toBe('edition_lowered');
    expect((await ctx.call('PATCH', `/v1/instances/${inst.id}`, { body: {} })).status).toBe(400);
    expect((await ctx.call('PATCH', `/v1/instances/${inst.id}`, { token: VIEWER, body: { type: 'sandbox' } })).status).toBe(403);
    expect(await row(inst.id)).toMatchObject({ type: 'production', edition: 'premium' });
  });
});

async function waitForPending(workflowId: string) {
  for (const deadline = Date.now() + 20_000; Date.now() < deadline; await sleep(100)) {
    const rows = await ctx.db.select().from(signoffs).where(eq(signoffs.workflowId, workflowId));
    if (rows[0]?.status === 'pending') return rows[0];
  }
  throw new Error(`run ${workflowId} never waited for sign-off`);
}
