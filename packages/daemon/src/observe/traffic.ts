/**
 * Per-stream traffic, from nginx's stream access log. nginx writes one JSON line per finished
 * session (see ACCESS_LOG_FORMAT in nginx/access-log.ts); the daemon reads each log as it grows
 * (observe/log-tail.ts, which keeps the files bounded on disk by rotating them) and adds the lines
 * up per port.
 */
import type { RouteStats, TrafficStats } from '@stream-conductor/shared';

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
  /** A port that routes by server name: the id of the route the session took ('' for none). */
  route?: string;
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
      ...(typeof value.route === 'string' ? { route: value.route } : {}),
    };
  } catch {
    return undefined;
  }
}

function emptyStats(): TrafficStats {
  return { sessions: 0, failedSessions: 0, deniedSessions: 0, limitedSessions: 0, bytesIn: 0, bytesOut: 0 };
}

type RouteTotals = Omit<RouteStats, 'route'>;

function emptyRouteTotals(): RouteTotals {
  return { sessions: 0, failedSessions: 0, bytesIn: 0, bytesOut: 0 };
}

/** The later of a recorded time and nginx's time of a line (local time with its offset), as UTC. */
function later(recorded: string | undefined, t: string): string | undefined {
  const at = Date.parse(t);
  if (Number.isNaN(at) || (recorded !== undefined && at <= Date.parse(recorded))) return recorded;
  return new Date(at).toISOString();
}

/** The running totals of every port (and route) since the daemon started (or since the stream was created). */
export class TrafficCounter {
  private readonly byPort = new Map<number, TrafficStats>();
  private readonly byRoute = new Map<number, Map<string, RouteTotals>>();

  add(line: AccessLine): void {
    const stats = this.byPort.get(line.port) ?? emptyStats();
    stats.sessions += 1;
    if (line.status === 403) stats.deniedSessions += 1;
    // 503 is what nginx's stream module logs for a session refused by limit_conn, and only then.
    else if (line.status === 503) stats.limitedSessions += 1;
    else if (line.status >= 500) stats.failedSessions += 1;
    stats.bytesIn += line.in;
    stats.bytesOut += line.out;
    const last = later(stats.lastSessionAt, line.t);
    if (last !== undefined) stats.lastSessionAt = last;
    this.byPort.set(line.port, stats);
    // A session the allow-list or a limit refused never reached the choice of a route (those come
    // before nginx reads the TLS hello): it is the port's only.
    if (line.route !== undefined && line.route !== '' && line.status !== 403 && line.status !== 503) {
      const routes = this.byRoute.get(line.port) ?? new Map<string, RouteTotals>();
      const route = routes.get(line.route) ?? emptyRouteTotals();
      route.sessions += 1;
      if (line.status >= 500) route.failedSessions += 1;
      route.bytesIn += line.in;
      route.bytesOut += line.out;
      const routeLast = later(route.lastSessionAt, line.t);
      if (routeLast !== undefined) route.lastSessionAt = routeLast;
      routes.set(line.route, route);
      this.byRoute.set(line.port, routes);
    }
  }

  get(port: number): TrafficStats {
    return { ...(this.byPort.get(port) ?? emptyStats()) };
  }

  /** The finished sessions of one route of a port (by its id: the server name, @default, @no-tls). */
  route(port: number, id: string): RouteStats {
    return { route: id, ...(this.byRoute.get(port)?.get(id) ?? emptyRouteTotals()) };
  }

  /** A new stream on a port starts from zero. */
  reset(port: number): void {
    this.byPort.delete(port);
    this.byRoute.delete(port);
  }

  ports(): number[] {
    return [...this.byPort.keys()];
  }
}
