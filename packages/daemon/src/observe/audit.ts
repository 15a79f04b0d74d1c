/**
 * The audit log: one JSON line per change (who, from where, what, and how it ended) appended to
 * $CONDUCTOR_HOME/audit.log, rotated to audit.log.1 past a size, and the latest events kept in
 * memory for the API.
 */
import { appendFileSync, readFileSync, renameSync, statSync } from 'node:fs';
import type { AuditEvent } from '@stream-conductor/shared';
import type { Logger } from '../log.js';

export interface AuditQuery {
  limit?: number;
  port?: number;
  /** Only events after this ISO time. */
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
      this.size = statSync(path).size;
      // The latest events of earlier runs stay visible through the API.
      const lines = readFileSync(path, 'utf8').split('\n').slice(-options.keep - 1);
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
      appendFileSync(this.path, line, { mode: 0o600 });
      this.size += Buffer.byteLength(line);
    } catch (error) {
      this.options.log.error('could not write the audit log', { error });
    }
  }

  query(query: AuditQuery = {}): AuditEvent[] {
    const since = query.since;
    const events = this.recent.filter(
      (event) => (query.port === undefined || event.ports.includes(query.port)) && (since === undefined || event.at > since),
    );
    return events.slice(-(query.limit ?? 100));
  }
}
