/**
 * External mode: an nginx that someone else runs (the old service's way, and the container's).
 * The daemon only writes its per-stream files into STREAM_CONFIG_PATH, which that nginx includes
 * inside its `stream {}` block, tests with `NGINX_BIN -t` and reloads with `NGINX_BIN -s reload`.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { NginxStatus } from '@stream-conductor/shared';
import { execa } from 'execa';
import { childPids, isAlive, nginxWorkers, processStartedAt } from '../../sys/processes.js';
import { parseNginxLines, type TestResult, testConfiguration } from '../binary.js';
import {
  awaitNewGeneration,
  errorLogCursor,
  type NginxController,
  type ReloadOutcome,
  reloadRecord,
} from './controller.js';

export interface ExternalNginxOptions {
  nginxBin: string;
  /** Main configuration file, or undefined for nginx's default. */
  nginxConf: string | undefined;
  pidFile: string;
  errorLog: string | undefined;
  reloadTimeoutMs: number;
}

export class ExternalNginx implements NginxController {
  readonly mode = 'external' as const;
  private lastReload: NginxStatus['lastReload'];

  constructor(private readonly options: ExternalNginxOptions) {}

  private confArgs(): string[] {
    return this.options.nginxConf === undefined ? [] : ['-c', this.options.nginxConf];
  }

  onUnexpectedExit(): void {
    // Someone else supervises this nginx.
  }

  test(): Promise<TestResult> {
    return testConfiguration(this.options.nginxBin, this.confArgs());
  }

  private async masterPid(): Promise<number | undefined> {
    try {
      const pid = Number((await readFile(this.options.pidFile, 'utf8')).trim());
      return Number.isInteger(pid) && pid > 1 && isAlive(pid) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  async clearLeftovers(): Promise<void> {
    // Not ours to clean.
  }

  async isRunning(): Promise<boolean> {
    return (await this.masterPid()) !== undefined;
  }

  async start(): Promise<ReloadOutcome> {
    return this.reload();
  }

  async reload(): Promise<ReloadOutcome> {
    const pid = await this.masterPid();
    if (pid === undefined) {
      const outcome: ReloadOutcome = {
        ok: false,
        code: 'NGINX_UNAVAILABLE',
        message: `nginx is not running (no live master in ${this.options.pidFile})`,
        lines: [],
      };
      this.lastReload = reloadRecord(outcome);
      return outcome;
    }
    const before = new Set(await childPids(pid));
    const cursor = await errorLogCursor(this.options.errorLog);
    const signal = await execa(this.options.nginxBin, [...this.confArgs(), '-s', 'reload'], {
      reject: false,
      all: true,
      timeout: 30_000,
    });
    let outcome: ReloadOutcome;
    if (signal.exitCode !== 0) {
      const lines = parseNginxLines(signal.all ?? '');
      outcome = {
        ok: false,
        code: 'NGINX_UNAVAILABLE',
        message: lines[0]?.text ?? `${this.options.nginxBin} -s reload failed: ${signal.shortMessage}`,
        lines,
      };
    } else {
      outcome = await awaitNewGeneration({
        masterPid: pid,
        before,
        errorLog: cursor,
        timeoutMs: this.options.reloadTimeoutMs,
      });
    }
    this.lastReload = reloadRecord(outcome);
    return outcome;
  }

  async oldProcesses(previous: number[]): Promise<number[]> {
    return previous;
  }

  /** The operator's nginx is not the daemon's to judge or to signal beyond its reloads. */
  async auditProcesses(): Promise<undefined> {
    return undefined;
  }

  /** `nginx -s reopen`: nginx reopens its log files (after the daemon rotated one). */
  async reopenLogs(): Promise<void> {
    await execa(this.options.nginxBin, [...this.confArgs(), '-s', 'reopen'], { reject: false, timeout: 10_000 });
  }

  async stop(): Promise<void> {
    // Not ours to stop.
  }

  status(): NginxStatus {
    let pid: number | undefined;
    try {
      const text = readFileSync(this.options.pidFile, 'utf8');
      pid = Number(text.trim());
    } catch {
      pid = undefined;
    }
    const running = pid !== undefined && Number.isInteger(pid) && isAlive(pid);
    const status: NginxStatus = { state: running ? 'running' : 'down', restarts: 0 };
    if (!running) status.message = 'nginx is not running (no live master in its pid file)';
    if (running && pid !== undefined) {
      status.pid = pid;
      const started = processStartedAt(pid);
      if (started) status.startedAt = started.toISOString();
      const { workers, draining } = nginxWorkers(pid);
      status.workers = workers;
      status.drainingWorkers = draining;
    }
    if (this.lastReload) status.lastReload = this.lastReload;
    return status;
  }
}
