import { setHandler } from '@temporalio/workflow';
import { runStatusQuery, type Runbook, type RunStatus } from './contract.js';

/** The step tracker every runbook keeps, answered by `runStatusQuery`. */
export class RunState {
  readonly status: RunStatus;

  constructor(runbook: Runbook, instanceId: string) {
    this.status = { runbook, instanceId, step: 'starting', stepsDone: [], warnings: [] };
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
