import type { TokenConfig } from '../lib/config.js';

/** Bearer tokens the test API accepts: one per role, plus a second approver for four-eyes checks. */
export const testTokens: TokenConfig[] = [
  { token: 'test-operator-token', identity: 'olivia.operator', roles: ['operator'] },
  { token: 'test-viewer-token', identity: 'victor.viewer', roles: ['viewer'] },
  { token: 'test-approver-token', identity: 'anna.approver', roles: ['approver'] },
  { token: 'test-second-approver-token', identity: 'bob.approver', roles: ['approver'] },
  // Both roles on one person: may start a run that needs sign-off, but never sign it off (four eyes).
  { token: 'test-opsapprover-token', identity: 'olivia.operator', roles: ['operator', 'approver'] },
];

export const OPERATOR = 'test-operator-token';
export const VIEWER = 'test-viewer-token';
export const APPROVER = 'test-approver-token';
export const SECOND_APPROVER = 'test-second-approver-token';
/** The operator's own identity, with the approver role too: self-approval must still be refused. */
export const SELF_APPROVER = 'test-opsapprover-token';
