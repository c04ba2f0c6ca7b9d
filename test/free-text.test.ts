import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditEvents, backups } from '../db/schema/index.js';
import { backupNow, createInstance, openContext, uniqueName, type TestContext } from './helpers.js';
import { OPERATOR } from './tokens.js';

let ctx: TestContext;
let inst: { id: string; name: string };
beforeAll(async () => {
  ctx = await openContext();
  inst = await createInstance(ctx, uniqueName('freetext'));
});
afterAll(async () => {
  await ctx.close();
});

/** The ids of every run Temporal has for the instance. */
async function runsOf(instanceId: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const wf of ctx.temporal.workflow.list({ query: `InstanceId = '${instanceId}'` })) ids.push(wf.workflowId);
  return ids;
}

function expectRefused(res: { status: number; body: any }, field: string, rule: RegExp) {
  expect(res.status, JSON.stringify(res.body).slice(0, 300)).toBe(400);
  expect(res.body.error.code).toBe('validation_failed');
  const issue = (res.body.error.issues as { field: string; rule: string }[]).find((i) => i.field === field);
  expect(issue, JSON.stringify(res.body.error.issues)).toBeDefined();
  expect(issue!.rule).toMatch(rule);
}

const CONTROL = /control characters/;

describe('free text in a backup label', () => {
  const bad: [what: string, label: string, rule: RegExp][] = [
    ['NUL', 'a\u0000b', CONTROL],
    ['BEL', 'ring \u0007 the bell', CONTROL],
    ['a line break', 'two\nlines', CONTROL],
    ['a C1 control', 'a\u0085b', CONTROL],
    ['a lone surrogate', 'half \ud800 a pair', /lone surrogates/],
    ['10,000 characters', 'x'.repeat(10_000), /at most 200 characters/],
    ['1 MB', 'x'.repeat(1_000_000), /at most 200 characters/],
  ];

  it.each(bad)('refuses a label with %s: 400 naming label, no run, no backup, no audit entry', async (_what, label, rule) => {
    const res = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { body: { label } });
    expectRefused(res, 'label', rule);
    expect(await ctx.db.select().from(backups).where(eq(backups.instanceId, inst.id))).toEqual([]);
    const trail = await ctx.db.select({ action: auditEvents.action }).from(auditEvents).where(eq(auditEvents.instanceId, inst.id));
    expect(trail.map((a) => a.action)).toEqual(['instance.create']);
    expect(await runsOf(inst.id)).toEqual([`provision-instance-${inst.id}`]);
  });

  it('keeps a label with letters from any script, and emoji (surrogate pairs)', async () => {
    // Checked before any backup of this instance exists: the refusals above must have left nothing behind.
    expect(await runsOf(inst.id)).toEqual([`provision-instance-${inst.id}`]);
    const { row } = await backupNow(ctx, inst.id, '  avant la mise à jour — 更新前 🚀  ');
    expect(row.status).toBe('completed');
    expect(row.label).toBe('avant la mise à jour — 更新前 🚀');
  });

  it('refuses to relabel with a control character, and keeps the label', async () => {
    const { row } = await backupNow(ctx, inst.id, 'original label');
    for (const label of ['a\u0000b', 'tab\there', '\ud800', 'x'.repeat(201)]) {
      const res = await ctx.call('PATCH', `/v1/backups/${row.id}`, { body: { label } });
      expectRefused(res, 'label', /control characters|lone surrogates|at most 200/);
    }
    const [after] = await ctx.db.select().from(backups).where(eq(backups.id, row.id));
    expect(after!.label).toBe('original label');
    const relabels = await ctx.db.select().from(auditEvents).where(eq(auditEvents.subject, row.id));
    expect(relabels.map((a) => a.action)).not.toContain('backup.relabel');

    const ok = await ctx.call('PATCH', `/v1/backups/${row.id}`, { body: { label: 'keep: line one' } });
    expect(ok.status).toBe(200);
    expect(ok.body.label).toBe('keep: line one');
  });
});

describe('request bodies over 1 MB', () => {
  const fiveMb = JSON.stringify({ label: 'x'.repeat(5 * 1024 * 1024) });

  function expectTooLarge(status: number, body: any) {
    expect(status).toBe(413);
    expect(body.error.code).toBe('payload_too_large');
    expect(body.error.message).toMatch(/1 MB/);
  }

  it('are refused with 413 and the JSON error shape, before anything starts', async () => {
    // In-process, the body is a stream without a length: it is counted as it is read.
    const res = await ctx.call('POST', `/v1/instances/${inst.id}/backups`, { rawBody: fiveMb });
    expectTooLarge(res.status, res.body);
    const patched = await ctx.call('PATCH', '/v1/backups/bk-none', { rawBody: fiveMb });
    expectTooLarge(patched.status, patched.body);
    const labels = await ctx.db.select({ label: backups.label }).from(backups).where(eq(backups.instanceId, inst.id));
    expect(labels.every((b) => (b.label ?? '').length <= 200)).toBe(true);
  });

  it('are refused over real HTTP, whether the client sends a length or streams the body', async () => {
    const server: ServerType = await new Promise((resolve) => {
      const s = serve({ fetch: ctx.app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s));
    });
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/instances/${inst.id}/backups`;
      const headers = { authorization: `Bearer ${OPERATOR}`, 'content-type': 'application/json' };

      const withLength = await fetch(url, { method: 'POST', headers, body: fiveMb });
      expectTooLarge(withLength.status, await withLength.json());

      // Chunked, and it never ends: the answer must come once 1 MB has arrived, not when the client stops.
      const chunk = new TextEncoder().encode(`{"label":"${'x'.repeat(64 * 1024)}`);
      let sent = 0;
      const endless = new ReadableStream<Uint8Array>({
        pull(controller) {
          sent += chunk.length;
          controller.enqueue(sent === chunk.length ? chunk : new TextEncoder().encode('x'.repeat(64 * 1024)));
        },
      });
      const streamed = await fetch(url, { method: 'POST', headers, body: endless, duplex: 'half', signal: AbortSignal.timeout(30_000) } as RequestInit);
      expectTooLarge(streamed.status, await streamed.json());
      expect(sent).toBeLessThan(50 * 1024 * 1024);

      // Just under the limit still reaches validation, which names the field.
      const justUnder = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ label: 'x'.repeat(1_000_000) }) });
      expect(justUnder.status).toBe(400);
      expect((await justUnder.json()).error.issues[0].field).toBe('label');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    expect(await ctx.db.select().from(backups).where(eq(backups.instanceId, inst.id))).toHaveLength(2);
  });
});
