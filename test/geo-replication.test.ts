import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ownerTag } from '../activities/names.js';
import { auditEvents, replicas } from '../db/schema/index.js';
import { acquireLock, releaseLock } from '../lib/locks.js';
import { subscriptionName } from '../lib/replication.js';
import { ensurePostgres } from '../scripts/lib/tools.js';
import { recordHistory } from './record.js';
import { createInstance, databasesLike, eventually, openContext, uniqueName, withInstanceDb, type TestContext } from './helpers.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await openContext();
});
afterAll(async () => {
  await ctx?.close();
});


const slotsOn = (region: string, slot: string) =>
  withInstanceDb(ctx, 'postgres', async (sql) => (await sql`SELECT slot_name FROM pg_replication_slots WHERE slot_name = ${slot}`).length, region);

describe('geo-secondary of a production instance', () => {
  it('is made with the instance, read-only, and carries rows, keyless updates and sequences', async () => {
    const name = uniqueName('geo');
    const inst = await createInstance(ctx, name, { type: 'production' });
    const detail = await ctx.call('GET', `/v1/instances/${inst.id}`);
    expect(detail.body.replication).toMatchObject({ state: 'streaming', direction: 'forward', targetRegion: 'secondary', targetDatabase: name });
    await recordHistory(ctx, `provision-instance-${inst.id}`, 'provision-instance-production');
    expect(await databasesLike(ctx, name, 'secondary')).toEqual([name]);
    const ep = await ctx.call('GET', `/v1/instances/${inst.id}/endpoint`);
    expect(ep.body.alternate).toMatchObject({ name: `${name}--s`, region: 'secondary' });
    // One multi-host URI lists both sides; libpq lands on the one that takes writes (the secondary is read-only).
    expect(ep.body.autoSwitchEnabled).toBe(true);
    expect(ep.body.multiHost).toMatch(new RegExp(`^postgres://[^@]+@[^/]+,[^/]+/${name}\\?target_session_attrs=read-write`));
    const primaryPort = new URL(ep.body.endpoint).port;
    const psql = spawnSync(path.join(ensurePostgres(), 'psql'), [ep.body.multiHost, '-Atc', 'select inet_server_port()'], { encoding: 'utf8' });
    expect(psql.stderr).toBe('');
    expect(psql.stdout.trim()).toBe(primaryPort);

    await withInstanceDb(ctx, name, async (sql) => {
      await sql`create table orders (id serial primary key, v text)`;
      await sql`create table notes (k int, v text)`; // no primary key: replicated by whole row
    });
    // New tables are drift until the monitor repairs them: the rows then arrive with the table.
    await withInstanceDb(ctx, name, async (sql) => {
      await sql`insert into orders (v) select 'o' || g from generate_series(1, 500) g`;
      await sql`insert into notes values (1, 'a'), (2, 'b')`;
    });
    await eventually('the new tables and their rows on the secondary', () =>
      withInstanceDb(ctx, name, async (sql) => {
        const [o] = await sql`select count(*)::int n from orders`;
        const [n] = await sql`select count(*)::int n from notes`;
        return o!.n === 500 && n!.n === 2;
      }, 'secondary'),
    );
    // The repair is audited once the repaired tables stream.
    const drift = await eventually('the repair audited', async () => {
      const rows = await ctx.db.select().from(auditEvents).where(and(eq(auditEvents.instanceId, inst.id), eq(auditEvents.action, 'replication.repaired')));
      return rows.length ? rows : null;
    });
    expect(drift.flatMap((d) => (d.details as { addedTables: string[] }).addedTables)).toEqual(expect.arrayContaining(['public.orders', 'public.notes']));

    await withInstanceDb(ctx, name, (sql) => sql`update notes set v = 'changed' where k = 2`);
    await eventually('a keyless update on the secondary', () =>
      withInstanceDb(ctx, name, async (sql) => (await sql`select v from notes where k = 2`)[0]?.v === 'changed', 'secondary'),
    );
    // Clients cannot write into the secondary.
    await expect(withInstanceDb(ctx, name, (sql) => sql`insert into orders (v) values ('x')`, 'secondary')).rejects.toThrow(/read-only/);
    // Sequences are copied at the monitor's checks.
    await eventually('the sequence copied to the secondary', () =>
      withInstanceDb(ctx, name, async (sql) => Number((await sql`select last_value from orders_id_seq`)[0]!.last_value) >= 500, 'secondary'),
    );
    const after = await eventually('lag and caught-up time measured', async () => {
      const d = (await ctx.call('GET', `/v1/instances/${inst.id}`)).body;
      return d.replication.checkedAt && d.replication.caughtUpAt && d.replication.state === 'streaming' ? d : null;
    });
    expect(after.replication.lagBytes).toBeGreaterThanOrEqual(0);
    expect(after.replication.lagSeconds).not.toBeNull();
  });

  it('is removed, slot and all, when the instance becomes a sandbox, and made again when it is production', async () => {
    const name = uniqueName('geo-type');
    const inst = await createInstance(ctx, name, { type: 'production' });
    const slot = subscriptionName(inst.id, 'forward');
    expect(await slotsOn('primary', slot)).toBe(1);
    const patched = await ctx.call('PATCH', `/v1/instances/${inst.id}`, { body: { type: 'sandbox' } });
    expect(patched.status).toBe(200);
    expect(await slotsOn('primary', slot)).toBe(0);
    expect(await databasesLike(ctx, name, 'secondary')).toEqual([]);
    expect((await ctx.call('GET', `/v1/instances/${inst.id}`)).body.replication).toBeNull();

    expect((await ctx.call('PATCH', `/v1/instances/${inst.id}`, { body: { type: 'production' } })).status).toBe(200);
    await eventually('the monitor makes the geo-secondary again', async () => (await ctx.call('GET', `/v1/instances/${inst.id}`)).body.replication?.state === 'streaming');
    await ctx.temporal.workflow.getHandle(`geo-secondary-${inst.id}`).result();
    await recordHistory(ctx, `geo-secondary-${inst.id}`, 'geo-secondary');
    expect(await slotsOn('primary', slot)).toBe(1);
  });

  it('made before 0.2 as <name>--s, takes the instance\'s name in place: no new copy, nothing lost', async () => {
    const name = uniqueName('geo-old');
    const inst = await createInstance(ctx, name, { type: 'production' });
    await withInstanceDb(ctx, name, (sql) => sql`create table t (id int primary key)`);
    await eventually('the table reaches the secondary', async () => (await ctx.call('GET', `/v1/instances/${inst.id}`)).body.replication?.state === 'streaming' && (await databasesLike(ctx, name, 'secondary')).length === 1);
    await eventually('the table streams', () => withInstanceDb(ctx, name, async (sql) => (await sql`select to_regclass('public.t') as r`)[0]!.r !== null, 'secondary'));
    await withInstanceDb(ctx, name, (sql) => sql`insert into t select generate_series(1, 100)`);
    await eventually('rows streamed', () => withInstanceDb(ctx, name, async (sql) => (await sql`select count(*)::int as n from t`)[0]!.n === 100, 'secondary'));
    // Make it look as 0.1 left it, holding the instance meanwhile so the monitor stays away.
    const sec = ctx.regions.get('secondary')!.engine;
    const sub = subscriptionName(inst.id, 'forward');
    const holder = `legacy-setup-${inst.id}`;
    // (the monitor's own run for the new table may still hold it for a moment)
    await eventually('the instance free to hold', async () => (await acquireLock(ctx.db, { instanceId: inst.id, workflowId: holder, runbook: 'test' }, async () => true)).ok);
    await sec.setSubscriptionEnabled(name, sub, false);
    await sec.renameDatabase(name, `${name}--s`, ownerTag(inst.id));
    await sec.setSubscriptionEnabled(`${name}--s`, sub, true);
    await ctx.db.update(replicas).set({ targetDatabase: `${name}--s` }).where(eq(replicas.instanceId, inst.id));
    await withInstanceDb(ctx, name, (sql) => sql`insert into t select generate_series(101, 150)`);
    await releaseLock(ctx.db, inst.id, holder);
    await eventually('renamed by the monitor', async () => (await ctx.db.select().from(auditEvents).where(and(eq(auditEvents.instanceId, inst.id), eq(auditEvents.action, 'replication.renamed')))).length > 0, 60_000);
    expect(await databasesLike(ctx, name, 'secondary')).toEqual([name]);
    // No new copy: never removed or created again; every row, including those written while it was renamed, arrives.
    const actions = (await ctx.db.select().from(auditEvents).where(eq(auditEvents.instanceId, inst.id))).map((a) => a.action);
    expect(actions.filter((a) => a === 'replication.created')).toHaveLength(1);
    expect(actions).not.toContain('replication.removed');
    await eventually('every row on the renamed secondary', () => withInstanceDb(ctx, name, async (sql) => (await sql`select count(*)::int as n from t`)[0]!.n === 150, 'secondary'));
    expect((await ctx.call('GET', `/v1/instances/${inst.id}`)).body.replication).toMatchObject({ targetDatabase: name });
    await ctx.call('DELETE', `/v1/instances/${inst.id}`);
  });

  it('is removed when the instance is deleted: no slot, publication or database is left', async () => {
    const name = uniqueName('geo-del');
    const inst = await createInstance(ctx, name, { type: 'production' });
    const slot = subscriptionName(inst.id, 'forward');
    expect(await slotsOn('primary', slot)).toBe(1);
    const del = await ctx.call('DELETE', `/v1/instances/${inst.id}`);
    expect(del.status).toBe(200);
    expect(await slotsOn('primary', slot)).toBe(0);
    expect(await databasesLike(ctx, name, 'secondary')).toEqual([]);
    expect(await databasesLike(ctx, name, 'primary')).toEqual([]);
  });
});
