/**
 * The `conductor` command: commander wiring, and the one place where errors become exit codes.
 * Commands are loaded only when they run, so `conductor ls` does not pay for what `create` needs.
 *
 * Exit codes: 0 done, 1 refused by the daemon (or failed), 2 usage error, 3 daemon unreachable.
 */
import { Command, CommanderError, Option } from 'commander';
import { ConductorError, ErrorCode, parseBackend, parsePort } from '@stream-conductor/shared';
import type { ApiClient } from './client.js';
import type { Output } from './output.js';

export const EXIT = { ok: 0, refused: 1, usage: 2, unreachable: 3 } as const;

export const DEFAULT_URL = 'http://127.0.0.1:5000';

interface GlobalOptions {
  url: string;
  token?: string;
  json?: boolean;
  color: boolean;
}

function usageError(error: unknown): ConductorError {
  const message = error instanceof Error ? error.message : String(error);
  return new ConductorError(ErrorCode.Usage, message, { hint: error instanceof ConductorError ? error.hint : undefined });
}

function localPort(text: string): number {
  try {
    return parsePort(text);
  } catch (error) {
    throw usageError(error);
  }
}

function localBackend(text: string): string {
  try {
    return parseBackend(text).address;
  } catch (error) {
    throw usageError(error);
  }
}

export function exitCodeFor(error: ConductorError): number {
  if (error.code === ErrorCode.Usage) return EXIT.usage;
  if (error.code === ErrorCode.DaemonUnreachable) return EXIT.unreachable;
  return EXIT.refused;
}

interface Context {
  client: ApiClient;
  output: Output;
}

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const program = new Command('conductor');
  let exitCode: number = EXIT.ok;
  let context: Context | undefined;

  const contextFor = async (command: Command): Promise<Context> => {
    if (context) return context;
    const options = command.optsWithGlobals<GlobalOptions>();
    let url: URL;
    try {
      url = new URL(options.url);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http');
    } catch {
      throw new ConductorError(ErrorCode.Usage, `--url must be an http:// or https:// URL, got ${JSON.stringify(options.url)}`);
    }
    const [{ ApiClient }, { createOutput }] = await Promise.all([import('./client.js'), import('./output.js')]);
    const token = options.token === undefined || options.token === '' ? undefined : options.token;
    context = {
      client: new ApiClient({ url: url.href, token }),
      output: createOutput({ json: options.json === true, color: options.color, env }),
    };
    return context;
  };

  program
    .description('Open ports on this edge host and forward them, as TCP streams, to backends (talks to the conductor daemon).')
    .addOption(new Option('--url <url>', 'daemon API URL').env('CONDUCTOR_URL').default(DEFAULT_URL))
    .addOption(new Option('--token <token>', 'API token (prefer the variable: a flag shows in ps)').env('CONDUCTOR_TOKEN'))
    .option('--json', 'print machine-readable JSON on stdout')
    .option('--no-color', 'no colours (also NO_COLOR=1)')
    .showHelpAfterError('(run conductor --help for usage)')
    .exitOverride()
    .configureOutput({ writeOut: (text) => process.stdout.write(text), writeErr: (text) => process.stderr.write(text) })
    .addHelpText(
      'after',
      `
Exit codes: 0 done, 1 refused by the daemon, 2 usage error, 3 daemon unreachable.

Examples:
  $ conductor create 9000 mybackend:22
  $ conductor ls
  $ conductor rm 9000
  $ PORT=$(conductor free-port) && conductor create "$PORT" db.internal:5432
  $ CONDUCTOR_URL=http://edge1:5000 CONDUCTOR_TOKEN=... conductor status --json`,
    );

  program
    .command('create')
    .description('forward a port of this host to a backend; answers once traffic flows')
    .argument('<port>', 'port to open, inside the daemon\'s PORT_RANGE')
    .argument('<backend>', 'where to forward: host:port, IPv4:port or [IPv6]:port')
    .addHelpText(
      'after',
      `
Examples:
  $ conductor create 9000 mybackend:22
  $ conductor create 9001 10.1.0.1:2000
  $ conductor create 9002 '[2001:db8::5]:443' --json`,
    )
    .action(async (portText: string, backendText: string, _options: unknown, command: Command) => {
      const port = localPort(portText);
      const backend = localBackend(backendText);
      const { client, output } = await contextFor(command);
      const { createStream, printCreated } = await import('./commands/create.js');
      printCreated(await createStream(client, port, backend), output);
    });

  program
    .command('rm')
    .alias('remove')
    .description('remove the stream on a port; answers once the port refuses connections')
    .argument('<port>', 'port of the stream')
    .addHelpText('after', '\nExamples:\n  $ conductor rm 9000\n  $ conductor rm 9000 --json')
    .action(async (portText: string, _options: unknown, command: Command) => {
      const port = localPort(portText);
      const { client, output } = await contextFor(command);
      const { removeStream, printRemoved } = await import('./commands/rm.js');
      printRemoved(await removeStream(client, port), output);
    });

  program
    .command('ls')
    .alias('list')
    .description('list the streams: port, backend, state (live, or failed with the reason)')
    .addHelpText('after', '\nExamples:\n  $ conductor ls\n  $ conductor ls --json | jq -r \'.[].port\'')
    .action(async (_options: unknown, command: Command) => {
      const { client, output } = await contextFor(command);
      const { listStreams, printStreams } = await import('./commands/ls.js');
      printStreams(await listStreams(client), output);
    });

  program
    .command('free-port')
    .description('print a port of the range that has no stream and no other process holds')
    .addHelpText('after', '\nExamples:\n  $ conductor free-port\n  $ PORT=$(conductor free-port) && conductor create "$PORT" mybackend:22')
    .action(async (_options: unknown, command: Command) => {
      const { client, output } = await contextFor(command);
      const { findFreePort, printFreePort } = await import('./commands/free-port.js');
      printFreePort(await findFreePort(client), output);
    });

  program
    .command('status')
    .description("the daemon's version and mode, nginx's state, port range usage and failed streams")
    .addHelpText('after', '\nExamples:\n  $ conductor status\n  $ conductor status --json')
    .action(async (_options: unknown, command: Command) => {
      const { client, output } = await contextFor(command);
      const { collectStatus, printStatus } = await import('./commands/status.js');
      printStatus(await collectStatus(client), output, client.url);
    });

  if (argv.length <= 2) {
    process.stderr.write(program.helpInformation());
    return EXIT.usage;
  }

  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      const done = error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.help';
      return done ? EXIT.ok : EXIT.usage;
    }
    if (error instanceof ConductorError) {
      process.stderr.write(`conductor: ${error.message}\n`);
      if (error.hint !== undefined) process.stderr.write(`hint: ${error.hint}\n`);
      return exitCodeFor(error);
    }
    process.stderr.write(`conductor: unexpected error\n${(error as Error).stack ?? String(error)}\n`);
    return EXIT.refused;
  }
  return exitCode;
}
