/**
 * Follows a log nginx appends to, line by line: the streams' access logs (observe/traffic.ts) and
 * the masters' error logs (observe/backend-tls.ts).
 */
import { closeSync, openSync, readSync, renameSync, statSync, unlinkSync } from 'node:fs';
import type { Logger } from '../log.js';

/** How a log the daemon owns is kept bounded: renamed aside and nginx made to write a new one. */
export interface LogRotation {
  /** Rotate when the file grows past this. */
  maxBytes: number;
  /** Makes nginx write to a new file at `path`, the old one having been renamed to `rotated`. */
  release(rotated: string): Promise<void>;
  /** Whether nginx may still write to `rotated`: one of its processes holds the file open. */
  stillWritten(rotated: string): Promise<boolean>;
}

export interface LogTailOptions {
  path: string;
  /** Each whole line read, without its newline. */
  onLine(text: string): void;
  /**
   * Left out for a log someone else bounds (a managed master's error log is trimmed in place by
   * its supervisor; an external nginx's by the operator): then the tail only reads, and starts
   * over from the top when the file shrinks.
   */
  rotation?: LogRotation;
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
 * Reads what was added to one log since the last look, line by line. With a rotation, when the
 * file passes maxBytes it is renamed to `<path>.<n>` and nginx made to write a new one; the
 * renamed file is read until it is quiet and no nginx process holds it open (an old worker
 * finishing a long session writes its line there), then removed. On disk: the live file, about
 * maxBytes, and rotated ones that only old workers still write to. Lines written before the
 * daemon started are skipped.
 */
export class LogTail {
  private live: Cursor;
  private started = false;
  private busy = false;
  private rotated: Array<Cursor & { quiet: number }> = [];

  constructor(private readonly options: LogTailOptions) {
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
    for (const line of lines) this.options.onLine(line);
  }

  private remove(path: string): void {
    try {
      unlinkSync(path);
    } catch {
      // gone already
    }
  }

  /** One look at the files: new lines read, rotated files let go of, rotation when due. */
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
    const { path, rotation } = this.options;
    if (!this.started) {
      this.started = true;
      this.live.offset = this.size(path) ?? 0; // what was there before is not ours to read
      // Rotated files a previous run left: read then, removed now unless nginx still writes them.
      for (let n = 1; rotation && n <= MAX_ROTATED; n += 1) {
        const old = `${path}.${n}`;
        if (this.size(old) !== undefined && !(await rotation.stillWritten(old))) this.remove(old);
      }
      return;
    }
    for (const cursor of [...this.rotated]) {
      cursor.quiet = this.read(cursor) ? 0 : cursor.quiet + 1;
      // Checked for writers when quiet, and every two seconds after that: /proc is not free.
      if (
        rotation &&
        cursor.quiet >= QUIET_LOOKS &&
        (cursor.quiet - QUIET_LOOKS) % 8 === 0 &&
        !(await rotation.stillWritten(cursor.path))
      ) {
        this.read(cursor);
        this.remove(cursor.path);
        this.rotated = this.rotated.filter((other) => other !== cursor);
      }
    }
    const size = this.size(path);
    if (size !== undefined && size < this.live.offset) this.live = { path, offset: 0, partial: { text: '' } }; // truncated or replaced by someone
    this.read(this.live);
    if (rotation && this.live.offset > rotation.maxBytes) await this.rotate(rotation);
  }

  private async rotate(rotation: LogRotation): Promise<void> {
    const { path } = this.options;
    // The bound on disk comes first: past MAX_ROTATED the oldest goes, read to its end.
    while (this.rotated.length >= MAX_ROTATED) {
      const oldest = this.rotated.shift() as Cursor;
      this.read(oldest);
      this.remove(oldest.path);
      this.options.log.warn('removed a rotated log nginx may still write to', { path: oldest.path });
    }
    const taken = new Set(this.rotated.map((cursor) => cursor.path));
    let n = 1;
    while (taken.has(`${path}.${n}`)) n += 1;
    const target = `${path}.${n}`;
    try {
      renameSync(path, target);
    } catch (error) {
      this.options.log.warn('could not rotate a log', { path, error });
      return;
    }
    this.rotated.push({ ...this.live, path: target, quiet: 0 });
    this.live = { path, offset: 0, partial: { text: '' } };
    await rotation
      .release(target)
      .catch((error: unknown) => this.options.log.warn('nginx did not let go of its log', { path, error }));
  }
}
