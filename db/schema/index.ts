export * from './regions.js';
export * from './instances.js';
export * from './backups.js';
export * from './schedules.js';
export * from './audit.js';
export * from './signoffs.js';
export * from './replication.js';
