import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInstance, openContext, uniqueName, type TestContext } from './helpers.js';
import { VIEWER } from './tokens.js';

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
