import { expect } from 'vitest';
import type { TestContext } from './helpers.js';
import { OPERATOR } from './tokens.js';

/** One server-sent event as the API streamed it. */
export interface SseEvent {
  id?: string;
  event?: string;
  data: Record<string, unknown>;
}

/** Reads server-sent events from the in-process API until `until` holds for one (or `ms` passes), then hangs up. */
export async function readEvents(ctx: TestContext, path: string, opts: { token?: string; lastEventId?: string; until: (e: SseEvent) => boolean; ms?: number }): Promise<SseEvent[]> {
  const headers: Record<string, string> = { authorization: `Bearer ${opts.token ?? OPERATOR}` };
  if (opts.lastEventId) headers['last-event-id'] = opts.lastEventId;
  const res = await ctx.app.request(path, { headers });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/event-stream');
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const events: SseEvent[] = [];
  let buf = '';
  const deadline = Date.now() + (opts.ms ?? 20_000);
  try {
    while (Date.now() < deadline) {
      const chunk = await Promise.race([reader.read(), new Promise<null>((r) => setTimeout(() => r(null), Math.max(1, deadline - Date.now())))]);
      if (!chunk || chunk.done) break;
      buf += decoder.decode(chunk.value, { stream: true });
      let end: number;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const e: SseEvent = { data: {} };
        for (const line of block.split('\n')) {
          const [k, ...v] = line.split(': ');
          const value = v.join(': ');
          if (k === 'id') e.id = value;
          if (k === 'event') e.event = value;
          if (k === 'data') e.data = JSON.parse(value) as Record<string, unknown>;
        }
        events.push(e);
        if (opts.until(e)) return events;
      }
    }
    return events;
  } finally {
    await reader.cancel();
  }
}

