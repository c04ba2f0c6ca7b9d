/**
 * `bcdr`: the operators' command line over the BCDR HTTP API. Every command
 * is one or two API calls; `--wait` and `runs watch` follow a run by polling
 * GET /v1/runs/:id once a second.
 */
import { Command, CommanderError, Option } from 'commander';
import { auditCommand, divergenceCommand, eventsCommand, healthCommand, regionsCommand, whoamiCommand } from './commands/misc.js';
import { backupCommand, backupsCommand, keysCommand, scheduleCommand } from './commands/backups.js';
import { instancesCommand } from './commands/instances.js';
import { failbackCommand, failoverCommand, productionRestoreCommand, resetCommand, restoreCommand } from './commands/runbooks.js';
import { runsCommand, signoffsCommand } from './commands/runs.js';
import { DEFAULT_API, state } from './context.js';
import { ApiError, Exit, NetworkError, redact, UsageError } from './http.js';

const HELP_AFTER = `
Configuration:
  BCDR_API     the API's base URL (or --api); default ${DEFAULT_API}
  BCDR_TOKEN   the bearer token (or --token); prefer the variable: an argument
               is visible to other users in the process list. The token is
               never printed.

Output:
  Tables and key-value text for people. With --json, exactly the API's JSON
  body on stdout (with --wait: the run's final state, as GET /v1/runs/:id
  gives it; for an API error: its error body). Progress and notes go to stderr:
  a live bar on a terminal, plain lines otherwise.

Exit codes:
  0    success (with --wait or runs watch: the run completed, and did what
       was asked: its result's outcome, if any, is completed or nothing-to-do)
  1    the run failed, was cancelled, terminated or timed out, or completed
       with another outcome (sign-off rejected or expired, partial, degraded)
  2    usage error (unknown command or option, missing or invalid argument)
  3    the API refused the request (4xx) or failed (5xx); its message is printed
  4    the API could not be reached (connection refused, DNS, timeout)
  5    an unexpected error of the CLI itself (BCDR_DEBUG=1 prints its stack)
  130  interrupted while waiting (the run goes on)

Examples:
  export BCDR_API=http://127.0.0.1:8080 BCDR_TOKEN=dev-operator-token
  bcdr instances create contoso-sandbox --type sandbox --edition standard --region primary
  bcdr backup contoso-sandbox --label "before upgrade" --wait
  bcdr restore bk-… --into contoso-sandbox --wait && bcdr instances resume contoso-sandbox
  bcdr runs list --instance contoso-sandbox --status failed
  bcdr backups hold bk-… -m "litigation hold, case 114"   (released by another approver: bcdr backups release)
  bcdr runs signoff production-restore-contoso-… approve -m "Checked the backup and the window."
  bcdr instances list --json | jq -r '.instances[].name'
`;

export function buildProgram(): Command {
  const program = new Command('bcdr')
    .description('Durable backup and disaster-recovery runbooks for tenant PostgreSQL databases: the command line over the BCDR HTTP API.')
    .addOption(new Option('--api <url>', `API base URL (env BCDR_API, default ${DEFAULT_API})`))
    .addOption(new Option('--token <token>', 'bearer token (env BCDR_TOKEN)'))
    .option('--json', "print the API's JSON body only (stdout), for scripts")
    .option('-q, --quiet', 'no progress or notes on stderr')
    .showSuggestionAfterError()
    .showHelpAfterError('(run bcdr --help, or bcdr <command> --help)')
    .exitOverride()
    .configureHelp({ sortSubcommands: false, showGlobalOptions: true })
    .addHelpText('after', HELP_AFTER);

  for (const c of [
    instancesCommand(),
    backupCommand(),
    backupsCommand(),
    scheduleCommand(),
    keysCommand(),
    restoreCommand(),
    resetCommand(),
    productionRestoreCommand(),
    failoverCommand(),
    failbackCommand(),
    runsCommand(),
    signoffsCommand(),
    auditCommand(),
    regionsCommand(),
    eventsCommand(),
    divergenceCommand(),
    healthCommand(),
    whoamiCommand(),
  ]) {
    program.addCommand(c);
  }
  // Settings that commands created on their own (new Command) did not inherit: every subcommand, at every depth.
  const inherit = (cmd: Command, path: string) => {
    for (const sub of cmd.commands) {
      const name = `${path} ${sub.name()}`;
      sub.exitOverride().showSuggestionAfterError().showHelpAfterError(`(run ${name} --help)`).configureHelp({ showGlobalOptions: true });
      inherit(sub, name);
    }
  };
  inherit(program, 'bcdr');
  return program;
}

/** Runs the CLI on `argv` (as process.argv) and returns the exit code. Never throws. */
export async function run(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : Exit.ok;
  } catch (err) {
    return report(err);
  }
}

/** Prints an error for people (stderr), and for --json the API's error body on stdout; returns the exit code. */
function report(err: unknown): number {
  // Whatever the error says, the token is never printed.
  const stderr = (s: string) => process.stderr.write(redact(s));
  const stdout = (s: string) => process.stdout.write(redact(s));
  if (err instanceof CommanderError) {
    // Commander has printed the message (or the help) already.
    return err.exitCode === 0 ? Exit.ok : Exit.usage;
  }
  if (err instanceof UsageError) {
    stderr(`error: ${err.message}\n`);
    return Exit.usage;
  }
  if (err instanceof ApiError) {
    if (state.json) stdout(`${JSON.stringify(err.body, null, 2)}\n`);
    stderr(`${err.message}\n`);
    if (err.status === 401) stderr('  set BCDR_TOKEN (or pass --token) to a token the API knows\n');
    return Exit.api;
  }
  if (err instanceof NetworkError) {
    stderr(`error: ${err.message}\n  set BCDR_API (or pass --api) to the API's URL\n`);
    return Exit.network;
  }
  // A bug of the CLI: say so in one line, no stack trace (BCDR_DEBUG=1 shows it).
  if (process.env.BCDR_DEBUG) stderr(`${(err as Error)?.stack ?? String(err)}\n`);
  stderr(`error: ${err instanceof Error ? err.message : String(err)}\n`);
  return Exit.internal;
}

// Output piped into a reader that stops early (| head): end quietly rather than with an EPIPE stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

process.exitCode = await run(process.argv);
