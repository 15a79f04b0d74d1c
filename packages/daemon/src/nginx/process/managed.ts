/**
 * Managed mode: the daemon runs its own nginx master, with every file it uses (configuration, pid
 * file, error log) under the daemon's home. No system file is read or written. This supervisor
 * keeps which master serves and answers for it; its collaborators each do one step: set-up
 * (setup.ts), starting (launch.ts, reaper.ts), adoption of a master an earlier daemon left
 * running (adoption.ts), the watchdog (watchdog.ts), handoffs (handoff.ts) and the error log's
 * size (error-log.ts).
 *
 * A change is handed to a new master rather than reloaded when it can be. nginx's master sleeps
 * about 100 ms after each reload, with its signals blocked, so one master takes at most about ten
 * reloads a second; a master that took over by a handoff has no such pause. Handoffs need the
 * master to run below the reaper; without perl, or where the kernel refuses a subreaper, the
 * daemon reloads with SIGHUP.
 */

import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { NginxStatus } from '@stream-conductor/shared';
import type { Logger } from '../../log.js';
import {
  childPids,
  isAlive,
  isReaper,
  nginxMasters,
  nginxWorkers,
  parentPid,
  processStartedAt,
  signal,
  strayWorkers,
} from '../../sys/processes.js';
import { type NginxBuild, type TestResult, testConfiguration, withoutPaths } from '../binary.js';
import { findOrphan } from './adoption.js';
import { belowReaper, processesOf } from './census.js';
import {
  awaitNewGeneration,
  errorLogCursor,
  type NginxController,
  type ReloadOutcome,
  reloadRecord,
} from './controller.js';
import { trimErrorLog } from './error-log.js';
import { failsReloadToo, Handoffs, notRunning } from './handoff.js';
import { type Launched, type LaunchOptions, launchDirectly, launchUnderReaper } from './launch.js';
import { reaperUnsupported } from './reaper.js';
import { SetupError, setUpNginx } from './setup.js';
import { Watchdog } from './watchdog.js';

export interface ManagedNginxOptions {
  nginxBin: string;
  /** Folder of this master's own files. */
  dir: string;
  /** The main configuration for this nginx build (see renderMainConf). Throws when it cannot be made. */
  mainConf(build: NginxBuild): string;
  reloadTimeoutMs: number;
  log: Logger;
  /** How often the watchdog looks at the master; 1 s by default. */
  watchIntervalMs?: number;
  /** Reads the nginx build; probeNginx by default. */
  probe?: (bin: string) => Promise<NginxBuild>;
  /** Hand removes and in-place changes to a new master (SIGUSR2 under a reaper) rather than reload (SIGHUP); false by default. */
  handoff?: boolean;
  /** Before each change, an error log past this size is copied to error.log.1 and emptied; never by default. */
  errorLogMaxBytes?: number;
}

const MAX_INCIDENTS = 20;

export class ManagedNginx implements NginxController {
  readonly mode = 'managed' as const;
  readonly confPath: string;
  readonly pidPath: string;
  readonly errorLogPath: string;
  /** The daemon's child: the master, or the reaper it runs under; none for an adopted master. */
  private child: ChildProcess | undefined;
  private pid: number | undefined;
  private stopping = false;
  private restarts = 0;
  private spawned = false;
  private prepared = false;
  private lastReload: NginxStatus['lastReload'];
  private state: NginxStatus['state'] = 'down';
  private message: string | undefined;
  private readonly incidents: NonNullable<NginxStatus['incidents']> = [];
  private readonly listeners: Array<(message: string) => void> = [];
  /** Whether the master is the daemon's own child (started directly): its exit is an event. */
  private masterIsChild = false;
  /** The reaper the master runs under, when it does. */
  private reaperPid: number | undefined;
  /** Why masters are not started under the reaper, once that was found not to work here. */
  private noReaper: string | undefined;
  private readonly watchdog: Watchdog;
  private readonly handoffs: Handoffs;

  constructor(private readonly options: ManagedNginxOptions) {
    this.confPath = join(options.dir, 'nginx.conf');
    this.pidPath = join(options.dir, 'nginx.pid');
    this.errorLogPath = join(options.dir, 'error.log');
    this.watchdog = new Watchdog({
      pid: () => this.pid,
      stopping: () => this.stopping,
      isChild: () => this.masterIsChild,
      hasChild: () => this.child !== undefined,
      lost: (message) => {
        this.pid = undefined;
        this.state = 'down';
        this.lost(message);
      },
      incident: (message) => this.incident(message),
      log: options.log,
    });
    this.handoffs = new Handoffs({
      errorLogPath: this.errorLogPath,
      pidPath: this.pidPath,
      reloadTimeoutMs: options.reloadTimeoutMs,
      log: options.log,
      takeOver: (fresh) => {
        this.pid = fresh;
      },
    });
  }

  private args(): string[] {
    return ['-c', this.confPath, '-p', `${this.options.dir}/`];
  }

  onUnexpectedExit(listener: (message: string) => void): void {
    this.listeners.push(listener);
  }

  private incident(message: string): void {
    this.incidents.push({ at: new Date().toISOString(), message });
    if (this.incidents.length > MAX_INCIDENTS) this.incidents.shift();
  }

  /**
   * Learns the nginx build and writes the main configuration. Done once per daemon run once it
   * works; until then every call tries again (the binary may be installed later).
   */
  private async prepare(): Promise<void> {
    if (this.prepared) return;
    const { nginxBin, dir, mainConf, probe, log } = this.options;
    await setUpNginx({ nginxBin, dir, confPath: this.confPath, mainConf, probe, log });
    this.prepared = true;
  }

  async test(): Promise<TestResult> {
    try {
      await this.prepare();
    } catch (error) {
      if (!(error instanceof SetupError)) throw error;
      this.message = error.message;
      return { ok: false, lines: [], message: error.message };
    }
    return testConfiguration(this.options.nginxBin, [...this.args(), '-e', 'stderr']);
  }

  async isRunning(): Promise<boolean> {
    if (this.pid !== undefined && isAlive(this.pid)) return true;
    return (await nginxMasters(this.confPath)).length > 0;
  }

  /** Workers of a master that died still hold the listening sockets: they must go first. */
  async clearLeftovers(): Promise<void> {
    if (await this.isRunning()) return;
    const stray = await strayWorkers(this.errorLogPath, undefined);
    if (stray.length === 0) return;
    this.options.log.warn('stopping nginx workers left behind by a dead master', { pids: stray });
    for (const pid of stray) signal(pid, 'SIGKILL'); // false: already gone
    for (let waited = 0; waited < 2000 && stray.some(isAlive); waited += 10) await sleep(10);
  }

  async start(): Promise<ReloadOutcome> {
    this.stopping = false;
    try {
      await this.prepare();
    } catch (error) {
      if (!(error instanceof SetupError)) throw error;
      this.state = 'down';
      this.message = error.message;
      return { ok: false, code: 'NGINX_UNAVAILABLE', message: error.message, lines: [] };
    }
    if (this.pid !== undefined && isAlive(this.pid)) {
      this.state = 'running';
      if (!this.watchdog.running) this.startWatch();
      return this.reload();
    }
    const orphan = await findOrphan({
      confPath: this.confPath,
      timeoutMs: this.options.reloadTimeoutMs,
      log: this.options.log,
      handoffs: this.handoffs,
    });
    if (orphan !== undefined) return this.adopt(orphan);
    this.state = 'starting';
    await this.clearLeftovers();
    const outcome = await this.launch();
    this.lastReload = reloadRecord(outcome);
    if (outcome.ok) {
      this.state = 'running';
      this.message = undefined;
      this.startWatch();
    } else {
      this.message = outcome.message;
      await this.kill();
      this.state = 'down';
    }
    return outcome;
  }

  /** Takes over the master an earlier daemon left running, and reloads it. */
  private async adopt(orphan: number): Promise<ReloadOutcome> {
    this.options.log.info('adopting the nginx master left running by an earlier daemon', { pid: orphan });
    this.pid = orphan;
    this.child = undefined;
    this.masterIsChild = false;
    // A master started in its place, should this one die, counts as a restart.
    this.spawned = true;
    const parent = await parentPid(orphan);
    this.reaperPid = parent !== undefined && isReaper(parent) ? parent : undefined;
    this.state = 'running';
    // Workers whose master is gone (a handoff cut short) would go on taking connections.
    for (const pid of await strayWorkers(this.errorLogPath, orphan)) signal(pid, 'SIGQUIT');
    this.startWatch();
    return this.reload();
  }

  /** Starts a new master: below the reaper when handoffs are on and it works here, else directly. */
  private async launch(): Promise<ReloadOutcome> {
    const cursor = await errorLogCursor(this.errorLogPath);
    const options: LaunchOptions = {
      nginxBin: this.options.nginxBin,
      args: this.args(),
      errorLogPath: this.errorLogPath,
      confPath: this.confPath,
      reloadTimeoutMs: this.options.reloadTimeoutMs,
      log: this.options.log,
      running: (launched) => this.running(launched),
      exited: (child, code, signalName) => this.exited(child, code, signalName),
    };
    if (this.reaperWanted()) {
      const outcome = await launchUnderReaper(options, cursor);
      if (!('unavailable' in outcome)) return outcome;
      this.reaperUnavailable(outcome.unavailable);
    }
    return launchDirectly(options, cursor);
  }

  /** A master this daemon started runs: it is the one served from now on. */
  private running(launched: Launched): void {
    if (this.spawned) this.restarts += 1;
    this.spawned = true;
    this.child = launched.child;
    this.pid = launched.pid;
    this.reaperPid = launched.reaperPid;
    this.masterIsChild = launched.masterIsChild;
  }

  private reaperWanted(): boolean {
    if (this.options.handoff !== true || this.noReaper !== undefined) return false;
    const unsupported = reaperUnsupported(this.options.nginxBin);
    if (unsupported !== undefined) this.reaperUnavailable(unsupported);
    return unsupported === undefined;
  }

  private reaperUnavailable(reason: string): void {
    this.noReaper = reason;
    this.options.log.warn(
      'handoffs are not available; nginx is reloaded with SIGHUP, which pauses each master about 100 ms',
      { reason },
    );
  }

  /** The daemon's child exited: the master itself (started directly), or the reaper above it. */
  private exited(child: ChildProcess, code: number | null, signalName: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    if (!this.masterIsChild) {
      this.reaperExited();
      return;
    }
    this.child = undefined;
    this.pid = undefined;
    this.state = 'down';
    if (this.stopping) return;
    this.lost(`nginx exited unexpectedly (${signalName ? `signal ${signalName}` : `exit code ${String(code)}`})`);
  }

  /** The reaper is gone: all of nginx is, unless someone killed the reaper alone. */
  private reaperExited(): void {
    this.child = undefined;
    if (this.stopping || this.state !== 'running') return;
    if (this.pid !== undefined && isAlive(this.pid)) return; // a master without its reaper: reloads with SIGHUP from now on
    const pid = this.pid;
    this.pid = undefined;
    this.state = 'down';
    this.lost(`nginx exited unexpectedly (master ${pid ?? 'unknown'} is gone)`);
  }

  private lost(message: string): void {
    this.message = message;
    this.incident(message);
    this.watchdog.stop();
    for (const listener of this.listeners) listener(message);
  }

  private startWatch(): void {
    // A master that is not the daemon's child is seen to die only by the watchdog: look more often.
    this.watchdog.start(this.options.watchIntervalMs ?? (this.masterIsChild ? 1000 : 250));
  }

  /**
   * A reload (SIGHUP) costs about half the processor time of a handoff, but leaves the master
   * paused for about 100 ms, and a removed port closes only once that pause is over. A change
   * that only opens ports reloads: a new stream may go to any master, and goes to one that is not
   * paused (NginxInstance.expectedWaitMs), so the pauses of several masters overlap. With
   * handoffs on, an urgent change (a remove, or a stream changed in place), which must go to the
   * master that holds the stream, is handed to a new master: its ports close as soon as the old
   * master exits, with no pause. Other reloads (start-up, a rollback) are reloads.
   */
  async reload(options: { urgent?: boolean } = {}): Promise<ReloadOutcome> {
    const pid = this.pid;
    if (pid === undefined || !isAlive(pid)) {
      return { ok: false, code: 'NGINX_UNAVAILABLE', message: this.message ?? 'nginx is not running', lines: [] };
    }
    await trimErrorLog(this.errorLogPath, this.options.errorLogMaxBytes, this.options.log);
    if (options.urgent === true && this.options.handoff === true) {
      await this.handoffs.reparented();
      const parent = await parentPid(pid);
      if (parent !== undefined && isReaper(parent)) {
        const outcome = await this.handoffs.handoff(pid);
        // A new master can fail where a reload would not (it writes its pid file, on a full disk
        // say): then the running master reloads. A fault in the configuration fails both alike.
        if (outcome !== 'ignored' && (outcome.ok || outcome.code === 'NGINX_UNAVAILABLE' || failsReloadToo(outcome))) {
          this.lastReload = reloadRecord(outcome);
          return outcome;
        }
      }
    }
    const before = new Set(await childPids(pid));
    const cursor = await errorLogCursor(this.errorLogPath);
    if (!signal(pid, 'SIGHUP')) return notRunning();
    const outcome = await awaitNewGeneration({
      masterPid: pid,
      before,
      errorLog: cursor,
      timeoutMs: this.options.reloadTimeoutMs,
    });
    this.lastReload = reloadRecord(outcome);
    return { ...outcome, pauses: true };
  }

  private async kill(): Promise<void> {
    const pid = this.pid;
    const reaper = this.reaperPid;
    this.stopping = true;
    if (pid !== undefined && isAlive(pid)) {
      signal(pid, 'SIGCONT'); // a stopped master would not act on SIGTERM
      signal(pid, 'SIGTERM'); // fast shutdown: sessions are cut, listeners closed at once
    }
    // Old workers of earlier handoffs, still finishing sessions, are the reaper's children.
    for (const orphan of await belowReaper(reaper, pid)) signal(orphan, 'SIGTERM');
    if (pid !== undefined) {
      for (let waited = 0; waited < 5000 && isAlive(pid); waited += 20) await sleep(20);
      if (isAlive(pid)) signal(pid, 'SIGKILL');
      for (let waited = 0; waited < 2000 && isAlive(pid); waited += 20) await sleep(20);
    }
    // The reaper leaves once nothing is left below it.
    if (reaper !== undefined) {
      for (let waited = 0; waited < 3000 && isAlive(reaper) && isReaper(reaper); waited += 20) {
        if (waited >= 1000) for (const rest of await belowReaper(reaper, pid)) signal(rest, 'SIGKILL');
        await sleep(20);
      }
    }
    this.pid = undefined;
    this.reaperPid = undefined;
    this.child = undefined;
  }

  /**
   * `previous`, and below the reaper every process but the master: an old master a handoff killed
   * (until it exits) and its workers, which the reaper inherits.
   */
  async oldProcesses(previous: number[]): Promise<number[]> {
    const below = await belowReaper(this.reaperPid, this.pid);
    return [...new Set([...previous, ...below])];
  }

  async auditProcesses(): Promise<{ master: number; workers: number; others: number[] } | undefined> {
    const master = this.pid;
    if (master === undefined || this.state !== 'running' || !isAlive(master)) return undefined;
    return processesOf({ master, reaper: this.reaperPid, errorLogPath: this.errorLogPath, confPath: this.confPath });
  }

  /** Makes nginx reopen its log files (after the daemon rotated one). */
  async reopenLogs(): Promise<void> {
    signal(this.pid, 'SIGUSR1'); // false: no master runs, and the next one opens them anew
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.watchdog.stop();
    await this.kill();
    this.state = 'down';
  }

  /** What the API shows: nginx's messages without the file paths of this host. */
  status(): NginxStatus {
    const status: NginxStatus = { state: this.state, restarts: this.restarts };
    if (this.pid !== undefined) status.pid = this.pid;
    if (this.lastReload) status.lastReload = this.lastReload;
    if (this.message) status.message = withoutPaths(this.message);
    if (this.incidents.length > 0)
      status.incidents = this.incidents.map((incident) => ({ ...incident, message: withoutPaths(incident.message) }));
    if (this.pid !== undefined && this.state === 'running') {
      // Up since the reaper started it: a handoff changes the master, not how long nginx has run.
      const started = processStartedAt(
        this.reaperPid !== undefined && isReaper(this.reaperPid) ? this.reaperPid : this.pid,
      );
      if (started) status.startedAt = started.toISOString();
      const { workers, draining } = nginxWorkers(this.pid);
      status.workers = workers;
      status.drainingWorkers = draining;
    }
    return status;
  }
}
