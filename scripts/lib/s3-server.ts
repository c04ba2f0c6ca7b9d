import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import {
  CreateBucketCommand,
  GetObjectLockConfigurationCommand,
  ListBucketsCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { stopChild, waitFor } from './services.js';
import { MissingToolError, toolsDir } from './tools.js';

/** The versitygw release the project builds (its Object Lock behaviour was measured with this one: see test/blob-stores.test.ts). */
export const VERSITYGW_VERSION = 'v1.8.0';

/** The region versitygw is started with (any name works; the SDK needs one). */
export const S3_SERVER_REGION = 'us-east-1';

function onPath(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() || undefined : undefined;
}

/**
 * Finds versitygw, an S3 server on a plain folder (the project's local S3 for
 * tests and the dev stack): $VERSITYGW_BIN, or `.tools/versitygw/bin`. When
 * absent, builds it there with `go install` (Go modules come from the Go
 * module proxy; nothing else is downloaded). Throws MissingToolError when Go
 * is not installed.
 */
export function ensureVersitygw(log: (msg: string) => void = console.log): string {
  const explicit = process.env.VERSITYGW_BIN;
  if (explicit) {
    if (existsSync(explicit)) return explicit;
    throw new MissingToolError(`VERSITYGW_BIN is ${explicit}, which does not exist; unset it to build versitygw into .tools/versitygw`);
  }
  const binDir = path.join(toolsDir, 'versitygw', 'bin');
  const local = path.join(binDir, 'versitygw');
  if (existsSync(local)) return local;
  const go = onPath('go') ?? ['/usr/local/go/bin/go', '/usr/lib/go/bin/go'].find((p) => existsSync(p));
  if (!go) {
    throw new MissingToolError(
      'versitygw (the local S3 server for object-storage backups) is not installed and Go is not available to build it.\n' +
        `Install Go 1.25 or newer (https://go.dev/doc/install; Debian: apt-get install golang-go), or build versitygw ${VERSITYGW_VERSION} yourself and set VERSITYGW_BIN to it.`,
    );
  }
  log(`building versitygw ${VERSITYGW_VERSION} (go install) into .tools/versitygw ...`);
  mkdirSync(binDir, { recursive: true });
  try {
    execFileSync(go, ['install', `github.com/versity/versitygw/cmd/versitygw@${VERSITYGW_VERSION}`], {
      stdio: ['ignore', 'inherit', 'inherit'],
      // GOFLAGS=-buildvcs=false: the module is built outside any git work tree of ours.
      env: { ...process.env, GOBIN: binDir, GOFLAGS: [process.env.GOFLAGS, '-buildvcs=false'].filter(Boolean).join(' ') },
    });
  } catch (err) {
    throw new MissingToolError(`go install of versitygw ${VERSITYGW_VERSION} failed (${(err as Error).message.split('\n')[0]}); build it by hand and set VERSITYGW_BIN`);
  }
  if (!existsSync(local)) throw new MissingToolError(`go install reported success but ${local} is missing; build versitygw by hand and set VERSITYGW_BIN`);
  return local;
}

/** A running local S3 server and how to reach it. */
export interface S3Server {
  /** `http://127.0.0.1:<port>`: use with forcePathStyle. */
  endpoint: string;
  region: string;
  accessKey: string;
  secretKey: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/**
 * Starts versitygw's posix backend on 127.0.0.1:`port`: buckets are folders
 * of `dataDir/buckets` (the filesystem must support extended attributes, as
 * ext4 and xfs do), and `dataDir/versions` holds object versions, which
 * versioned and Object Lock buckets need. The root credentials are passed in
 * the environment, not on the command line. Resolves once an authenticated
 * ListBuckets succeeds.
 */
export async function startS3Server(opts: {
  bin: string;
  port: number;
  dataDir: string;
  logFile: string;
  accessKey: string;
  secretKey: string;
  timeoutMs?: number;
  /** Called as soon as the process exists, before readiness, so a caller can stop it whatever happens next. */
  onSpawn?: (child: ChildProcess) => void;
}): Promise<S3Server> {
  const root = path.join(opts.dataDir, 'buckets');
  const versions = path.join(opts.dataDir, 'versions');
  mkdirSync(root, { recursive: true });
  mkdirSync(versions, { recursive: true });
  mkdirSync(path.dirname(opts.logFile), { recursive: true });
  const log = createWriteStream(opts.logFile, { flags: 'a' });
  const args = ['--port', `127.0.0.1:${opts.port}`, '--region', S3_SERVER_REGION, '--quiet', 'posix', '--versioning-dir', versions, root];
  const child = spawn(opts.bin, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    env: { ...process.env, ROOT_ACCESS_KEY_ID: opts.accessKey, ROOT_SECRET_ACCESS_KEY: opts.secretKey },
  });
  opts.onSpawn?.(child);
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  let exited: string | undefined;
  child.once('exit', (code, sig) => (exited = `exited with ${sig ?? code}`));
  const server: S3Server = {
    endpoint: `http://127.0.0.1:${opts.port}`,
    region: S3_SERVER_REGION,
    accessKey: opts.accessKey,
    secretKey: opts.secretKey,
    child,
    stop: () => stopChild(child, 10_000),
  };
  const client = s3ClientFor(server);
  try {
    await waitFor(
      `versitygw on ${server.endpoint}`,
      async () => {
        if (exited) throw new Error(`versitygw ${exited}; see ${opts.logFile}`);
        await client.send(new ListBucketsCommand({}));
        return true;
      },
      opts.timeoutMs ?? 30_000,
    );
  } catch (err) {
    child.kill('SIGKILL');
    if (exited) throw new Error(`versitygw ${exited}; see ${opts.logFile}`);
    throw err;
  } finally {
    client.destroy();
  }
  return server;
}

/** An SDK client for `server` with its root credentials (path-style addressing, as a local server needs). */
export function s3ClientFor(server: Pick<S3Server, 'endpoint' | 'region' | 'accessKey' | 'secretKey'>): S3Client {
  return new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKey, secretAccessKey: server.secretKey },
    maxAttempts: 1,
  });
}

/**
 * Creates `bucket` on `server`, with Object Lock (and so versioning) when
 * asked. Idempotent: an existing bucket is kept, but one without Object Lock
 * when it was asked for is an error (Object Lock cannot be turned on later here).
 */
export async function createBucket(server: Pick<S3Server, 'endpoint' | 'region' | 'accessKey' | 'secretKey'>, bucket: string, opts: { objectLock: boolean }): Promise<void> {
  const client = s3ClientFor(server);
  try {
    try {
      await client.send(new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: opts.objectLock || undefined }));
      return;
    } catch (err) {
      if (!['BucketAlreadyOwnedByYou', 'BucketAlreadyExists'].includes((err as Error).name)) throw err;
    }
    if (!opts.objectLock) return;
    const lock = await client.send(new GetObjectLockConfigurationCommand({ Bucket: bucket })).catch(() => undefined);
    if (lock?.ObjectLockConfiguration?.ObjectLockEnabled !== 'Enabled') {
      throw new Error(`bucket ${bucket} already exists without Object Lock; remove it or use another name`);
    }
  } finally {
    client.destroy();
  }
}
