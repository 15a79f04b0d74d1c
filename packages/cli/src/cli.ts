/**
 * The `conductor` command: commander wiring, and the one place where errors become exit codes.
 * Commands are loaded only when they run, so `conductor ls` does not pay for what `create` needs.
 *
 * Exit codes: 0 done, 1 refused by the daemon (or failed), 2 usage error, 3 daemon unreachable.
 */

import {
  ConductorError,
  DEFAULT_ROUTE_ID,
  ErrorCode,
  formatPorts,
  isRangeText,
  NO_TLS_ROUTE_ID,
  type PortSpan,
  parseBackend,
  parseDuration,
  parseLabelSelector,
  parsePort,
  parsePortSpan,
  parseRoute,
  parseServerName,
  parseStreamInput,
  printable,
  rangeBackendText,
  type StreamInput,
} from '@stream-conductor/shared';
import { Command, CommanderError } from 'commander';
import type { ApiClient } from './client.js';
import type { LsOptions } from './commands/ls-watch.js';
import type { RouteInput } from './commands/routes.js';
import { addTlsOptions, type TlsOptions, tlsInput } from './commands/tls.js';
import { addContextOptions, clientOptionsOf, registerContextCommands, type TargetOptions } from './context-cli.js';
import type { Output } from './output.js';
import { chooseFormat, formatsOf, type OutputFormat } from './output-formats.js';
import { addTransportOptions } from './transport-options.js';
import { version } from './version.js';

export const EXIT = { ok: 0, refused: 1, usage: 2, unreachable: 3 } as const;

function usageError(error: unknown): ConductorError {
  const message = error instanceof Error ? error.message : String(error);
  return new ConductorError(ErrorCode.Usage, message, {
    hint: error instanceof ConductorError ? error.hint : undefined,
  });
}

function localPort(text: string): number {
  try {
    return parsePort(text);
  } catch (error) {
    throw usageError(error);
  }
}

/** A port, or a range FIRST-LAST (as the path of the v1 API takes it). */
function localPortText(text: string): number | string {
  return isRangeText(text) ? formatPorts(localCheck(() => parsePortSpan(text))) : localPort(text);
}

function localCheck<T>(check: () => T): T {
  try {
    return check();
  } catch (error) {
    throw usageError(error);
  }
}

interface CreateOptions {
  udp?: boolean;
  tcpUdp?: boolean;
  balance?: string;
  allow: string[];
  ttl?: string;
  expiresAt?: string;
  label: string[];
  description?: string;
  proxyProtocol?: boolean;
  connectTimeout?: string;
  idleTimeout?: string;
  listenAddress?: string;
  throughput?: boolean;
  maxConnections?: string;
  maxConnectionsPerClient?: string;
  uploadRate?: string;
  downloadRate?: string;
  replace?: boolean;
  sni?: string;
  sniDefault?: boolean;
  plain?: boolean;
}
type CreateFlags = CreateOptions & TlsOptions;

/** `host:port[,weight=N][,backup]` as the API's backend object. */
function backendArgument(text: string, span: PortSpan): { address: string; weight?: number; backup?: boolean } {
  const [address = '', ...parts] = text.split(',');
  const backend: { address: string; weight?: number; backup?: boolean } = {
    // A range's backend may leave its port out: each port to the same port.
    address: localCheck(() => parseBackend(rangeBackendText(address, span)).address),
  };
  for (const part of parts) {
    const weight = /^weight=([0-9]+)$/.exec(part);
    if (weight) backend.weight = Number(weight[1]);
    else if (part === 'backup') backend.backup = true;
    else
      throw new ConductorError(
        ErrorCode.Usage,
        `backend ${JSON.stringify(text)}: ${JSON.stringify(part)} is neither weight=N nor backup`,
      );
  }
  return backend;
}

/** The route flags of create and rm: at most one of --sni NAME, --sni-default, --plain; its route id. */
function routeFlagId(options: { sni?: string; sniDefault?: boolean; plain?: boolean }): string | undefined {
  const given = [options.sni !== undefined, options.sniDefault === true, options.plain === true].filter(Boolean).length;
  if (given > 1) throw new ConductorError(ErrorCode.Usage, '--sni, --sni-default and --plain exclude each other');
  if (options.sni !== undefined) return localCheck(() => parseServerName(options.sni, '--sni'));
  if (options.sniDefault === true) return DEFAULT_ROUTE_ID;
  if (options.plain === true) return NO_TLS_ROUTE_ID;
  return undefined;
}

/**
 * The route `create PORT --sni NAME BACKEND...` adds. Port-wide options (--allow, --ttl, limits...)
 * belong to the port's definition (PUT or apply), not to one route: refused here.
 */
function routeInput(
  id: string,
  port: number | string | undefined,
  backendTexts: string[],
  options: CreateFlags,
): RouteInput {
  if (typeof port !== 'number')
    throw new ConductorError(ErrorCode.Usage, 'a route by server name needs one port (not auto, not a range)');
  const portWide = Object.entries(options).filter(
    ([key, value]) =>
      !['sni', 'sniDefault', 'plain'].includes(key) &&
      // --no-backend-verify's default.
      !(key === 'backendVerify' && value === true) &&
      value !== undefined &&
      value !== false &&
      !(Array.isArray(value) && value.length === 0),
  );
  if (portWide.length > 0)
    throw new ConductorError(
      ErrorCode.Usage,
      `--${portWide[0]?.[0].replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} applies to the whole port, not to one route: give it in the port's definition (conductor apply, or PUT /v1/streams/${port})`,
    );
  const match =
    id === DEFAULT_ROUTE_ID
      ? { default: true as const }
      : id === NO_TLS_ROUTE_ID
        ? { noTls: true as const }
        : { sni: id };
  const route = { ...match, backends: backendTexts.map((text) => backendArgument(text, { port })) };
  localCheck(() => parseRoute(route, 'route', { port }));
  return route;
}

/** Builds the API input of `create` and checks it here, so that a typo costs no round trip. */
function createInput(port: number | string | undefined, backendTexts: string[], options: CreateFlags): StreamInput {
  if (options.udp && options.tcpUdp)
    throw new ConductorError(ErrorCode.Usage, '--udp and --tcp-udp exclude each other');
  if (options.ttl !== undefined && options.expiresAt !== undefined)
    throw new ConductorError(ErrorCode.Usage, '--ttl and --expires-at exclude each other');
  if (options.replace && port === undefined)
    throw new ConductorError(ErrorCode.Usage, '--replace needs a port, not auto');
  const span: PortSpan = typeof port === 'string' ? parsePortSpan(port) : { port: port ?? 0 };
  const input: StreamInput = { backends: backendTexts.map((text) => backendArgument(text, span)) };
  if (port !== undefined) input.port = port;
  if (options.udp) input.protocol = 'udp';
  if (options.tcpUdp) input.protocol = 'tcp+udp';
  if (options.balance !== undefined) input.balance = options.balance as StreamInput['balance'];
  if (options.allow.length > 0) input.allow = options.allow;
  if (options.ttl !== undefined) input.ttl = options.ttl;
  if (options.expiresAt !== undefined) input.expiresAt = options.expiresAt;
  if (options.label.length > 0)
    input.labels = Object.fromEntries(options.label.map((label) => localCheck(() => parseLabelSelector(label))));
  if (options.description !== undefined) input.description = options.description;
  if (options.proxyProtocol) input.proxyProtocol = true;
  if (options.connectTimeout !== undefined) input.connectTimeout = options.connectTimeout;
  if (options.idleTimeout !== undefined) input.idleTimeout = options.idleTimeout;
  if (options.listenAddress !== undefined) input.listenAddress = options.listenAddress;
  if (options.throughput) input.profile = 'throughput';
  if (options.maxConnections !== undefined) input.maxConnections = options.maxConnections;
  if (options.maxConnectionsPerClient !== undefined) input.maxConnectionsPerClient = options.maxConnectionsPerClient;
  if (options.uploadRate !== undefined) input.uploadRate = options.uploadRate;
  if (options.downloadRate !== undefined) input.downloadRate = options.downloadRate;
  tlsInput(options, input);
  localCheck(() => parseStreamInput(input, { portOptional: true, now: new Date() }));
  return input;
}

/** A subcommand's name with its parent's (`context ls`), as output-formats.ts lists it. */
function commandKey(action: Command): string {
  return action.parent?.parent ? `${action.parent.name()} ${action.name()}` : action.name();
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
  let context: Context | undefined;
  /** A command whose exit codes differ from the others' (diff) sets its answer and its failure here. */
  let answered: number = EXIT.ok;
  let failed: number | undefined;
  /** -o (or --json), checked against the command before it runs. */
  let format: OutputFormat | undefined;

  const contextFor = async (command: Command): Promise<Context> => {
    if (context) return context;
    const [{ ApiClient }, { createOutput }] = await Promise.all([import('./client.js'), import('./output.js')]);
    const options = command.optsWithGlobals<TargetOptions>();
    context = {
      client: new ApiClient(await clientOptionsOf(options, env)),
      output: createOutput({ json: options.json === true, format, color: options.color, env }),
    };
    return context;
  };

  program
    .description(
      'Open ports on this edge host and forward them, as TCP streams, to backends (talks to the conductor daemon).',
    )
    .option(
      '--url <url>',
      'daemon API URL (env: CONDUCTOR_URL; default: the current context, else http://127.0.0.1:5000)',
    )
    .option('--token <token>', 'API token (env: CONDUCTOR_TOKEN; prefer it or --token-file: a flag shows in ps)')
    .option('--json', 'print machine-readable JSON on stdout (-o json)')
    .option(
      '-o, --output <format>',
      "json, yaml, name (one port per line) or wide (ls); each command's --help says which",
    )
    .option('--no-color', 'no colours (also NO_COLOR=1)')
    .version(version, '-V, --version', 'print the version')
    .showHelpAfterError('(run conductor --help for usage)')
    .hook('preAction', async (_program, action) => {
      const options = action.optsWithGlobals<TargetOptions>();
      format = await chooseFormat(commandKey(action), options.output, options.json === true);
    })
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
  $ PORT=$(conductor create auto db.internal:5432 --ttl 2h)
  $ conductor apply -f streams.yaml --dry-run
  $ CONDUCTOR_URL=http://edge1:5000 CONDUCTOR_TOKEN=... conductor status --json
  $ conductor --context edge1 ls`,
    );
  addContextOptions(program);

  addTransportOptions(program);
  const collect = (value: string, previous: string[]): string[] => [...previous, value];

  program
    .command('create')
    .description('forward a port of this host to one or more backends; answers once the port is live')
    .argument('<port>', "port to open, inside the daemon's PORT_RANGE, a range FIRST-LAST, or auto for a free one")
    .argument('[backends...]', 'where to forward: host:port, IPv4:port or [IPv6]:port; add ,weight=N or ,backup')
    .option('--udp', 'forward UDP instead of TCP')
    .option('--tcp-udp', 'forward both TCP and UDP on the port')
    .option('--balance <method>', 'round-robin (default), least-conn, or hash-ip (a client sticks to one backend)')
    .option('--allow <cidr>', 'accept clients only from this network (repeat for several)', collect, [])
    .option('--ttl <duration>', 'remove the stream after this long: 90s, 30m, 12h, 7d')
    .option('--expires-at <time>', 'remove the stream at this ISO 8601 time')
    .option('--label <key=value>', 'a label (repeat for several)', collect, [])
    .option('--description <text>', 'what the stream is for')
    .option('--proxy-protocol', 'send the PROXY protocol header, so backends see the client address')
    .option('--connect-timeout <duration>', 'time allowed to connect to a backend (default 60s)')
    .option('--idle-timeout <duration>', 'close a session idle this long (default 10m)')
    .option('--listen-address <ip>', "listen on this address only (default: the daemon's)")
    .option('--throughput', 'larger buffers for bulk transfers (more memory per session)')
    .option('--max-connections <n>', 'refuse sessions beyond this many open at once (all clients together)')
    .option('--max-connections-per-client <n>', 'refuse sessions beyond this many open at once from one client address')
    .option('--upload-rate <rate>', 'bytes per second from each client, per session: 512k, 10m, 1g')
    .option('--download-rate <rate>', 'bytes per second to each client, per session: 512k, 10m, 1g')
    .option('--replace', 'replace the stream if the port has one (idempotent)')
    .option(
      '--sni <name>',
      'add a route: TLS clients naming this server (git.example.com, *.db.example.com) go to the backends; TLS passes through untouched',
    )
    .option(
      '--sni-default',
      'add the route for TLS clients whose server name matches no other route (or who send none)',
    )
    .option(
      '--plain',
      'add the route for clients that send no TLS hello at all (SSH, plain HTTP) on a port that routes by server name',
    )
    .addHelpText(
      'after',
      `
Examples:
  $ conductor create 9000 mybackend:22
  $ PORT=$(conductor create auto db.internal:5432 --ttl 2h)
  $ conductor create 9001 app1:8080 app2:8080,weight=3 app3:8080,backup --balance least-conn
  $ conductor create 9002 dns1:53 dns2:53 --udp
  $ conductor create 9003 10.1.0.1:443 --allow 192.0.2.0/24 --allow 2001:db8::/32 --proxy-protocol
  $ conductor create 9004 '[2001:db8::5]:443' --label env=prod --label team=db --description "replica" --json
  $ conductor create 9005 files.internal:873 --max-connections 100 --max-connections-per-client 4 --download-rate 10m
  $ conductor create 9443 127.0.0.1:8080 --tls-cert /etc/letsencrypt/live/example.org/fullchain.pem --tls-key /etc/letsencrypt/live/example.org/privkey.pem
  $ conductor create 9006 db.internal:5433 --backend-tls --backend-ca /etc/ssl/internal-ca.pem
  $ conductor create 8443 --sni git.example.com 10.0.0.5:443
  $ conductor create 8443 --sni '*.db.example.com' 10.0.0.6:5432
  $ conductor create 8443 --plain 10.0.0.5:22`,
    )
    .action(async (portText: string, backendTexts: string[], options: CreateFlags, command: Command) => {
      const routeId = routeFlagId(options);
      if (routeId !== undefined) {
        const route = routeInput(
          routeId,
          portText === 'auto' ? undefined : localPortText(portText),
          backendTexts,
          options,
        );
        const { client, output } = await contextFor(command);
        const { addRoute } = await import('./commands/routes.js');
        const { printCreated } = await import('./commands/create.js');
        printCreated(await addRoute(client, Number(portText), route), output, false);
        return;
      }
      const auto = portText === 'auto';
      const input = createInput(auto ? undefined : localPortText(portText), backendTexts, options);
      const { client, output } = await contextFor(command);
      const { createStream, putStream, printCreated } = await import('./commands/create.js');
      const port = input.port;
      const result =
        options.replace === true && port !== undefined
          ? await putStream(client, typeof port === 'number' ? port : parsePortSpan(port).port, input)
          : await createStream(client, input);
      printCreated(result, output, auto);
    });
  addTlsOptions(program.commands.find((command) => command.name() === 'create') as Command);

  program
    .command('get')
    .description('show one stream in full')
    .argument('<port>', 'port of the stream')
    .option('--stats', 'also its traffic: sessions, bytes, and each route of a port that routes by server name')
    .addHelpText(
      'after',
      '\nExamples:\n  $ conductor get 9000\n  $ conductor get 9000 --json\n  $ conductor get 443 --stats',
    )
    .action(async (portText: string, options: { stats?: boolean }, command: Command) => {
      const port = localPortText(portText);
      const { client, output } = await contextFor(command);
      const { getStream, printStream } = await import('./commands/get.js');
      printStream(await getStream(client, port, options.stats === true), output);
    });

  program
    .command('rm')
    .alias('remove')
    .description('remove the stream on a port; answers once the port refuses connections')
    .argument('<port>', 'port of the stream')
    .option('--kill-sessions', 'also cut its established sessions (nginx keeps them alive otherwise)')
    .option(
      '--sni <name>',
      'remove only this route of a port that routes by server name (the last route closes the port)',
    )
    .option('--sni-default', 'remove only the default route')
    .option('--plain', 'remove only the route for clients that send no TLS hello')
    .addHelpText(
      'after',
      "\nExamples:\n  $ conductor rm 9000\n  $ conductor rm 9000 --kill-sessions --json\n  $ conductor rm 8443 --sni '*.db.example.com'",
    )
    .action(
      async (
        portText: string,
        options: { killSessions?: boolean; sni?: string; sniDefault?: boolean; plain?: boolean },
        command: Command,
      ) => {
        const port = localPortText(portText);
        const routeId = routeFlagId(options);
        if (routeId !== undefined) {
          if (typeof port !== 'number')
            throw new ConductorError(ErrorCode.Usage, 'a route lives on one port, not a range');
          if (options.killSessions === true)
            throw new ConductorError(
              ErrorCode.Usage,
              '--kill-sessions applies to the whole port: the sessions of a removed route go on',
            );
          const { client, output } = await contextFor(command);
          const { removeRoute, printRouteRemoved } = await import('./commands/routes.js');
          printRouteRemoved(await removeRoute(client, port, routeId), output);
          return;
        }
        const { client, output } = await contextFor(command);
        const { removeStream, printRemoved } = await import('./commands/rm.js');
        printRemoved(await removeStream(client, port, options.killSessions === true), output);
      },
    );

  program
    .command('drain')
    .description(
      'drain the stream on a port: it refuses new connections at once, open sessions go on, and it is removed when the last one ends',
    )
    .argument('<port>', 'port of the stream, or a range FIRST-LAST')
    .option('--timeout <duration>', 'cut the sessions left and remove the stream after this long (default 10m)')
    .option('--cancel', 'call the drain off: the port takes connections again')
    .option('--wait', 'return only once the stream is gone')
    .addHelpText(
      'after',
      '\nExamples:\n  $ conductor drain 9000 --timeout 30m\n  $ conductor drain 9000 --wait && deploy-the-backend\n  $ conductor drain 9000 --cancel\n  $ conductor drain 30000-30100 --timeout 1h',
    )
    .action(
      async (portText: string, options: { timeout?: string; cancel?: boolean; wait?: boolean }, command: Command) => {
        const port = localPortText(portText);
        if (options.cancel && (options.timeout !== undefined || options.wait))
          throw new ConductorError(ErrorCode.Usage, '--cancel takes neither --timeout nor --wait');
        if (options.timeout !== undefined) {
          const timeout = options.timeout;
          localCheck(() => parseDuration(timeout, 'timeout'));
        }
        const { client, output } = await contextFor(command);
        const drain = await import('./commands/drain.js');
        if (options.cancel) {
          const { printCreated } = await import('./commands/create.js');
          printCreated(await drain.cancelDrain(client, port), output, false);
          return;
        }
        drain.printDraining(await drain.drainStream(client, port, options.timeout), output);
        if (options.wait) {
          await drain.waitDrained(client, port);
          if (output.format.name === 'text') output.out(`${port} drained and removed`);
        }
      },
    );

  program
    .command('renew')
    .description('give a stream a new expiry (or none)')
    .argument('<port>', 'port of the stream')
    .option('--ttl <duration>', 'expire this long from now: 90s, 30m, 12h, 7d')
    .option('--expires-at <time>', 'expire at this ISO 8601 time')
    .option('--forever', 'never expire')
    .addHelpText('after', '\nExamples:\n  $ conductor renew 9000 --ttl 2h\n  $ conductor renew 9000 --forever')
    .action(
      async (portText: string, options: { ttl?: string; expiresAt?: string; forever?: boolean }, command: Command) => {
        const port = localPort(portText);
        const given = [options.ttl, options.expiresAt, options.forever].filter((value) => value !== undefined).length;
        if (given !== 1)
          throw new ConductorError(ErrorCode.Usage, 'give exactly one of --ttl, --expires-at or --forever');
        const body = options.ttl !== undefined ? { ttl: options.ttl } : { expiresAt: options.expiresAt ?? null };
        const { client, output } = await contextFor(command);
        const [{ renewStream }, { printCreated }] = await Promise.all([
          import('./commands/renew.js'),
          import('./commands/create.js'),
        ]);
        printCreated(await renewStream(client, port, body), output, false);
      },
    );

  program
    .command('ls')
    .alias('list')
    .description('list the streams: port, protocol, backends, state, expiry, labels')
    .option('--label <key=value>', 'only streams with this label (repeat to require several)', collect, [])
    .option('--stats', 'traffic instead of expiry and labels: sessions, open connections, bytes, backend health')
    .option(
      '-w, --watch',
      'look again every --interval: redrawn on a terminal (q quits), a new listing at each change otherwise',
    )
    .option('--interval <duration>', 'with --watch, time between looks: 500ms to 1h (default 2s)')
    .addHelpText(
      'after',
      "\nExamples:\n  $ conductor ls\n  $ conductor ls --label env=prod --stats\n  $ conductor ls -o name | xargs -n1 conductor get\n  $ conductor ls -o wide --watch\n  $ conductor ls --json | jq -r '.[].port'",
    )
    .action(async (options: LsOptions, command: Command) => {
      for (const label of options.label) localCheck(() => parseLabelSelector(label));
      if (options.watch || options.interval !== undefined) {
        const { watchOptions, watchStreams } = await import('./commands/ls-watch.js');
        const watch = watchOptions(options);
        const { client, output } = await contextFor(command);
        return watchStreams(client, output, { ...watch, url: client.url });
      }
      const { client, output } = await contextFor(command);
      const { listStreams, printStreams } = await import('./commands/ls.js');
      const stats = options.stats === true;
      await printStreams(await listStreams(client, options.label, stats), output, { stats });
    });

  program
    .command('top')
    .description('a live view of the streams: traffic rates, open connections, backend health (q quits)')
    .option('--interval <duration>', 'time between refreshes: 2s, 500ms, 1m', '2s')
    .option('--sort <key>', 'port, rate (busiest first) or active (most open connections first)', 'port')
    .option('--label <key=value>', 'only streams with this label (repeat to require several)', collect, [])
    .option('-n, --iterations <count>', 'stop after this many refreshes (for scripts)')
    .addHelpText(
      'after',
      `
Keys: q (or Ctrl-C) quits, s changes the order. Into a pipe it prints one table per refresh;
with --json, one JSON object per refresh and line.

Examples:
  $ conductor top
  $ conductor top --sort rate --interval 1s --label env=prod
  $ conductor top --json -n 2 | tail -1 | jq '.streams[] | {port, inPerSecond}'`,
    )
    .action(
      async (options: { interval: string; sort: string; label: string[]; iterations?: string }, command: Command) => {
        const intervalMs = localCheck(() => parseDuration(options.interval, '--interval'));
        if (intervalMs < 100 || intervalMs > 3_600_000)
          throw new ConductorError(ErrorCode.Usage, '--interval: from 100ms to 1h');
        const { runTop, SORT_KEYS } = await import('./commands/top.js');
        const sort = SORT_KEYS.find((key) => key === options.sort);
        if (sort === undefined)
          throw new ConductorError(
            ErrorCode.Usage,
            `--sort: one of ${SORT_KEYS.join(', ')}, got ${JSON.stringify(options.sort)}`,
          );
        let iterations: number | undefined;
        if (options.iterations !== undefined) {
          iterations = Number(options.iterations);
          if (!/^[0-9]{1,9}$/.test(options.iterations) || iterations < 1)
            throw new ConductorError(
              ErrorCode.Usage,
              `--iterations: a whole number of at least 1, got ${JSON.stringify(options.iterations)}`,
            );
        }
        for (const label of options.label) localCheck(() => parseLabelSelector(label));
        const { client, output } = await contextFor(command);
        await runTop(client, output, { intervalMs, sort, labels: options.label, iterations });
      },
    );

  program
    .command('events')
    .description('the audit log: who changed what, when, from where, and how it ended')
    .option('--limit <count>', 'at most this many of the latest events (up to 1000)', '50')
    .option('--port <port>', 'only events about this port')
    .option('--since <time>', 'only events after this ISO 8601 time, or this long ago: 30m, 2h, 7d')
    .option('-f, --follow', 'keep printing new events as they happen (Ctrl-C stops)')
    .addHelpText(
      'after',
      '\nExamples:\n  $ conductor events\n  $ conductor events --port 9000 --since 2h\n  $ conductor events --follow --json',
    )
    .action(async (options: { limit: string; port?: string; since?: string; follow?: boolean }, command: Command) => {
      const limit = Number(options.limit);
      if (!/^[0-9]{1,4}$/.test(options.limit) || limit < 1 || limit > 1000)
        throw new ConductorError(
          ErrorCode.Usage,
          `--limit: a whole number from 1 to 1000, got ${JSON.stringify(options.limit)}`,
        );
      const port = options.port === undefined ? undefined : localPort(options.port);
      let since: string | undefined;
      if (options.since !== undefined) {
        const text = options.since;
        const ago = /^[0-9]+(ms|s|m|h|d)$/.test(text) ? localCheck(() => parseDuration(text, '--since')) : undefined;
        const at = ago !== undefined ? Date.now() - ago : Date.parse(text);
        if (Number.isNaN(at))
          throw new ConductorError(
            ErrorCode.Usage,
            `--since: an ISO 8601 time or a duration such as 2h, got ${JSON.stringify(text)}`,
          );
        since = new Date(at).toISOString();
      }
      const { client, output } = await contextFor(command);
      const { listEvents, printEvents, followEvents } = await import('./commands/events.js');
      if (options.follow === true) await followEvents(client, output, { limit, port, since });
      else printEvents(await listEvents(client, { limit, port, since }), output);
    });

  program
    .command('apply')
    .description("make the daemon's streams match a file (YAML or JSON), all or nothing")
    .requiredOption('-f, --file <path>', 'the file, or - for standard input')
    .option('--dry-run', 'only show what would change')
    .option('--prune', 'also remove streams the file does not list')
    .addHelpText(
      'after',
      `
The file lists streams as the API takes them (see the README):
  streams:
    - port: 9000
      backend: db.internal:5432
      labels: { env: prod }
    - port: 9001
      protocol: udp
      backends: [dns1:53, dns2:53]

Examples:
  $ conductor apply -f streams.yaml --dry-run
  $ conductor apply -f streams.yaml --prune`,
    )
    .action(async (options: { file: string; dryRun?: boolean; prune?: boolean }, command: Command) => {
      const { readStreamsFile, applyStreams, printApplied } = await import('./commands/apply.js');
      const streams = await readStreamsFile(options.file);
      const { client, output } = await contextFor(command);
      printApplied(
        await applyStreams(client, streams, { prune: options.prune === true, dryRun: options.dryRun === true }),
        output,
      );
    });

  program
    .command('diff')
    .description(
      'what apply -f FILE would change, field by field, without applying it (exit 0: nothing; 1: changes; 2: error)',
    )
    .requiredOption('-f, --file <path>', 'the file, or - for standard input')
    .option('--prune', 'also show the streams apply --prune would remove')
    .addHelpText(
      'after',
      '\nExamples:\n  $ conductor diff -f streams.yaml\n  $ conductor diff -f streams.yaml --prune; [ $? -eq 1 ] && conductor apply -f streams.yaml --prune',
    )
    .action(async (options: { file: string; prune?: boolean }, command: Command) => {
      const { DIFF_EXIT, diffStreams, printDiff } = await import('./commands/diff.js');
      failed = DIFF_EXIT.error;
      const { readStreamsFile } = await import('./commands/apply.js');
      const streams = await readStreamsFile(options.file);
      const { client, output } = await contextFor(command);
      const result = await diffStreams(client, streams, options.prune === true);
      printDiff(result, output);
      answered = result.diffs.length > 0 ? DIFF_EXIT.differs : DIFF_EXIT.same;
    });

  program
    .command('wait')
    .description('wait until the stream on a port is live, healthy (every backend up) or gone')
    .argument('<port>', 'port of the stream')
    .requiredOption('--for <condition>', 'live, healthy or gone')
    .option('--timeout <duration>', 'give up after this long (exit 1)', '60s')
    .addHelpText(
      'after',
      '\nExamples:\n  $ conductor create 9000 db:5432 && conductor wait 9000 --for healthy --timeout 2m\n  $ conductor rm 9000 && conductor wait 9000 --for gone',
    )
    .action(async (portText: string, options: { for: string; timeout: string }, command: Command) => {
      const port = localPort(portText);
      const { CONDITIONS, printWaited, waitFor } = await import('./commands/wait.js');
      const condition = CONDITIONS.find((one) => one === options.for);
      if (condition === undefined)
        throw new ConductorError(ErrorCode.Usage, `--for: live, healthy or gone, got ${JSON.stringify(options.for)}`);
      const timeoutMs = localCheck(() => parseDuration(options.timeout, '--timeout'));
      const { client, output } = await contextFor(command);
      printWaited(port, condition, await waitFor(client, port, condition, timeoutMs), output);
    });

  program
    .command('free-port')
    .description('print a port of the range that has no stream and no other process holds')
    .addHelpText(
      'after',
      '\nExamples:\n  $ conductor free-port\n  $ PORT=$(conductor free-port) && conductor create "$PORT" mybackend:22',
    )
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

  registerContextCommands(program, env);

  program
    .command('completion')
    .description('print the shell completion script')
    .argument('<shell>', 'bash or zsh')
    .addHelpText(
      'after',
      '\nExamples:\n  $ source <(conductor completion bash)        # add to ~/.bashrc\n  $ conductor completion zsh > "${fpath[1]}/_conductor"',
    )
    .action(async (shell: string) => {
      const { bashCompletion, zshCompletion } = await import('./commands/completion.js');
      if (shell === 'bash') process.stdout.write(bashCompletion(program));
      else if (shell === 'zsh') process.stdout.write(zshCompletion(program));
      else throw new ConductorError(ErrorCode.Usage, `no completion for ${JSON.stringify(shell)}: bash or zsh`);
    });

  for (const command of program.commands)
    command.addHelpText('after', `\nOutput: -o ${formatsOf(command.name()).join('|')} (--json is -o json)`);

  if (argv.length <= 2) {
    process.stderr.write(program.helpInformation());
    return EXIT.usage;
  }

  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version exit 0; help shown because something was missing is a usage error.
      const asked =
        error.code === 'commander.helpDisplayed' ||
        error.code === 'commander.version' ||
        (error.code === 'commander.help' && error.exitCode === 0);
      return asked ? EXIT.ok : EXIT.usage;
    }
    if (error instanceof ConductorError) {
      // Messages can carry text from the daemon: printed with control characters escaped.
      process.stderr.write(`conductor: ${printable(error.message)}\n`);
      if (error.hint !== undefined) process.stderr.write(`hint: ${printable(error.hint)}\n`);
      return failed ?? exitCodeFor(error);
    }
    process.stderr.write(`conductor: unexpected error\n${(error as Error).stack ?? String(error)}\n`);
    return failed ?? EXIT.refused;
  }
  return answered;
}
