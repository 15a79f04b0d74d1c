/**
 * The audit log: one JSON line per change (who, from where, what, and how it ended) appended to
 * $CONDUCTOR_HOME/audit.log, rotated to audit.log.1 past a size, and the latest events kept in
 * memory for the API.
 */
import { closeSync, constants, fstatSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import type { AuditEvent } from '@stream-conductor/shared';
import type { Logger } from '../log.js';

export interface AuditQuery {
  limit?: number;
  port?: number;
  /** Only events after this time (ISO 8601; compared as a time, not as text). */
  since?: string;
}

export class AuditLog {
  private readonly recent: AuditEvent[] = [];
  private size = 0;

  constructor(
    private readonly path: string,
    private readonly options: { maxBytes: number; keep: number; log: Logger },
  ) {
    try {
      // Never through a link, as for writing (see record).
      const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
      let text: string;
      try {
        this.size = fstatSync(fd).size;
        text = readFileSync(fd, 'utf8');
      } finally {
        closeSync(fd);
      }
      // The latest events of earlier runs stay visible through the API.
      const lines = text.split('\n').slice(-options.keep - 1);
      for (const line of lines) {
        try {
          if (line !== '') this.recent.push(JSON.parse(line) as AuditEvent);
        } catch {
          // a line cut by a crash: skipped
        }
      }
    } catch {
      this.size = 0;
    }
  }

  /**
   * Appends an event. A failure to write is logged, not thrown: the change it records has already
   * happened (or been refused) and its answer must not depend on the audit log.
   */
  record(event: AuditEvent): void {
    this.recent.push(event);
    if (this.recent.length > this.options.keep) this.recent.splice(0, this.recent.length - this.options.keep);
    const line = `${JSON.stringify(event)}\n`;
    try {
      if (this.size + line.length > this.options.maxBytes) {
        renameSync(this.path, `${this.path}.1`);
        this.size = 0;
      }
      // Never through a link: the line goes into this file or nowhere.
      const fd = openSync(
        this.path,
        constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
        0o600,
      );
      try {
        writeSync(fd, line);
      } finally {
        closeSync(fd);
      }
      this.size += Buffer.byteLength(line);
    } catch (error) {
      this.options.log.error('could not write the audit log', { error });
    }
  }

  query(query: AuditQuery = {}): AuditEvent[] {
    // As times: as text, a year past 9999 ("+020000-01-01T...") sorts before every event.
    const since = query.since === undefined ? undefined : Date.parse(query.since);
    const events = this.recent.filter(
      (event) =>
        (query.port === undefined || event.ports.includes(query.port)) &&
        (since === undefined || Date.parse(event.at) > since),
    );
    return events.slice(-(query.limit ?? 100));
  }
}
