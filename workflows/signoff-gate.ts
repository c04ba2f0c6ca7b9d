import { CancellationScope, condition, isCancellation, setHandler } from '@temporalio/workflow';
import { signOffSignal, type Runbook, type SignOffDecision } from './contract.js';
import { catalog } from './proxies.js';
import type { RunState } from './run-state.js';

/** What the gate asks for, from whom, and how long it waits. */
export interface GateOptions {
  /** Names the gate within its run (one run may have several). */
  gate: string;
  runbook: Runbook;
  instanceIds: string[];
  /** Who started the run: they may never sign it off (four eyes). */
  requestedBy: string;
  /** What the approver allows, in one sentence. */
  summary: string;
  /** What each instance could lose, when the runbook can say. */
  risk?: Record<string, unknown>;
  timeoutMs: number;
  /** How often a reminder is audited while the gate waits. */
  remindEveryMs: number;
}

/** How a gate ended. `expired`: nobody decided before the deadline. */
export interface GateOutcome {
  decision: 'approved' | 'rejected' | 'expired';
  by?: string;
  statement?: string;
  /** When the approver decided (the API's time of the request). */
  at?: string;
}

/**
 * Waits for an approver's written sign-off, delivered as `signOffSignal`
 * (the API checks the approver role and the four-eyes rule first; a decision
 * by the requester is ignored here too). Records the request, reminders and
 * the outcome in the catalog and the audit trail; the decision and its
 * statement are in the run's history as the signal. A deadline that passes is
 * an outcome, not an error. Shared by every runbook that needs sign-off.
 */
export async function signOffGate(state: RunState, o: GateOptions): Promise<GateOutcome> {
  let decision: SignOffDecision | undefined;
  setHandler(signOffSignal, (d) => {
    if (decision || d.gate !== o.gate) return;
    if (d.by === o.requestedBy) {
      state.warn(`ignored a sign-off by ${d.by}: whoever started the run cannot sign it off (four eyes)`);
      return;
    }
    decision = d;
  });
  const deadline = new Date(Date.now() + o.timeoutMs).toISOString();
  const { gate } = o;
  try {
    await catalog.openSignoff({ gate, runbook: o.runbook, instanceIds: o.instanceIds, requestedBy: o.requestedBy, summary: o.summary, risk: o.risk, deadline });
    const decided = await state.waitFor({ kind: 'signoff', until: deadline, detail: o.summary }, async () => {
      for (;;) {
        const left = Date.parse(deadline) - Date.now();
        if (left <= 0) return undefined;
        if (await condition(() => decision !== undefined, Math.min(left, o.remindEveryMs))) return decision;
        if (Date.parse(deadline) > Date.now()) await catalog.remindSignoff({ gate, deadline });
      }
    });
    if (!decided) {
      await catalog.closeSignoff({ gate, status: 'expired' });
      return { decision: 'expired' };
    }
    const outcome = decided.decision === 'approve' ? 'approved' : 'rejected';
    await catalog.closeSignoff({ gate, status: outcome, by: decided.by, statement: decided.statement, at: decided.at });
    return { decision: outcome, by: decided.by, statement: decided.statement, at: decided.at };
  } catch (err) {
    if (isCancellation(err)) await CancellationScope.nonCancellable(() => catalog.closeSignoff({ gate, status: 'cancelled' }));
    throw err;
  }
}
