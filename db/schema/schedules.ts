import { boolean, integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * The daily (system) backup policy of one instance, mirrored into a Temporal
 * Schedule. The last-run columns are written by the backup workflow itself.
 */
export const backupSchedules = pgTable('backup_schedules', {
  instanceId: text('instance_id').primaryKey(),
  scheduleId: text('schedule_id').notNull(),
  startTime: text('start_time').notNull().default('02:00'),
  intervalDays: integer('interval_days').notNull().default(1),
  retentionDays: integer('retention_days').notNull().default(3),
  keepAtLeastOne: boolean('keep_at_least_one').notNull().default(true),
  enabled: boolean('enabled').notNull().default(true),
  lastRunAt: timestamp('last_run_at', { withTimezone: true }),
  lastRunStatus: text('last_run_status', { enum: ['completed', 'failed'] }),
  lastRunError: text('last_run_error'),
  lastRunWorkflowId: text('last_run_workflow_id'),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});
export type BackupScheduleRow = typeof backupSchedules.$inferSelect;
