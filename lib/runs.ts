import { WorkflowNotFoundError, type Client } from '@temporalio/client';

/** True while the workflow `workflowId` has an open run. */
export async function isRunRunning(client: Client, workflowId: string): Promise<boolean> {
  try {
    const d = await client.workflow.getHandle(workflowId).describe();
    return d.status.name === 'RUNNING';
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}
