/**
 * Starting a managed nginx master: in the foreground as the daemon's child (reloads with SIGHUP),
 * or daemonized below the reaper (changes handed to new masters). Either way the start is proven
 * by the master's first workers, as a reload is.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../../log.js';
import { nginxMasters, signal } from '../../sys/processes.js';
import { parseNginxLines } from '../binary.js';
import { awaitNewGeneration, type ErrorLogCursor, type ReloadOutcome, readFrom, reloadVerdict } from './controller.js';
import { discardMaster } from './handoff.js';
import { masterBelow, REAPER_FAILED, REAPER_REFUSED, reaperCommand } from './reaper.js';

/** A master that runs, as the supervisor keeps it. */
export interface Launched {
  /** The daemon's child: the master itself, or the reaper above it. */
  child: ChildProcess;
  pid: number;
  reaperPid: number | undefined;
  /** Whether the master is the daemon's own child (started directly): its exit is an event. */
  masterIsChild: boolean;
}

export interface LaunchOptions {
  nginxBin: string;
  /** The arguments that select the configuration (-c, -p). */
  args: string[];
  errorLogPath: string;
  confPath: string;
  reloadTimeoutMs: number;
  log: Logger;
  /** The master runs: called as soon as its pid is known, before its workers are waited for. */
  running(launched: Launched): void;
  /** The daemon's child exited (see Launched.child). */
  exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void;
}

function whenSpawned(child: ChildProcess): Promise<Error | undefined> {
  return new Promise((done) => {
    child.once('spawn', () => done(undefined));
    child.once('error', (error) => done(error));
  });
}

/** Logs what `child` writes on stderr, each line also handed to `onLine`. */
function watchStderr(child: ChildProcess, log: Logger, onLine?: (line: string) => void): void {
  if (child.stderr) {
    createInterface({ input: child.stderr }).on('line', (line) => {
      onLine?.(line);
      log.warn('nginx stderr', { line });
    });
  }
}

const spawnFailure = (error: Error): string => (error as NodeJS.ErrnoException).code ?? error.message;

/** nginx in the foreground as the daemon's child: reloads with SIGHUP. */
export async function launchDirectly(
  options: LaunchOptions,
  cursor: ErrorLogCursor | undefined,
): Promise<ReloadOutcome> {
  const child = spawn(options.nginxBin, [...options.args, '-e', options.errorLogPath, '-g', 'daemon off;'], {
    // Its own process group: a Ctrl-C meant for the daemon must not reach nginx directly;
    // the daemon stops it in order.
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const spawnError = await whenSpawned(child);
  if (spawnError) {
    return {
      ok: false,
      code: 'NGINX_UNAVAILABLE',
      message: `cannot run ${options.nginxBin}: ${spawnFailure(spawnError)}`,
      lines: [],
    };
  }
  options.running({ child, pid: child.pid ?? 0, reaperPid: undefined, masterIsChild: true });
  watchStderr(child, options.log);
  child.once('exit', (code, signalName) => options.exited(child, code, signalName));
  return awaitNewGeneration({
    masterPid: child.pid ?? 0,
    before: new Set(),
    errorLog: cursor,
    timeoutMs: options.reloadTimeoutMs,
  });
}

/**
 * nginx daemonized below the reaper: changes are handed to new masters. `unavailable` with the
 * reason when the reaper cannot work here (no perl, no subreaper): start nginx directly instead.
 */
export async function launchUnderReaper(
  options: LaunchOptions,
  cursor: ErrorLogCursor | undefined,
): Promise<ReloadOutcome | { unavailable: string }> {
  const command = reaperCommand(options.nginxBin, [...options.args, '-e', options.errorLogPath, '-g', 'daemon on;']);
  const reaper = spawn(command.bin, command.args, { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  const spawnError = await whenSpawned(reaper);
  if (spawnError) return { unavailable: `cannot run ${command.bin}: ${spawnFailure(spawnError)}` };
  let setup = '';
  watchStderr(reaper, options.log, (line) => {
    if (line.startsWith('reaper: ')) setup = line;
  });
  let exitCode: number | null | undefined;
  reaper.once('exit', (code) => {
    exitCode = code;
  });
  const deadline = Date.now() + options.reloadTimeoutMs;
  for (let round = 0; ; round += 1) {
    if (exitCode !== undefined) return reaperFailure(options, cursor, exitCode, () => setup);
    const master = await masterBelow(reaper.pid ?? 0);
    if (master !== undefined) {
      options.running({ child: reaper, pid: master, reaperPid: reaper.pid, masterIsChild: false });
      reaper.once('exit', (code, signalName) => options.exited(reaper, code, signalName));
      const outcome = await awaitNewGeneration({
        masterPid: master,
        before: new Set(),
        errorLog: cursor,
        timeoutMs: Math.max(0, deadline - Date.now()),
      });
      return { ...outcome, pauses: false };
    }
    if (Date.now() > deadline) {
      // The reaper and nginx before it daemonized share a process group; a master that has
      // daemonized since has a session of its own.
      signal(reaper.pid === undefined ? undefined : -reaper.pid, 'SIGKILL');
      for (const { pid } of await nginxMasters(options.confPath)) await discardMaster(pid);
      return {
        ok: false,
        code: 'RELOAD_FAILED',
        message: `nginx did not start within ${Math.round(options.reloadTimeoutMs / 1000)} s`,
        lines: [],
      };
    }
    await sleep(round < 50 ? 2 : 10);
  }
}

/** Why the reaper exited before nginx ran below it, from its exit code and its last words. */
async function reaperFailure(
  options: LaunchOptions,
  cursor: ErrorLogCursor | undefined,
  exitCode: number | null,
  lastWords: () => string,
): Promise<ReloadOutcome | { unavailable: string }> {
  await sleep(20); // a reason line may still be on its way
  const reason = lastWords().replace(/^reaper: /, '');
  if (exitCode === REAPER_REFUSED) return { unavailable: reason || 'the kernel refused a subreaper' };
  if (exitCode !== null && REAPER_FAILED.includes(exitCode)) {
    return { ok: false, code: 'NGINX_UNAVAILABLE', message: reason || `cannot run ${options.nginxBin}`, lines: [] };
  }
  const lines = cursor ? parseNginxLines(readFrom(cursor)) : [];
  const verdict = reloadVerdict(lines) ?? lines.find((line) => line.level === 'emerg');
  return { ok: false, code: 'NGINX_UNAVAILABLE', message: verdict ? verdict.text : 'nginx exited at start', lines };
}
