import type { BackupRow, Edition, InstanceRow } from '../db/schema/index.js';
import { Editions } from '../db/schema/index.js';

/** Why a restore is refused, with the HTTP status the API answers. */
export interface Refusal {
  status: 404 | 409 | 422;
  code: string;
  message: string;
}

/** True when `target` is the same edition as `source` or higher (basic < standard < premium). */
export const editionAtLeast = (target: Edition, source: string) => Editions.indexOf(target) >= Editions.indexOf(source as Edition);

/**
 * Whether `backup` may be restored at all: it must exist, be completed and not
 * expired. Checked by the API before a run starts, and again by the run.
 */
export function backupRefusal(backup: BackupRow | undefined, backupId: string, now = new Date()): Refusal | null {
  if (!backup) return { status: 404, code: 'backup_not_found', message: `backup ${backupId} does not exist` };
  if (backup.status !== 'completed') {
    const why = backup.status === 'pending' ? 'still being taken' : backup.status === 'failed' ? `failed (${backup.error ?? 'no reason recorded'})` : 'being deleted';
    return { status: 409, code: 'backup_unusable', message: `backup ${backup.id} is ${why}; only a completed backup can be restored` };
  }
  if (backup.expiresAt.getTime() <= now.getTime()) {
    return { status: 409, code: 'backup_expired', message: `backup ${backup.id} expired at ${backup.expiresAt.toISOString()} and is due for deletion; choose a newer backup` };
  }
  return null;
}

/** Whether `backup` may be restored into the existing instance `target` (a sandbox of the same or a higher edition). */
export function targetRefusal(backup: Pick<BackupRow, 'id' | 'edition'>, target: Pick<InstanceRow, 'name' | 'type' | 'edition' | 'state'>): Refusal | null {
  if (target.type === 'production') {
    return {
      status: 409,
      code: 'production_target',
      message: `instance ${target.name} is a production instance; a backup is never restored straight into production: use the production-restore swap (POST /v1/runbooks/production-restore)`,
    };
  }
  if (!editionAtLeast(target.edition, backup.edition)) {
    return {
      status: 422,
      code: 'edition_too_low',
      message: `backup ${backup.id} is of edition ${backup.edition}; instance ${target.name} is ${target.edition}, a lower edition: restore into a ${backup.edition} or higher instance`,
    };
  }
  if (target.state === 'provisioning' || target.state === 'failed_over') {
    return { status: 409, code: 'invalid_state', message: `instance ${target.name} is ${target.state}; it cannot be restored into now` };
  }
  return null;
}
