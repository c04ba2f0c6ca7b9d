import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInstance, openContext, uniqueName, type TestContext } from './helpers.js';
import { OPERATOR, VIEWER } from './tokens.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx?.close();
});

describe('region-failover and failback requests', () => {
  it('refuses bad input with a 400 naming the field, before any run starts', async () => {
    const cases: [string, unknown, RegExp][] = [
      ['/v1/runbooks/region-failover', { region: 'nowhere', reason: 'x' }, /region: must be one of the configured regions/],
      ['/v1/runbooks/region-failover', { region: 'primary' }, /reason/],
      ['/v1/runbooks/region-failover', { region: 'primary', reason: 'a\u0000b' }, /reason: must not contain control characters/],
      ['/v1/runbooks/region-failover', { region: 'primary', reason: 'x'.repeat(10_000) }, /reason: must be at most 500 characters/],
      ['/v1/runbooks/region-failover', { region: 'pri\u0007mary', reason: 'x' }, /region: must not contain control characters/],
      ['/v1/runbooks/region-failover', { region: 'primary', reason: 'x', mode: 'yolo' }, /mode/],
      ['/v1/runbooks/region-failover', { region: 'primary', reason: 'x', signoffTimeoutMinutes: 0 }, /signoffTimeoutMinutes/],
      ['/v1/runbooks/region-failover', { region: 'primary', reason: 'x', concurrency: 1000 }, /concurrency: must be at most 64/],
      ['/v1/runbooks/region-failover', { region: 'primary', reason: 'x', extra: true }, /extra|unrecognized/i],
      ['/v1/runbooks/region-failover', { region: 'primary', dryRun: 'yes' }, /dryRun/],
      ['/v1/runbooks/region-failover', { region: 'primary', dryRun: false }, /reason: is required/],
      ['/v1/runbooks/region-failover', { region: 'nowhere', dryRun: true }, /region: must be one of the configured regions/],
      ['/v1/runbooks/failback', { region: 'nowhere' }, /region: must be one of the configured regions/],
      ['/v1/runbooks/failback', { region: 'primary', instances: [] }, /instances: name at least one instance/],
      ['/v1/runbooks/failback', { region: 'primary', instances: ['x'.repeat(5000)] }, /instances/],
    ];
    for (const [path, body, message] of cases) {
      const res = await ctx.call('POST', path, { body });
      expect(res.status, `${path} ${JSON.stringify(body).slice(0, 80)}`).toBe(400);
      expect(res.body.error.message).toMatch(message);
    }
    const malformed = await ctx.call('POST', '/v1/runbooks/region-failover', { rawBody: '{"region":' });
    expect(malformed.status).toBe(400);
  });

  it('needs an operator token', async () => {
    expect((await ctx.call('POST', '/v1/runbooks/region-failover', { token: null, body: { region: 'primary', reason: 'x' } })).status).toBe(401);
    expect((await ctx.call('POST', '/v1/runbooks/region-failover', { token: VIEWER, body: { region: 'primary', reason: 'x' } })).status).toBe(403);
    expect((await ctx.call('POST', '/v1/runbooks/failback', { token: VIEWER, body: { region: 'primary' } })).status).toBe(403);
    expect((await ctx.call('GET', '/v1/regions', { token: null })).status).toBe(401);
  });

  it('salvage: an instance that never failed over has nothing diverged and nothing to replay; replay needs an operator', async () => {
    const name = uniqueName('nodiv');
    await createInstance(ctx, name);
    const div = await ctx.call('GET', `/v1/instances/${name}/divergence`, { token: VIEWER });
    expect(div.status).toBe(200);
    expect(div.body).toMatchObject({ name, failover: null, total: 0, tables: [] });
    expect((await ctx.call('GET', `/v1/instances/${name}/divergence?failover=nope`)).status).toBe(404);
    const body = { all: true, statement: 'nothing to do' };
    expect((await ctx.call('POST', `/v1/instances/${name}/divergence/replay`, { token: VIEWER, body })).status).toBe(403);
    expect((await ctx.call('POST', `/v1/instances/${name}/divergence/replay`, { token: null, body })).status).toBe(401);
    const none = await ctx.call('POST', `/v1/instances/${name}/divergence/replay`, { body });
    expect(none.status).toBe(404);
    expect(none.body.error.message).toMatch(/never failed over/);
    expect((await ctx.call('POST', `/v1/instances/${name}/divergence/replay`, { body: { all: true, rows: ['a'], statement: 'both' } })).body.error.message).toMatch(/not both/);
  });

  it('sets and clears an instance\'s RPO target, refusing a bad one', async () => {
    const name = uniqueName('rpo');
    await createInstance(ctx, name);
    const set = await ctx.call('PATCH', `/v1/instances/${name}`, { body: { rpoTargetSeconds: 7.5 } });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    expect(set.body.rpoTargetSeconds).toBe(7.5);
    for (const bad of [0, -1, 90_000, '5']) {
      const res = await ctx.call('PATCH', `/v1/instances/${name}`, { body: { rpoTargetSeconds: bad } });
      expect(res.status).toBe(400);
      expect(res.body.error.message).toMatch(/rpoTargetSeconds/);
    }
    expect((await ctx.call('PATCH', `/v1/instances/${name}`, { token: VIEWER, body: { rpoTargetSeconds: 3 } })).status).toBe(403);
    const cleared = await ctx.call('PATCH', `/v1/instances/${name}`, { body: { rpoTargetSeconds: null } });
    expect(cleared.body.rpoTargetSeconds).toBeNull();
  });

  it('a dry run of a region without production instances lists none and starts nothing', async () => {
    const res = await ctx.call('POST', '/v1/runbooks/region-failover', { token: OPERATOR, body: { region: 'secondary', dryRun: true } });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ dryRun: true, region: 'secondary', reachable: true, kind: 'planned', signoffRequired: false });
    const runs = await ctx.call('GET', '/v1/runs?runbook=region-failover');
    expect(runs.body.runs.filter((r: { workflowId: string }) => r.workflowId.startsWith('region-failover-secondary'))).toEqual([]);
  });

  it('refuses to fail back an instance that is not failed over, naming it', async () => {
    const name = uniqueName('nfo');
    await createInstance(ctx, name);
    const res = await ctx.call('POST', '/v1/runbooks/failback', { body: { region: 'primary', instances: [name] } });
    expect(res.status).toBe(409);
    expect(res.body.error).toMatchObject({ code: 'not_failed_over' });
    expect(res.body.error.message).toContain(name);
    const missing = await ctx.call('POST', '/v1/runbooks/failback', { body: { region: 'primary', instances: ['no-such-instance'] } });
    expect(missing.status).toBe(404);
  });

  it('a failback with nothing failed over ends at once, changing nothing', async () => {
    const res = await ctx.call('POST', '/v1/runbooks/failback', { body: { region: 'secondary' } });
    expect(res.status).toBe(202);
    const result = await ctx.temporal.workflow.getHandle(res.body.run.workflowId).result();
    expect(result).toMatchObject({ outcome: 'nothing-to-do', instances: {} });
  });
});
