import Long from 'long';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backupSchedules, instances } from '../db/schema/index.js';
import { createInstance, openContext, uniqueName, withInstanceDb, type TestContext } from './helpers.js';
import { recordHistory } from './record.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx.close();
});

describe('instances', () => {
  it('provisions a real database in the home region, marked as owned by the instance', async () => {
    const name = uniqueName('prov');
    const inst = await createInstance(ctx, name, { type: 'production', edition: 'premium' });
    expect(inst).toMatchObject({ name, type: 'production', edition: 'premium', homeRegion: 'primary', activeRegion: 'primary', state: 'active', lockedBy: null });
    // A URI a client uses as is: the user name, never a password.
    expect(inst.endpoint).toMatch(new RegExp(`^postgres://postgres@127\\.0\\.0\\.1:\\d+/${name}$`));
    const engine = ctx.regions.get('primary')!.engine;
    expect(await engine.databaseExists(name)).toBe(true);
    expect(await engine.ownerTag(name)).toBe(`bcdr:instance=${inst.id}`);
    // Its geo-secondary has the same name in the paired region, read-only.
    expect(await ctx.regions.get('secondary')!.engine.readOnly(name)).toBe(true);
    await withInstanceDb(ctx, name, async (sql) => expect((await sql`select 1 as one`)[0]!.one).toBe(1));
    const run = await ctx.call('GET', `/v1/runs/provision-instance-${inst.id}`);
    expect(run.body).toMatchObject({ status: 'completed', runbook: 'provision-instance', instanceId: inst.id });
    await recordHistory(ctx, `provision-instance-${inst.id}`, 'provision-instance');
  });

  it('never adopts a stray database of the same name: provisioning fails, undoes its steps and leaves that database untouched', async () => {
    const name = uniqueName('stray');
    const engine = ctx.regions.get('primary')!.engine;
    await engine.createDatabase(name, 'someone-else');
    await withInstanceDb(ctx, name, async (sql) => {
      await sql`create table precious (v text)`;
      await sql`insert into precious values ('keep me')`;
    });
    const res = await ctx.call('POST', '/v1/instances', { body: { name, type: 'sandbox', edition: 'basic', homeRegion: 'primary' } });
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe('run_refused');
    expect(res.body.error.message).toMatch(/already exists.*left untouched/);
    // Compensation ran: no catalog row, no schedule; the stray database and its data are intact.
    expect(await ctx.db.select().from(instances).where(eq(instances.name, name))).toEqual([]);
    const wfId = res.body.error.run.workflowId as string;
    const instanceId = wfId.replace('provision-instance-', '');
    expect(await ctx.db.select().from(backupSchedules).where(eq(backupSchedules.instanceId, instanceId))).toEqual([]);
    await expect(ctx.temporal.schedule.getHandle(`daily-backup-${instanceId}`).describe()).rejects.toThrow();
    await withInstanceDb(ctx, name, async (sql) => expect((await sql`select v from precious`)[0]!.v).toBe('keep me'));
    expect(await engine.ownerTag(name)).toBe('someone-else');
    await recordHistory(ctx, wfId, 'provision-instance-failed');
    // The name is free again once the stray database is gone.
    await engine.dropDatabase(name);
    await createInstance(ctx, name);
  });

  it('refuses names that look like instance ids, so id and name lookups never collide', async () => {
    const res = await ctx.call('POST', '/v1/instances', { body: { name: 'i-0123456789ab', type: 'sandbox', edition: 'basic', homeRegion: 'primary' } });
    expect(res.status).toBe(400);
    expect(res.body.error.issues[0]).toMatchObject({ field: 'name', rule: expect.stringContaining('instance id') });
  });

  it('registers the InstanceId and Runbook search attributes on a namespace that lacks them, idempotently', async () => {
    const namespace = uniqueName('ns');
    await ctx.connection.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: { seconds: Long.fromNumber(86_400) } });
    const { ensureSearchAttributes } = await import('../lib/temporal.js');
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await ensureSearchAttributes(ctx.connection, namespace);
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err; // a new namespace takes a moment to be usable
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    await ensureSearchAttributes(ctx.connection, namespace);
    const attrs = await ctx.connection.operatorService.listSearchAttributes({ namespace });
    expect(Object.keys(attrs.customAttributes ?? {})).toEqual(expect.arrayContaining(['InstanceId', 'Runbook']));
  });

  it('lists instances and gets one by id or name', async () => {
    const name = uniqueName('list');
    const inst = await createInstance(ctx, name);
    const byName = await ctx.call('GET', `/v1/instances/${name}`);
    expect(byName.body.id).toBe(inst.id);
    const list = await ctx.call('GET', '/v1/instances?type=sandbox');
    expect(list.body.instances.map((i: { id: string }) => i.id)).toContain(inst.id);
    const endpoint = await ctx.call('GET', `/v1/instances/${inst.id}/endpoint`);
    expect(endpoint.body).toEqual({ endpoint: inst.endpoint, activeRegion: 'primary', servedBy: null, acceptsConnections: true, failedOver: false, alternate: null, autoSwitchEnabled: false, multiHost: null });
  });
});
