import {
  ActivityCancellationType,
  ApplicationFailure,
  CancellationScope,
  ParentClosePolicy,
  WorkflowIdReusePolicy,
  continueAsNew,
  proxyActivities,
  sleep,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import type * as activities from '../activities/index.js';
import type { LossEstimate } from '../db/schema/replication.js';
import { takeBackup } from './backup.js';
import {
  FailureTypes,
  Runbooks,
  workflowIds,
  type FailbackInput,
  type FailbackResult,
  type InstanceProgress,
  type InstanceRunInput,
  type RegionFailoverInput,
  type RegionFailoverResult,
  type RegionMonitorInput,
} from './contract.js';
import { catalog, ddl, untilDone } from './proxies.js';
import { RunState, errorMessage } from './run-state.js';
import { runSearchAttributes } from './search-attributes.js';
import { signOffGate } from './signoff-gate.js';

type Acts = activities.Activities;

/**
 * Seeding and draining: long, heartbeating, retried a few times (each attempt
 * picks up where the last stopped), and soon given up when a server is gone:
 * a geo-secondary run holds its instance, and a failover waits for it.
 */
const seeding = proxyActivities<Acts>({
  startToCloseTimeout: '12h',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '10s', maximumAttempts: 3 },
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});

/**
 * Promotion: seconds of work, heartbeating, so a worker lost mid-promotion is
 * noticed within 10 s and the (idempotent) promotion retried on another.
 */
const promotion = proxyActivities<Acts>({
  startToCloseTimeout: '5m',
  heartbeatTimeout: '10s',
  retry: { initialInterval: '1s', maximumInterval: '10s', maximumAttempts: 10 },
});

/** The monitor's checks: one attempt each; a failed check is the next check's business. */
const monitor = proxyActivities<Acts>({ startToCloseTimeout: '90s', retry: { maximumAttempts: 1 } });

/** How long the backup of an old primary is kept: in effect until an operator deletes it. */
const OLD_PRIMARY_RETENTION_DAYS = 3650;

/** Checks per monitor run before it continues as new, so its history stays short. */
const CHECKS_PER_RUN = 200;

/** Runs `fn` over `items`, at most `limit` at once (deterministic: the order follows activity completions). */
async function forEachBounded<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await fn(item);
    }
  });
  await Promise.all(lanes);
}

/** Tracks one instance inside a multi-instance run, shown in the run's status. */
function tracker(state: RunState, instanceId: string, name: string) {
  const p: InstanceProgress = { name, step: 'waiting', stepsDone: [] };
  (state.status.instances ??= {})[instanceId] = p;
  return {
    p,
    async step<T>(step: string, fn: () => Promise<T>): Promise<T> {
      p.step = step;
      const out = await fn();
      p.stepsDone.push(step);
      return out;
    },
  };
}

/** Takes an instance's lock for this run, waiting up to `waitSeconds` while another run holds it; false if it never came. */
async function lockOrSkip(
  state: RunState,
  instanceId: string,
  runbook: (typeof Runbooks)[keyof typeof Runbooks],
  waitSeconds: number,
  stillDue: (inst: { state: string; activeRegion: string; homeRegion: string }) => boolean,
): Promise<boolean> {
  const deadline = Date.now() + waitSeconds * 1000;
  for (;;) {
    try {
      const inst = await catalog.acquireInstanceLock({ instanceId, runbook });
      // Another run (a second failover, say) may have moved it while this one waited.
      if (!stillDue(inst)) {
        await catalog.releaseInstanceLock({ instanceId });
        state.warn(`left out ${instanceId}: it is now ${inst.state} in ${inst.activeRegion}`);
        return false;
      }
      return true;
    } catch (err) {
      const busy = err instanceof Error && err.cause instanceof ApplicationFailure && err.cause.type === FailureTypes.instanceBusy;
      if (!busy) throw err;
      if (Date.now() + 5000 > deadline) {
        state.warn(`left out ${instanceId}: ${errorMessage(err)}`);
        return false;
      }
      await sleep(5000);
    }
  }
}

/** Gives back every instance lock the run took, whatever happened (also when cancelled). */
async function releaseAll(ids: string[]): Promise<void> {
  await CancellationScope.nonCancellable(async () => {
    for (const id of ids) await catalog.releaseInstanceLock({ instanceId: id });
  });
}

/**
 * Creates, repairs or removes one instance's geo-secondary under its lock:
 * production instances served from home get one, sandboxes lose theirs.
 * Started by the region monitor; a busy instance is left for the next check.
 */
export async function geoSecondaryWorkflow(input: InstanceRunInput): Promise<{ action: 'ensured' | 'removed' | 'none' }> {
  const state = new RunState(Runbooks.geoSecondary, input.instanceId);
  const inst = await state.step('lock-instance', () => catalog.acquireInstanceLock({ instanceId: input.instanceId, runbook: Runbooks.geoSecondary }));
  try {
    let action: 'ensured' | 'removed' | 'none' = 'none';
    if (inst.type === 'production' && inst.state === 'active' && inst.activeRegion === inst.homeRegion) {
      await state.step('ensure-geo-secondary', () => seeding.ensureGeoSecondary({ instanceId: input.instanceId }));
      action = 'ensured';
    } else if (inst.type === 'sandbox') {
      await state.step('remove-geo-secondary', () => ddl.removeGeoSecondary({ instanceId: input.instanceId }));
      action = 'removed';
    }
    state.finish();
    return { action };
  } catch (err) {
    state.finish(err);
    throw err;
  } finally {
    await CancellationScope.nonCancellable(() => catalog.releaseInstanceLock({ instanceId: input.instanceId }));
  }
}

/**
 * Watches one region: a connect-and-query check every `everySeconds`. It
 * keeps geo-secondaries in line (made for production instances, repaired
 * after schema drift, removed from sandboxes), and after `outageAfter`
 * failed checks in a row declares an outage and, with `autoFailover`, starts
 * the region's failover, which still waits for sign-off whenever data can
 * be lost. Runs forever, continuing as new every 200 checks.
 */
export async function regionMonitorWorkflow(input: RegionMonitorInput): Promise<void> {
  const state = new RunState(Runbooks.regionMonitor, `region:${input.region}`);
  for (let i = 0; i < CHECKS_PER_RUN && !workflowInfo().continueAsNewSuggested; i++) {
    try {
      const r = await monitor.checkRegionHealth({ region: input.region, outageAfter: input.outageAfter });
      state.status.step = r.healthy ? 'healthy' : r.outageSince ? 'outage' : `unreachable (${r.failedChecks} failed check(s))`;
      const work = r.healthy ? await monitor.reconcileRegion({ region: input.region, budgetMs: Math.max(5_000, input.everySeconds * 1000) }) : { needReplica: [], dropReplica: [] };
      for (const instanceId of [...work.needReplica, ...work.dropReplica]) {
        try {
          await startChild(geoSecondaryWorkflow, {
            workflowId: workflowIds.geoSecondary(instanceId),
            args: [{ instanceId, requestedBy: 'system:monitor' }],
            parentClosePolicy: ParentClosePolicy.ABANDON,
            typedSearchAttributes: runSearchAttributes(instanceId, Runbooks.geoSecondary),
          });
        } catch (err) {
          if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
        }
      }
      if (r.outageSince && input.autoFailover) {
        try {
          await startChild(regionFailoverWorkflow, {
            // One failover per declared outage, even after it ended.
            workflowId: workflowIds.regionFailover(input.region, `outage-${Date.parse(r.outageSince)}`),
            workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
            args: [
              {
                region: input.region,
                requestedBy: 'system:monitor',
                reason: `region ${input.region} failed ${r.failedChecks} health checks in a row`,
                declaredAt: r.outageSince,
                mode: 'unplanned',
                signoffTimeoutMinutes: input.signoffTimeoutMinutes,
                ...(input.signoffRemindEveryMinutes ? { signoffRemindEveryMinutes: input.signoffRemindEveryMinutes } : {}),
                concurrency: input.concurrency,
              },
            ],
            parentClosePolicy: ParentClosePolicy.ABANDON,
            typedSearchAttributes: runSearchAttributes(`region:${input.region}`, Runbooks.regionFailover),
          });
          state.warn(`declared an outage of ${input.region} at ${r.outageSince} and started its failover`);
        } catch (err) {
          if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
        }
      }
    } catch (err) {
      state.warn(`check failed: ${errorMessage(err)}`);
      if (state.status.warnings.length > 20) state.status.warnings.splice(0, state.status.warnings.length - 20);
    }
    await sleep(input.everySeconds * 1000);
  }
  await continueAsNew<typeof regionMonitorWorkflow>({ ...input, checksBefore: (input.checksBefore ?? 0) + CHECKS_PER_RUN });
}

/**
 * Region failover (SPEC runbook 5). Measures what each production instance
 * of the region could lose: with the primary reachable, a planned
 * switchover blocks writes and waits for zero lag (no sign-off: nothing can
 * be lost); otherwise the loss is unknown and an approver's written sign-off
 * is required (four eyes, reminders, deadline; rejected or expired: nothing
 * changed). Then promotes every secondary, at most `concurrency` at once,
 * switches each endpoint to `<name>--s` and records RPO and RTO.
 */
export async function regionFailoverWorkflow(input: RegionFailoverInput): Promise<RegionFailoverResult> {
  const state = new RunState(Runbooks.regionFailover, `region:${input.region}`, input.requestedBy);
  const declaredAt = input.declaredAt ?? new Date().toISOString();
  const plan = await state.step('plan', () => catalog.failoverTargets({ region: input.region }));
  const planned = plan.reachable && input.mode === 'auto';
  const result: RegionFailoverResult = {
    outcome: 'completed',
    region: input.region,
    kind: planned ? 'planned' : 'unplanned',
    declaredAt,
    signedOffAt: null,
    instances: {},
    skipped: [...plan.skipped],
    warnings: state.status.warnings,
  };
  const locked: string[] = [];
  const blocked: string[] = [];
  try {
    await state.step('lock-instances', async () => {
      for (const t of plan.targets) {
        const due = (i: { state: string; activeRegion: string; homeRegion: string }) => i.state === 'active' && i.activeRegion === input.region && i.homeRegion === input.region;
        if (await lockOrSkip(state, t.instanceId, Runbooks.regionFailover, input.lockWaitSeconds ?? 120, due)) locked.push(t.instanceId);
        else result.skipped.push({ instanceId: t.instanceId, name: t.name, reason: 'another run held it or moved it' });
      }
    });
    const targets = plan.targets.filter((t) => locked.includes(t.instanceId));
    if (!targets.length) {
      result.outcome = 'nothing-to-do';
      state.finish();
      return result;
    }
    const trackers = new Map(targets.map((t) => [t.instanceId, tracker(state, t.instanceId, t.name)]));
    const estimates: Record<string, LossEstimate> = {};
    await state.step('measure', () =>
      forEachBounded(targets, input.concurrency, async (t) => {
        const tr = trackers.get(t.instanceId)!;
        if (planned) {
          blocked.push(t.instanceId);
          const d = await tr.step('block-writes-and-drain', () => seeding.blockAndDrain({ instanceId: t.instanceId, timeoutSeconds: input.drainTimeoutSeconds ?? 60 }));
          estimates[t.instanceId] = { planned: d.caughtUp, lagBytes: d.lagBytes, lagSeconds: d.caughtUp ? 0 : null, caughtUpAt: null, checkedAt: null, couldLoseSeconds: d.caughtUp ? 0 : null };
        } else {
          estimates[t.instanceId] = await tr.step('estimate-loss', () => catalog.estimateLoss({ instanceId: t.instanceId, declaredAt }));
        }
        tr.p.facts = { estimate: estimates[t.instanceId] };
      }),
    );
    const atRisk = targets.filter((t) => !estimates[t.instanceId]!.planned);
    if (atRisk.length) {
      const gate = await signOffGate(state, {
        gate: 'failover',
        runbook: Runbooks.regionFailover,
        instanceIds: targets.map((t) => t.instanceId),
        requestedBy: input.requestedBy,
        summary: `Promote the geo-secondaries of ${targets.length} instance(s) of region ${input.region}; ${atRisk.length} may lose the writes not yet replicated (${input.reason})`,
        risk: Object.fromEntries(targets.map((t) => [t.name, estimates[t.instanceId]])),
        timeoutMs: input.signoffTimeoutMinutes * 60_000,
        remindEveryMs: (input.signoffRemindEveryMinutes ?? 15) * 60_000,
      });
      if (gate.decision !== 'approved') {
        // Nothing changes: primaries blocked for a drain that did not finish take writes again (finally, below).
        result.outcome = gate.decision === 'rejected' ? 'aborted' : 'expired';
        state.finish();
        return result;
      }
      // RTO from sign-off counts from the approver's decision, not from when the run took it up.
      result.signedOffAt = gate.at ?? new Date().toISOString();
      if (gate.by) result.signedOffBy = gate.by;
    }
    await state.step('promote', () =>
      forEachBounded(targets, input.concurrency, async (t) => {
        const tr = trackers.get(t.instanceId)!;
        const estimate = estimates[t.instanceId]!;
        try {
          await tr.step('promote', () => promotion.promoteSecondary({ instanceId: t.instanceId, planned: estimate.planned }));
          const sw = await tr.step('switch-endpoint', () => catalog.switchEndpoint({ instanceId: t.instanceId, to: 'alternate' }));
          const rto = await tr.step('record', () =>
            catalog.recordFailover({ instanceId: t.instanceId, kind: estimate.planned ? 'planned' : 'unplanned', declaredAt, signedOffAt: result.signedOffAt, servingAt: sw.switchedAt, estimate }),
          );
          tr.p.step = 'serving';
          tr.p.facts = { estimate, ...rto, region: sw.region, database: sw.database };
          result.instances[t.instanceId] = { name: t.name, promoted: true, region: sw.region, database: sw.database, ...rto, estimate };
        } catch (err) {
          tr.p.error = errorMessage(err);
          result.instances[t.instanceId] = { name: t.name, promoted: false, error: errorMessage(err), estimate };
          state.warn(`${t.name} was not promoted: ${errorMessage(err)}; run the failover again to finish it`);
        }
      }),
    );
    if (Object.values(result.instances).some((i) => !i.promoted)) result.outcome = 'partial';
    state.finish();
    return result;
  } catch (err) {
    state.finish(err);
    throw err;
  } finally {
    // A primary blocked for the switchover and not promoted (a failure, a cancel, a refused promotion) takes writes again.
    const stranded = blocked.filter((id) => !result.instances[id]?.promoted);
    await CancellationScope.nonCancellable(async () => {
      for (const id of stranded) await untilDone.reopenWrites({ instanceId: id, which: 'home' });
    });
    await releaseAll(locked);
  }
}

/**
 * Failback (SPEC runbook 6), per failed-over instance of the region: backs
 * up the old primary first and measures what it had that never reached the
 * secondary (the true RPO), rebuilds the home database from the secondary
 * with replication reversed, catches up, blocks writes for the switch
 * (checksums equal before and after), switches the endpoint home, restores
 * forward replication and leaves limited mode.
 */
export async function failbackWorkflow(input: FailbackInput): Promise<FailbackResult> {
  const state = new RunState(Runbooks.failback, `region:${input.region}`, input.requestedBy);
  const plan = await state.step('plan', () => catalog.failbackTargets({ region: input.region, ...(input.instanceIds ? { instanceIds: input.instanceIds } : {}) }));
  if (!plan.reachable) {
    throw ApplicationFailure.nonRetryable(`region ${input.region} does not answer: fail back once it is healthy (GET /v1/regions)`, FailureTypes.invalidState);
  }
  const result: FailbackResult = { outcome: 'completed', region: input.region, instances: {}, warnings: state.status.warnings };
  const locked: string[] = [];
  try {
    await state.step('lock-instances', async () => {
      for (const t of plan.targets) if (await lockOrSkip(state, t.instanceId, Runbooks.failback, 120, (i) => i.state === 'failed_over')) locked.push(t.instanceId);
    });
    const targets = plan.targets.filter((t) => locked.includes(t.instanceId));
    if (!targets.length) {
      result.outcome = 'nothing-to-do';
      state.finish();
      return result;
    }
    await state.step('fail-back', () =>
      forEachBounded(targets, input.concurrency, async (t) => {
        const tr = tracker(state, t.instanceId, t.name);
        const id = t.instanceId;
        let blockedServing = false;
        try {
          const fo = await tr.step('find-failover', () => catalog.openFailover({ instanceId: id }));
          const exists = await catalog.oldPrimaryExists({ instanceId: id });
          let backupId: string | null = null;
          if (exists) {
            // Derived from the failover, so a failback run again finds the same backup instead of taking a second one.
            backupId = fo?.oldPrimaryBackupId ?? `bk-old-primary-${(fo?.id ?? `${workflowInfo().workflowId}/${id}`).replace(/[^A-Za-z0-9-]/g, '-')}`;
            const b = backupId;
            await tr.step('backup-old-primary', () =>
              takeBackup(
                state,
                // Kept ten years: what the old primary had is never thrown away by retention; an operator deletes it.
                { instanceId: id, backupId: b, kind: 'on_demand', label: `failback: the old primary of ${t.name}, before it is rebuilt`, retentionDays: OLD_PRIMARY_RETENTION_DAYS, source: { region: input.region, database: t.name } },
                `${t.name}:`,
              ),
            );
          } else {
            state.warn(`${t.name}: the old primary's database is gone; nothing of it can be kept or measured`);
          }
          const measured = fo ? await tr.step('measure-loss', () => seeding.measureDivergence({ instanceId: id, failoverId: fo.id, backupId })) : null;
          await tr.step('reseed-home', () => seeding.reseedHome({ instanceId: id, backupId }));
          await tr.step('catch-up', () => seeding.waitCaughtUp({ instanceId: id, timeoutSeconds: 3600 }));
          blockedServing = true;
          const { blockedAt } = await tr.step('block-writes', () => seeding.blockServingAndDrain({ instanceId: id, timeoutSeconds: input.switchTimeoutSeconds ?? 60 }));
          await tr.step('verify-before-switch', () => seeding.verifyEqual({ instanceId: id, when: 'before-switch' }));
          await tr.step('restore-forward-replication', () => ddl.restoreForward({ instanceId: id }));
          await tr.step('switch-endpoint', () => catalog.switchEndpoint({ instanceId: id, to: 'home' }));
          blockedServing = false;
          await tr.step('verify-after-switch', async () => {
            try {
              await seeding.verifyEqual({ instanceId: id, when: 'after-switch' });
            } catch (err) {
              // Nothing could write between the two checks; home is opened rather than kept blocked, and the difference reported.
              state.warn(`${t.name}: ${errorMessage(err)}; compare the two copies before dropping the alternate`);
            }
          });
          const { openedAt } = await tr.step('open-home', () => untilDone.openHome({ instanceId: id }));
          const writeBlockedSeconds = (Date.parse(openedAt) - Date.parse(blockedAt)) / 1000;
          await tr.step('record', () => untilDone.recordFailback({ instanceId: id, failoverId: fo?.id ?? null, writeBlockedSeconds }));
          tr.p.step = 'home';
          tr.p.facts = { oldPrimaryBackupId: backupId, measuredLoss: measured, writeBlockedSeconds };
          result.instances[id] = { name: t.name, done: true, oldPrimaryBackupId: backupId, measuredLoss: measured, writeBlockedSeconds };
        } catch (err) {
          // Stopped before its switch: the secondary keeps serving, open for writes again.
          if (blockedServing) await CancellationScope.nonCancellable(() => untilDone.reopenWrites({ instanceId: id, which: 'alternate' }));
          tr.p.error = errorMessage(err);
          result.instances[id] = { name: t.name, done: false, error: errorMessage(err) };
          state.warn(`${t.name} did not fail back: ${errorMessage(err)}; it is still served from its secondary; run the failback again`);
        }
      }),
    );
    if (Object.values(result.instances).some((i) => !i.done)) result.outcome = 'partial';
    state.finish();
    return result;
  } catch (err) {
    state.finish(err);
    throw err;
  } finally {
    await releaseAll(locked);
  }
}
