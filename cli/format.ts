/** Output for people: tables, key-value lists, sizes and times. `--json` bypasses all of it. */
import Table from 'cli-table3';

/** Control characters (terminal escapes included) never reach the terminal from API data. */
export function clean(s: string): string {
  return s.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, '?');
}

/** A cell or value as text: '-' for nothing, ISO times kept as they are, objects as compact JSON. */
export function text(v: unknown): string {
  if (v === null || v === undefined || v === '') return '-';
  if (typeof v === 'string') return clean(v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (Array.isArray(v) && v.every((x) => typeof x !== 'object' || x === null)) return v.length ? clean(v.map((x) => String(x)).join(', ')) : '-';
  return clean(JSON.stringify(v));
}

/** 1536 → "1.5 KiB". */
export function bytes(n: unknown): string {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '-';
  if (n < 0) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

/** Seconds as "850 ms", "12.3 s", "4m 05s", "2h 03m". */
export function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
}

/** The time between two ISO timestamps (to now when `end` is null). */
export function between(start: string | null | undefined, end: string | null | undefined): string {
  if (!start) return '-';
  const a = Date.parse(start);
  const b = end ? Date.parse(end) : Date.now();
  return duration(b - a);
}

/** A compact, borderless table (like kubectl's): an upper-case header row, columns two spaces apart. */
export function table(head: string[], rows: unknown[][]): string {
  const t = new Table({
    head: head.map((h) => h.toUpperCase()),
    chars: {
      top: '', 'top-mid': '', 'top-left': '', 'top-right': '',
      bottom: '', 'bottom-mid': '', 'bottom-left': '', 'bottom-right': '',
      left: '', 'left-mid': '', mid: '', 'mid-mid': '',
      right: '', 'right-mid': '', middle: '  ',
    },
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0, compact: true },
  });
  for (const r of rows) t.push(r.map(text));
  return t
    .toString()
    .split('\n')
    .map((l) => l.trimEnd())
    .join('\n');
}

/** Flattens nested objects into dotted keys; arrays of scalars are joined, other arrays kept whole. */
export function flatten(obj: unknown, prefix = '', out: [string, unknown][] = []): [string, unknown][] {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    out.push([prefix || 'value', obj]);
    return out;
  }
  const entries = Object.entries(obj as Record<string, unknown>);
  if (!entries.length && prefix) out.push([prefix, '-']);
  for (const [k, v] of entries) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) flatten(v, key, out);
    else out.push([key, v]);
  }
  return out;
}

/** `key: value` lines, keys aligned; sizes shown in units as well (`sizeBytes: 1048576 (1.0 MiB)`). */
export function kv(obj: unknown, opts: { skip?: string[] } = {}): string {
  const pairs = flatten(obj).filter(([k]) => !opts.skip?.some((s) => k === s || k.startsWith(`${s}.`)));
  const width = Math.min(34, Math.max(0, ...pairs.map(([k]) => k.length)));
  return pairs
    .map(([k, v]) => {
      let s = text(v);
      if (typeof v === 'number' && /bytes/i.test(k) && v >= 1024) s += ` (${bytes(v)})`;
      return `${`${k}:`.padEnd(width + 2)}${s}`;
    })
    .join('\n');
}

/** Shortens long free text for a table cell. */
export function trunc(s: unknown, n = 60): string {
  const t = text(s);
  return t.length > n ? `${t.slice(0, n - 1)}…` : t;
}

/** An ISO timestamp shortened for tables: `2026-11-23 12:34:56Z`. */
export function when(iso: unknown): string {
  if (typeof iso !== 'string' || !iso) return '-';
  return iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}
