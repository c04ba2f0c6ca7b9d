/**
 * Restore runbook wall time against raw `pg_restore` of the same archive file
 * into a fresh empty database (`createdb`, then `pg_restore -d`), on the same
 * server, measured in the same run, alternating the two (runbook, raw,
 * runbook, raw …) so machine noise hits both alike, each from a quiet server
 * (the previous run's replaced copy dropped, then CHECKPOINT; not counted).
 * Needs the local stack running (`npm start`); start it with
 * `DROP_RETIRED_AFTER_SECONDS=5` so the bench does not wait a minute a run.
 *
 *   npm run bench:restore -- --scale 70 --runs 3
 *   npm run bench:restore -- --data tables --tables 8 --mb 60 --jobs 2 --runs 3
 *
 * The archive is a backup the bench takes through the API of the source
 * instance (`bench-s70`, `bench-t8x60m`, …), restored by the restore runbook
 * into a sandbox instance `<source>-rt` (it lands suspended; restoring into it
 * again works) and by pg_restore from the region's blob folder
 * (`<data-dir>/blobs/<region>/<objectKey>`).
 *
 * Options: --data pgbench|tables (default pgbench), --scale (pgbench scale;
 * 70 ≈ 1 GB), --tables and --mb (tables: how many equal tables of how many MB;
 * default 8 × 60), --jobs (runbook `jobs` and `pg_restore -j`; default 1),
 * --runs, --api, --token, --data-dir (the stack's, for its blob folders and
 * Temporal port; default $BCDR_DATA_DIR or .data), --temporal, --timings
 * (print each run's activity timings), --probe (watch the server's sessions
 * to tell how long pg_restore itself ran inside each run; light load), --keep
 * (keep the bench's backup).
 */
import { existsSync, mkdtempSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  awaitRun,
  commonOptions,
  describeData,
  ensureData,
  ensureInstance,
  fmt,
  gb,
  instanceNameOf,
  mb,
  median,
  openBench,
  pgEnvOf,
  printTimeline,
  psql,
  run,
  runAsync,
  runTimeline,
  sessionProbe,
  spanNote,
  tool,
  type DataSpec,
} from './lib.js';

const { values } = parseArgs({
  options: {
    ...commonOptions,
    data: { type: 'string', default: 'pgbench' },
    scale: { type: 'string', default: '70' },
    tables: { type: 'string', default: '8' },
    mb: { type: 'string', default: '60' },
    jobs: { type: 'string', default: '1' },
    probe: { type: 'boolean', default: false },
  },
});
if (values.data !== 'pgbench' && values.data !== 'tables') throw new Error('--data must be pgbench or tables');
const spec: DataSpec = values.data === 'pgbench' ? { kind: 'pgbench', scale: Number(values.scale) } : { kind: 'tables', tables: Number(values.tables), mb: Number(values.mb) };
const jobs = Number(values.jobs);

async function main() {
  const b = await openBench(values);
  const name = instanceNameOf(spec);
  const source = await ensureInstance(b, name);
  const pgEnv = pgEnvOf(source.endpoint, name);
  const dbBytes = ensureData(pgEnv, spec);
  const target = await ensureInstance(b, `${name}-rt`);
  console.log(`database ${name}: ${gb(dbBytes)}; restore target: sandbox ${target.name} (${target.id})`);

  console.log('taking the backup to restore ...');
  const started = await b.api('POST', `/v1/instances/${source.id}/backups`, { label: 'restore bench', retentionDays: 1 });
  await awaitRun(b, started.run.workflowId);
  const backup = await b.api('GET', `/v1/backups/${started.backupId}`);
  // The stored archive is encrypted: the baseline restores a plain `pg_dump -Fc` of the same database.
  const archive = path.join(mkdtempSync(path.join(os.tmpdir(), 'bcdr-bench-')), 'baseline.dump');
  await runAsync(tool('pg_dump'), ['-Fc', '-f', archive], { ...pgEnv, PGAPPNAME: 'bench-baseline-dump' });
  if (!existsSync(archive)) throw new Error(`baseline archive ${archive} was not written`);
  const archiveBytes = statSync(archive).size;
  console.log(`backup ${backup.id}: ${archive} (${mb(archiveBytes)})`);

  const rawDb = `${name.replace(/-/g, '_')}_raw_restore`;
  const adminEnv = { ...pgEnv, PGDATABASE: 'postgres' };
  const dropRaw = () => run(tool('dropdb'), ['--if-exists', '--force', rawDb], adminEnv);
  const probe = values.probe ? sessionProbe(adminEnv) : null;
  const toolSpan = (prefix: string, since: number, end: number) => spanNote(probe, prefix, 'pg_restore', since, end);
  const raw: number[] = [];
  const runbook: number[] = [];
  let rawRestoredBytes = 0;
  let runbookRestoredBytes = 0;
  try {
    dropRaw();
    // Each timed run starts from a quiet server: the previous runbook's replaced copy dropped (its
    // drop-retired run, DROP_RETIRED_AFTER_SECONDS after the swap) and the dirty pages written out.
    // Neither wait is counted, for either side, as the raw side's dropdb is not.
    const settle = async () => {
      for (const deadline = Date.now() + 600_000; Number(psql(adminEnv, `select count(*) from pg_database where datname like '%\\_\\_bcdr\\_retired'`)) > 0; ) {
        if (Date.now() > deadline) throw new Error('a replaced copy was never dropped');
        await new Promise((r) => setTimeout(r, 500));
      }
      psql(adminEnv, 'CHECKPOINT');
    };
    for (let i = 0; i < b.runs; i++) {
      await settle();
      let t = performance.now();
      const t0 = Date.now();
      const restore = await b.api('POST', '/v1/runbooks/restore', { backupId: backup.id, target: { instance: target.id }, jobs });
      const result = await awaitRun(b, restore.run.workflowId);
      runbook.push((performance.now() - t) / 1000);
      runbookRestoredBytes = result.databaseBytes;
      const runbookNote = toolSpan('bcdr-restore-', t0, Date.now());

      await settle();
      t = performance.now();
      const t1 = Date.now();
      await runAsync(tool('createdb'), [rawDb], adminEnv);
      await runAsync(tool('pg_restore'), ['--exit-on-error', `--dbname=${rawDb}`, ...(jobs > 1 ? [`--jobs=${jobs}`] : []), archive], { ...adminEnv, PGAPPNAME: 'bench-raw-restore' });
      raw.push((performance.now() - t) / 1000);
      const rawNote = toolSpan('bench-raw-restore', t1, Date.now());
      rawRestoredBytes = Number(psql(adminEnv, `select pg_database_size('${rawDb}')`));
      // Not counted, but telling: DROP DATABASE forces a checkpoint, which writes out what the restore left dirty.
      t = performance.now();
      dropRaw();
      const dropSecs = (performance.now() - t) / 1000;

      console.log(`run ${i + 1}/${b.runs}: restore runbook ${fmt(runbook[i]!)} s${runbookNote}; createdb + pg_restore${jobs > 1 ? ` -j ${jobs}` : ''} ${fmt(raw[i]!)} s${rawNote} (then dropdb, not counted: ${fmt(dropSecs)} s)`);
      if (values.timings) printTimeline(await runTimeline(b, restore.run.workflowId));
    }
  } finally {
    await probe?.stop();
    dropRaw();
    if (!values.keep) await b.api('DELETE', `/v1/backups/${backup.id}`).catch((err: unknown) => console.error(`could not delete backup ${backup.id}: ${String(err)}`));
    await b.close();
  }
  const ratio = median(runbook) / median(raw);
  console.log(`
${describeData(spec)}, database ${gb(dbBytes)}, archive ${mb(archiveBytes)}, jobs ${jobs}, ${b.runs} runs each (alternating)
  restore runbook (API→done)         median ${fmt(median(runbook))} s   restored ${gb(runbookRestoredBytes)}   runs ${runbook.map(fmt).join(' ')}
  createdb + pg_restore${jobs > 1 ? ` -j ${jobs}` : '     '}         median ${fmt(median(raw))} s   restored ${gb(rawRestoredBytes)}   runs ${raw.map(fmt).join(' ')}
  ratio runbook / pg_restore         ${ratio.toFixed(3)}x`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
