import { ApplicationFailure } from '@temporalio/activity';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { FailureTypes } from '../workflows/contract.js';

/**
 * Test-only fault hooks, in one place and off unless the worker is started
 * with `BCDR_FAULT_FILE`. The file holds `{"<point>:<instanceId>": count}`;
 * each time an activity passes that point for that instance, the count goes
 * down by one and the activity fails non-retryably, as a real failure would.
 * The engine, the storage and the rest of the activity run for real.
 */
export interface FaultHooks {
  /** Fails here if a fault is armed for `point` on `instanceId`. */
  check(point: FaultPoint, instanceId: string): void;
  /**
   * Holds here while `hold:<point>:<instanceId>` is armed (marking
   * `held:<point>:<instanceId>` so a test knows the activity is there), for a
   * test to kill the worker at exactly this moment. Returns once disarmed.
   */
  hold(point: FaultPoint, instanceId: string): Promise<void>;
}

/** Where a fault can be injected. */
export const FaultPoints = {
  /** Inside restoreToStaging, after the staging database exists and before pg_restore. */
  restoreStaging: 'restore-staging',
  /** Inside swapInRestored, after the swap began (connections refused, sessions ended) and before the renames. */
  swap: 'swap',
  /** Inside promoteSecondary, after the subscription is gone and before sequences move and the copy turns writable. */
  promote: 'promote',
} as const;
export type FaultPoint = (typeof FaultPoints)[keyof typeof FaultPoints];

/** Hooks that never fire: the production default. */
export const noFaults: FaultHooks = { check() {}, hold: async () => {} };

/** Hooks read from `file` (a test arms them by writing it). */
export function fileFaults(file: string): FaultHooks {
  return {
    check(point, instanceId) {
      if (!existsSync(file)) return;
      const armed = JSON.parse(readFileSync(file, 'utf8') || '{}') as Record<string, number>;
      const key = `${point}:${instanceId}`;
      if (!armed[key]) return;
      armed[key] -= 1;
      writeFileSync(file, JSON.stringify(armed));
      throw ApplicationFailure.nonRetryable(`injected fault at ${point} for ${instanceId} (test hook)`, FailureTypes.injectedFault);
    },
    async hold(point, instanceId) {
      const read = () => (existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8') || '{}') as Record<string, number>) : {});
      const key = `hold:${point}:${instanceId}`;
      if (!read()[key]) return;
      writeFileSync(file, JSON.stringify({ ...read(), [`held:${point}:${instanceId}`]: 1 }));
      for (const deadline = Date.now() + 600_000; read()[key] && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 100));
    },
  };
}
