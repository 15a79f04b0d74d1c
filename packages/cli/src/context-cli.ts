/**
 * Contexts on the command line: the global options that choose the daemon (`--context`,
 * `--token-file`), the client options every daemon command gets from them, and the
 * `conductor context` commands' wiring. The rules of precedence are in `contexts.ts`.
 */
import { homedir } from 'node:os';
import { ConductorError, ErrorCode } from '@stream-conductor/shared';
import { type Command, Option } from 'commander';
import type { ClientOptions } from './client.js';
import { type ConfigFile, configPath, readConfigFile } from './config-file.js';
import {
  chosenContext,
  clientOptionsFor,
  readTokenFile,
  type TargetEnv,
  type TargetFlags,
  targetFor,
} from './contexts.js';
import type { Output } from './output.js';
import { formatsOf } from './output-formats.js';
import { transportSettings } from './transport-options.js';

/** The global options of every command that choose the daemon and how to reach it. */
export interface TargetOptions {
  url?: string;
  token?: string;
  tokenFile?: string;
  context?: string;
  ca?: string;
  cert?: string;
  key?: string;
  insecure?: boolean;
  json?: boolean;
  output?: string;
  color: boolean;
}

/** The global options this module adds to the program (beside --url and --token). */
export function addContextOptions(program: Command): void {
  program
    .addOption(new Option('--token-file <file>', 'read the API token from this file (one line)'))
    .addOption(
      new Option(
        '--context <name>',
        'the daemon of this context of the config file (env: CONDUCTOR_CONTEXT; see conductor context --help)',
      ),
    );
}

/** Everything the resolution needs from the environment, read once. */
interface Settings {
  path: string;
  home: string;
  env: TargetEnv;
  warn(text: string): void;
}

function settingsOf(env: NodeJS.ProcessEnv): Settings {
  return {
    path: configPath({ XDG_CONFIG_HOME: env.XDG_CONFIG_HOME, HOME: env.HOME }),
    home: env.HOME || homedir(),
    env: {
      CONDUCTOR_URL: env.CONDUCTOR_URL,
      CONDUCTOR_TOKEN: env.CONDUCTOR_TOKEN,
      CONDUCTOR_CONTEXT: env.CONDUCTOR_CONTEXT,
    },
    warn: (text) => process.stderr.write(`warning: ${text}\n`),
  };
}

/** Reads the file, warning when it holds a token that others can read. */
async function load(settings: Settings): Promise<ConfigFile | undefined> {
  const config = await readConfigFile(settings.path);
  if (config?.holdsToken === true && (config.mode & 0o077) !== 0)
    settings.warn(`${settings.path} holds a token and other users can read it (chmod 600 it)`);
  return config;
}

/** The options, and the TLS variables (CONDUCTOR_CA...) read with them: both win over a context. */
function flagsOf(options: TargetOptions, env: NodeJS.ProcessEnv): TargetFlags {
  const flags: TargetFlags = {};
  const tls = transportSettings(options, env);
  if (tls.caFile !== undefined) flags.caFile = tls.caFile;
  if (tls.certFile !== undefined) flags.certFile = tls.certFile;
  if (tls.keyFile !== undefined) flags.keyFile = tls.keyFile;
  if (tls.insecure === true) flags.insecure = true;
  if (options.url !== undefined) flags.url = options.url;
  if (options.token !== undefined) flags.token = options.token;
  if (options.tokenFile !== undefined) flags.tokenFile = options.tokenFile;
  if (options.context !== undefined) flags.context = options.context;
  return flags;
}

/** The client options of a command that talks to the daemon. */
export async function clientOptionsOf(options: TargetOptions, env: NodeJS.ProcessEnv): Promise<ClientOptions> {
  const settings = settingsOf(env);
  const target = await targetFor(flagsOf(options, env), settings.env, {
    load: () => load(settings),
    path: settings.path,
    home: settings.home,
    readToken: (file) => readTokenFile(file, settings.warn),
  });
  return clientOptionsFor(target, settings.warn);
}

/** The output of `context <name>`, in the format -o (or --json) chose for it. */
async function outputOf(command: Command, env: NodeJS.ProcessEnv): Promise<Output> {
  const options = command.optsWithGlobals<TargetOptions>();
  const [{ createOutput }, { chooseFormat }] = await Promise.all([
    import('./output.js'),
    import('./output-formats.js'),
  ]);
  const format = await chooseFormat(`context ${command.name()}`, options.output, options.json === true);
  return createOutput({ json: options.json === true, format, color: options.color, env });
}

/** The context commands would use now, if any: as the daemon commands choose it. */
async function inUse(options: TargetOptions, settings: Settings, config: ConfigFile | undefined) {
  if (options.url !== undefined) return undefined;
  if (options.context === undefined && (settings.env.CONDUCTOR_URL ?? '') !== '') return undefined;
  const chosen = await chosenContext(options, settings.env, { load: async () => config, path: settings.path });
  return chosen?.name;
}

interface AddOptions {
  tokenInline?: boolean;
  use?: boolean;
  replace?: boolean;
}

export function registerContextCommands(program: Command, env: NodeJS.ProcessEnv): void {
  const settings = settingsOf(env);
  const context = program
    .command('context')
    .description('named daemons (URL, token file, CA) in the config file; --context NAME picks one')
    .addHelpText(
      'after',
      `
The file is $XDG_CONFIG_HOME/conductor/config.yaml (default ~/.config/conductor/config.yaml).
--url and CONDUCTOR_URL bypass it; --context and CONDUCTOR_CONTEXT pick a context for one call.

Examples:
  $ conductor context add edge1 --url https://127.0.0.1:5443 --token-file ~/.edge1.token --ca edge-ca.pem --use
  $ conductor context ls
  $ conductor --context edge1 ls
  $ CONDUCTOR_CONTEXT=edge2 conductor create 9000 db.internal:5432`,
    );

  context
    .command('ls')
    .alias('list')
    .description('list the contexts; * marks the one commands use now (-o name: names only)')
    .option('-q, --quiet', 'names only')
    .addHelpText('after', '\nExamples:\n  $ conductor context ls\n  $ conductor context ls --json')
    .action(async (options: { quiet?: boolean }, command: Command) => {
      const { listContexts, printContextList } = await import('./commands/context.js');
      const config = await load(settings);
      const current = await inUse(command.optsWithGlobals<TargetOptions>(), settings, config).catch(() => undefined);
      printContextList(
        listContexts(config, settings.home, current),
        await outputOf(command, env),
        options.quiet === true,
      );
    });

  context
    .command('show')
    .description('one context (default: the one commands use now); never shows a token')
    .argument('[name]', 'the context')
    .addHelpText('after', '\nExamples:\n  $ conductor context show\n  $ conductor context show edge1 --json')
    .action(async (name: string | undefined, _options: unknown, command: Command) => {
      const { contextView, printContext } = await import('./commands/context.js');
      const { contextNamed } = await import('./contexts.js');
      const config = await load(settings);
      const options = command.optsWithGlobals<TargetOptions>();
      // A named context is shown even when the one in use cannot be found.
      const current = await inUse(options, settings, config).catch((error: unknown) => {
        if (name === undefined) throw error;
        return undefined;
      });
      const shown = name ?? current;
      if (shown === undefined)
        throw new ConductorError(ErrorCode.Usage, 'no context in use: name one', {
          hint: 'conductor context show NAME, or conductor context use NAME',
        });
      const entry = contextNamed(config, shown, settings.path, 'context show');
      printContext(
        contextView(shown, entry, config as ConfigFile, settings.home, current),
        await outputOf(command, env),
        settings.path,
      );
    });

  context
    .command('use')
    .description('make a context the current one (the daemon of every command without --url or --context)')
    .argument('[name]', 'the context')
    .option('--none', 'no current context: the default URL again')
    .addHelpText('after', '\nExamples:\n  $ conductor context use edge1\n  $ conductor context use --none')
    .action(async (name: string | undefined, options: { none?: boolean }, command: Command) => {
      if ((name === undefined) === (options.none !== true))
        throw new ConductorError(ErrorCode.Usage, 'context use: give a context name or --none');
      const { useContext } = await import('./commands/context.js');
      await useContext(await load(settings), settings.path, name);
      const output = await outputOf(command, env);
      if (output.json) output.out(JSON.stringify({ current: name ?? null }));
      else output.out(name === undefined ? 'no current context' : `current context: ${name}`);
    });

  context
    .command('add')
    .description('add a context: --url and how to reach it (no token is written unless --token-inline)')
    .argument('<name>', 'its name: letters, digits and _ . -')
    .option('--token-inline', 'write the token of --token or CONDUCTOR_TOKEN into the file itself')
    .option('--use', 'make it the current context')
    .option('--replace', 'replace a context of that name')
    .addHelpText(
      'after',
      `
The context is what the global options given on this command line say: --url URL (required),
--token-file FILE, --ca FILE, --cert FILE --key FILE, --insecure. Variables (CONDUCTOR_URL,
CONDUCTOR_CA...) are not stored. Paths are stored absolute.

Examples:
  $ conductor context add local --url http://127.0.0.1:5000
  $ conductor context add edge1 --url https://127.0.0.1:5443 --token-file ~/.edge1.token --ca edge-ca.pem --use`,
    )
    .action(async (name: string, options: AddOptions, command: Command) => {
      const globals = command.optsWithGlobals<TargetOptions & AddOptions>();
      const given = (name: keyof TargetOptions): string | undefined => {
        const value = globals[name];
        return program.getOptionValueSource(name) === 'cli' && typeof value === 'string' ? value : undefined;
      };
      let inlineToken: string | undefined;
      if (options.tokenInline === true) {
        if (globals.tokenFile !== undefined)
          throw new ConductorError(ErrorCode.Usage, '--token-inline and --token-file: give one');
        inlineToken = globals.token ?? settings.env.CONDUCTOR_TOKEN;
        if (inlineToken === undefined || inlineToken === '')
          throw new ConductorError(
            ErrorCode.Usage,
            '--token-inline stores the token of --token or CONDUCTOR_TOKEN: give one',
          );
      } else if (globals.token !== undefined) {
        throw new ConductorError(ErrorCode.Usage, 'context add does not store --token unless asked', {
          hint: 'give --token-file FILE (the file keeps it), or --token-inline to write the token into the config file',
        });
      }
      const { addContext } = await import('./commands/context.js');
      await addContext(
        await load(settings),
        settings.path,
        {
          name,
          url: globals.url,
          tokenFile: globals.tokenFile,
          ca: given('ca'),
          cert: given('cert'),
          key: given('key'),
          insecure: program.getOptionValueSource('insecure') === 'cli' && globals.insecure === true,
          inlineToken,
          use: options.use === true,
          replace: options.replace === true,
          cwd: process.cwd(),
        },
        (file) => readTokenFile(file, settings.warn),
      );
      if (inlineToken !== undefined)
        settings.warn(`the token of context ${name} is written in ${settings.path}; a --token-file keeps it out of it`);
      const output = await outputOf(command, env);
      if (output.json) output.out(JSON.stringify({ added: name, current: options.use === true }));
      else output.out(`context ${name} added${options.use === true ? ' (current)' : ''}`);
    });

  context
    .command('rm')
    .alias('remove')
    .description('remove a context (and its being current)')
    .argument('<name>', 'the context')
    .addHelpText('after', '\nExamples:\n  $ conductor context rm edge1')
    .action(async (name: string, _options: unknown, command: Command) => {
      const { removeContext } = await import('./commands/context.js');
      const { wasCurrent } = await removeContext(await load(settings), settings.path, name);
      const output = await outputOf(command, env);
      if (output.json) output.out(JSON.stringify({ removed: name }));
      else output.out(`context ${name} removed${wasCurrent ? '; no context is current now' : ''}`);
    });

  for (const command of context.commands)
    command.addHelpText(
      'after',
      `\nOutput: -o ${formatsOf(`context ${command.name()}`).join('|')} (--json is -o json)`,
    );
}
