import { describe, expect, it } from 'vitest';
import { parseTestDecoding } from '../../lib/engine/postgres.js';

describe('parseTestDecoding', () => {
  it('reads inserts, updates with and without an old key, deletes and commit times', () => {
    const out = parseTestDecoding([
      'BEGIN',
      `table public.writes: INSERT: id[bigint]:7 note[text]:'it''s new-tuple: here' at[timestamp with time zone]:'2026-11-23 06:00:00.5+00' tags[text[]]:'{a,b}'`,
      `table public.notes: UPDATE: k[integer]:2 v[text]:'changed'`,
      `table "Odd Schema"."T": UPDATE: old-key: id[integer]:1 new-tuple: id[integer]:2 big[text]:unchanged-toast-datum flag[bit(3)]:B'101'`,
      `table public.writes: DELETE: id[bigint]:3`,
      `table public.writes: TRUNCATE: (no-flags)`,
      'COMMIT (at 2026-11-23 06:00:01.25+00)',
      'BEGIN',
      `table public.ml: INSERT: id[integer]:1 body[text]:'line one\nline two'`,
      'COMMIT (at not a time)',
    ]);
    expect(out).toEqual([
      { table: 'public.writes', op: 'INSERT', row: { id: '7', note: "it's new-tuple: here", at: '2026-11-23 06:00:00.5+00', tags: '{a,b}' }, committedAt: '2026-11-23T06:00:01.250Z' },
      { table: 'public.notes', op: 'UPDATE', row: { k: '2', v: 'changed' }, committedAt: '2026-11-23T06:00:01.250Z' },
      { table: '"Odd Schema"."T"', op: 'UPDATE', row: { id: '2', big: '\u0000unchanged-toast-datum', flag: '101' }, committedAt: '2026-11-23T06:00:01.250Z' },
      { table: 'public.writes', op: 'DELETE', row: { id: '3' }, committedAt: '2026-11-23T06:00:01.250Z' },
      { table: 'public.ml', op: 'INSERT', row: { id: '1', body: 'line one\nline two' }, committedAt: null },
    ]);
  });

  it('drops changes of a transaction whose COMMIT never came', () => {
    expect(parseTestDecoding(['BEGIN', `table public.t: INSERT: id[integer]:1`])).toEqual([]);
  });
});
