/**
 * Backup runbook wall time against raw `pg_dump -Fc` to a file, on the same
 * database, measured in the same run, alternating the two so machine noise
 * hits both alike. Needs the local stack running (`npm start`).
 *
 *   npm run bench -- --scale 70 --runs 3
 *   npm run bench -- --data incompressible --mb 1000 --runs 3
 *
 * Options: --data pgbench|incompressible (default pgbench), --scale (pgbench
 * scale; 70 ≈ 1 GB), --mb (incompressible: MB of random bytes, default 1000),
 * --runs, --api (default http://127.0.0.1:8080), --token (default
 * dev-operator-token), --data-dir (the stack's, for its Temporal port; default
 * $BCDR_DATA_DIR or .data), --temporal (address), --timings (print each run's
 * activity timings), --probe (watch the server's sessions to tell how long
 * pg_dump itself ran inside each run; light load), --keep (keep the backups).
 *
 * The runbook is timed from the API request to the run's completion, which is
 * awaited through Temporal (no polling load, no polling delay).
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { awaitRun, commonOptions, describeData, ensureData, ensureInstance, fmt, gb, instanceNameOf, mb, median, openBench, pgEnvOf, printTimeline, runAsync, runTimeline, sessionProbe, spanNote, tool, type DataSpec } from './lib.js';

const { values } = parseArgs({
  options: {
    ...commonOptions,
    data: { type: 'string', default: 'pgbench' },
    scale: { type: 'string', default: '70' },
    mb: { type: 'string', default: '1000' },
    probe: { type: 'boolean', default: false },
  },
});
if (values.data !== 'pgbench' && values.data !== 'incompressible') throw new Error('--data must be pgbench or incompressible');
const spec: DataSpec = values.data === 'pgbench' ? { kind: 'pgbench', scale: Number(values.scale) } : { kind: 'incompressible', mb: Number(values.mb) };

async function main() {
  const b = await openBench(values);
  const name = instanceNameOf(spec);
  const inst = await ensureInstance(b, name);
  const pgEnv = pgEnvOf(inst.endpoint, name);
  const dbBytes = ensureData(pgEnv, spec);
  console.log(`database ${name}: ${gb(dbBytes)}`);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'bcdr-bench-'));
  const raw: number[] = [];
  const runbook: number[] = [];
  let archiveBytes = 0;
  let rawBytes = 0;
  const probe = values.probe ? sessionProbe(pgEnv) : null;
  try {
    for (let i = 0; i < b.runs; i++) {
      const file = path.join(dir, `raw-${i}.dump`);
      let t = performance.now();
      let since = Date.now();
      await runAsync(tool('pg_dump'), ['-Fc', '-f', file], { ...pgEnv, PGAPPNAME: 'bench-raw-dump' });
      raw.push((performance.now() - t) / 1000);
      const rawNote = spanNote(probe, 'bench-raw-dump', 'pg_dump', since, Date.now());
      rawBytes = statSync(file).size;
      rmSync(file);

      t = performance.now();
      since = Date.now();
      const started = await b.api('POST', `/v1/instances/${inst.id}/backups`, { label: `bench ${i}`, retentionDays: 1 });
      const result = await awaitRun(b, started.run.workflowId);
      runbook.push((performance.now() - t) / 1000);
      const runbookNote = spanNote(probe, 'bcdr-dump-', 'pg_dump', since, Date.now());
      archiveBytes = result.sizeBytes;
      console.log(`run ${i + 1}/${b.runs}: pg_dump -Fc ${fmt(raw[i]!)} s${rawNote}; backup runbook ${fmt(runbook[i]!)} s${runbookNote}`);
      if (values.timings) printTimeline(await runTimeline(b, started.run.workflowId));
      if (!values.keep) await b.api('DELETE', `/v1/backups/${started.backupId}`);
    }
  } finally {
    await probe?.stop();
    rmSync(dir, { recursive: true, force: true });
    await b.close();
  }
  const ratio = median(runbook) / median(raw);
  console.log(`
${describeData(spec)}, database ${gb(dbBytes)}, ${b.runs} runs each (alternating)
  raw pg_dump -Fc to a file   median ${fmt(median(raw))} s   archive ${mb(rawBytes)}   runs ${raw.map(fmt).join(' ')}
  backup runbook (API→done)   median ${fmt(median(runbook))} s   archive ${mb(archiveBytes)}   runs ${runbook.map(fmt).join(' ')}
  ratio runbook / pg_dump     ${ratio.toFixed(3)}x`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
