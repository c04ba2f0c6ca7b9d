import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { keyringOf } from '../../activities/keys.js';
import { backups } from '../../db/schema/index.js';
import { audit } from '../../lib/audit.js';
import { RunbookKey } from '../../lib/temporal.js';
import { Runbooks, workflowIds, type RotateKeysInput } from '../../workflows/contract.js';
import { requireRole } from '../auth.js';
import { uiLink, type ApiDeps, type ApiEnv } from '../deps.js';
import { ApiError, errorResponses, json } from '../errors.js';
import { runRef, startRun } from '../runbooks.js';
import { RunRefSchema } from '../schemas.js';

/** The backup keys as the API shows them: ids and how many backups use each, never key material. */
export const KeysSchema = z
  .object({
    activeKeyId: z.string().nullable().openapi({ description: 'the key new backups are encrypted under (BACKUP_KEY_ACTIVE); null: no key configured' }),
    keys: z.array(
      z.object({
        id: z.string(),
        active: z.boolean(),
        configured: z.boolean().openapi({ description: 'false: backups name this key but the keyring lacks it; they cannot be restored until it is configured again' }),
        backups: z.number().openapi({ description: 'backups whose data key is wrapped under this key' }),
      }),
    ),
    unencryptedBackups: z.number().openapi({ description: 'backups stored in clear (taken before encryption, or in a region with encryption off)' }),
    toRewrap: z.number().openapi({ description: 'completed backups under a key other than the active one: what POST /v1/keys/rotate would rewrap' }),
  })
  .openapi('BackupKeys');
/** The JSON of GET /v1/keys. */
export type KeysDto = z.infer<typeof KeysSchema>;

const errors = errorResponses('no such route', 'conflict: no active key, or a rotation is already running (named in the body)');

/** /v1/keys: the backup keys (ids and use, never material) and key rotation. */
export function keysApp(deps: ApiDeps) {
  const app = new OpenAPIHono<ApiEnv>();

  app.openapi(
    createRoute({
      method: 'get',
      path: '/',
      tags: ['keys'],
      summary: 'The backup keys: ids configured, the active one, and how many backups use each (never key material)',
      responses: { 200: json(KeysSchema, 'the keys'), ...errors },
    }),
    async (c) => {
      const keyring = keyringOf(deps.regions);
      const rows = await deps.db
        .select({ keyId: sql<string | null>`${backups.encryption}->>'keyId'`, completed: sql<boolean>`${backups.status} = 'completed'`, n: sql<number>`count(*)::int` })
        .from(backups)
        .groupBy(sql`1`, sql`2`);
      const use = new Map<string, number>();
      let clear = 0;
      let toRewrap = 0;
      for (const r of rows) {
        if (r.keyId === null) {
          clear += r.n;
          continue;
        }
        use.set(r.keyId, (use.get(r.keyId) ?? 0) + r.n);
        if (r.completed && r.keyId !== keyring.activeKeyId) toRewrap += r.n;
      }
      const ids = [...new Set([...keyring.ids(), ...use.keys()])].sort();
      return c.json(
        {
          activeKeyId: keyring.activeKeyId,
          keys: ids.map((id) => ({ id, active: id === keyring.activeKeyId, configured: keyring.has(id), backups: use.get(id) ?? 0 })),
          unencryptedBackups: clear,
          toRewrap,
        },
        200,
      );
    },
  );

  app.openapi(
    createRoute({
      method: 'post',
      path: '/rotate',
      tags: ['keys'],
      summary: "Rewrap every backup's data key under the active key (the rotate-keys runbook); archives are not re-encrypted",
      middleware: [requireRole('approver')] as const,
      responses: { 202: json(z.object({ run: RunRefSchema }), 'rotation started; follow the run (its result counts rewrapped and failed backups)'), ...errors },
    }),
    async (c) => {
      const actor = c.get('principal').identity;
      const keyring = keyringOf(deps.regions);
      if (keyring.activeKeyId === null) throw new ApiError(409, 'no_active_key', 'no backup key is configured (BACKUP_KEYS, BACKUP_KEY_ACTIVE): there is nothing to rotate to');
      // One rotation at a time (visibility lags a moment; a second run would only find the work done).
      const running = await firstRunningRotation(deps);
      if (running) {
        throw new ApiError(409, 'run_exists', `key rotation ${running} is already running; follow it at ${uiLink(deps, running)}`, {
          run: { workflowId: running, runbook: Runbooks.rotateKeys, url: uiLink(deps, running) },
        });
      }
      const workflowId = workflowIds.rotateKeys(randomUUID());
      const args: [RotateKeysInput] = [{ requestedBy: actor }];
      await startRun(deps, { instance: { id: '*', name: 'backup keys' }, runbook: Runbooks.rotateKeys, workflowId, workflowType: 'rotateBackupKeysWorkflow', args }, async () => {});
      await audit(deps.db, { actor, action: 'keys.rotate.start', subject: keyring.activeKeyId, details: { workflowId, activeKeyId: keyring.activeKeyId } });
      return c.json({ run: runRef(deps, workflowId, Runbooks.rotateKeys) }, 202);
    },
  );

  return app;
}

/** The workflow id of a running key rotation, if Temporal's visibility knows one. */
async function firstRunningRotation(deps: ApiDeps): Promise<string | null> {
  try {
    return await deps.temporal.withDeadline(Date.now() + (deps.startDeadlineMs ?? 10_000), async () => {
      for await (const wf of deps.temporal.workflow.list({ query: `${RunbookKey.name} = '${Runbooks.rotateKeys}' AND ExecutionStatus = 'Running'`, pageSize: 1 })) return wf.workflowId;
      return null;
    });
  } catch {
    return null; // visibility unavailable: the start below answers 503 if Temporal is down
  }
}
