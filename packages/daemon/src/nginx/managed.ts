/**
 * Managed mode: the daemon runs its own nginx master as a child, in the foreground, with every
 * file it uses (configuration, pid file, error log) under the daemon's home. No system file is
 * read or written. If the daemon itself was killed, the master it left running is adopted at the
 * next start rather than killed, so streams keep flowing across a daemon restart. A watchdog
 * notices a master that died or was stopped (SIGSTOP) and has it brought back.
 *
 * A change is handed to a new master rather than reloaded when it can be. nginx's master sleeps
 * about 100 ms after each reload, with its signals blocked, so one master takes at most about ten
 * reloads a second. Its binary-upgrade signal (SIGUSR2) has the master start a new master that
 * inherits every listening socket and reads the configuration on disk; once the new master's
 * workers run, the old master is killed and its workers are told to quit: they close their
 * listeners at once and finish their sessions. No socket is ever closed in between, and the new
 * master has no pause behind it. nginx ignores SIGUSR2 in a master whose parent is the process
 * that started it, so the master is started daemonized under a small reaper (perl, which every
 * Debian system has) that makes itself the subreaper of what it starts: the master's parent is
 * then the reaper, and the processes a handoff orphans (the killed master, its workers once their
 * sessions end) are reaped by it. The reaper exits by itself once no nginx process is left below
 * it. Without perl, or where the kernel refuses a subreaper, the daemon reloads with SIGHUP.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFile, mkdir, readFile, rm, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { NginxStatus } from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import { removeTemporaries, writeFileAtomic } from '../sys/files.js';
import {
  NGINX_REAPER_TITLE,
  childPids,
  commandLine,
  isAlive,
  isReaper,
  nginxChildren,
  nginxMasters,
  nginxWorkers,
  parentPid,
  processStartedAt,
  processState,
  signal,
  strayWorkers,
} from '../sys/processes.js';
import { type NginxBuild, NginxBinaryError, type NginxLogLine, type TestResult, parseNginxLines, probeNginx, testConfiguration, withoutPaths } from './binary.js';
import { type ErrorLogCursor, type NginxController, type ReloadOutcome, awaitNewGeneration, errorLogCursor, readFrom, reloadRecord, reloadVerdict } from './controller.js';

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

/** prctl(2)'s system call number, by Node's name for the processor. */
const PRCTL: Partial<Record<string, number>> = { x64: 157, arm64: 167, riscv64: 167, arm: 172, ia32: 172, ppc64: 171, s390x: 172 };

/**
 * The reaper: PR_SET_CHILD_SUBREAPER (36), then it starts nginx and reaps every process that ends
 * below it until none is left. Exit codes 70-72: it could not set itself up.
 */
const REAPER = [
  'my $prctl = shift @ARGV;',
  `$0 = '${NGINX_REAPER_TITLE}';`,
  'if (syscall($prctl + 0, 36, 1, 0, 0, 0) != 0) { print STDERR "reaper: prctl: $!\n"; exit 70; }',
  'my $child = fork();',
  'if (!defined $child) { print STDERR "reaper: fork: $!\n"; exit 71; }',
  'if ($child == 0) { exec { $ARGV[0] } @ARGV; print STDERR "reaper: exec $ARGV[0]: $!\n"; exit 72; }',
  'my $code = 0;',
  'while ((my $pid = waitpid(-1, 0)) > 0) { $code = 72 if $pid == $child && ($? >> 8) == 72; }',
  'exit $code;',
].join(' ');


/** nginx's message when a master will not start a new one (its parent started it). */
const HANDOFF_IGNORED = /changing binary signal is ignored/;

const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));
const MAX_INCIDENTS = 20;

/** The children of `masters` that are nginx starting up: executed, not yet titled "nginx: ...". */
async function startingMasters(masters: number[]): Promise<number[]> {
  const starting: number[] = [];
  for (const master of masters) {
    for (const child of await childPids(master)) {
      const command = await commandLine(child);
      if (command !== undefined && !command.startsWith('nginx: ') && (await processState(child)) !== 'Z') starting.push(child);
    }
  }
  return starting;
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
    if (command !== undefined && command.startsWith('nginx: ') && !command.includes('is shutting down')) signal(pid, 'SIGQUIT');
  }
}

/** nginx cannot be set up at all: the binary cannot run, or it has no stream module. */
class SetupError extends Error {}

export class ManagedNginx implements NginxController {
  readonly mode = 'managed' as const;
  readonly confPath: string;
  readonly pidPath: string;
  readonly errorLogPath: string;
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
  private watch: NodeJS.Timeout | undefined;
  /** Watchdog rounds the master has been seen stopped in a row. */
  private stoppedRounds = 0;
  private readonly listeners: Array<(message: string) => void> = [];
  /** Whether the master is the daemon's own child (started directly): its exit is an event. */
  private masterIsChild = false;
  /** The reaper the master runs under, when it does. */
  private reaperPid: number | undefined;
  /** When the last reload or handoff took (ms since the epoch). */
  /** Settles once the master the last handoff started is below the reaper (see retire). */
  private reparenting: Promise<void> | undefined;
  /** Why masters are not started under the reaper, once that was found not to work here. */
  private noReaper: string | undefined;

  constructor(private readonly options: ManagedNginxOptions) {
    this.confPath = join(options.dir, 'nginx.conf');
    this.pidPath = join(options.dir, 'nginx.pid');
    this.errorLogPath = join(options.dir, 'error.log');
  }

  private args(): string[] {
    return ['-c', this.confPath, '-p', `${this.options.dir}/`];
  }

  private get oldPidPath(): string {
    return `${this.pidPath}.oldbin`;
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
    let build: NginxBuild;
    try {
      build = await (this.options.probe ?? probeNginx)(this.options.nginxBin);
    } catch (error) {
      if (error instanceof NginxBinaryError) throw new SetupError(error.message);
      throw error;
    }
    if (build.stream === 'missing' || (build.stream === 'dynamic' && build.streamModule === undefined)) {
      throw new SetupError(
        `${this.options.nginxBin} has no stream module${build.stream === 'dynamic' ? ' file (built as a dynamic module)' : ''}; ` +
          'on Debian/Ubuntu: apt-get install nginx-light libnginx-mod-stream',
      );
    }
    let text: string;
    try {
      text = this.options.mainConf(build);
    } catch (error) {
      throw new SetupError((error as Error).message);
    }
    await mkdir(this.options.dir, { recursive: true });
    await removeTemporaries(this.options.dir);
    await writeFileAtomic(this.confPath, text);
    this.options.log.info('nginx found', { bin: this.options.nginxBin, version: build.version, stream: build.stream });
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

  /**
   * A master left running by an earlier daemon on the same home, if there is one. A daemon killed
   * during a handoff can leave two: the old master and the new one it started. The new one is kept
   * once its workers run (the old one goes as after any handoff); otherwise the old one is.
   */
  private async orphan(): Promise<number | undefined> {
    // The new master of a handoff the earlier daemon started may still be reading its
    // configuration: until it titles itself it does not look like a master, yet it holds the
    // sockets it opened. Wait until it does (or gives up), so that it is counted.
    const deadline = Date.now() + this.options.reloadTimeoutMs;
    let masters = await nginxMasters(this.confPath);
    while (Date.now() < deadline && (await startingMasters(masters.map((master) => master.pid))).length > 0) {
      await sleep(5);
      masters = await nginxMasters(this.confPath);
    }
    if (masters.length <= 1) return masters[0]?.pid;
    const ids = new Set(masters.map((master) => master.pid));
    const fresh = masters.find((master) => master.parent !== undefined && ids.has(master.parent));
    if (fresh?.parent === undefined) {
      this.options.log.warn('several nginx masters run this configuration; adopting the first', { pids: [...ids] });
      return masters[0]?.pid;
    }
    const old = fresh.parent;
    while (isAlive(fresh.pid) && (await childPids(fresh.pid)).length === 0 && Date.now() < deadline) await sleep(5);
    if (isAlive(fresh.pid) && (await childPids(fresh.pid)).length > 0) {
      this.options.log.warn('finishing a handoff between nginx masters that an earlier daemon left half done', { old, new: fresh.pid });
      await this.retire(old, fresh.pid, (await childPids(old)).filter((pid) => pid !== fresh.pid));
      return fresh.pid;
    }
    this.options.log.warn('dropping the new nginx master of a handoff an earlier daemon left half done', { old, new: fresh.pid });
    await this.discard(fresh.pid);
    return old;
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
    for (const pid of stray) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
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
      if (this.watch === undefined) this.startWatch();
      return this.reload();
    }
    const orphan = await this.orphan();
    if (orphan !== undefined) {
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
    this.state = 'starting';
    await this.clearLeftovers();
    const cursor = await errorLogCursor(this.errorLogPath);
    let outcome = this.reaperWanted() ? await this.launchUnderReaper(cursor) : 'unavailable';
    if (outcome === 'unavailable') outcome = await this.launchDirectly(cursor);
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

  private reaperWanted(): boolean {
    if (this.options.handoff !== true || this.noReaper !== undefined) return false;
    if (!this.options.nginxBin.startsWith('/')) {
      // nginx starts its new master from the path it was started with, without a PATH search.
      this.reaperUnavailable(`NGINX_BIN ${this.options.nginxBin} is not an absolute path`);
      return false;
    }
    if (PRCTL[process.arch] === undefined) {
      this.reaperUnavailable(`no subreaper on this processor (${process.arch})`);
      return false;
    }
    return true;
  }

  private reaperUnavailable(reason: string): void {
    this.noReaper = reason;
    this.options.log.warn('handoffs are not available; nginx is reloaded with SIGHUP, which pauses each master about 100 ms', { reason });
  }

  /** Logs what `child` writes on stderr, each line also handed to `onLine`. */
  private watchStderr(child: ChildProcess, onLine?: (line: string) => void): void {
    if (child.stderr) {
      createInterface({ input: child.stderr }).on('line', (line) => {
        onLine?.(line);
        this.options.log.warn('nginx stderr', { line });
      });
    }
  }

  /** nginx in the foreground as the daemon's child: reloads with SIGHUP. */
  private async launchDirectly(cursor: ErrorLogCursor | undefined): Promise<ReloadOutcome> {
    const child = spawn(this.options.nginxBin, [...this.args(), '-e', this.errorLogPath, '-g', 'daemon off;'], {
      // Its own process group: a Ctrl-C meant for the daemon must not reach nginx directly;
      // the daemon stops it in order.
      detached: true,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const spawnError = await whenSpawned(child);
    if (spawnError) {
      this.state = 'down';
      const message = `cannot run ${this.options.nginxBin}: ${(spawnError as NodeJS.ErrnoException).code ?? spawnError.message}`;
      return { ok: false, code: 'NGINX_UNAVAILABLE', message, lines: [] };
    }
    if (this.spawned) this.restarts += 1;
    this.spawned = true;
    this.child = child;
    this.pid = child.pid;
    this.reaperPid = undefined;
    this.masterIsChild = true;
    this.watchStderr(child);
    child.once('exit', (code, signal) => this.exited(child, code, signal));
    return awaitNewGeneration({ masterPid: child.pid ?? 0, before: new Set(), errorLog: cursor, timeoutMs: this.options.reloadTimeoutMs });
  }

  /** nginx daemonized below the reaper: changes are handed to new masters. */
  private async launchUnderReaper(cursor: ErrorLogCursor | undefined): Promise<ReloadOutcome | 'unavailable'> {
    const perl = 'perl'; // from PATH: perl-base is essential on Debian
    const args = ['-e', REAPER, String(PRCTL[process.arch]), this.options.nginxBin, ...this.args(), '-e', this.errorLogPath, '-g', 'daemon on;'];
    const reaper = spawn(perl, args, { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    const spawnError = await whenSpawned(reaper);
    if (spawnError) {
      this.reaperUnavailable(`cannot run ${perl}: ${(spawnError as NodeJS.ErrnoException).code ?? spawnError.message}`);
      return 'unavailable';
    }
    let setup = '';
    this.watchStderr(reaper, (line) => {
      if (line.startsWith('reaper: ')) setup = line;
    });
    const exit = new Promise<number | null>((done) => reaper.once('exit', (code) => done(code)));
    let exitCode: number | null | undefined;
    void exit.then((code) => {
      exitCode = code;
    });
    const deadline = Date.now() + this.options.reloadTimeoutMs;
    for (let round = 0; ; round += 1) {
      if (exitCode !== undefined) {
        await sleep(20); // a reason line may still be on its way
        if (exitCode === 70) {
          this.reaperUnavailable(setup.replace(/^reaper: /, '') || 'the kernel refused a subreaper');
          return 'unavailable';
        }
        if (exitCode === 71 || exitCode === 72) {
          return { ok: false, code: 'NGINX_UNAVAILABLE', message: setup.replace(/^reaper: /, '') || `cannot run ${this.options.nginxBin}`, lines: [] };
        }
        const lines = cursor ? parseNginxLines(readFrom(cursor)) : [];
        const verdict = reloadVerdict(lines) ?? lines.find((line) => line.level === 'emerg');
        return { ok: false, code: 'NGINX_UNAVAILABLE', message: verdict ? verdict.text : 'nginx exited at start', lines };
      }
      const master = await masterBelow(reaper.pid ?? 0);
      if (master !== undefined) {
        if (this.spawned) this.restarts += 1;
        this.spawned = true;
        this.child = reaper;
        this.pid = master;
        this.reaperPid = reaper.pid;
        this.masterIsChild = false;
        reaper.once('exit', () => this.reaperExited(reaper));
        const outcome = await awaitNewGeneration({ masterPid: master, before: new Set(), errorLog: cursor, timeoutMs: Math.max(0, deadline - Date.now()) });
        return { ...outcome, pauses: false };
      }
      if (Date.now() > deadline) {
        // The reaper and nginx before it daemonized share a process group; a master that has
        // daemonized since has a session of its own.
        signal(reaper.pid === undefined ? undefined : -reaper.pid, 'SIGKILL');
        for (const { pid } of await nginxMasters(this.confPath)) await this.discard(pid);
        return { ok: false, code: 'RELOAD_FAILED', message: `nginx did not start within ${Math.round(this.options.reloadTimeoutMs / 1000)} s`, lines: [] };
      }
      await sleep(round < 50 ? 2 : 10);
    }
  }

  /** The reaper is gone: all of nginx is, unless someone killed the reaper alone. */
  private reaperExited(reaper: ChildProcess): void {
    if (this.child !== reaper) return;
    this.child = undefined;
    if (this.stopping || this.state !== 'running') return;
    if (this.pid !== undefined && isAlive(this.pid)) return; // a master without its reaper: reloads with SIGHUP from now on
    const pid = this.pid;
    this.pid = undefined;
    this.state = 'down';
    this.lost(`nginx exited unexpectedly (master ${pid ?? 'unknown'} is gone)`);
  }

  private exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child || !this.masterIsChild) return;
    this.child = undefined;
    this.pid = undefined;
    this.state = 'down';
    if (this.stopping) return;
    this.lost(`nginx exited unexpectedly (${signal ? `signal ${signal}` : `exit code ${String(code)}`})`);
  }

  private lost(message: string): void {
    this.message = message;
    this.incident(message);
    this.stopWatch();
    for (const listener of this.listeners) listener(message);
  }

  /**
   * Every round: an adopted master (not our child, so no exit event) that is gone counts as
   * died; a master found stopped (SIGSTOP) gets SIGCONT, and one still stopped the next round is
   * killed so that a new one can be started. A stopped master takes no reload, so the daemon
   * could apply nothing.
   */
  private startWatch(): void {
    this.stopWatch();
    this.stoppedRounds = 0;
    // A master that is not the daemon's child is seen to die only here: look more often.
    this.watch = setInterval(() => void this.inspect(), this.options.watchIntervalMs ?? (this.masterIsChild ? 1000 : 250));
    this.watch.unref();
  }

  private async inspect(): Promise<void> {
    const pid = this.pid;
    if (pid === undefined || this.stopping) return;
    if (!isAlive(pid)) {
      if (this.masterIsChild) return; // the exit event reports it
      this.pid = undefined;
      this.state = 'down';
      this.lost(this.child === undefined ? 'the adopted nginx master is gone' : `nginx exited unexpectedly (master ${pid} is gone)`);
      return;
    }
    const state = await processState(pid);
    if (state !== 'T' && state !== 't') {
      if (this.stoppedRounds > 0) this.options.log.info('nginx master runs again', { pid });
      this.stoppedRounds = 0;
      return;
    }
    this.stoppedRounds += 1;
    if (this.stoppedRounds === 1) {
      const message = `nginx master ${pid} was found stopped (SIGSTOP); sent SIGCONT`;
      this.options.log.warn('nginx master stopped; resuming it', { pid });
      this.incident(message);
      process.kill(pid, 'SIGCONT');
      return;
    }
    this.options.log.error('nginx master still stopped; replacing it', { pid });
    this.incident(`nginx master ${pid} stayed stopped; killed it to start a new one`);
    this.stopWatch();
    process.kill(pid, 'SIGKILL');
    if (!this.masterIsChild) {
      this.pid = undefined;
      this.state = 'down';
      this.lost('the nginx master was stopped and had to be killed');
    }
  }

  private stopWatch(): void {
    if (this.watch) clearInterval(this.watch);
    this.watch = undefined;
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
    await this.trimErrorLog();
    if (options.urgent === true && this.options.handoff === true) {
      await this.reparenting;
      const parent = await parentPid(pid);
      if (parent !== undefined && isReaper(parent)) {
        const outcome = await this.handoff(pid);
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
    const outcome = await awaitNewGeneration({ masterPid: pid, before, errorLog: cursor, timeoutMs: this.options.reloadTimeoutMs });
    this.lastReload = reloadRecord(outcome);
    return { ...outcome, pauses: true };
  }

  /**
   * Keeps the error log under errorLogMaxBytes. Every new master writes a line there as it starts
   * (the sockets it inherits, before its configuration sets the level), so handoffs make it grow.
   * It is copied to error.log.1 and emptied in place rather than renamed: every nginx process keeps
   * writing to it (opened for appending), the failures of the next reload included.
   */
  private async trimErrorLog(): Promise<void> {
    const max = this.options.errorLogMaxBytes;
    if (max === undefined) return;
    const older = `${this.errorLogPath}.1`;
    try {
      if ((await stat(this.errorLogPath)).size <= max) return;
      // A line nginx writes between the copy and the emptying is lost; no reload runs meanwhile.
      await copyFile(this.errorLogPath, older);
      await truncate(this.errorLogPath, 0);
    } catch (error) {
      await rm(older, { force: true }).catch(() => undefined); // not half a copy (a full disk, say)
      this.options.log.warn('could not trim the nginx error log', { error });
    }
  }

  /**
   * Hands the configuration on disk to a new master: SIGUSR2 has `pid` start one that inherits
   * its listening sockets; once the new master's workers run, `pid` is killed and its workers quit
   * (they stop accepting at once and finish their sessions). When the new master fails, `pid` runs
   * on untouched.
   */
  private async handoff(pid: number): Promise<ReloadOutcome | 'ignored'> {
    const before = new Set(await childPids(pid));
    const cursor = await errorLogCursor(this.errorLogPath);
    if (!signal(pid, 'SIGUSR2')) return notRunning();
    const started = Date.now();
    let lines: NginxLogLine[] = [];
    for (let round = 0; ; round += 1) {
      // The new master is the child with children of its own (a worker the old master respawned
      // meanwhile has none, though it too is titled "master process" until it renames itself).
      const fresh = await this.newMaster(pid, before, true);
      if (fresh !== undefined) {
        await this.retire(pid, fresh, [...before]);
        return { ok: true, message: '', lines, previousWorkers: [...before], pauses: false, oldMasterGone: this.reparenting };
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
      if (elapsed > this.options.reloadTimeoutMs) {
        await this.discardNew(pid, before);
        return { ok: false, code: 'RELOAD_FAILED', message: `nginx did not start its new master within ${Math.round(this.options.reloadTimeoutMs / 1000)} s`, lines };
      }
      await sleep(elapsed < 100 ? 1 : elapsed < 500 ? 5 : 20);
    }
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

  /**
   * The end of a handoff: the new master is the master; the old one goes, and every worker left
   * without a master quits (it stops accepting at once and finishes its sessions).
   */
  private async retire(old: number, fresh: number, oldWorkers: number[]): Promise<void> {
    this.pid = fresh;
    signal(old, 'SIGKILL'); // it runs no more code: it respawns no worker
    await quitWorkers(oldWorkers, fresh);
    await rm(this.oldPidPath, { force: true }).catch(() => undefined);
    // The new master takes the next handoff only once its parent is no longer the old master,
    // which takes the old one's exit (and with it, its listening sockets): waited for before the
    // next handoff, and before the answer only when a port closes (see oldMasterGone).
    this.reparenting = this.reparented(fresh, old).catch((error: unknown) => this.options.log.warn('could not follow the new nginx master to the reaper', { error }));
  }

  /** Once `fresh` is below the reaper: quits any other worker left there without a master. */
  private async reparented(fresh: number, old: number): Promise<void> {
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
    await this.discard(fresh);
    // `pid` reaps it, logs how it ended and takes its pid file back before it handles another
    // signal: wait for that, so that the line is not read as the verdict on the next reload.
    for (let waited = 0; waited < 1000 && (await readFile(this.pidPath, 'utf8').catch(() => '')).trim() !== String(pid); waited += 5) await sleep(5);
  }

  /** Stops a new master that did not take over, with its workers. */
  private async discard(fresh: number): Promise<void> {
    signal(fresh, 'SIGSTOP'); // it forks no more workers
    const workers = await childPids(fresh);
    signal(fresh, 'SIGKILL');
    for (const worker of workers) signal(worker, 'SIGKILL');
    for (let waited = 0; waited < 2000 && isAlive(fresh); waited += 5) await sleep(5);
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
    const below = async (): Promise<number[]> => (reaper !== undefined && isReaper(reaper) ? (await childPids(reaper)).filter((child) => child !== pid) : []);
    for (const orphan of await below()) signal(orphan, 'SIGTERM');
    if (pid !== undefined) {
      for (let waited = 0; waited < 5000 && isAlive(pid); waited += 20) await sleep(20);
      if (isAlive(pid)) signal(pid, 'SIGKILL');
      for (let waited = 0; waited < 2000 && isAlive(pid); waited += 20) await sleep(20);
    }
    // The reaper leaves once nothing is left below it.
    if (reaper !== undefined) {
      for (let waited = 0; waited < 3000 && isAlive(reaper) && isReaper(reaper); waited += 20) {
        if (waited >= 1000) for (const rest of await below()) signal(rest, 'SIGKILL');
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
    const reaper = this.reaperPid;
    const below = reaper !== undefined && isReaper(reaper) ? (await childPids(reaper)).filter((pid) => pid !== this.pid) : [];
    return [...new Set([...previous, ...below])];
  }

  async auditProcesses(): Promise<{ master: number; workers: number; others: number[] } | undefined> {
    const master = this.pid;
    if (master === undefined || this.state !== 'running' || !isAlive(master)) return undefined;
    const others = new Set<number>();
    const reaper = this.reaperPid;
    if (reaper !== undefined && isReaper(reaper)) for (const pid of await childPids(reaper)) others.add(pid);
    for (const pid of await strayWorkers(this.errorLogPath, master)) others.add(pid);
    for (const { pid } of await nginxMasters(this.confPath)) others.add(pid);
    // The master's own children are its workers, even one just forked that still has the master's
    // title; only the old ones, told to quit, must have closed their listeners.
    const children = await childPids(master);
    for (const pid of children) others.delete(pid);
    const draining = nginxChildren(master).filter((child) => child.draining).map((child) => child.pid);
    for (const pid of draining) others.add(pid);
    others.delete(master);
    const workers = children.filter((pid) => !draining.includes(pid)).length;
    return { master, workers, others: [...others] };
  }

  /** Makes nginx reopen its log files (after the daemon rotated one). */
  async reopenLogs(): Promise<void> {
    if (this.pid !== undefined && isAlive(this.pid)) process.kill(this.pid, 'SIGUSR1');
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.stopWatch();
    await this.kill();
    this.state = 'down';
  }

  /** What the API shows: nginx's messages without the file paths of this host. */
  status(): NginxStatus {
    const status: NginxStatus = { state: this.state, restarts: this.restarts };
    if (this.pid !== undefined) status.pid = this.pid;
    if (this.lastReload) status.lastReload = this.lastReload;
    if (this.message) status.message = withoutPaths(this.message);
    if (this.incidents.length > 0) status.incidents = this.incidents.map((incident) => ({ ...incident, message: withoutPaths(incident.message) }));
    if (this.pid !== undefined && this.state === 'running') {
      // Up since the reaper started it: a handoff changes the master, not how long nginx has run.
      const started = processStartedAt(this.reaperPid !== undefined && isReaper(this.reaperPid) ? this.reaperPid : this.pid);
      if (started) status.startedAt = started.toISOString();
      const { workers, draining } = nginxWorkers(this.pid);
      status.workers = workers;
      status.drainingWorkers = draining;
    }
    return status;
  }
}

/**
 * Whether a reload would fail the same way: nginx gave up on a line of the configuration (its
 * message ends "in FILE:LINE") or could not bind a listening socket.
 */
function failsReloadToo(outcome: ReloadOutcome): boolean {
  return / in \S+:[0-9]+$/.test(outcome.message) || /bind\(\) to /.test(outcome.message);
}


const notRunning = (): ReloadOutcome => ({ ok: false, code: 'NGINX_UNAVAILABLE', message: 'nginx is not running', lines: [] });

function whenSpawned(child: ChildProcess): Promise<Error | undefined> {
  return new Promise((done) => {
    child.once('spawn', () => done(undefined));
    child.once('error', (error) => done(error));
  });
}

/** The nginx master the reaper `reaper` started, once it runs (daemonized, the reaper's child). */
async function masterBelow(reaper: number): Promise<number | undefined> {
  for (const child of await childPids(reaper)) {
    if ((await commandLine(child))?.startsWith('nginx: master process')) return child;
  }
  return undefined;
}
