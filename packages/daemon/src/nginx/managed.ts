/**
 * Managed mode: the daemon runs its own nginx master as a child, in the foreground, with every
 * file it uses (configuration, pid file, error log) under the daemon's home. No system file is
 * read or written. If the daemon itself was killed, the master it left running is adopted at the
 * next start rather than killed, so streams keep flowing across a daemon restart.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { NginxStatus } from '@stream-conductor/shared';
import type { Logger } from '../log.js';
import { writeFileAtomic } from '../sys/files.js';
import { childPids, commandLine, isAlive, strayWorkers } from '../sys/processes.js';
import { type TestResult, testConfiguration } from './binary.js';
import { type NginxController, type ReloadOutcome, awaitNewGeneration, errorLogCursor, reloadRecord } from './controller.js';

export interface ManagedNginxOptions {
  nginxBin: string;
  /** Folder of this master's own files. */
  dir: string;
  /** Text of the main configuration (see renderMainConf). */
  mainConf: string;
  reloadTimeoutMs: number;
  log: Logger;
}

const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

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
  private watch: NodeJS.Timeout | undefined;
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

  /** Writes the main configuration (once per daemon run: it depends only on the settings). */
  private async prepare(): Promise<void> {
    if (this.prepared) return;
    await mkdir(this.options.dir, { recursive: true });
    await writeFileAtomic(this.confPath, this.options.mainConf);
    this.prepared = true;
  }

  async test(): Promise<TestResult> {
    await this.prepare();
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

  async start(): Promise<ReloadOutcome> {
    this.stopping = false;
    await this.prepare();
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

  private exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    this.child = undefined;
    this.pid = undefined;
    this.state = 'down';
    if (this.stopping) return;
    const message = `nginx exited unexpectedly (${signal ? `signal ${signal}` : `exit code ${String(code)}`})`;
    this.message = message;
    this.stopWatch();
    for (const listener of this.listeners) listener(message);
  }

  /** An adopted master is not our child: poll it. Our own child reports its exit by event. */
  private startWatch(): void {
    this.stopWatch();
    this.watch = setInterval(() => {
      if (this.pid === undefined || this.child !== undefined || isAlive(this.pid)) return;
      this.pid = undefined;
      this.state = 'down';
      this.stopWatch();
      if (this.stopping) return;
      this.message = 'the adopted nginx master is gone';
      for (const listener of this.listeners) listener(this.message);
    }, 1000);
    this.watch.unref();
  }

  private stopWatch(): void {
    if (this.watch) clearInterval(this.watch);
    this.watch = undefined;
  }

  async reload(): Promise<ReloadOutcome> {
    const pid = this.pid;
    if (pid === undefined || !isAlive(pid)) {
      return { ok: false, code: 'NGINX_UNAVAILABLE', message: 'nginx is not running', lines: [] };
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

  async stop(): Promise<void> {
    this.stopping = true;
    this.stopWatch();
    await this.kill();
    this.state = 'down';
  }

  status(): NginxStatus {
    const status: NginxStatus = { state: this.state, restarts: this.restarts };
    if (this.pid !== undefined) status.pid = this.pid;
    if (this.lastReload) status.lastReload = this.lastReload;
    if (this.message) status.message = this.message;
    return status;
  }
}
