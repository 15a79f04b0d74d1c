/**
 * Managed mode: the daemon runs its own nginx master as a child, in the foreground, with every
 * file it uses (configuration, pid file, error log) under the daemon's home. No system file is
 * read or written. If the daemon itself was killed, the master it left running is adopted at the
 * next start rather than killed, so streams keep flowing across a daemon restart. A watchdog
 * notices a master that died or was stopped (SIGSTOP) and has it brought back.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { NginxStatus } from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import { removeTemporaries, writeFileAtomic } from '../sys/files.js';
import { childPids, commandLine, isAlive, nginxWorkers, processStartedAt, processState, strayWorkers } from '../sys/processes.js';
import { type NginxBuild, NginxBinaryError, type TestResult, probeNginx, testConfiguration, withoutPaths } from './binary.js';
import { type NginxController, type ReloadOutcome, awaitNewGeneration, errorLogCursor, reloadRecord } from './controller.js';

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
}

const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));
const MAX_INCIDENTS = 20;

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

  constructor(private readonly options: ManagedNginxOptions) {
    this.confPath = join(options.dir, 'nginx.conf');
    this.pidPath = join(options.dir, 'nginx.pid');
    this.errorLogPath = join(options.dir, 'error.log');
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

  /** A master left running by an earlier daemon on the same home, if there is one. */
  private async orphan(): Promise<number | undefined> {
    let text: string;
    try {
      text = await readFile(this.pidPath, 'utf8');
    } catch {
      return undefined;
    }
    const pid = Number(text.trim());
    if (!Number.isInteger(pid) || pid <= 1 || !isAlive(pid)) return undefined;
    const command = await commandLine(pid);
    return command?.includes('nginx: master process') && command.includes(this.confPath) ? pid : undefined;
  }

  async isRunning(): Promise<boolean> {
    if (this.pid !== undefined && isAlive(this.pid)) return true;
    return (await this.orphan()) !== undefined;
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
    if (this.pid !== undefined && isAlive(this.pid)) return this.reload();
    const orphan = await this.orphan();
    if (orphan !== undefined) {
      this.options.log.info('adopting the nginx master left running by an earlier daemon', { pid: orphan });
      this.pid = orphan;
      this.child = undefined;
      this.state = 'running';
      this.startWatch();
      return this.reload();
    }
    this.state = 'starting';
    await this.clearLeftovers();
    const cursor = await errorLogCursor(this.errorLogPath);
    const child = spawn(this.options.nginxBin, [...this.args(), '-e', this.errorLogPath], {
      // Its own process group: a Ctrl-C meant for the daemon must not reach nginx directly;
      // the daemon stops it in order.
      detached: true,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const spawnError = await new Promise<Error | undefined>((done) => {
      child.once('spawn', () => done(undefined));
      child.once('error', (error) => done(error));
    });
    if (spawnError) {
      this.state = 'down';
      this.message = `cannot run ${this.options.nginxBin}: ${(spawnError as NodeJS.ErrnoException).code ?? spawnError.message}`;
      return { ok: false, code: 'NGINX_UNAVAILABLE', message: this.message, lines: [] };
    }
    if (this.spawned) this.restarts += 1;
    this.spawned = true;
    this.child = child;
    this.pid = child.pid;
    if (child.stderr) {
      createInterface({ input: child.stderr }).on('line', (line) => this.options.log.warn('nginx stderr', { line }));
    }
    child.once('exit', (code, signal) => this.exited(child, code, signal));
    const outcome = await awaitNewGeneration({
      masterPid: child.pid ?? 0,
      before: new Set(),
      errorLog: cursor,
      timeoutMs: this.options.reloadTimeoutMs,
    });
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

  private exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
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
    this.watch = setInterval(() => void this.inspect(), this.options.watchIntervalMs ?? 1000);
    this.watch.unref();
  }

  private async inspect(): Promise<void> {
    const pid = this.pid;
    if (pid === undefined || this.stopping) return;
    if (!isAlive(pid)) {
      if (this.child !== undefined) return; // the exit event reports it
      this.pid = undefined;
      this.state = 'down';
      this.lost('the adopted nginx master is gone');
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
    if (this.child === undefined) {
      this.pid = undefined;
      this.state = 'down';
      this.lost('the adopted nginx master was stopped and had to be killed');
    }
  }

  private stopWatch(): void {
    if (this.watch) clearInterval(this.watch);
    this.watch = undefined;
  }

  async reload(): Promise<ReloadOutcome> {
    const pid = this.pid;
    if (pid === undefined || !isAlive(pid)) {
      return { ok: false, code: 'NGINX_UNAVAILABLE', message: this.message ?? 'nginx is not running', lines: [] };
    }
    const before = new Set(await childPids(pid));
    const cursor = await errorLogCursor(this.errorLogPath);
    process.kill(pid, 'SIGHUP');
    const outcome = await awaitNewGeneration({ masterPid: pid, before, errorLog: cursor, timeoutMs: this.options.reloadTimeoutMs });
    this.lastReload = reloadRecord(outcome);
    return outcome;
  }

  private async kill(): Promise<void> {
    const pid = this.pid;
    if (pid === undefined) return;
    this.stopping = true;
    try {
      process.kill(pid, 'SIGCONT'); // a stopped master would not act on SIGTERM
      process.kill(pid, 'SIGTERM'); // fast shutdown: sessions are cut, listeners closed at once
    } catch {
      return; // already gone
    }
    for (let waited = 0; waited < 5000 && isAlive(pid); waited += 20) await sleep(20);
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    for (let waited = 0; waited < 2000 && isAlive(pid); waited += 20) await sleep(20);
    this.pid = undefined;
    this.child = undefined;
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
      const started = processStartedAt(this.pid);
      if (started) status.startedAt = started.toISOString();
      const { workers, draining } = nginxWorkers(this.pid);
      status.workers = workers;
      status.drainingWorkers = draining;
    }
    return status;
  }
}
