import { loadConfigOrExit } from '../lib/config.js';
import { createBcdrWorker } from './create.js';

/** Worker process: runs until SIGINT/SIGTERM, then finishes in-flight tasks and exits. */
async function main(): Promise<void> {
  const cfg = loadConfigOrExit();
  const { worker, close } = await createBcdrWorker(cfg);
  console.log(`worker polling task queue ${cfg.TEMPORAL_TASK_QUEUE} on ${cfg.TEMPORAL_ADDRESS} (namespace ${cfg.TEMPORAL_NAMESPACE})`);
  await worker.run(); // the SDK shuts down gracefully on SIGINT/SIGTERM
  await close();
}

main().catch((err: unknown) => {
  console.error('worker failed:', err instanceof Error ? err.message : err);
  process.exit(1);
});
