/**
 * The handoff of a managed nginx: SIGUSR2 has the running master start a new master that
 * inherits every listening socket and reads the configuration on disk; once the new master's
 * workers run, the old master is killed and its workers are told to quit: they close their
 * listeners at once and finish their sessions. No socket is ever closed in between, and the new
 * master has no pause behind it. Also the clean-up of a new master that did not take over.
 */

import { readFile, rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { bestEffort, type Logger } from '../../log.js';
import { childPids, commandLine, isAlive, isReaper, parentPid, signal } from '../../sys/processes.js';
import { type NginxLogLine, parseNginxLines } from '../binary.js';
import { errorLogCursor, type ReloadOutcome, readFrom, reloadVerdict } from './controller.js';

/** nginx's message when a master will not start a new one (its parent started it). */
const HANDOFF_IGNORED = /changing binary signal is ignored/;

export const notRunning = (): ReloadOutcome => ({
  ok: false,
  code: 'NGINX_UNAVAILABLE',
  message: 'nginx is not running',
  lines: [],
});

/**
 * Whether a reload would fail the same way as a handoff did: nginx gave up on a line of the
 * configuration (its message ends "in FILE:LINE") or could not bind a listening socket.
 */
export function failsReloadToo(outcome: ReloadOutcome): boolean {
  return / in \S+:[0-9]+$/.test(outcome.message) || /bind\(\) to /.test(outcome.message);
}

/**
 * Tells each of `pids` (not `except`) that is an nginx process not yet shutting down to quit.
 * Whatever its title: a worker forked a moment ago still carries its master's title until it
 * renames itself, and one skipped here would keep every listening socket it inherited, with no
 * master to ever tell it to go. It has signals blocked until then, and takes the SIGQUIT after.
 */
async function quitWorkers(pids: number[], except: number): Promise<void> {
  for (const pid of pids) {
    if (pid === except) continue;
    const command = await commandLine(pid);
    if (command?.startsWith('nginx: ') && !command.includes('is shutting down')) signal(pid, 'SIGQUIT');
  }
}

/** Stops a new master that did not take over, with its workers. */
export async function discardMaster(fresh: number): Promise<void> {
  signal(fresh, 'SIGSTOP'); // it forks no more workers
  const workers = await childPids(fresh);
  signal(fresh, 'SIGKILL');
  for (const worker of workers) signal(worker, 'SIGKILL');
  for (let waited = 0; waited < 2000 && isAlive(fresh); waited += 5) await sleep(5);
}

export interface HandoffOptions {
  errorLogPath: string;
  pidPath: string;
  reloadTimeoutMs: number;
  log: Logger;
  /** The new master takes over: called before the old one is killed, so the watchdog follows it. */
  takeOver(fresh: number): void;
}

/** Hands the configuration to new masters, one at a time; remembers the last one's reparenting. */
export class Handoffs {
  /** Settles once the master the last handoff started is below the reaper (see retire). */
  private reparenting: Promise<void> | undefined;

  constructor(private readonly options: HandoffOptions) {}

  /** Settles once the master the last handoff started is below the reaper; it takes no handoff before. */
  reparented(): Promise<void> | undefined {
    return this.reparenting;
  }

  /**
   * Hands the configuration on disk to a new master: SIGUSR2 has `pid` start one that inherits
   * its listening sockets; once the new master's workers run, `pid` is killed and its workers quit
   * (they stop accepting at once and finish their sessions). When the new master fails, `pid` runs
   * on untouched. 'ignored': nginx would not start a new master; reload instead.
   */
  async handoff(pid: number): Promise<ReloadOutcome | 'ignored'> {
    const before = new Set(await childPids(pid));
    const cursor = await errorLogCursor(this.options.errorLogPath);
    if (!signal(pid, 'SIGUSR2')) return notRunning();
    const started = Date.now();
    const timeoutMs = this.options.reloadTimeoutMs;
    let lines: NginxLogLine[] = [];
    for (let round = 0; ; round += 1) {
      // The new master is the child with children of its own (a worker the old master respawned
      // meanwhile has none, though it too is titled "master process" until it renames itself).
      const fresh = await this.newMaster(pid, before, true);
      if (fresh !== undefined) {
        await this.retire(pid, fresh, [...before]);
        return {
          ok: true,
          message: '',
          lines,
          previousWorkers: [...before],
          pauses: false,
          oldMasterGone: this.reparenting,
        };
      }
      if (round % 4 === 3 && cursor) {
        lines = parseNginxLines(readFrom(cursor));
        if (lines.some((line) => HANDOFF_IGNORED.test(line.text))) {
          this.options.log.warn('nginx ignored the handoff; reloading instead', { pid });
          // While a new master it started earlier runs, nginx's reload restarts the workers
          // without reading the configuration: that master goes first.
          await this.discardNew(pid, before);
          return 'ignored';
        }
        const verdict = reloadVerdict(lines);
        if (verdict) {
          await this.discardNew(pid, before);
          return { ok: false, code: 'RELOAD_FAILED', message: verdict.text, lines };
        }
      }
      if (round % 8 === 7 && !isAlive(pid)) {
        return { ok: false, code: 'NGINX_UNAVAILABLE', message: 'the nginx master exited during the reload', lines };
      }
      const elapsed = Date.now() - started;
      if (elapsed > timeoutMs) {
        await this.discardNew(pid, before);
        return {
          ok: false,
          code: 'RELOAD_FAILED',
          message: `nginx did not start its new master within ${Math.round(timeoutMs / 1000)} s`,
          lines,
        };
      }
      await sleep(elapsed < 100 ? 1 : elapsed < 500 ? 5 : 20);
    }
  }

  /**
   * The end of a handoff: the new master is the master; the old one goes, and every worker left
   * without a master quits (it stops accepting at once and finishes its sessions).
   */
  async retire(old: number, fresh: number, oldWorkers: number[]): Promise<void> {
    this.options.takeOver(fresh);
    signal(old, 'SIGKILL'); // it runs no more code: it respawns no worker
    await quitWorkers(oldWorkers, fresh);
    await bestEffort(
      this.options.log,
      'remove the old pid file',
      rm(`${this.options.pidPath}.oldbin`, { force: true }),
    );
    // The new master takes the next handoff only once its parent is no longer the old master,
    // which takes the old one's exit (and with it, its listening sockets): waited for before the
    // next handoff, and before the answer only when a port closes (see oldMasterGone).
    this.reparenting = this.followToReaper(fresh, old).catch((error: unknown) =>
      this.options.log.warn('could not follow the new nginx master to the reaper', { error }),
    );
  }

  /** A master `pid` started (a child not in `before`); with `running`, only once it has workers. */
  private async newMaster(pid: number, before: Set<number>, running: boolean): Promise<number | undefined> {
    for (const child of await childPids(pid)) {
      if (before.has(child)) continue;
      if (!(await commandLine(child))?.startsWith('nginx: master process')) continue;
      if (!running || (await childPids(child)).length > 0) return child;
    }
    return undefined;
  }

  /** Once `fresh` is below the reaper: quits any other worker left there without a master. */
  private async followToReaper(fresh: number, old: number): Promise<void> {
    let parent = await parentPid(fresh);
    for (let waited = 0; waited < 2000 && parent === old; waited += 1) {
      await sleep(1);
      parent = await parentPid(fresh);
    }
    if (parent !== undefined && isReaper(parent)) await quitWorkers(await childPids(parent), fresh);
  }

  /** Stops what a handoff from `pid` started, if anything; `pid` runs on. */
  private async discardNew(pid: number, before: Set<number>): Promise<void> {
    const fresh = await this.newMaster(pid, before, false);
    if (fresh === undefined) return;
    await discardMaster(fresh);
    // `pid` reaps it, logs how it ended and takes its pid file back before it handles another
    // signal: wait for that, so that the line is not read as the verdict on the next reload.
    for (let waited = 0; waited < 1000 && (await this.pidFileText()) !== String(pid); waited += 5) await sleep(5);
  }

  /** The pid file's content; empty while nginx rewrites it (or when it is gone). */
  private async pidFileText(): Promise<string> {
    try {
      return (await readFile(this.options.pidPath, 'utf8')).trim();
    } catch {
      return '';
    }
  }
}
