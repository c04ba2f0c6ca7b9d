import type { TokenConfig } from '../lib/config.js';

/** Bearer tokens the test API accepts: one per role, plus a second approver for four-eyes checks. */
export const testTokens: TokenConfig[] = [
  { token: 'test-operator-token', identity: 'olivia.operator', roles: ['operator'] },
  { token: 'test-viewer-token', identity: 'victor.viewer', roles: ['viewer'] },
  { token: 'test-approver-token', identity: 'anna.approver', roles: ['approver'] },
];

export const OPERATOR = 'test-operator-token';
export const VIEWER = 'test-viewer-token';
