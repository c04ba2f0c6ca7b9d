/**
 * Backup runbook wall time against raw `pg_dump -Fc` to a file, on the same
 * pgbench database, measured in the same run, alternating the two so machine
 * noise hits both alike. Needs the local stack running (`npm start`).
 *
 *   npm run bench -- --scale 70 --runs 3
 *
 * Options: --scale (pgbench scale; 70 ≈ 1 GB), --runs, --api (default
 * http://127.0.0.1:8080), --token (default dev-operator-token), --keep.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { resolvePgBinDir } from '../lib/engine/postgres.js';

const { values } = parseArgs({
  options: {
    scale: { type: 'string', default: '70' },
    runs: { type: 'string', default: '3' },
    api: { type: 'string', default: process.env.BCDR_API_URL ?? 'http://127.0.0.1:8080' },
    token: { type: 'string', default: process.env.BCDR_TOKEN ?? 'dev-operator-token' },
    keep: { type: 'boolean', default: false },
  },
});
const scale = Number(values.scale);
const runs = Number(values.runs);
const pgBin = resolvePgBinDir(process.env.PG_BIN_DIR);
const tool = (t: string) => (pgBin ? path.join(pgBin, t) : t);

async function api(method: string, p: string, body?: unknown): Promise<any> {
  const send = () =>
    fetch(`${values.api}${p}`, {
      method,
      headers: { authorization: `Bearer ${values.token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  // A kept-alive socket may have been closed by the server while a long dump ran; one retry on a fresh one.
  const res = await send().catch(() => send());
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main() {
  const name = `bench-s${scale}`;
  let inst = await api('GET', `/v1/instances/${name}`).catch(() => undefined);
  if (!inst) inst = await api('POST', '/v1/instances', { name, type: 'sandbox', edition: 'standard', homeRegion: 'primary' });
  const ep = new URL(inst.endpoint);
  const pgEnv = { PGHOST: ep.hostname, PGPORT: ep.port, PGUSER: 'postgres', PGDATABASE: name };
  const hasData = spawnSync(tool('psql'), ['-tAc', "select count(*) from pg_tables where tablename = 'pgbench_accounts'"], { env: { ...process.env, ...pgEnv }, encoding: 'utf8' });
  if (hasData.stdout.trim() !== '1') {
    console.log(`loading pgbench scale ${scale} into ${name} ...`);
    const t = Date.now();
    run(tool('pgbench'), ['-i', '-q', '-s', String(scale)], pgEnv);
    console.log(`  loaded in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  }
  const dbSize = spawnSync(tool('psql'), ['-tAc', `select pg_database_size(current_database())`], { env: { ...process.env, ...pgEnv }, encoding: 'utf8' }).stdout.trim();
  console.log(`database ${name}: ${(Number(dbSize) / 1e9).toFixed(2)} GB`);

  const dir = mkdtempSync(path.join(os.tmpdir(), 'bcdr-bench-'));
  const raw: number[] = [];
  const runbook: number[] = [];
  let archiveBytes = 0;
  let rawBytes = 0;
  try {
    for (let i = 0; i < runs; i++) {
      const file = path.join(dir, `raw-${i}.dump`);
      let t = Date.now();
      run(tool('pg_dump'), ['-Fc', '-f', file], pgEnv);
      raw.push((Date.now() - t) / 1000);
      rawBytes = statSync(file).size;
      rmSync(file);

      t = Date.now();
      const started = await api('POST', `/v1/instances/${inst.id}/backups`, { label: `bench ${i}`, retentionDays: 1 });
      for (;;) {
        const r = await api('GET', `/v1/runs/${encodeURIComponent(started.run.workflowId)}`);
        if (r.status === 'completed') {
          archiveBytes = r.result.sizeBytes;
          break;
        }
        if (r.status !== 'running') throw new Error(`backup run ${r.status}: ${r.error}`);
        await new Promise((res) => setTimeout(res, 100));
      }
      runbook.push((Date.now() - t) / 1000);
      if (!values.keep) await api('DELETE', `/v1/backups/${started.backupId}`);
      console.log(`run ${i + 1}/${runs}: pg_dump -Fc ${raw[i]!.toFixed(2)} s, backup runbook ${runbook[i]!.toFixed(2)} s`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const ratio = median(runbook) / median(raw);
  console.log(`
pgbench scale ${scale}, database ${(Number(dbSize) / 1e9).toFixed(2)} GB, ${runs} runs each (alternating)
  raw pg_dump -Fc to a file   median ${median(raw).toFixed(2)} s   archive ${(rawBytes / 1e6).toFixed(1)} MB
  backup runbook (API→done)   median ${median(runbook).toFixed(2)} s   archive ${(archiveBytes / 1e6).toFixed(1)} MB
  ratio runbook / pg_dump     ${ratio.toFixed(2)}x`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
