/**
 * Per-stream traffic, from nginx's stream access log. nginx writes one JSON line per finished
 * session (see ACCESS_LOG_FORMAT in nginx/access-log.ts); the daemon reads each log as it grows,
 * adds the lines up per port, and keeps the files bounded on disk by rotating them.
 */
import { closeSync, openSync, readSync, renameSync, statSync, unlinkSync } from 'node:fs';
import type { TrafficStats } from '@stream-conductor/shared';
import type { Logger } from '../log.js';

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
    return {
      t: String(value.t ?? ''),
      port: value.port,
      status: value.status,
      in: Number(value.in ?? 0),
      out: Number(value.out ?? 0),
    };
  } catch {
    return undefined;
  }
}

function emptyStats(): TrafficStats {
  return { sessions: 0, failedSessions: 0, deniedSessions: 0, limitedSessions: 0, bytesIn: 0, bytesOut: 0 };
}

/** The running totals of every port since the daemon started (or since the stream was created). */
export class TrafficCounter {
  private readonly byPort = new Map<number, TrafficStats>();

  add(line: Line): void {
    const stats = this.byPort.get(line.port) ?? emptyStats();
    stats.sessions += 1;
    if (line.status === 403) stats.deniedSessions += 1;
    // 503 is what nginx's stream module logs for a session refused by limit_conn, and only then.
    else if (line.status === 503) stats.limitedSessions += 1;
    else if (line.status >= 500) stats.failedSessions += 1;
    stats.bytesIn += line.in;
    stats.bytesOut += line.out;
    // nginx writes local time with its offset; kept as UTC, the later of the two.
    const at = Date.parse(line.t);
    if (!Number.isNaN(at) && (stats.lastSessionAt === undefined || at > Date.parse(stats.lastSessionAt)))
      stats.lastSessionAt = new Date(at).toISOString();
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
  /** Makes nginx write to a new file at `path`, the old one having been renamed to `rotated`. */
  release(rotated: string): Promise<void>;
  /** Whether nginx may still write to `rotated`: one of its processes holds the file open. */
  stillWritten(rotated: string): Promise<boolean>;
  log: Logger;
}

interface Cursor {
  path: string;
  offset: number;
  /** The end of the file read so far when it stopped in the middle of a line. */
  partial: { text: string };
}

/** Looks without news after which a rotated file is checked for writers (4 a second). */
const QUIET_LOOKS = 4;
/** Rotated files kept at most; past it the oldest is read to its end and removed. */
const MAX_ROTATED = 4;

/**
 * Follows one access log: reads what was added since the last look, line by line. When the file
 * passes maxBytes it is renamed to `<path>.<n>` and nginx made to write a new one; the renamed
 * file is read until it is quiet and no nginx process holds it open (an old worker finishing a
 * long session writes its line there), then removed. On disk: the live file, about maxBytes,
 * and rotated ones that only old workers still write to. Lines written before the daemon
 * started are skipped.
 */
export class AccessLogTail {
  private live: Cursor;
  private started = false;
  private busy = false;
  private rotated: Array<Cursor & { quiet: number }> = [];

  constructor(private readonly options: AccessLogOptions) {
    this.live = { path: options.path, offset: 0, partial: { text: '' } };
  }

  private size(path: string): number | undefined {
    try {
      return statSync(path).size;
    } catch {
      return undefined;
    }
  }

  /** Reads a file from its cursor to its end; true when there was something new. */
  private read(cursor: Cursor): boolean {
    const size = this.size(cursor.path);
    if (size === undefined || size <= cursor.offset) return false;
    const fd = openSync(cursor.path, 'r');
    try {
      const buffer = Buffer.alloc(Math.min(size - cursor.offset, 1 << 20));
      while (cursor.offset < size) {
        const read = readSync(fd, buffer, 0, Math.min(buffer.length, size - cursor.offset), cursor.offset);
        if (read <= 0) break;
        cursor.offset += read;
        this.consume(buffer.subarray(0, read).toString('utf8'), cursor.partial);
      }
      return true;
    } finally {
      closeSync(fd);
    }
  }

  private consume(text: string, partial: { text: string }): void {
    const lines = (partial.text + text).split('\n');
    partial.text = lines.pop() ?? '';
    for (const line of lines) {
      const parsed = parseLine(line);
      if (parsed) this.options.counter.add(parsed);
    }
  }

  private remove(path: string): void {
    try {
      unlinkSync(path);
    } catch {
      // gone already
    }
  }

  /** One look at the files: new lines counted, rotated files let go of, rotation when due. */
  async poll(): Promise<void> {
    // A look waits for nginx while it rotates; the next ones skip until it is done.
    if (this.busy) return;
    this.busy = true;
    try {
      await this.look();
    } finally {
      this.busy = false;
    }
  }

  private async look(): Promise<void> {
    const { path } = this.options;
    if (!this.started) {
      this.started = true;
      this.live.offset = this.size(path) ?? 0; // what was there before is not ours to count
      // Rotated files a previous run left: counted then, removed now unless nginx still writes them.
      for (let n = 1; n <= MAX_ROTATED; n += 1) {
        const old = `${path}.${n}`;
        if (this.size(old) !== undefined && !(await this.options.stillWritten(old))) this.remove(old);
      }
      return;
    }
    for (const cursor of [...this.rotated]) {
      cursor.quiet = this.read(cursor) ? 0 : cursor.quiet + 1;
      // Checked for writers when quiet, and every two seconds after that: /proc is not free.
      if (
        cursor.quiet >= QUIET_LOOKS &&
        (cursor.quiet - QUIET_LOOKS) % 8 === 0 &&
        !(await this.options.stillWritten(cursor.path))
      ) {
        this.read(cursor);
        this.remove(cursor.path);
        this.rotated = this.rotated.filter((other) => other !== cursor);
      }
    }
    const size = this.size(path);
    if (size !== undefined && size < this.live.offset) this.live = { path, offset: 0, partial: { text: '' } }; // truncated or replaced by someone
    this.read(this.live);
    if (this.live.offset > this.options.maxBytes) await this.rotate();
  }

  private async rotate(): Promise<void> {
    const { path } = this.options;
    // The bound on disk comes first: past MAX_ROTATED the oldest goes, read to its end.
    while (this.rotated.length >= MAX_ROTATED) {
      const oldest = this.rotated.shift() as Cursor;
      this.read(oldest);
      this.remove(oldest.path);
      this.options.log.warn('removed a rotated access log nginx may still write to', { path: oldest.path });
    }
    const taken = new Set(this.rotated.map((cursor) => cursor.path));
    let n = 1;
    while (taken.has(`${path}.${n}`)) n += 1;
    const target = `${path}.${n}`;
    try {
      renameSync(path, target);
    } catch (error) {
      this.options.log.warn('could not rotate an access log', { path, error });
      return;
    }
    this.rotated.push({ ...this.live, path: target, quiet: 0 });
    this.live = { path, offset: 0, partial: { text: '' } };
    await this.options
      .release(target)
      .catch((error: unknown) => this.options.log.warn('nginx did not let go of its access log', { path, error }));
  }
}
