/**
 * The daemon's entry point: reads the settings once, wires the pieces, listens, and stops in
 * order on SIGTERM/SIGINT. Start-up failures end in one line on stderr and exit status 1.
 */
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { ConfigError, parseCommandLine, readConfig, usage } from './config.js';
import { Conductor } from './service/local.js';
import type { StreamService } from './service/service.js';
import { createApp } from './http/app.js';
import { createHttpServer } from './http/server.js';
import { createLogger } from './log.js';
import { FileStore, StoreCorruptError } from './streams/file-store.js';
import { type Lock, LockError, acquireLock } from './sys/lock.js';
import { ephemeralPortRange, probePort } from './sys/ports.js';
import { untrustedBecause } from './sys/trust.js';
import { buildInstances, layoutOf } from './layout.js';
import type { PipelineObserver } from './observe/metrics.js';
import { Observatory } from './observe/observatory.js';

const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

class StartupError extends Error {}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

async function run(argv: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const args = parseCommandLine(argv);
  if (args.help) {
    process.stdout.write(`${usage()}\n`);
    return;
  }
  if (args.version) {
    process.stdout.write(`${version}\n`);
    return;
  }
  const config = readConfig(env, args.values);
  // Read once; the processes the daemon starts (nginx, ss) have no use for the token.
  delete env.CONDUCTOR_TOKEN;
  const log = createLogger({ level: config.logLevel });
  log.info('starting', {
    version,
    mode: config.mode,
    home: config.home,
    streamConfigPath: config.streamConfigPath,
    portRange: `${config.portRange.start}-${config.portRange.end}`,
    api: `${config.bindAddress}:${config.bindPort}`,
    auth: config.tokens.length > 0,
    store: config.store.kind === 'etcd' ? { etcd: config.store.endpoints, prefix: config.store.prefix, host: config.store.hostId } : 'file',
  });

  for (const file of config.exposedSecretFiles) {
    log.warn('a file of secrets can be read by other users; make it mode 0600', { file });
  }
  const ephemeral = await ephemeralPortRange();
  if (ephemeral && config.portRange.start <= ephemeral.end && config.portRange.end >= ephemeral.start) {
    log.warn('PORT_RANGE overlaps the kernel range for outgoing connections; those ports can be taken at any moment', {
      ephemeral: `${ephemeral.start}-${ephemeral.end}`,
    });
  }

  // nginx reads and writes in these folders as the daemon's user (root, as a rule): nobody else
  // may be able to plant a file or a link there. Checked before anything is made in them, and
  // again after, in case another user put something in their place meanwhile.
  const me = { uid: process.getuid?.() ?? 0, gids: [process.getgid?.() ?? 0, ...(process.getgroups?.() ?? [])] };
  const folders = [
    { variable: 'CONDUCTOR_HOME', path: config.home, mode: 0o700 },
    { variable: 'STREAM_CONFIG_PATH', path: config.streamConfigPath, mode: 0o755 },
  ];
  const checkFolders = async (again: boolean): Promise<void> => {
    for (const { variable, path } of folders) {
      const reason = await untrustedBecause(path, me).catch((error: NodeJS.ErrnoException) => {
        throw new StartupError(`${variable} ${path}: cannot use it as a folder (${error.code ?? error.message})`);
      });
      if (reason === undefined) continue;
      if (!config.allowSharedFolders) {
        throw new StartupError(`${variable} ${path}: ${reason}; the daemon's folders must be writable by its own user (and root) alone (CONDUCTOR_ALLOW_SHARED_FOLDERS=1 accepts them anyway)`);
      }
      if (!again) log.warn('a folder of the daemon can be changed by other users', { variable, path, reason });
    }
  };
  await checkFolders(false);
  for (const { path, mode } of folders) await mkdir(path, { recursive: true, mode });
  await checkFolders(true);
  const locks: Lock[] = [await acquireLock(config.home, 'daemon.pid', 'CONDUCTOR_HOME')];
  if (config.mode === 'external') locks.push(await acquireLock(config.streamConfigPath, '.conductor-daemon.pid', 'STREAM_CONFIG_PATH'));
  const releaseLocks = async (): Promise<void> => {
    for (const lock of locks) await lock.release();
  };

  // Signals are taken from here on: one that arrives while nginx is being brought up waits for
  // that to finish, then everything stops in order.
  let stopSignal: string | undefined;
  let stopNow: ((signal: string) => void) | undefined;
  const onSignal = (signal: string): void => {
    if (stopSignal !== undefined) return;
    stopSignal = signal;
    log.info('stopping', { signal });
    stopNow?.(signal);
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));

  let conductor: Conductor | undefined;
  let running: StreamService | undefined;
  try {
    const store = new FileStore(join(config.home, 'streams.json'));
    // The metrics hear of every apply and reload; the observatory needs the instances' logs.
    let observatory: Observatory | undefined;
    const observer: PipelineObserver = {
      apply: (...args) => observatory?.metrics.apply(...args),
      reload: (...args) => observatory?.metrics.reload(...args),
      finding: (instance, action, ports, detail) =>
        observatory?.record({ actor: 'daemon', remote: '', action, ports, detail: `nginx ${instance}: ${detail}`, result: 'ok' }),
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
      auditPath: join(config.home, 'audit.log'),
      auditMaxBytes: config.logMaxBytes,
      healthIntervalMs: config.healthIntervalMs,
      healthTimeoutMs: 2000,
      log,
    });
    conductor = new Conductor({
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
    });
    const local = conductor;
    // Fleet mode: the desired set lives in etcd; this host serves from its own file meanwhile.
    // (etcd's client, gRPC and all, is loaded only for a fleet.)
    const service =
      config.store.kind === 'etcd'
        ? new (await import('./fleet/fleet.js')).FleetConductor({
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
          })
        : local;
    running = service;
    await service.start();
    observatory.start({ list: () => local.list(), nginx: () => local.status().nginxInstances });
    if (stopSignal !== undefined) throw new Interrupted();

    const server = createHttpServer(createApp({ conductor: service, tokens: config.tokens, log, observatory }), { maxConnections: config.apiMaxConnections });
    try {
      await listen(server, config.bindPort, config.bindAddress);
    } catch (error) {
      throw new StartupError(
        `BIND_PORT (--bind-port): cannot listen on ${config.bindAddress}:${config.bindPort}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      );
    }
    log.info('ready', { api: `http://${config.bindAddress.includes(':') ? `[${config.bindAddress}]` : config.bindAddress}:${config.bindPort}` });

    stopNow = () => {
      server.close();
      void (async () => {
        observatory?.stop();
        await service.close();
        server.closeAllConnections();
        await releaseLocks();
        log.info('stopped');
        process.exit(0);
      })();
    };
    if (stopSignal !== undefined) stopNow(stopSignal);
  } catch (error) {
    await (running ?? conductor)?.close().catch(() => undefined);
    await releaseLocks();
    if (error instanceof Interrupted) {
      log.info('stopped');
      process.exit(0);
    }
    throw error;
  }
}

/** A stop signal arrived during start-up. */
class Interrupted extends Error {}

run(process.argv.slice(2), process.env).catch((error: unknown) => {
  const known = error instanceof ConfigError || error instanceof StartupError || error instanceof StoreCorruptError || error instanceof LockError;
  process.stderr.write(`conductor-daemon: ${known ? (error as Error).message : `unexpected error: ${(error as Error).stack ?? String(error)}`}\n`);
  process.exit(1);
});
