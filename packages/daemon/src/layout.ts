/**
 * Where each nginx instance keeps its files, and building the instances. In managed mode several
 * nginx masters run (CONDUCTOR_NGINX_INSTANCES, at most one per port of the range), each with its
 * own folder under $CONDUCTOR_HOME/nginx/<i>/ and its own per-stream folder
 * $STREAM_CONFIG_PATH/<i>/. Ports are not sliced over them: the service places each stream on one
 * master (service/placement.ts: a new stream on the master that can reload soonest, a stream
 * stays where it is), so reloads overlap and a slow or failing reload touches only that master's
 * streams. External mode drives the one nginx it is given, with the files directly in
 * STREAM_CONFIG_PATH.
 */

import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { portRangeSize } from '@stream-conductor/shared';
import type { Config } from './config/read.js';
import { bestEffort, type Logger } from './log.js';
import { NginxBinaryError, probeNginx } from './nginx/binary.js';
import { NginxInstance } from './nginx/instance.js';
import type { NginxController } from './nginx/process/controller.js';
import { ExternalNginx } from './nginx/process/external.js';
import { ManagedNginx } from './nginx/process/managed.js';
import {
  logFormatFileName,
  nginxPath,
  portOfStreamFileName,
  renderLogFormatFile,
  renderMainConf,
  sizeConnections,
} from './nginx/render.js';
import { BundleFiles, StreamFiles } from './nginx/stream-files.js';
import type { PipelineObserver } from './observe/metrics.js';
import type { StreamStore } from './streams/store.js';
import { writeFileAtomic } from './sys/files.js';
import { hardOpenFileLimit } from './sys/limits.js';
import { listeningPorts, probePort } from './sys/ports.js';
import { commandLine, isAlive, signal } from './sys/processes.js';
import { killSessions } from './sys/sessions.js';

export interface InstanceLayout {
  /** The master's own files (managed mode). */
  nginxDir: string;
  /** The per-stream include files. */
  streamDir: string;
  /** The access log the streams of this instance write. */
  accessLog: string;
  /** The master's error log (managed: ManagedNginx writes it in nginxDir; external: the operator's, when named). */
  errorLog: string | undefined;
}

export function instanceCount(config: Config): number {
  return config.mode === 'managed' ? Math.min(config.nginxInstances, portRangeSize(config.portRange)) : 1;
}

export function layoutOf(config: Config, id: number): InstanceLayout {
  if (config.mode === 'external') {
    return {
      nginxDir: join(config.home, 'nginx'),
      streamDir: config.streamConfigPath,
      accessLog: join(config.home, 'access.log'),
      errorLog: config.nginxErrorLog,
    };
  }
  const nginxDir = join(config.home, 'nginx', String(id));
  return {
    nginxDir,
    streamDir: join(config.streamConfigPath, String(id)),
    accessLog: join(nginxDir, 'access.log'),
    errorLog: join(nginxDir, 'error.log'),
  };
}

async function externalController(config: Config, log: Logger): Promise<NginxController> {
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

/**
 * Stops managed masters that belong to no instance of this run (an earlier run had more of them):
 * they would hold ports of streams that now belong to another master.
 */
async function stopForeignMasters(config: Config, keep: Set<string>, log: Logger): Promise<void> {
  const root = join(config.home, 'nginx');
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return;
  }
  for (const name of names) {
    const dir = join(root, name);
    if (keep.has(dir)) continue;
    const pid = Number(
      ((await bestEffort(log, `read ${dir}/nginx.pid`, readFile(join(dir, 'nginx.pid'), 'utf8'))) ?? '').trim(),
    );
    if (!Number.isInteger(pid) || pid <= 1 || !isAlive(pid)) continue;
    const command = await commandLine(pid);
    if (!command?.includes('nginx: master process') || !command.includes(join(dir, 'nginx.conf'))) continue;
    log.warn('stopping an nginx master of an earlier split of the port range', { pid, dir });
    signal(pid, 'SIGTERM');
    for (let waited = 0; waited < 5000 && isAlive(pid); waited += 20) await sleep(20);
  }
}

/** Builds every nginx instance of this run, with its controller and its files. */
export async function buildInstances(
  config: Config,
  store: StreamStore,
  log: Logger,
  observer?: PipelineObserver,
): Promise<NginxInstance[]> {
  const count = instanceCount(config);
  const sliceSize = Math.ceil(portRangeSize(config.portRange) / count);
  const hardLimit = process.getuid?.() === 0 ? undefined : await hardOpenFileLimit();
  const instances: NginxInstance[] = [];
  const external = config.mode === 'external' ? await externalController(config, log) : undefined;
  if (config.mode === 'external') {
    // The log format is defined once at stream level, before the per-stream files that use it.
    await mkdir(config.streamConfigPath, { recursive: true });
    await writeFileAtomic(join(config.streamConfigPath, logFormatFileName(config.streamPrefix)), renderLogFormatFile());
  }
  const dirs = new Set<string>();
  for (let id = 0; id < count; id += 1) {
    const layout = layoutOf(config, id);
    dirs.add(layout.nginxDir);
    await mkdir(layout.streamDir, { recursive: true });
    const controller =
      external ??
      new ManagedNginx({
        nginxBin: config.nginxBin,
        dir: layout.nginxDir,
        mainConf: (build) =>
          renderMainConf({
            pidFile: join(layout.nginxDir, 'nginx.pid'),
            errorLog: join(layout.nginxDir, 'error.log'),
            streamModule: build.stream === 'dynamic' ? build.streamModule : undefined,
            includeGlob: join(nginxPath(layout.streamDir), '*.conf'),
            workerProcesses: config.nginxWorkers,
            ...sizeConnections(sliceSize, hardLimit),
          }),
        reloadTimeoutMs: config.reloadTimeoutMs,
        handoff: config.nginxHandoff,
        errorLogMaxBytes: config.logMaxBytes,
        log: log.child({ instance: id }),
      });
    instances.push(
      new NginxInstance({
        id,
        controller,
        files: new (external ? StreamFiles : BundleFiles)(layout.streamDir, config.streamPrefix, {
          listenAddress: config.listenAddress,
          accessLog: layout.accessLog,
        }),
        store,
        probePort,
        listeningPorts,
        killSessions,
        defaultListenAddress: config.listenAddress,
        log,
        retryIntervalMs: config.retryIntervalMs,
        auditIntervalMs: config.auditIntervalMs,
        testBeforeReload: config.mode === 'external' || config.testBeforeReload,
        observer,
      }),
    );
  }
  if (config.mode === 'managed') {
    await stopForeignMasters(config, dirs, log);
    await removeOtherLayouts(config, new Set(instances.map((instance) => instance.files.folder)), log);
  }
  return instances;
}

/**
 * Removes per-stream files that an earlier layout rendered where no instance of this run looks
 * (the top folder, or numbered folders beyond the instance count). They are copies: the store is
 * the truth, and every instance renders its own streams again at start-up.
 */
/** A folder that does not exist has no files; any other failure to read it is the caller's. */
function absentAsEmpty(error: NodeJS.ErrnoException): string[] {
  if (error.code === 'ENOENT') return [];
  throw error;
}

async function removeOtherLayouts(config: Config, folders: Set<string>, log: Logger): Promise<void> {
  const ours = (name: string): boolean =>
    portOfStreamFileName(config.streamPrefix, name) !== undefined || name.startsWith('.tmp-');
  const clear = async (folder: string): Promise<void> => {
    for (const name of await readdir(folder).catch(absentAsEmpty)) {
      if (!ours(name)) continue;
      await rm(join(folder, name), { force: true });
      log.info('removed a per-stream file of an earlier layout', { file: join(folder, name) });
    }
  };
  await clear(config.streamConfigPath);
  for (const entry of await readdir(config.streamConfigPath, { withFileTypes: true })) {
    const folder = join(config.streamConfigPath, entry.name);
    if (entry.isDirectory() && /^[0-9]+$/.test(entry.name) && !folders.has(folder)) await clear(folder);
  }
}
