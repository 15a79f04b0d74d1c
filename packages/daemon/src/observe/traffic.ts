/**
 * Per-stream traffic, from nginx's stream access log. nginx writes one JSON line per finished
 * session (see ACCESS_LOG_FORMAT in nginx/access-log.ts); the daemon reads each log as it grows
 * (observe/log-tail.ts, which keeps the files bounded on disk by rotating them) and adds the lines
 * up per port.
 */
import type { TrafficStats } from '@stream-conductor/shared';

/** One session of the access log. */
export interface AccessLine {
  t: string;
  port: number;
  status: number;
  in: number;
  out: number;
  /** Seconds the session lasted ($session_time); 0 when the line does not say. */
  s?: number;
  /** The backends nginx tried, in order, the last the one that served ($upstream_addr); '' for none. */
  up?: string;
}

/** A line of the access log, or undefined for anything else. */
export function parseAccessLine(text: string): AccessLine | undefined {
  try {
    const value = JSON.parse(text) as Partial<Record<keyof AccessLine, unknown>>;
    if (typeof value.port !== 'number' || typeof value.status !== 'number') return undefined;
    return {
      t: String(value.t ?? ''),
      port: value.port,
      status: value.status,
      in: Number(value.in ?? 0),
      out: Number(value.out ?? 0),
      s: Number(value.s ?? 0) || 0,
      up: typeof value.up === 'string' ? value.up : '',
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

  add(line: AccessLine): void {
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
