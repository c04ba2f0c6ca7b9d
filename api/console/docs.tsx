import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Child } from 'hono/jsx';
import { safeUrl } from './layout.js';

/**
 * The runbook docs (docs/runbooks/*.md), read-only. The folder is found from
 * this file in the source tree (api/console) and in the build (dist/api/console).
 * Only the names present at start can be asked for: nothing else on disk is reachable.
 */
export class RunbookDocs {
  readonly dir: string | null;
  private readonly names: Set<string>;

  constructor(dir?: string) {
    const candidates = dir ? [dir] : [path.resolve(import.meta.dirname, '../../docs/runbooks'), path.resolve(import.meta.dirname, '../../../docs/runbooks')];
    this.dir = candidates.find((d) => existsSync(path.join(d, 'README.md'))) ?? null;
    this.names = new Set(
      this.dir
        ? readdirSync(this.dir)
            .filter((f) => /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.md$/.test(f))
            .map((f) => f.slice(0, -3))
        : [],
    );
  }

  has(name: string): boolean {
    return this.names.has(name);
  }

  /** The doc of a runbook, if there is one (housekeeping runbooks have none). */
  forRunbook(runbook: unknown): string | null {
    return typeof runbook === 'string' && runbook !== 'README' && this.names.has(runbook) ? runbook : null;
  }

  /** The markdown of a known doc; null for any name not in the folder at start. */
  read(name: string): string | null {
    if (!this.dir || !this.names.has(name)) return null;
    return readFileSync(path.join(this.dir, `${name}.md`), 'utf8');
  }

  list(): string[] {
    return [...this.names].sort();
  }
}

/** Links inside a doc: another doc of the folder, an anchor, or an http(s) address; anything else stays text. */
function docHref(href: string, docs: RunbookDocs): string | null {
  const local = /^(?:\.\/)?([A-Za-z0-9_-]+)\.md(#[A-Za-z0-9_-]*)?$/.exec(href);
  if (local?.[1] && docs.has(local[1])) return `/console/docs/${local[1]}${local[2] ?? ''}`;
  if (/^#[A-Za-z0-9_-]*$/.test(href)) return href;
  return safeUrl(href);
}

/** Inline markdown: `code`, **bold**, [text](href). Everything else is text (escaped by JSX). */
function inline(text: string, docs: RunbookDocs): Child[] {
  const out: Child[] = [];
  const re = /`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)/g;
  let last = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    if (m[1] !== undefined) out.push(<code>{m[1]}</code>);
    else if (m[2] !== undefined) out.push(<strong>{m[2]}</strong>);
    else {
      const href = docHref(m[4]!, docs);
      out.push(href ? <a href={href}>{m[3]}</a> : `${m[3]} (${m[4]})`);
    }
    last = re.lastIndex;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

const slug = (s: string) =>
  s
    .toLowerCase()
    .replace(/[^a-z0-9 -]/g, '')
    .trim()
    .replace(/ /g, '-');

/** Minimal markdown to HTML, as JSX (so escaped): headings, paragraphs, lists, fenced code, tables as text. */
export function Markdown(p: { source: string; docs: RunbookDocs }) {
  const lines = p.source.replace(/\r\n?/g, '\n').split('\n');
  const blocks: Child[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i]!;
    if (/^```/.test(line)) {
      const body: string[] = [];
      for (i++; i < lines.length && !/^```/.test(lines[i]!); i++) body.push(lines[i]!);
      i++;
      blocks.push(<pre>{body.join('\n')}</pre>);
      continue;
    }
    const h = /^(#{1,6})\s+(.*)$/.exec(line);
    if (h) {
      const level = Math.min(h[1]!.length + 1, 6);
      const content = inline(h[2]!, p.docs);
      const id = slug(h[2]!);
      blocks.push(level === 2 ? <h2 id={id}>{content}</h2> : level === 3 ? <h3 id={id}>{content}</h3> : level === 4 ? <h4 id={id}>{content}</h4> : <h5 id={id}>{content}</h5>);
      i++;
      continue;
    }
    if (/^\s*([-*]|\d+\.)\s+/.test(line)) {
      const ordered = /^\s*\d+\./.test(line);
      const items: string[] = [];
      while (i < lines.length && lines[i]!.trim() !== '' && !/^```|^#{1,6}\s/.test(lines[i]!)) {
        const item = /^\s*(?:[-*]|\d+\.)\s+(.*)$/.exec(lines[i]!);
        if (item) items.push(item[1]!);
        else if (items.length) items[items.length - 1] += ` ${lines[i]!.trim()}`;
        i++;
      }
      const lis = items.map((t) => <li>{inline(t, p.docs)}</li>);
      blocks.push(ordered ? <ol>{lis}</ol> : <ul>{lis}</ul>);
      continue;
    }
    if (/^\|/.test(line)) {
      const rows: string[] = [];
      while (i < lines.length && /^\|/.test(lines[i]!)) rows.push(lines[i++]!);
      const cells = (row: string) =>
        row
          .trim()
          .replace(/^\||\|$/g, '')
          .split(/(?<!\\)\|/)
          .map((x) => x.trim().replace(/\\\|/g, '|'));
      if (rows.length >= 2 && /^\|?[\s:|-]+\|?$/.test(rows[1]!)) {
        blocks.push(
          <table class="md">
            <thead>
              <tr>
                {cells(rows[0]!).map((h) => (
                  <th>{inline(h, p.docs)}</th>
                ))}
              </tr>
            </thead>
            <tbody>
              {rows.slice(2).map((r) => (
                <tr>
                  {cells(r).map((d) => (
                    <td>{inline(d, p.docs)}</td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>,
        );
      } else blocks.push(<pre>{rows.join('\n')}</pre>);
      continue;
    }
    if (line.trim() === '') {
      i++;
      continue;
    }
    const para: string[] = [];
    while (i < lines.length && lines[i]!.trim() !== '' && !/^```|^#{1,6}\s|^\s*([-*]|\d+\.)\s+|^\|/.test(lines[i]!)) para.push(lines[i++]!.trim());
    blocks.push(<p>{inline(para.join(' '), p.docs)}</p>);
  }
  return <div class="doc">{blocks}</div>;
}
