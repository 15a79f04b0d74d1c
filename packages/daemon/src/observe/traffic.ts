/**
 * Per-stream traffic, from nginx's stream access log. nginx writes one JSON line per finished
 * session (see ACCESS_LOG_FORMAT); the daemon reads each log as it grows, adds the lines up per
 * port, and keeps the files bounded on disk by rotating them.
 */
import { closeSync, openSync, readSync, renameSync, statSync, unlinkSync } from 'node:fs';
import type { TrafficStats } from '@stream-conductor/shared';
import type { Logger } from '../log.js';

/** The name of the log format the per-stream files use. */
export const ACCESS_LOG_FORMAT_NAME = 'conductor_v1';

/**
 * One line per session. $bytes_received came from the client, $bytes_sent went to it. $status:
 * 200 served, 403 refused by the allow-list, 502 no backend answered, 500/503 other failures.
 */
export const ACCESS_LOG_FORMAT =
  `log_format ${ACCESS_LOG_FORMAT_NAME} escape=json '{"t":"$time_iso8601","port":$server_port,"proto":"$protocol",` +
  `"status":$status,"in":$bytes_received,"out":$bytes_sent,"s":$session_time,"up":"$upstream_addr","client":"$remote_addr"}';`;

interface Line {
  t: string;
  port: number;
  status: number;
  in: number;
  out: number;
}

function parseLine(text: string): Line | undefined {
  try {
    const value = JSON.parse(text) as Partial<Line>;
    if (typeof value.port !== 'number' || typeof value.status !== 'number') return undefined;
    return { t: String(value.t ?? ''), port: value.port, status: value.status, in: Number(value.in ?? 0), out: Number(value.out ?? 0) };
  } catch {
    return undefined;
  }
}

function emptyStats(): TrafficStats {
  return { sessions: 0, failedSessions: 0, deniedSessions: 0, bytesIn: 0, bytesOut: 0 };
}

/** The running totals of every port since the daemon started (or since the stream was created). */
export class TrafficCounter {
  private readonly byPort = new Map<number, TrafficStats>();

  add(line: Line): void {
    const stats = this.byPort.get(line.port) ?? emptyStats();
    stats.sessions += 1;
    if (line.status === 403) stats.deniedSessions += 1;
    else if (line.status >= 500) stats.failedSessions += 1;
    stats.bytesIn += line.in;
    stats.bytesOut += line.out;
    if (line.t !== '' && (stats.lastSessionAt === undefined || line.t > stats.lastSessionAt)) stats.lastSessionAt = new Date(line.t).toISOString();
    this.byPort.set(line.port, stats);
  }

  get(port: number): TrafficStats {
    return { ...(this.byPort.get(port) ?? emptyStats()) };
  }

  /** A new stream on a port starts from zero. */
  reset(port: number): void {
    this.byPort.delete(port);
  }

  ports(): number[] {
    return [...this.byPort.keys()];
  }
}

export interface AccessLogOptions {
  path: string;
  counter: TrafficCounter;
  /** Rotate when the file grows past this. */
  maxBytes: number;
  /** Makes nginx reopen its logs (SIGUSR1 to the master, or `nginx -s reopen`). */
  reopen(): Promise<void>;
  log: Logger;
}

/**
 * Follows one access log: reads what was added since the last look, line by line; when the file
 * passes maxBytes it is renamed to `<path>.1` and nginx told to reopen, and the renamed file is
 * read to its end before it is removed. Lines written before the daemon started are skipped.
 */
export class AccessLogTail {
  private offset = -1;
  private partial = '';
  private draining: { path: string; offset: number; quiet: number } | undefined;

  constructor(private readonly options: AccessLogOptions) {}

  private size(path: string): number | undefined {
    try {
      return statSync(path).size;
    } catch {
      return undefined;
    }
  }

  /** Reads `path` from `offset` to its end; returns the new offset. */
  private readFrom(path: string, offset: number): number {
    const size = this.size(path);
    if (size === undefined || size <= offset) return size === undefined ? offset : Math.min(offset, size);
    const fd = openSync(path, 'r');
    try {
      let position = offset;
      const buffer = Buffer.alloc(Math.min(size - offset, 1 << 20));
      while (position < size) {
        const read = readSync(fd, buffer, 0, Math.min(buffer.length, size - position), position);
        if (read <= 0) break;
        position += read;
        this.consume(buffer.subarray(0, read).toString('utf8'));
      }
      return position;
    } finally {
      closeSync(fd);
    }
  }

  private consume(text: string): void {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) {
      const parsed = parseLine(line);
      if (parsed) this.options.counter.add(parsed);
    }
  }

  /** One look at the files: new lines counted, rotation when due. */
  async poll(): Promise<void> {
    const { path } = this.options;
    if (this.offset < 0) {
      this.offset = this.size(path) ?? 0; // what was there before is not ours to count
      return;
    }
    if (this.draining) {
      const before = this.draining.offset;
      this.draining.offset = this.readFrom(this.draining.path, this.draining.offset);
      this.draining.quiet = this.draining.offset === before ? this.draining.quiet + 1 : 0;
      if (this.draining.quiet >= 4) {
        try {
          unlinkSync(this.draining.path);
        } catch {
          // gone already
        }
        this.draining = undefined;
      }
    }
    const size = this.size(path);
    if (size !== undefined && size < this.offset) this.offset = 0; // replaced or truncated by someone
    this.offset = this.readFrom(path, this.offset);
    if (this.offset > this.options.maxBytes && !this.draining) {
      const rotated = `${path}.1`;
      try {
        renameSync(path, rotated);
      } catch (error) {
        this.options.log.warn('could not rotate an access log', { path, error });
        return;
      }
      this.draining = { path: rotated, offset: this.offset, quiet: 0 };
      this.offset = 0;
      await this.options.reopen().catch((error: unknown) => this.options.log.warn('nginx did not reopen its access log', { error }));
    }
  }
}
