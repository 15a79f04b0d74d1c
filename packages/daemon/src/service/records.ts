/**
 * The small record rules both services (local and fleet) follow: a record's times, the spec
 * under a record, a renewal, and the view of a local entry.
 */
import {
  ConductorError,
  describeBackends,
  ErrorCode,
  formatPorts,
  MAX_ROUTES,
  type RouteSpec,
  routeBackends,
  routeId,
  type StreamRecord,
  type StreamSpec,
  type StreamView,
} from '@stream-conductor/shared';
import type { Entry } from '../nginx/instance.js';

/** The record `spec` becomes at `now`: a replacement keeps its creation time and gets an update time. */
export function stampRecord(spec: StreamSpec, existing: StreamRecord | undefined, now: Date): StreamRecord {
  const at = now.toISOString();
  return existing ? { ...spec, createdAt: existing.createdAt, updatedAt: at } : { ...spec, createdAt: at };
}

/** The definition under a record, without its times. */
export function specOf(record: StreamRecord): StreamSpec {
  const { createdAt: _created, updatedAt: _updated, drainingUntil: _draining, ...spec } = record;
  return spec;
}

/** The spec that renews `record` to `expiresAt` (undefined: it never expires). */
export function renewedSpec(record: StreamRecord, expiresAt: string | undefined): StreamSpec {
  const spec = specOf(record);
  if (expiresAt === undefined) delete spec.expiresAt;
  else spec.expiresAt = expiresAt;
  return spec;
}

/** How the APIs show a stream this host holds. */
export function viewOf(entry: Entry): StreamView {
  const stream: StreamView = { ...entry.record, state: entry.state };
  if (entry.reason !== undefined) stream.reason = entry.reason;
  return stream;
}

/** The spec of a port made by adding `route` to it while it has no stream: that route alone. */
export function portWithRoute(port: number, route: RouteSpec): StreamSpec {
  return {
    port,
    protocol: 'tcp',
    backends: routeBackends([route]),
    balance: 'round-robin',
    allow: [],
    proxyProtocol: false,
    labels: {},
    routes: [route],
  };
}

/**
 * The spec of `record` with `route` added: 409 when the port has a plain stream (or a range) or the
 * route's name already, 400 past MAX_ROUTES.
 */
export function withRoute(record: StreamRecord, route: RouteSpec, port: number): StreamSpec {
  if (record.routes === undefined || record.port !== port)
    throw new ConductorError(
      ErrorCode.Conflict,
      `port ${port} has a plain stream (${record.portEnd === undefined ? '' : `ports ${formatPorts(record)} `}to ${describeBackends(record.backends)}): it cannot take routes by server name`,
      {
        hint: `remove it first (conductor rm ${formatPorts(record)}), or replace it with a definition that has routes`,
      },
    );
  const id = routeId(route);
  const current = record.routes.find((each) => routeId(each) === id);
  if (current !== undefined)
    throw new ConductorError(
      ErrorCode.Conflict,
      `port ${port} already routes ${id} (to ${describeBackends(current.backends)})`,
      { hint: `remove that route first (conductor rm ${port} ${routeFlag(id)}), or replace the port's definition` },
    );
  if (record.routes.length >= MAX_ROUTES)
    throw new ConductorError(
      ErrorCode.InvalidInput,
      `routes: port ${port} has ${MAX_ROUTES} routes already, the most a port takes`,
    );
  const routes = [...record.routes, route];
  return { ...specOf(record), routes, backends: routeBackends(routes) };
}

/** The spec of `record` without the route `id`; undefined when it was the last one. 404 when it has no such route. */
export function withoutRoute(record: StreamRecord, id: string, port: number): StreamSpec | undefined {
  const routes = record.routes?.filter((route) => routeId(route) !== id);
  if (record.routes === undefined || routes === undefined || routes.length === record.routes.length)
    throw new ConductorError(
      ErrorCode.NotFound,
      record.routes === undefined
        ? `port ${port} has a plain stream, no routes by server name`
        : `port ${port} has no route ${id} (it routes ${record.routes.map(routeId).join(', ')})`,
    );
  if (routes.length === 0) return undefined;
  return { ...specOf(record), routes, backends: routeBackends(routes) };
}

/** The CLI flag that names a route. */
function routeFlag(id: string): string {
  if (id === '@default') return '--sni-default';
  if (id === '@no-tls') return '--plain';
  return `--sni ${id}`;
}
