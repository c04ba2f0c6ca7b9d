import { CancellationScope, isCancellation, sleep, uuid4, workflowInfo } from '@temporalio/workflow';
import { takeBackup } from './backup.js';
import { Runbooks, type ProductionRestoreInput, type ProductionRestoreResult, type RestoreResult } from './contract.js';
import { catalog, ddl, untilDone } from './proxies.js';
import { restoreSteps } from './restore.js';
import { RunState, errorMessage } from './run-state.js';
import { Compensations } from './saga.js';
import { signOffGate } from './signoff-gate.js';

/** How long the temporary (step 1) backups are kept when not deleted at the end. */
const TEMPORARY_BACKUP_RETENTION_DAYS = 7;
const REMIND_EVERY_MS = 15 * 60 * 1000;

/**
 * Production-restore swap, the five steps of the Dynamics procedure as a saga:
 * 1. on-demand backups of production and sandbox;
 * 2. restore the production backup into the sandbox;
 * 3. switch production to sandbox type;
 * 4. restore the backup into it (on failure: reset and retry once; failing
 *    again, the sandbox copy serves the production endpoint, `degraded`);
 * 5. switch it back to production, in every path;
 * 6. optionally delete the step-1 backups.
 * Optional sign-off before anything is touched, then an optional maintenance
 * window. Both instances are held, locked in id order, for the whole run.
 */
export async function productionRestoreWorkflow(input: ProductionRestoreInput): Promise<ProductionRestoreResult> {
  const { productionId: prod, sandboxId: sbx, requestedBy } = input;
  const state = new RunState(Runbooks.productionRestore, prod, requestedBy);
  const saga = new Compensations();
  const result: ProductionRestoreResult = { outcome: 'completed', productionId: prod, sandboxId: sbx, temporaryBackups: { deleted: false }, warnings: [] };
  const restoreOpts = { createsInstance: false, jobs: input.jobs, advanceSequences: input.advanceSequences, dropRetiredAfterSeconds: input.dropRetiredAfterSeconds };
  const done = (): ProductionRestoreResult => ({ ...result, warnings: [...state.status.warnings] });
  try {
    const held = await state.step('lock-instances', async () => {
      const snaps = [];
      for (const id of [prod, sbx].sort()) snaps.push(await catalog.acquireInstanceLock({ instanceId: id, runbook: Runbooks.productionRestore }));
      return snaps;
    });
    const sandboxWasActive = held.find((s) => s.id === sbx)?.state === 'active';
    const productionWasActive = held.find((s) => s.id === prod)?.state === 'active';
    // A degraded production served by this sandbox is repaired from the sandbox's live data.
    const repair = held.find((s) => s.id === prod)?.servedBy === sbx;

    if (input.requireSignoff) {
      const gate = await state.step('signoff', () =>
        signOffGate(state, {
          gate: 'production-restore',
          runbook: Runbooks.productionRestore,
          instanceIds: [prod, sbx],
          requestedBy,
          summary: repair
            ? `repair degraded production instance ${prod} from sandbox ${sbx}, which serves it now (writes pause while its data is copied back)`
            : `replace the data of production instance ${prod} with ${input.backupId ? `backup ${input.backupId}` : 'a fresh backup of itself'}, through sandbox ${sbx}`,
          timeoutMs: input.signoffTimeoutMinutes * 60_000,
          remindEveryMs: input.signoffRemindEveryMinutes ? input.signoffRemindEveryMinutes * 60_000 : REMIND_EVERY_MS,
        }),
      );
      if (gate.decision !== 'approved') {
        result.outcome = gate.decision;
        result.next = gate.decision === 'rejected' ? `rejected by ${gate.by}: nothing was changed` : 'nobody signed off before the deadline: nothing was changed';
        state.finish();
        return done();
      }
    }
    if (input.notBefore && Date.parse(input.notBefore) > Date.now()) {
      const until = input.notBefore;
      await state.step('wait-for-window', () => state.waitFor({ kind: 'window', until, detail: 'maintenance window: nothing is touched before it' }, () => sleep(Date.parse(until) - Date.now())));
    }
    if (repair) {
      // The sandbox holds production's live data: stop writes there so none is lost in the copy back.
      await state.step('stop-writes-on-sandbox', () => catalog.suspendHeldInstance({ instanceId: sbx }));
      saga.push('reopen-sandbox', () => untilDone.resumeRestoredInstance({ instanceId: sbx }));
    } else {
      // From here production's data is being replaced: stop its writes before the step-1 backup, so
      // every write it took is in that backup and none lands where the restore will overwrite it.
      await state.step('stop-writes-on-production', () => catalog.suspendHeldInstance({ instanceId: prod }));
      if (productionWasActive) saga.push('reopen-production', () => untilDone.resumeRestoredInstance({ instanceId: prod }));
    }

    // Step 1: the safety net, labelled so an operator finds it.
    const label = (who: string) => `production-restore ${workflowInfo().workflowId}: ${who} before the swap`;
    const prodBackup = { backupId: `bk-${uuid4()}` };
    const sbxBackup = { backupId: `bk-${uuid4()}` };
    await takeBackup(state, { instanceId: prod, backupId: prodBackup.backupId, kind: 'on_demand', label: label('production'), retentionDays: TEMPORARY_BACKUP_RETENTION_DAYS }, 'backup-production:');
    result.temporaryBackups.production = prodBackup.backupId;
    await takeBackup(state, { instanceId: sbx, backupId: sbxBackup.backupId, kind: 'on_demand', label: label('sandbox'), retentionDays: TEMPORARY_BACKUP_RETENTION_DAYS }, 'backup-sandbox:');
    result.temporaryBackups.sandbox = sbxBackup.backupId;
    const source = repair ? sbxBackup.backupId : (input.backupId ?? prodBackup.backupId);
    result.backupId = source;

    // Step 2: prove the restore on the sandbox first; it also becomes the fallback. (A repair has it already.)
    if (!repair) {
      await restoreSteps(state, { ...restoreOpts, backupId: source, instanceId: sbx }, 'sandbox:');
      saga.push('put-back-sandbox', async () => {
        await restoreSteps(state, { ...restoreOpts, advanceSequences: false, backupId: sbxBackup.backupId, instanceId: sbx }, 'undo-sandbox:');
        if (sandboxWasActive) await untilDone.resumeRestoredInstance({ instanceId: sbx });
      });
    }

    // Step 3.
    await state.step('switch-production-to-sandbox', () => catalog.setInstanceType({ instanceId: prod, type: 'sandbox' }));
    saga.push('switch-back-to-production', () => untilDone.setInstanceType({ instanceId: prod, type: 'production' }));

    // Step 4, with one reset and retry; then the fallback.
    const fallback = async () => {
      await untilDone.suspendHeldInstance({ instanceId: prod }); // its own database takes no writes nobody would read
      await untilDone.resumeRestoredInstance({ instanceId: sbx });
      await untilDone.setServedBy({ instanceId: prod, servedBy: sbx, state: 'degraded' });
    };
    const restored = await restoreProduction(state, { ...restoreOpts, backupId: source, instanceId: prod }, () => {
      // Production is about to be emptied: from now on the sandbox copy is the live data. Undoing must
      // never overwrite it or reopen an empty production; it serves production instead.
      saga.drop('put-back-sandbox');
      saga.drop('reopen-production');
      saga.drop('reopen-sandbox');
      saga.push('fallback-serve-from-sandbox', fallback);
    });
    if (!restored) {
      await state.step('fallback-serve-from-sandbox', fallback);
      saga.drop('fallback-serve-from-sandbox');
      saga.drop('put-back-sandbox'); // the sandbox copy now serves production: it must stay
      saga.drop('reopen-production');
      saga.drop('reopen-sandbox');
      result.outcome = 'degraded';
      result.next = `production ${prod} could not be restored twice; sandbox ${sbx} serves its endpoint with the restored data. Repair it by running the production-restore swap again with the same sandbox: it copies the sandbox's live data back into production`;
      state.warn(result.next);
    }

    // Step 5, in every path (the saga does it on failure).
    await state.step('switch-back-to-production', () => untilDone.setInstanceType({ instanceId: prod, type: 'production' }));
    saga.drop('switch-back-to-production');
    saga.drop('fallback-serve-from-sandbox');
    saga.drop('reopen-production'); // production is resumed below, or deliberately left suspended
    if (result.outcome === 'completed') {
      if (repair) {
        // Production serves itself again; the sandbox stays suspended, so nobody writes where nobody reads.
        await state.step('serve-from-production', () => catalog.setServedBy({ instanceId: prod, servedBy: null, state: 'suspended' }));
        saga.drop('reopen-sandbox');
      }
      if (restored?.sequencesBehind.length && !restored.sequencesAdvanced.length) {
        // Duplicate control numbers are possible: an operator decides before production takes writes.
        result.next = `production ${prod} is left suspended because its sequences run backwards (see the warnings): advance them or accept the risk, then resume it with POST /v1/instances/${prod}/resume`;
      } else {
        await state.step('resume-production', () => catalog.resumeRestoredInstance({ instanceId: prod }));
      }
    }

    // Step 6.
    if (input.deleteTemporaryBackups && result.outcome === 'completed') {
      await state.step('delete-temporary-backups', () => catalog.deleteBackups({ backupIds: [prodBackup.backupId, sbxBackup.backupId] }));
      result.temporaryBackups.deleted = true;
    }
    state.finish();
    return done();
  } catch (err) {
    state.finish(err);
    await saga.unwind(state);
    throw err;
  } finally {
    await CancellationScope.nonCancellable(async () => {
      for (const id of [prod, sbx].sort().reverse()) await catalog.releaseInstanceLock({ instanceId: id });
    });
  }
}

/**
 * Step 4: restores production (now of sandbox type); on failure resets it
 * (left closed to clients) and tries once more. `beforeReset` runs just before
 * the reset empties production. Null when both attempts, or the reset, failed.
 */
async function restoreProduction(state: RunState, p: Parameters<typeof restoreSteps>[1], beforeReset: () => void): Promise<RestoreResult | null> {
  try {
    return await restoreSteps(state, p, 'production:');
  } catch (err) {
    if (isCancellation(err)) throw err;
    state.warn(`restoring production failed (production): ${errorMessage(err)}`);
  }
  beforeReset();
  try {
    await state.step('reset-production', () => ddl.resetDatabase({ instanceId: p.instanceId, leaveSuspended: true }));
    return await restoreSteps(state, p, 'production-retry:');
  } catch (err) {
    if (isCancellation(err)) throw err;
    state.warn(`restoring production failed (production-retry): ${errorMessage(err)}`);
    return null;
  }
}
