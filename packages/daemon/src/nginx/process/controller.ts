/**
 * How the daemon drives one nginx master: test a configuration, reload it and learn for certain
 * whether the reload took, start and stop it. `nginx -s reload` and SIGHUP return before nginx
 * has done anything, and a reload nginx gives up on (a port it cannot bind, a name that stopped
 * resolving) leaves the old configuration running with only a line in the error log. The proof a
 * reload took is a new generation of worker processes: the master forks them only after it has
 * parsed the whole configuration and bound every listening socket.
 */

import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NginxMode, NginxStatus } from '@stream-conductor/shared';
import { childPids, commandLine, isAlive, signal } from '../../sys/processes.js';
import { type NginxLogLine, parseNginxLines, type TestResult, withoutPaths } from '../binary.js';

export interface ReloadOutcome {
  ok: boolean;
  /** The workers of the generation before (when the reload took); see awaitOldWorkersQuiet. */
  previousWorkers?: number[];
  /** When not ok: NGINX_UNAVAILABLE (no master to talk to) or RELOAD_FAILED. */
  code?: 'NGINX_UNAVAILABLE' | 'RELOAD_FAILED';
  message: string;
  /** nginx's error lines seen during the attempt. */
  lines: NginxLogLine[];
  /**
   * Whether the master that runs now pauses before it takes the next reload: nginx's master sleeps
   * about 100 ms after a reload; a master that took over by a handoff has no such pause.
   */
  pauses?: boolean;
  /**
   * After a handoff: settles once the old master is gone. Until then it still holds every
   * listening socket it had, and the kernel queues connections on a removed port.
   */
  oldMasterGone?: Promise<void>;
}

export interface NginxController {
  readonly mode: NginxMode;
  /** Whether a master runs now (ours, or one we would adopt). */
  isRunning(): Promise<boolean>;
  /**
   * When no master runs: removes what a dead one left behind (workers still holding ports), so
   * that a port that cannot be bound really is someone else's.
   */
  clearLeftovers(): Promise<void>;
  /** Makes sure a master runs the configuration on disk (start, adopt or reload). */
  start(): Promise<ReloadOutcome>;
  /** `nginx -t` on the complete configuration as it is on disk now. */
  test(): Promise<TestResult>;
  /**
   * Reloads and waits until the new configuration runs or nginx gave it up. `urgent`: the change
   * closes ports or changes streams in place (see ManagedNginx.reload); true when not said.
   */
  reload(options?: { urgent?: boolean }): Promise<ReloadOutcome>;
  stop(): Promise<void>;
  /** Makes nginx reopen its log files. */
  reopenLogs(): Promise<void>;
  /**
   * The processes of earlier generations that may still hold listening sockets after a change:
   * `previous` (the workers before it) and, after a handoff, what is left of the old master.
   */
  oldProcesses(previous: number[]): Promise<number[]>;
  /**
   * For the audit: the master that serves now, and every other process of ours (its old
   * workers, what a handoff or a dead daemon left, a second master of the same configuration);
   * undefined when no master runs or when the processes are not ours to judge (external mode).
   */
  auditProcesses(): Promise<{ master: number; workers: number; others: number[] } | undefined>;
  status(): NginxStatus;
  /** Called when the master dies without being asked to (managed mode). */
  onUnexpectedExit(listener: (message: string) => void): void;
}

/** Where to read what nginx logs during a reload. */
export interface ErrorLogCursor {
  path: string;
  offset: number;
}

export async function errorLogCursor(path: string | undefined): Promise<ErrorLogCursor | undefined> {
  if (path === undefined) return undefined;
  try {
    return { path, offset: (await stat(path)).size };
  } catch {
    return { path, offset: 0 }; // not created yet: everything in it will be new
  }
}

/** What nginx logged since the cursor (synchronous: it is polled while a reload runs). */
export function readFrom(cursor: ErrorLogCursor): string {
  let size: number;
  try {
    size = statSync(cursor.path).size;
  } catch {
    return '';
  }
  if (size === cursor.offset) return '';
  const start = size < cursor.offset ? 0 : cursor.offset; // rotated or truncated: read it all
  const length = Math.min(size - start, 1 << 20);
  if (length <= 0) return '';
  const fd = openSync(cursor.path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const read = readSync(fd, buffer, 0, length, start);
    return buffer.subarray(0, read).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

const BIND_RETRY = /bind\(\) to .* failed/;

/**
 * The final verdict of a failed reload, if the log already holds one: nginx retries a failed
 * bind() about five times before it writes "still could not bind()"; any other emergency ends the
 * attempt at once.
 */
export function reloadVerdict(lines: NginxLogLine[]): NginxLogLine | undefined {
  const fatal = lines.filter((line) => line.level === 'emerg' || line.level === 'alert');
  if (fatal.length === 0) return undefined;
  if (fatal.some((line) => /still could not bind\(\)/.test(line.text))) {
    return fatal.find((line) => BIND_RETRY.test(line.text)) ?? fatal[0];
  }
  return fatal.find((line) => !BIND_RETRY.test(line.text));
}

export interface GenerationWait {
  masterPid: number;
  /** Worker pids before the reload; any other child is the new generation. */
  before: Set<number>;
  errorLog: ErrorLogCursor | undefined;
  timeoutMs: number;
}

/** Waits for the master to fork a new generation of workers, or for proof that it will not. */
export async function awaitNewGeneration(wait: GenerationWait): Promise<ReloadOutcome> {
  const started = Date.now();
  let lines: NginxLogLine[] = [];
  for (let round = 0; ; round += 1) {
    const children = await childPids(wait.masterPid);
    if (children.some((pid) => !wait.before.has(pid)))
      return { ok: true, message: '', lines, previousWorkers: [...wait.before] };
    if (round % 8 === 7 && !isAlive(wait.masterPid)) {
      if (wait.errorLog) lines = parseNginxLines(readFrom(wait.errorLog));
      const last = reloadVerdict(lines) ?? lines.find((line) => line.level === 'emerg');
      return { ok: false, code: 'NGINX_UNAVAILABLE', message: last ? last.text : 'nginx exited', lines };
    }
    if (wait.errorLog && round % 4 === 3) {
      lines = parseNginxLines(readFrom(wait.errorLog));
      const verdict = reloadVerdict(lines);
      if (verdict) return { ok: false, code: 'RELOAD_FAILED', message: verdict.text, lines };
    }
    const elapsed = Date.now() - started;
    if (elapsed > wait.timeoutMs) {
      return {
        ok: false,
        code: 'RELOAD_FAILED',
        message: `nginx did not start new workers within ${Math.round(wait.timeoutMs / 1000)} s of the reload`,
        lines,
      };
    }
    await sleep(elapsed < 100 ? 2 : elapsed < 500 ? 5 : 20);
  }
}

/** The pids among `pids` that are nginx workers still taking connections. */
export async function acceptingWorkers(pids: number[]): Promise<number[]> {
  const busy: number[] = [];
  for (const pid of pids) {
    const command = await commandLine(pid);
    if (command?.startsWith('nginx: worker process') && !command.includes('is shutting down')) busy.push(pid);
  }
  return busy;
}

/**
 * Makes the workers of the previous generation stop taking new connections, and waits until they
 * have. After a reload the old workers keep accepting on every listening socket they share with
 * the new ones until the master tells them to quit, about 100 ms later (it sleeps first, to let the
 * new workers start): meanwhile a removed port would still take connections and a changed stream
 * could still reach its old backend. The new workers exist already (that is how the reload was
 * seen to take), and a connection that arrives before they run waits in the listen queue, so the
 * daemon sends the old workers the same SIGQUIT the master is about to send. A worker that quits
 * retitles itself "is shutting down", closes its listeners, and lives on only for its open
 * sessions; the master still reaps it.
 */
export async function quietOldWorkers(pids: number[], timeoutMs: number): Promise<boolean> {
  await quitOldWorkers(pids);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await acceptingWorkers(pids)).length === 0) return true;
    if (Date.now() > deadline) return false;
    await sleep(2);
  }
}

/** Sends SIGQUIT to each of `pids` that is an nginx worker still taking connections (see quietOldWorkers). */
export async function quitOldWorkers(pids: number[]): Promise<void> {
  for (const pid of await acceptingWorkers(pids)) signal(pid, 'SIGQUIT');
}

/** Records the outcome of the last reload for status. */
export function reloadRecord(outcome: ReloadOutcome): NonNullable<NginxStatus['lastReload']> {
  const record: NonNullable<NginxStatus['lastReload']> = { at: new Date().toISOString(), ok: outcome.ok };
  if (!outcome.ok) record.message = withoutPaths(outcome.message);
  return record;
}

export { childPids };
