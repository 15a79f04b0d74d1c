/**
 * The daemon's entry point: reads the settings once, wires the pieces, listens, and stops in
 * order on SIGTERM/SIGINT. Start-up failures end in one line on stderr and exit status 1.
 */
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { portRangeSize } from '@stream-conductor/shared';
import { ConfigError, type Config, parseCommandLine, readConfig, usage } from './config.js';
import { Conductor } from './conductor.js';
import { createApp } from './http/app.js';
import { createHttpServer } from './http/server.js';
import { type Logger, createLogger } from './log.js';
import { NginxBinaryError, probeNginx } from './nginx/binary.js';
import type { NginxController } from './nginx/controller.js';
import { ExternalNginx } from './nginx/external.js';
import { NginxInstance } from './nginx/instance.js';
import { ManagedNginx } from './nginx/managed.js';
import { nginxPath, renderMainConf, sizeConnections } from './nginx/render.js';
import { StreamFiles } from './nginx/stream-files.js';
import { FileStore, StoreCorruptError } from './streams/file-store.js';
import { hardOpenFileLimit } from './sys/limits.js';
import { type Lock, LockError, acquireLock } from './sys/lock.js';
import { ephemeralPortRange, listeningPorts, probePort } from './sys/ports.js';
import { killSessions } from './sys/sessions.js';

const version = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

class StartupError extends Error {}

async function buildController(config: Config, log: Logger): Promise<NginxController> {
  if (config.mode === 'external') {
    let pidPath: string | undefined;
    try {
      const build = await probeNginx(config.nginxBin);
      pidPath = build.pidPath ?? join(build.prefix ?? '/usr/share/nginx', 'logs/nginx.pid');
      log.info('nginx found', { bin: config.nginxBin, version: build.version, stream: build.stream });
    } catch (error) {
      if (!(error instanceof NginxBinaryError)) throw error;
      log.error('nginx cannot be run; changes are refused until it can', { bin: config.nginxBin, reason: error.message });
    }
    return new ExternalNginx({
      nginxBin: config.nginxBin,
      nginxConf: config.nginxConf,
      pidFile: config.nginxPidFile ?? pidPath ?? '/run/nginx.pid',
      errorLog: config.nginxErrorLog,
      reloadTimeoutMs: config.reloadTimeoutMs,
    });
  }
  const dir = join(config.home, 'nginx');
  const limits = sizeConnections(portRangeSize(config.portRange), process.getuid?.() === 0 ? undefined : await hardOpenFileLimit());
  return new ManagedNginx({
    nginxBin: config.nginxBin,
    dir,
    mainConf: (build) =>
      renderMainConf({
        pidFile: join(dir, 'nginx.pid'),
        errorLog: join(dir, 'error.log'),
        streamModule: build.stream === 'dynamic' ? build.streamModule : undefined,
        includeGlob: join(nginxPath(config.streamConfigPath), '*.conf'),
        ...limits,
      }),
    reloadTimeoutMs: config.reloadTimeoutMs,
    log,
  });
}

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
  const log = createLogger({ level: config.logLevel });
  log.info('starting', {
    version,
    mode: config.mode,
    home: config.home,
    streamConfigPath: config.streamConfigPath,
    portRange: `${config.portRange.start}-${config.portRange.end}`,
    api: `${config.bindAddress}:${config.bindPort}`,
    auth: config.token !== undefined,
  });

  const ephemeral = await ephemeralPortRange();
  if (ephemeral && config.portRange.start <= ephemeral.end && config.portRange.end >= ephemeral.start) {
    log.warn('PORT_RANGE overlaps the kernel range for outgoing connections; those ports can be taken at any moment', {
      ephemeral: `${ephemeral.start}-${ephemeral.end}`,
    });
  }

  await mkdir(config.home, { recursive: true, mode: 0o700 });
  await mkdir(config.streamConfigPath, { recursive: true });
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
  try {
    const controller = await buildController(config, log);
    const store = new FileStore(join(config.home, 'streams.json'));
    const instance = new NginxInstance({
      id: 0,
      controller,
      files: new StreamFiles(config.streamConfigPath, config.streamPrefix, { listenAddress: config.listenAddress }),
      store,
      probePort,
      listeningPorts,
      killSessions,
      defaultListenAddress: config.listenAddress,
      log,
      retryIntervalMs: config.retryIntervalMs,
    });
    conductor = new Conductor({
      version,
      mode: config.mode,
      portRange: config.portRange,
      store,
      instances: [instance],
      probePort,
      defaultListenAddress: config.listenAddress,
      log,
    });
    await conductor.start();
    if (stopSignal !== undefined) throw new Interrupted();

    const server = createHttpServer(createApp({ conductor, token: config.token, log }));
    try {
      await listen(server, config.bindPort, config.bindAddress);
    } catch (error) {
      throw new StartupError(
        `BIND_PORT (--bind-port): cannot listen on ${config.bindAddress}:${config.bindPort}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      );
    }
    log.info('ready', { api: `http://${config.bindAddress.includes(':') ? `[${config.bindAddress}]` : config.bindAddress}:${config.bindPort}` });

    const running = conductor;
    stopNow = () => {
      server.close();
      void (async () => {
        await running.close();
        server.closeAllConnections();
        await releaseLocks();
        log.info('stopped');
        process.exit(0);
      })();
    };
    if (stopSignal !== undefined) stopNow(stopSignal);
  } catch (error) {
    await conductor?.close().catch(() => undefined);
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
