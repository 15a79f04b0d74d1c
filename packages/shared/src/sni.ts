/**
 * Routing by TLS server name (SNI) on a shared port. A port's `routes` send each connection to
 * the backends of the route its TLS hello matches; nginx reads the hello (ssl_preread) and passes
 * the TLS bytes through untouched (no termination). Precedence, as nginx's map `hostnames` does it:
 *
 *   1. a client that sends no TLS hello at all (SSH, plain HTTP): the no-tls route;
 *   2. the exact name (git.example.com);
 *   3. the longest matching leading wildcard: *.db.example.com matches a.db.example.com and
 *      x.y.db.example.com, not db.example.com itself; *.example.com loses to *.db.example.com;
 *   4. the default route: any other name, and a TLS hello without a name;
 *   5. no default route: the connection is closed (no DNS lookup, ever).
 *
 * Names are case-insensitive (kept lowercase); a trailing dot is refused (a hello never carries
 * one), as are IP literals (a hello never names an address: RFC 6066), `*` anywhere but a whole
 * first label, and labels that are not 1-63 letters, digits and inner hyphens.
 */
import { isIP } from 'node:net';
import type { PortSpan } from './port-ranges.js';
import { type BackendSpec, invalid, LIMITS, parseBackendEntry, type RouteSpec, type StreamSpec } from './spec.js';
import { shown } from './validate.js';

/** Most routes on one port. */
export const MAX_ROUTES = 64;

/** How a route is named in paths and the CLI: its server name, or @default / @no-tls. */
export const DEFAULT_ROUTE_ID = '@default';
export const NO_TLS_ROUTE_ID = '@no-tls';

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A server name to route by: lowercase, exact or *.suffix. Refused with the field and the value. */
export function parseServerName(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '')
    throw invalid(field, `must be a server name such as git.example.com or *.db.example.com, got ${shown(value)}`);
  if (value.length > 253) throw invalid(field, `is longer than 253 characters: ${shown(value.slice(0, 40))}...`);
  if (value.endsWith('.'))
    throw invalid(field, `${shown(value)} ends with a dot: a TLS hello names ${shown(value.slice(0, -1))}`);
  const name = value.toLowerCase();
  const bare = name.startsWith('[') && name.endsWith(']') ? name.slice(1, -1) : name;
  if (isIP(bare) !== 0)
    throw invalid(field, `${shown(value)} is an IP address: a TLS hello names hosts only (RFC 6066)`);
  const labels = name.split('.');
  const wildcard = labels[0] === '*';
  if (wildcard && labels.length < 2) throw invalid(field, `${shown(value)}: a wildcard is *.suffix`);
  for (const [index, label] of labels.entries()) {
    if (index === 0 && wildcard) continue;
    if (label.includes('*'))
      throw invalid(field, `${shown(value)}: * may only be the whole first label (*.example.com)`);
    if (!LABEL.test(label))
      throw invalid(
        field,
        `${shown(value)}: ${label === '' ? 'an empty label' : `label ${shown(label)}`} is not 1-63 letters, digits and inner hyphens`,
      );
  }
  if (!wildcard && labels.every((label) => /^[0-9]+$/.test(label)))
    throw invalid(field, `${shown(value)} is an IP address: a TLS hello names hosts only (RFC 6066)`);
  return name;
}

/** The id of a route in paths, messages and the CLI. */
export function routeId(route: Pick<RouteSpec, 'kind' | 'name'>): string {
  if (route.kind === 'default') return DEFAULT_ROUTE_ID;
  if (route.kind === 'no-tls') return NO_TLS_ROUTE_ID;
  return route.name ?? '';
}

/** How lists show a route's match: the name, (default) or (no TLS). */
export function routeLabel(route: Pick<RouteSpec, 'kind' | 'name'>): string {
  if (route.kind === 'default') return '(default)';
  if (route.kind === 'no-tls') return '(no TLS)';
  return route.name ?? '';
}

const ROUTE_FIELDS = ['sni', 'default', 'noTls', 'kind', 'name', 'backend', 'backends'];

/** One route as a client sends it: {sni, backend(s)}, {default: true, ...}, {noTls: true, ...} or as the API shows it. */
export function parseRoute(value: unknown, field: string, span: PortSpan): RouteSpec {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw invalid(field, 'a route is {sni: NAME, backend}, {default: true, backend} or {noTls: true, backend}');
  const body = value as Record<string, unknown>;
  for (const key of Object.keys(body))
    if (!ROUTE_FIELDS.includes(key))
      throw invalid(`${field}.${key}`, `unknown field (known: ${ROUTE_FIELDS.join(', ')})`);
  const ways: RouteSpec[] = [];
  if (body.sni !== undefined)
    ways.push({ kind: 'name', name: parseServerName(body.sni, `${field}.sni`), backends: [] });
  if (body.default !== undefined) {
    if (body.default !== true) throw invalid(`${field}.default`, `must be true, got ${shown(body.default)}`);
    ways.push({ kind: 'default', backends: [] });
  }
  if (body.noTls !== undefined) {
    if (body.noTls !== true) throw invalid(`${field}.noTls`, `must be true, got ${shown(body.noTls)}`);
    ways.push({ kind: 'no-tls', backends: [] });
  }
  if (body.kind !== undefined) {
    if (body.kind === 'name')
      ways.push({ kind: 'name', name: parseServerName(body.name, `${field}.name`), backends: [] });
    else if (body.kind === 'default' || body.kind === 'no-tls') ways.push({ kind: body.kind, backends: [] });
    else throw invalid(`${field}.kind`, `must be name, default or no-tls, got ${shown(body.kind)}`);
  } else if (body.name !== undefined) throw invalid(`${field}.name`, 'goes with kind: name (or give sni)');
  const [route, second] = ways;
  if (route === undefined) throw invalid(field, 'says nothing to match: give sni, default: true or noTls: true');
  if (second !== undefined) throw invalid(field, 'give one of sni, default: true, noTls: true (or kind)');
  if (body.backend !== undefined && body.backends !== undefined)
    throw invalid(`${field}.backend`, 'give either backend or backends, not both');
  if (body.backends !== undefined) {
    if (!Array.isArray(body.backends) || body.backends.length === 0)
      throw invalid(`${field}.backends`, 'must be a non-empty list');
    if (body.backends.length > LIMITS.backends)
      throw invalid(`${field}.backends`, `at most ${LIMITS.backends} backends`);
    route.backends = body.backends.map((entry, index) => parseBackendEntry(entry, `${field}.backends[${index}]`, span));
  } else if (body.backend !== undefined) {
    route.backends = [parseBackendEntry(body.backend, `${field}.backend`, span)];
  } else throw invalid(`${field}.backend`, 'is required: host:port (or backends: a list)');
  const seen = new Set<string>();
  for (const backend of route.backends) {
    if (seen.has(backend.address)) throw invalid(`${field}.backends`, `${backend.address} appears twice`);
    seen.add(backend.address);
  }
  if (route.backends.every((backend) => backend.backup))
    throw invalid(`${field}.backends`, 'at least one backend must not be a backup');
  return route;
}

/** A port's routes: at most MAX_ROUTES, each name once, one default and one no-tls route at most. */
export function parseRoutes(value: unknown, span: PortSpan): RouteSpec[] {
  if (!Array.isArray(value) || value.length === 0)
    throw invalid(
      'routes',
      'must be a non-empty list of routes such as {sni: "git.example.com", backend: "10.0.0.5:22"}',
    );
  if (value.length > MAX_ROUTES) throw invalid('routes', `at most ${MAX_ROUTES} routes on a port, got ${value.length}`);
  const routes = value.map((entry, index) => parseRoute(entry, `routes[${index}]`, span));
  const seen = new Set<string>();
  for (const [index, route] of routes.entries()) {
    const id = routeId(route);
    if (seen.has(id))
      throw invalid(`routes[${index}]`, `${id} appears twice: each name, default and no-tls once per port`);
    seen.add(id);
  }
  return routes;
}

/** Every route's backends together (each address once): the stream's `backends`. */
export function routeBackends(routes: RouteSpec[]): BackendSpec[] {
  const all = new Map<string, BackendSpec>();
  for (const route of routes)
    for (const backend of route.backends) if (!all.has(backend.address)) all.set(backend.address, backend);
  return [...all.values()];
}

/**
 * A body with routes may repeat the `backends` the API showed (a GET sent back as a PUT), but may
 * not give others: the routes say where connections go.
 */
export function checkRouteBackendsEcho(body: Record<string, unknown>, backends: BackendSpec[]): void {
  const given = body.backends ?? (body.backend === undefined ? undefined : [body.backend]);
  if (given === undefined) return;
  const addresses = Array.isArray(given)
    ? given.map((entry) =>
        typeof entry === 'object' && entry !== null ? (entry as { address?: unknown }).address : entry,
      )
    : [];
  const expected = backends.map((backend) => backend.address);
  if (addresses.length !== expected.length || addresses.some((address, index) => address !== expected[index]))
    throw invalid(
      body.backends === undefined ? 'backend' : 'backends',
      'a stream with routes takes its backends from its routes: leave backend(s) out',
    );
}

/** What a port with routes may not be: SNI routing is TCP, one port, TLS passed through. */
export function checkRoutesFit(spec: StreamSpec): void {
  if (spec.protocol !== 'tcp')
    throw invalid('protocol', `routes by server name are for TCP only (a TLS hello), not ${spec.protocol}`);
  if (spec.portEnd !== undefined)
    throw invalid('routes', `routes by server name take a single port, not the range ${spec.port}-${spec.portEnd}`);
  if (spec.tlsCert !== undefined)
    throw invalid(
      'tlsCert',
      'a port with routes passes TLS through untouched to its backends (no termination): leave tlsCert and tlsKey out',
    );
  if (spec.backendTls === true)
    throw invalid(
      'backendTls',
      'a port with routes passes the client’s TLS through: it cannot add TLS to the backends',
    );
}
