import type { Client } from '@temporalio/client';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../api/app.js';
import { backupNow, createInstance, openContext, uniqueName, type TestContext } from './helpers.js';
import { OPERATOR } from './tokens.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx.close();
});

/** The real Temporal client, counting the status queries the API sends through it (each one replays history on a worker when the run is closed). */
function countingClient(client: Client) {
  const count = { queries: 0 };
  const bind = <T extends object>(target: T, key: string | symbol) => {
    const v = Reflect.get(target, key) as unknown;
    return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
  };
  const workflow = new Proxy(client.workflow, {
    get(w, key) {
      if (key !== 'getHandle') return bind(w, key);
      return (...args: Parameters<Client['workflow']['getHandle']>) => {
        const handle = w.getHandle(...args);
        return new Proxy(handle, {
          get(h, k) {
            if (k === 'query') count.queries++;
            return bind(h, k);
          },
        });
      };
    },
  });
  const proxied = new Proxy(client, { get: (c, key) => (key === 'workflow' ? workflow : bind(c, key)) });
  return { client: proxied, count };
}

describe('run reads under load', () => {
  it('answers 200 concurrent reads of a finished run identically, replaying its history once', async () => {
    const inst = await createInstance(ctx, uniqueName('reads'));
    const { response } = await backupNow(ctx, inst.id, 'read me');
    const { client, count } = countingClient(ctx.temporal);
    const app = createApp({ ...ctx.deps(), temporal: client });
    const read = async () => {
      const res = await app.request(`/v1/runs/${response.run.workflowId}`, { headers: { authorization: `Bearer ${OPERATOR}` } });
      return { status: res.status, body: await res.json() };
    };
    const answers = await Promise.all(Array.from({ length: 200 }, read));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    expect(new Set(answers.map((a) => JSON.stringify(a.body))).size).toBe(1);
    expect(answers[0]!.body).toMatchObject({ status: 'completed', step: 'completed', stepsDone: ['lock-instance', 'record-backup', 'dump', 'offsite-copy', 'retention'] });
    expect(count.queries).toBe(1);
    await read();
    expect(count.queries).toBe(1);
  });

  it('reads a running run anew at most every half second, however many read it, so its step and progress are at most that old', async () => {
    const inst = await createInstance(ctx, uniqueName('live'));
    const sbx = await createInstance(ctx, uniqueName('lives'));
    await ctx.call('PATCH', `/v1/instances/${inst.id}`, { body: { type: 'production' } });
    const started = await ctx.call('POST', '/v1/runbooks/production-restore', { body: { production: inst.id, sandbox: sbx.id, requireSignoff: true } });
    const id = started.body.run.workflowId;
    const { client, count } = countingClient(ctx.temporal);
    const app = createApp({ ...ctx.deps(), temporal: client });
    const read = async () => (await app.request(`/v1/runs/${id}`, { headers: { authorization: `Bearer ${OPERATOR}` } })).json();
    for (const deadline = Date.now() + 20_000; (await read()).step !== 'signoff'; ) if (Date.now() > deadline) throw new Error('never waited');
    // Many readers of an open run cost the workers at most one status query per half second.
    await sleep(600);
    const before = count.queries;
    const answers = await Promise.all(Array.from({ length: 100 }, read));
    expect(answers.every((a) => a.step === 'signoff' && a.status === 'running')).toBe(true);
    expect(count.queries).toBe(before + 1);
    await read();
    expect(count.queries).toBe(before + 1);
    // ... and it is read anew once that half second is over.
    await sleep(600);
    await read();
    expect(count.queries).toBe(before + 2);
    await ctx.call('POST', `/v1/runs/${id}/cancel`);
    await ctx.temporal.workflow.getHandle(id).result().catch(() => {});
    await sleep(600);
    expect(await read()).toMatchObject({ status: 'cancelled' });
  });
});
