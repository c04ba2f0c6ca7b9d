import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { BlobServiceClient, RestError } from '@azure/storage-blob';
import { stopChild, waitFor } from './services.js';

/**
 * The account every Azurite instance serves. Azurite publishes this name and
 * the key below as fixed emulator constants, so they are no secret; never use
 * them against the real service.
 */
export const AZURITE_ACCOUNT = 'devstoreaccount1';

/** Azurite's published development key for {@link AZURITE_ACCOUNT} (a public emulator constant, not a credential). */
export const AZURITE_ACCOUNT_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

/** A running Azurite blob emulator this project started. */
export interface AzuriteServer {
  /** Connection string for the dev account (holds the public dev key), as `AzureStoreConfig.connectionString` takes it. */
  connectionString: string;
  /** `http://127.0.0.1:<port>/devstoreaccount1`: the account URL, as `AzureStoreConfig.accountUrl` takes it. */
  accountUrl: string;
  account: string;
  port: number;
  child: ChildProcess;
  /** Stops the emulator (SIGTERM, then SIGKILL after 10 s); resolves when the process is gone. Data stays in `dataDir`. */
  stop(): Promise<void>;
}

/** The Azurite blob entry point from the `azurite` devDependency, run with this Node (no shell, no PATH lookup). */
function azuriteBlobMain(): string {
  const require = createRequire(import.meta.url);
  const pkgFile = require.resolve('azurite/package.json');
  const pkg = require(pkgFile) as { bin: Record<string, string> };
  const bin = pkg.bin['azurite-blob'];
  if (!bin) throw new Error('the azurite package has no azurite-blob entry point');
  return path.join(path.dirname(pkgFile), bin);
}

/** The flags `startAzurite` runs `azurite-blob` with (exported so docs and reports can quote them). */
export function azuriteArgs(port: number, dataDir: string): string[] {
  return [
    '--blobHost', '127.0.0.1',
    '--blobPort', String(port),
    '--location', dataDir,
    '--silent',
    // Let any @azure/storage-blob version talk to it: a newer SDK sends an API version this Azurite predates.
    '--skipApiVersionCheck',
    // Ignore headers and parameters Azurite does not implement instead of failing the request.
    '--loose',
    // Azurite 3.x reports usage to Microsoft unless told not to.
    '--disableTelemetry',
  ];
}

/**
 * Starts Azurite's blob service (the `azurite` devDependency) on loopback
 * `port`, keeping its data in `dataDir` and its output in `logFile`, and waits
 * until it answers a service request. This is how tests and local stacks get a
 * real Azure Blob endpoint without a cloud account. The child is detached (its
 * own process group) like the other services in scripts/lib/services.ts.
 */
export async function startAzurite(opts: {
  port: number;
  dataDir: string;
  logFile: string;
  timeoutMs?: number;
  /** Azurite's own debug log (every request and its handling), for chasing an emulator problem; off by default. */
  debugLog?: string;
  /** Called as soon as the process exists, before readiness, so a caller can stop it whatever happens next. */
  onSpawn?: (child: ChildProcess) => void;
}): Promise<AzuriteServer> {
  mkdirSync(opts.dataDir, { recursive: true });
  mkdirSync(path.dirname(opts.logFile), { recursive: true });
  const log = createWriteStream(opts.logFile, { flags: 'a' });
  const child = spawn(process.execPath, [azuriteBlobMain(), ...azuriteArgs(opts.port, opts.dataDir), ...(opts.debugLog ? ['--debug', opts.debugLog] : [])], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  opts.onSpawn?.(child);
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  let exited: string | undefined;
  child.once('exit', (code, sig) => (exited = `exited with ${sig ?? code}`));
  const accountUrl = `http://127.0.0.1:${opts.port}/${AZURITE_ACCOUNT}`;
  const connectionString =
    `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_ACCOUNT_KEY};BlobEndpoint=${accountUrl};`;
  const client = BlobServiceClient.fromConnectionString(connectionString, { retryOptions: { maxTries: 1, tryTimeoutInMs: 2_000 } });
  try {
    await waitFor(
      `Azurite blob service on 127.0.0.1:${opts.port}`,
      async () => {
        if (exited) throw new Error(`Azurite ${exited}; see ${opts.logFile}`);
        await client.getProperties();
        return true;
      },
      opts.timeoutMs ?? 30_000,
    );
  } catch (err) {
    child.kill('SIGKILL');
    if (exited) throw new Error(`Azurite ${exited}; see ${opts.logFile}`);
    throw err;
  }
  return {
    connectionString,
    accountUrl,
    account: AZURITE_ACCOUNT,
    port: opts.port,
    child,
    stop: async () => {
      await stopChild(child, 10_000);
      log.end();
    },
  };
}

/**
 * Creates container `name` in the account of `connectionString` unless it
 * exists (idempotent: setup scripts and tests call it every run). Returns true
 * when it created the container.
 */
export async function createContainer(connectionString: string, name: string): Promise<boolean> {
  const container = BlobServiceClient.fromConnectionString(connectionString).getContainerClient(name);
  try {
    const r = await container.createIfNotExists();
    return r.succeeded;
  } catch (err) {
    // Never echo the connection string (it holds the key): keep only the service's code and status.
    if (err instanceof RestError) throw new Error(`creating container ${name} failed: ${err.code ?? 'error'} (HTTP ${err.statusCode ?? '-'})`);
    throw err;
  }
}
