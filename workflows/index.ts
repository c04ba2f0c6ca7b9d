/** Every workflow the worker registers. Only workflow functions are exported here. */
export { onDemandBackupWorkflow, dailyBackupWorkflow } from './backup.js';
export { provisionInstanceWorkflow, deleteInstanceWorkflow } from './instances.js';
export { retentionSweepWorkflow } from './retention.js';
export { restoreWorkflow, resetWorkflow, dropRetiredWorkflow } from './restore.js';
export { productionRestoreWorkflow } from './production-restore.js';
export { geoSecondaryWorkflow, regionMonitorWorkflow, regionFailoverWorkflow, failbackWorkflow } from './failover.js';
export { rotateBackupKeysWorkflow } from './keys.js';
