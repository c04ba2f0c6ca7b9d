import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ownerTag } from '../activities/names.js';
import type { InstanceEngine } from '../lib/engine/types.js';
import { openContext, uniqueName, withInstanceDb, type TestContext } from './helpers.js';

/** The engine calls behind salvage, on a real server: keys, rows by key in canonical text, and inserts that never overwrite. */
let ctx: TestContext;
let engine: InstanceEngine;
const db = uniqueName('salvage');
const tag = ownerTag(db);

beforeAll(async () => {
  ctx = await openContext();
  engine = ctx.regions.get('primary')!.engine;
  await engine.createDatabase(db, tag);
  await withInstanceDb(ctx, db, async (sql) => {
    await sql.unsafe(`
      create table t (
        id bigint primary key, tenant int not null default 1, big numeric, at timestamptz, tags text[], doc jsonb, note text,
        twice int generated always as (tenant * 2) stored
      );
      create table "Mixed Case" ("Key" int generated always as identity primary key, v text);
      create table keyless (a int, b text);
      create table uniq (id int primary key, email text unique);`);
  });
});

afterAll(async () => {
  await engine.dropDatabase(db, tag);
  await ctx?.close();
});

describe('salvage engine calls', () => {
  it('finds primary keys, quoted as the WAL names them, and none for a keyless table', async () => {
    expect(await engine.keyColumns(db, 'public.t')).toEqual(['id']);
    expect(await engine.keyColumns(db, 'public."Mixed Case"')).toEqual(['"Key"']);
    expect(await engine.keyColumns(db, 'public.keyless')).toBeNull();
  });

  it('round-trips awkward values exactly: big numbers, time zones, arrays, json, quotes; generated columns are left to the server', async () => {
    await withInstanceDb(ctx, db, (sql) =>
      sql`insert into t (id, big, at, tags, doc, note) values (9007199254740993, 123456789012345678901234.5, '2026-11-23 10:00:00+05', '{a,"b c"}', '{"k": [1, 2]}', 'it''s')`,
    );
    const [row] = await engine.rowsByKey(db, 'public.t', [{ id: '9007199254740993' }]);
    expect(row).toContain('9007199254740993');
    expect(row).toContain('123456789012345678901234.5');
    expect(row).toContain('2026-11-23T05:00:00+00:00');
    expect(await engine.rowsByKey(db, 'public.t', [{ id: '1' }])).toEqual([null]);
    // Into a copy: deleted, then replayed from its text.
    await withInstanceDb(ctx, db, (sql) => sql`delete from t`);
    expect(await engine.insertRowIfAbsent(db, 'public.t', row!, ['id'])).toEqual({ outcome: 'inserted', existing: null });
    const [back] = await withInstanceDb(ctx, db, (sql) => sql`select id::text, big::text, tags::text, doc, note, twice from t`);
    expect(back).toEqual({ id: '9007199254740993', big: '123456789012345678901234.5', tags: '{a,"b c"}', doc: { k: [1, 2] }, note: "it's", twice: 2 });
    expect(await engine.insertRowIfAbsent(db, 'public.t', row!, ['id'])).toMatchObject({ outcome: 'present' });
  });

  it('reports a conflict with the row there, and never overwrites it', async () => {
    await withInstanceDb(ctx, db, (sql) => sql`insert into t (id, note) values (7, 'theirs')`);
    const ours = JSON.stringify({ id: 7, tenant: 1, big: null, at: null, tags: null, doc: null, note: 'ours', twice: 2 });
    const out = await engine.insertRowIfAbsent(db, 'public.t', ours, ['id']);
    expect(out.outcome).toBe('conflict');
    expect(JSON.parse(out.existing!)).toMatchObject({ id: 7, note: 'theirs' });
    expect(await withInstanceDb(ctx, db, (sql) => sql`select note from t where id = 7`)).toEqual([{ note: 'theirs' }]);
    // Another unique constraint refusing the row is a conflict too.
    await withInstanceDb(ctx, db, (sql) => sql`insert into uniq values (1, 'a@x')`);
    expect(await engine.insertRowIfAbsent(db, 'public.uniq', JSON.stringify({ id: 2, email: 'a@x' }), ['id'])).toEqual({ outcome: 'conflict', existing: null });
  });

  it('replays identity columns and keyless rows (by whole row)', async () => {
    expect(await engine.insertRowIfAbsent(db, 'public."Mixed Case"', JSON.stringify({ Key: 41, v: 'x' }), ['"Key"'])).toMatchObject({ outcome: 'inserted' });
    expect(await withInstanceDb(ctx, db, (sql) => sql`select "Key" from "Mixed Case"`)).toEqual([{ Key: 41 }]);
    const row = JSON.stringify({ a: 1, b: 'one' });
    expect((await engine.insertRowIfAbsent(db, 'public.keyless', row, null)).outcome).toBe('inserted');
    expect((await engine.insertRowIfAbsent(db, 'public.keyless', row, null)).outcome).toBe('present');
    expect(await engine.rowsByKey(db, 'public.keyless', [{ a: '1', b: 'one' }])).toEqual(['{"a": 1, "b": "one"}']);
  });

  it('refuses a table that does not exist, and odd column names', async () => {
    await expect(engine.insertRowIfAbsent(db, 'public.nope', '{}', ['id'])).rejects.toThrow(/does not exist/);
    await expect(engine.insertRowIfAbsent(db, 'public.t', '{}', ['id; drop table t'])).rejects.toThrow(/bad key columns/);
    expect(await engine.rowsByKey(db, 'public.t', [{ 'id = 1 or true --': '1' }])).toEqual([null]);
  });
});
