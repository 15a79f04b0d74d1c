/**
 * How the daemon drives one nginx master: test a configuration, reload it and learn for certain
 * whether the reload took, start and stop it. `nginx -s reload` and SIGHUP return before nginx
 * has done anything, and a reload nginx gives up on (a port it cannot bind, a name that stopped
 * resolving) leaves the old configuration running with only a line in the error log. The proof a
 * reload took is a new generation of worker processes: the master forks them only after it has
 * parsed the whole configuration and bound every listening socket.
 */
import { open, stat } from 'node:fs/promises';
import type { NginxMode, NginxStatus } from '@stream-conductor/shared';
import { childPids, commandLine, isAlive } from '../sys/processes.js';
import { type NginxLogLine, type TestResult, parseNginxLines } from './binary.js';

export interface ReloadOutcome {
  ok: boolean;
  /** The workers of the generation before (when the reload took); see awaitOldWorkersQuiet. */
  previousWorkers?: number[];
  /** When not ok: NGINX_UNAVAILABLE (no master to talk to) or RELOAD_FAILED. */
  code?: 'NGINX_UNAVAILABLE' | 'RELOAD_FAILED';
  message: string;
  /** nginx's error lines seen during the attempt. */
  lines: NginxLogLine[];
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
  /** Reloads and waits until the new configuration runs or nginx gave it up. */
  reload(): Promise<ReloadOutcome>;
  stop(): Promise<void>;
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

async function readFrom(cursor: ErrorLogCursor): Promise<string> {
  let handle;
  try {
    handle = await open(cursor.path, 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await handle.stat();
    const start = size < cursor.offset ? 0 : cursor.offset; // rotated or truncated: read it all
    const length = Math.min(size - start, 1 << 20);
    if (length <= 0) return '';
    const buffer = Buffer.alloc(length);
    await handle.read(buffer, 0, length, start);
    return buffer.toString('utf8');
  } finally {
    await handle.close();
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

const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

/** Waits for the master to fork a new generation of workers, or for proof that it will not. */
export async function awaitNewGeneration(wait: GenerationWait): Promise<ReloadOutcome> {
  const started = Date.now();
  let lines: NginxLogLine[] = [];
  for (let round = 0; ; round += 1) {
    const children = await childPids(wait.masterPid);
    if (children.some((pid) => !wait.before.has(pid))) return { ok: true, message: '', lines, previousWorkers: [...wait.before] };
    if (!isAlive(wait.masterPid)) {
      if (wait.errorLog) lines = parseNginxLines(await readFrom(wait.errorLog));
      const last = reloadVerdict(lines) ?? lines.find((line) => line.level === 'emerg');
      return { ok: false, code: 'NGINX_UNAVAILABLE', message: last ? last.text : 'nginx exited', lines };
    }
    if (wait.errorLog && round % 5 === 4) {
      lines = parseNginxLines(await readFrom(wait.errorLog));
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
    await sleep(elapsed < 50 ? 1 : elapsed < 500 ? 5 : 20);
  }
}

/**
 * Waits until the workers of the previous generation stop taking new connections. After a reload
 * the old workers keep accepting on every listening socket they share with the new ones until the
 * master tells them to quit (about 100 ms later): a connection to a stream that was just changed
 * could still reach the old backend. A worker that quit retitles itself "is shutting down" and
 * closes its listeners, then lives on only for its open sessions.
 */
export async function awaitOldWorkersQuiet(pids: number[], timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const busy: number[] = [];
    for (const pid of pids) {
      const command = await commandLine(pid);
      if (command !== undefined && command.startsWith('nginx: worker process') && !command.includes('is shutting down')) busy.push(pid);
    }
    if (busy.length === 0) return true;
    if (Date.now() > deadline) return false;
    await sleep(5);
  }
}

/** Records the outcome of the last reload for status. */
export function reloadRecord(outcome: ReloadOutcome): NonNullable<NginxStatus['lastReload']> {
  const record: NonNullable<NginxStatus['lastReload']> = { at: new Date().toISOString(), ok: outcome.ok };
  if (!outcome.ok) record.message = outcome.message;
  return record;
}

export { childPids };
