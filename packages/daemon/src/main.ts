/**
 * The daemon's entry point, in the order it runs: the command line and the environment are read
 * once into a Config, the folders are checked and locked, the pieces are wired, the API listens,
 * and SIGTERM/SIGINT stop everything in order. A StartupError ends in its one line on stderr and
 * exit status 1; any other error at start-up is a bug and prints its stack.
 */
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { join } from 'node:path';
import { StartupError } from '@stream-conductor/shared';
import { type Config, parseCommandLine, readConfig } from './config/read.js';
import { usage } from './config/settings.js';
import { tlsMaterial } from './config/tls.js';
import { isLoopback } from './config/tokens.js';
import { badSetting } from './config/values.js';
import { createApp } from './http/app.js';
import { createHttpServer } from './http/server.js';
import { certificateFacts, type TlsReloader, watchTlsFiles } from './http/tls-reload.js';
import { buildInstances, layoutOf } from './layout.js';
import { bestEffort, createLogger, type Logger } from './log.js';
import type { PipelineObserver } from './observe/metrics.js';
import { Observatory } from './observe/observatory.js';
import { Conductor } from './service/local.js';
import type { StreamService } from './service/service.js';
import { streamTlsDir } from './service/stream-tls.js';
import { FileStore } from './streams/file-store.js';
import { acquireLock, type Lock } from './sys/lock.js';
import { ephemeralPortRange, probePort } from './sys/ports.js';
import { killSessions, nginxSessionCount } from './sys/sessions.js';
import { untrustedBecause } from './sys/trust.js';

const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string })
  .version;

/** The command line and the environment, read once; undefined when --help or --version was answered. */
function readEnvironment(argv: string[], env: NodeJS.ProcessEnv): Config | undefined {
  const args = parseCommandLine(argv);
  if (args.help) {
    process.stdout.write(`${usage()}\n`);
    return undefined;
  }
  if (args.version) {
    process.stdout.write(`${version}\n`);
    return undefined;
  }
  const config = readConfig(env, args.values);
  // Read once; the processes the daemon starts (nginx, ss) have no use for the token.
  delete env.CONDUCTOR_TOKEN;
  return config;
}

function logStart(config: Config, log: Logger): void {
  log.info('starting', {
    version,
    mode: config.mode,
    home: config.home,
    streamConfigPath: config.streamConfigPath,
    portRange: `${config.portRange.start}-${config.portRange.end}`,
    api: `${config.bindAddress}:${config.bindPort}`,
    auth: config.tokens.length > 0,
    https: config.apiTls !== undefined,
    store:
      config.store.kind === 'etcd'
        ? { etcd: config.store.endpoints, prefix: config.store.prefix, host: config.store.hostId }
        : 'file',
  });
}

/** Settings that work but put something at risk. */
async function warnOfRisks(config: Config, log: Logger): Promise<void> {
  for (const file of config.exposedSecretFiles) {
    log.warn('a file of secrets can be read by other users; make it mode 0600', { file });
  }
  if (config.apiTls === undefined && config.tokens.length > 0 && !isLoopback(config.bindAddress)) {
    log.warn(
      'the API takes tokens in clear text on a non-loopback address; serve HTTPS with CONDUCTOR_TLS_CERT and CONDUCTOR_TLS_KEY',
      {
        api: `${config.bindAddress}:${config.bindPort}`,
      },
    );
  }
  const ephemeral = await ephemeralPortRange();
  if (ephemeral && config.portRange.start <= ephemeral.end && config.portRange.end >= ephemeral.start) {
    log.warn('PORT_RANGE overlaps the kernel range for outgoing connections; those ports can be taken at any moment', {
      ephemeral: `${ephemeral.start}-${ephemeral.end}`,
    });
  }
}

interface Folder {
  variable: string;
  path: string;
  mode: number;
}

/** Refuses a folder other users can change, unless the operator allowed it (then warns once). */
async function checkFolders(config: Config, folders: Folder[], log: Logger, again: boolean): Promise<void> {
  const me = { uid: process.getuid?.() ?? 0, gids: [process.getgid?.() ?? 0, ...(process.getgroups?.() ?? [])] };
  for (const { variable, path } of folders) {
    const reason = await untrustedBecause(path, me).catch((error: NodeJS.ErrnoException) => {
      throw new StartupError(`${variable} ${path}: cannot use it as a folder (${error.code ?? error.message})`);
    });
    if (reason === undefined) continue;
    if (!config.allowSharedFolders) {
      throw new StartupError(`${variable} ${path}: ${reason}`, {
        hint: "the daemon's folders must be writable by its own user (and root) alone (CONDUCTOR_ALLOW_SHARED_FOLDERS=1 accepts them anyway)",
      });
    }
    if (!again) log.warn('a folder of the daemon can be changed by other users', { variable, path, reason });
  }
}

/**
 * Checks, makes and locks the daemon's folders; returns the release of the locks. nginx reads and
 * writes in these folders as the daemon's user (root, as a rule): nobody else may be able to plant
 * a file or a link there. Checked before anything is made in them, and again after, in case
 * another user put something in their place meanwhile.
 */
async function claimFolders(config: Config, log: Logger): Promise<() => Promise<void>> {
  const folders: Folder[] = [
    { variable: 'CONDUCTOR_HOME', path: config.home, mode: 0o700 },
    { variable: 'STREAM_CONFIG_PATH', path: config.streamConfigPath, mode: 0o755 },
  ];
  await checkFolders(config, folders, log, false);
  for (const { path, mode } of folders) await mkdir(path, { recursive: true, mode });
  await checkFolders(config, folders, log, true);
  const locks: Lock[] = [await acquireLock(config.home, 'daemon.pid', 'CONDUCTOR_HOME', log)];
  if (config.mode === 'external') {
    locks.push(await acquireLock(config.streamConfigPath, '.conductor-daemon.pid', 'STREAM_CONFIG_PATH', log));
  }
  return async () => {
    for (const lock of locks) await lock.release();
  };
}

/** The local service: the store, the nginx instances, the observatory, the conductor over them. */
async function wireLocal(config: Config, log: Logger): Promise<{ conductor: Conductor; observatory: Observatory }> {
  const store = new FileStore(join(config.home, 'streams.json'));
  // The metrics hear of every apply and reload; the observatory needs the instances' logs.
  let observatory: Observatory | undefined;
  const observer: PipelineObserver = {
    apply: (...args) => observatory?.metrics.apply(...args),
    reload: (...args) => observatory?.metrics.reload(...args),
    finding: (instance, action, ports, detail) =>
      observatory?.record({
        actor: 'daemon',
        remote: '',
        action,
        ports,
        detail: `nginx ${instance}: ${detail}`,
        result: 'ok',
      }),
  };
  const instances = await buildInstances(config, store, log, observer);
  observatory = new Observatory({
    accessLogs: instances.map((instance) => ({
      path: layoutOf(config, instance.id).accessLog,
      writer: {
        master: () => instance.controller.status().pid,
        reopen: () => instance.controller.reopenLogs(),
        reload: () => instance.reloadUnchanged(),
      },
    })),
    accessLogMaxBytes: config.logMaxBytes,
    errorLogs: instances.flatMap((instance) => layoutOf(config, instance.id).errorLog ?? []),
    auditPath: join(config.home, 'audit.log'),
    auditMaxBytes: config.logMaxBytes,
    healthIntervalMs: config.healthIntervalMs,
    healthTimeoutMs: 2000,
    log,
  });
  const conductor = new Conductor({
    version,
    mode: config.mode,
    portRange: config.portRange,
    store,
    instances,
    legacyFolder: config.streamConfigPath,
    streamPrefix: config.streamPrefix,
    probePort,
    defaultListenAddress: config.listenAddress,
    log,
    observatory,
    sessions: { count: nginxSessionCount, cut: killSessions },
    streamTls: {
      dir: streamTlsDir(config.home),
      intervalMs: config.streamTlsIntervalMs,
      allowedDirs: config.streamTlsDirs,
    },
  });
  return { conductor, observatory };
}

/** A service the daemon starts before it serves it, and closes when it stops. */
type RunningService = StreamService & { start(): Promise<void> };

/**
 * The service the API serves: the local one, or in fleet mode the fleet over it (the desired set
 * lives in etcd; this host serves from its own file meanwhile). etcd's client, gRPC and all, is
 * loaded only for a fleet.
 */
async function wireService(
  config: Config,
  local: Conductor,
  log: Logger,
  env: NodeJS.ProcessEnv,
): Promise<RunningService> {
  if (config.store.kind !== 'etcd') return local;
  const { FleetConductor } = await import('./fleet/fleet.js');
  return new FleetConductor({
    local,
    config: config.store,
    version,
    portRange: config.portRange,
    probePort,
    defaultListenAddress: config.listenAddress,
    log: log.child({ component: 'fleet' }),
    retryIntervalMs: config.retryIntervalMs,
    // Test hook, read with the rest of the environment: see FleetOptions.deafFile.
    deafFile: env.CONDUCTOR_TEST_FLEET_DEAF,
  });
}

async function listenApi(config: Config, server: Server, log: Logger): Promise<void> {
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.bindPort, config.bindAddress, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
    throw badSetting('bindPort', `cannot listen on ${config.bindAddress}:${config.bindPort}: ${reason}`);
  }
  const host = config.bindAddress.includes(':') ? `[${config.bindAddress}]` : config.bindAddress;
  const scheme = config.apiTls === undefined ? 'http' : 'https';
  log.info('ready', { api: `${scheme}://${host}:${config.bindPort}` });
}

/**
 * SIGTERM and SIGINT, taken from the moment the folders are locked. One that arrives while nginx is
 * being brought up waits for that to finish; then everything stops in order.
 */
class StopSignals {
  private signal: string | undefined;
  private stop: (() => void) | undefined;

  constructor(private readonly log: Logger) {
    process.on('SIGTERM', () => this.receive('SIGTERM'));
    process.on('SIGINT', () => this.receive('SIGINT'));
  }

  get received(): boolean {
    return this.signal !== undefined;
  }

  /** Runs `stop` at the first signal, or now when one came already. */
  onStop(stop: () => void): void {
    this.stop = stop;
    if (this.received) stop();
  }

  private receive(signal: string): void {
    if (this.signal !== undefined) return;
    this.signal = signal;
    this.log.info('stopping', { signal });
    this.stop?.();
  }
}

/**
 * Stops a daemon that is serving: no new connections, then the observatory, the service (and with
 * it nginx), the connections still open, the locks; then the process exits.
 */
function stopInOrder(running: {
  server: Server;
  observatory: Observatory;
  service: RunningService;
  releaseLocks: () => Promise<void>;
  log: Logger;
  tlsReloader: TlsReloader | undefined;
}): void {
  const { server, observatory, service, releaseLocks, log, tlsReloader } = running;
  tlsReloader?.stop();
  server.close();
  void (async () => {
    observatory.stop();
    await service.close();
    server.closeAllConnections();
    await releaseLocks();
    log.info('stopped');
    process.exit(0);
  })();
}

/** A stop signal arrived during start-up. */
class Interrupted extends Error {}

async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const config = readEnvironment(argv, env);
  if (config === undefined) return;
  const format = config.logFormat === 'auto' ? (process.stderr.isTTY ? 'text' : 'json') : config.logFormat;
  const log = createLogger({ level: config.logLevel, format });
  logStart(config, log);
  await warnOfRisks(config, log);
  const releaseLocks = await claimFolders(config, log);
  const signals = new StopSignals(log);

  let started: RunningService | undefined;
  try {
    const { conductor, observatory } = await wireLocal(config, log);
    started = conductor;
    const service = await wireService(config, conductor, log, env);
    started = service;
    await service.start();
    observatory.start({ list: () => conductor.list(), nginx: () => conductor.status().nginxInstances });
    if (signals.received) throw new Interrupted();

    const app = createApp({ conductor: service, tokens: config.tokens, log, observatory });
    const tls = config.apiTls;
    // The files as they are now: checked when the settings were read, and read again here.
    const material = tls === undefined ? undefined : tlsMaterial(tls);
    const server = createHttpServer(
      app,
      { maxConnections: config.apiMaxConnections },
      material === undefined ? undefined : { material, requireClientCert: tls?.clientCa !== undefined },
    );
    await listenApi(config, server, log);
    let tlsReloader: TlsReloader | undefined;
    if (tls !== undefined && material !== undefined) {
      log.info('serving HTTPS', {
        cert: tls.cert,
        clientCa: tls.clientCa ?? null,
        ...certificateFacts(material),
      });
      tlsReloader = await watchTlsFiles(server as HttpsServer, tls, log);
    }
    signals.onStop(() => stopInOrder({ server, observatory, service, releaseLocks, log, tlsReloader }));
  } catch (error) {
    const closing = started;
    if (closing !== undefined) await bestEffort(log, 'closing what started before the failure', () => closing.close());
    await releaseLocks();
    if (error instanceof Interrupted) {
      log.info('stopped');
      process.exit(0);
    }
    throw error;
  }
}

/** The one exit of a failed start: a StartupError as its one line, anything else with its stack. */
function exitOnFailure(error: unknown): never {
  const line =
    error instanceof StartupError ? error.line() : `unexpected error: ${(error as Error).stack ?? String(error)}`;
  process.stderr.write(`conductor-daemon: ${line}\n`);
  process.exit(1);
}

main(process.argv.slice(2), process.env).catch(exitOnFailure);
