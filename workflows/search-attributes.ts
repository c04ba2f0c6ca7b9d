import { defineSearchAttributeKey, SearchAttributeType, type SearchAttributePair } from '@temporalio/common';

/** Search attribute: the instance a run acts on. */
export const InstanceIdKey = defineSearchAttributeKey('InstanceId', SearchAttributeType.KEYWORD);
/** Search attribute: the runbook a run executes. */
export const RunbookKey = defineSearchAttributeKey('Runbook', SearchAttributeType.KEYWORD);

/** The search attributes every run carries, so engineers find it by instance and runbook in the Web UI. Workflow-safe: child runs use it too. */
export function runSearchAttributes(instanceId: string, runbook: string): SearchAttributePair[] {
  return [
    { key: InstanceIdKey, value: instanceId },
    { key: RunbookKey, value: runbook },
  ];
}
