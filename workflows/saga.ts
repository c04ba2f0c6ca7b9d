import { CancellationScope, log } from '@temporalio/workflow';
import { errorMessage, type RunState } from './run-state.js';

/**
 * A saga's compensation stack. Each completed step pushes its undo; on
 * failure (or cancellation) `unwind` runs them in reverse, out of reach of
 * the cancellation, logging and going on past an undo that fails.
 */
export class Compensations {
  private readonly stack: { name: string; run: () => Promise<void> }[] = [];

  push(name: string, run: () => Promise<void>): void {
    this.stack.push({ name, run });
  }

  /** Forgets an undo that must no longer run (its step was superseded). */
  drop(name: string): void {
    const i = this.stack.findIndex((c) => c.name === name);
    if (i >= 0) this.stack.splice(i, 1);
  }

  /** Runs every undo, newest first; returns the names of those that failed (each also a warning on the run). */
  async unwind(state: RunState): Promise<string[]> {
    const failed: string[] = [];
    await CancellationScope.nonCancellable(async () => {
      for (let c = this.stack.pop(); c; c = this.stack.pop()) {
        try {
          await c.run();
        } catch (err) {
          log.error('compensation failed; going on with the rest', { step: c.name, error: errorMessage(err) });
          state.warn(`undo step ${c.name} failed: ${errorMessage(err)}`);
          failed.push(c.name);
        }
      }
    });
    return failed;
  }
}
