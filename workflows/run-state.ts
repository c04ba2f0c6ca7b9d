import { setHandler } from '@temporalio/workflow';
import { runStatusQuery, type Runbook, type RunStatus, type RunWait } from './contract.js';

/** The step tracker every runbook keeps, answered by `runStatusQuery`. */
export class RunState {
  readonly status: RunStatus;

  constructor(runbook: Runbook, instanceId: string, requestedBy?: string) {
    this.status = { runbook, instanceId, step: 'starting', stepsDone: [], warnings: [], ...(requestedBy ? { requestedBy } : {}) };
    setHandler(runStatusQuery, () => this.status);
  }

  /** Runs `fn` as the named step, so queries and the Web UI show where the run is. */
  async step<T>(name: string, fn: () => Promise<T>): Promise<T> {
    this.status.step = name;
    const out = await fn();
    this.status.stepsDone.push(name);
    return out;
  }

  /** Adds a warning the run reports (once per distinct text). */
  warn(message: string): void {
    if (!this.status.warnings.includes(message)) this.status.warnings.push(message);
  }

  /** Shows what the run waits for (a sign-off, a window) until `fn` settles. */
  async waitFor<T>(wait: RunWait, fn: () => Promise<T>): Promise<T> {
    this.status.waiting = wait;
    try {
      return await fn();
    } finally {
      delete this.status.waiting;
    }
  }

  /** Marks the run ended, successfully or with the error's message. */
  finish(error?: unknown): void {
    this.status.step = error ? 'failed' : 'completed';
    if (error) this.status.error = errorMessage(error);
  }
}

/** The most specific message of a (possibly wrapped) Temporal failure. */
export function errorMessage(err: unknown): string {
  let e: unknown = err;
  while (e && typeof e === 'object' && 'cause' in e && (e as { cause?: unknown }).cause) e = (e as { cause: unknown }).cause;
  return e instanceof Error ? e.message : String(e);
}

/** The ApplicationFailure type at the root of a (possibly wrapped) Temporal failure, if any. */
export function failureTypeOf(err: unknown): string | undefined {
  let e: unknown = err;
  let type: string | undefined;
  while (e && typeof e === 'object') {
    const t = (e as { type?: unknown }).type;
    if (typeof t === 'string' && t) type = t;
    e = (e as { cause?: unknown }).cause;
  }
  return type;
}
