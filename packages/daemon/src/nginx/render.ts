/**
 * Pure functions from the stream model to nginx configuration text, and back from file names and
 * old-format files to the model. Nothing here touches the disk. Only values that passed the
 * shared validators reach these functions, and every value is checked once more on the way out:
 * a port is an integer, a backend is re-parsed, an address is an IP literal.
 */
import { isIP } from 'node:net';
import {
  type BackendSpec,
  backendForPort,
  backendHost,
  formatDuration,
  formatPorts,
  LIMITS,
  PROFILE_BUFFER,
  parseBackend,
  parseCidr,
  portsOf,
  protocolsOf,
  routeId,
  type StreamRecord,
  type StreamSpec,
  simpleSpec,
  usesTls,
} from '@stream-conductor/shared';
import { ACCESS_LOG_FORMAT, ACCESS_LOG_FORMAT_NAME, routeLogFormat, routeLogFormatName } from './access-log.js';

export interface StreamRenderOptions {
  /** Address to listen on; undefined listens on every IPv4 address. */
  listenAddress: string | undefined;
  /** Where nginx logs each session (the daemon counts traffic from it); undefined: no log. */
  accessLog?: string | undefined;
}

export function streamFileName(prefix: string, port: number): string {
  return `${prefix}${port}.conf`;
}

/** The port of one of our per-stream file names, or undefined when the name is not ours. */
export function portOfStreamFileName(prefix: string, name: string): number | undefined {
  if (!name.startsWith(prefix) || !name.endsWith('.conf')) return undefined;
  const middle = name.slice(prefix.length, -'.conf'.length);
  if (!/^[1-9][0-9]{0,4}$/.test(middle)) return undefined;
  const port = Number(middle);
  return port <= 65535 ? port : undefined;
}

export function renderListen(port: number, address: string | undefined): string {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`refusing to render port ${String(port)}`);
  if (address === undefined) return `${port}`;
  const family = isIP(address);
  if (family === 4) return `${address}:${port}`;
  if (family === 6) return `[${address}]:${port}`;
  throw new Error(`refusing to render listen address ${JSON.stringify(address)}`);
}

/** The name of the upstream block of a stream that needs one. */
export function upstreamName(port: number): string {
  return `conductor_${port}`;
}

/**
 * The shared-memory zones that count a stream's sessions: all of them, and per client address. A
 * range's zones carry its last port too (their key differs from a single port's: see limitZones).
 */
export function limitZoneNames(port: number, portEnd?: number): { total: string; perClient: string } {
  const name = portEnd === undefined ? `conductor_${port}` : `conductor_${port}_${portEnd}`;
  return { total: `${name}_sessions`, perClient: `${name}_clients` };
}

/**
 * The zones of a stream's session limits, at the stream{} level of its own file. Their names and
 * sizes never change for a port, so a reload keeps their counts. The per-client zone holds about
 * 16,000 client addresses (1 MiB); when it is full nginx refuses new clients as over the limit.
 */
function limitZones(record: StreamRecord): string[] {
  const zones = limitZoneNames(record.port, record.portEnd);
  const lines: string[] = [];
  // 1 MiB each: nginx wants at least 8 pages, and pages are 64 KiB on some kernels.
  if (record.maxConnections !== undefined) lines.push(`limit_conn_zone $server_port zone=${zones.total}:1m;`);
  // A range's limits hold for each of its ports: the client's address with the port it came to.
  const client = record.portEnd === undefined ? '$binary_remote_addr' : '$binary_remote_addr$server_port';
  if (record.maxConnectionsPerClient !== undefined) lines.push(`limit_conn_zone ${client} zone=${zones.perClient}:1m;`);
  return lines;
}

/** Whether the stream needs an upstream block: several backends, weights, backups or a balancing method. */
function needsUpstream(spec: StreamSpec): boolean {
  const [first] = spec.backends;
  return (
    spec.backends.length > 1 || spec.balance !== 'round-robin' || first?.weight !== undefined || first?.backup === true
  );
}

/**
 * The include file of one stream. Every value is checked again on the way out, so that even a
 * definition that bypassed the API (a hand-edited store) cannot put syntax into nginx's files.
 * Labels and the description never reach nginx.
 */
export function renderStreamFile(record: StreamRecord, options: StreamRenderOptions): string {
  const port = record.port;
  const backends = record.backends.map((backend) => ({ ...backend, address: parseBackend(backend.address).address }));
  if (backends.length === 0) throw new Error(`stream ${port} has no backend`);
  const created = /^[0-9T:.Z+-]+$/.test(record.createdAt) ? ` (created ${record.createdAt})` : '';
  const lines = [
    // The first port alone: a bundle finds each stream's part by this line (stream-files.ts).
    `# stream-conductor: port ${port} -> ${backends.map((backend) => backend.address).join(', ')}${created}`,
  ];
  lines.push('# Generated file: change streams through the conductor API, not here.');
  if (record.portEnd !== undefined)
    lines.push(`# Ports ${formatPorts(record)}: one server per port, each to its backends' port shifted as far.`);
  lines.push(...limitZones(record));
  if (record.routes !== undefined) {
    lines.push(...renderRoutes(record, options), '');
    return lines.join('\n');
  }
  // A range is one server block per port (nginx has no port arithmetic, and a variable in
  // proxy_pass would need a resolver for a backend name): see BENCHMARKS.md, port ranges.
  for (const each of portsOf(record)) {
    const shifted = backends.map((backend) => ({ ...backend, address: backendForPort(backend.address, record, each) }));
    lines.push(...renderServer(record, each, shifted, options));
  }
  lines.push('');
  return lines.join('\n');
}

/** The upstream (when needed) and server block of one port of a stream. */
function renderServer(
  record: StreamRecord,
  port: number,
  backends: BackendSpec[],
  options: StreamRenderOptions,
): string[] {
  const lines: string[] = [];
  if (needsUpstream(record)) {
    lines.push(`upstream ${upstreamName(port)} {`);
    if (record.balance === 'least-conn') lines.push('    least_conn;');
    if (record.balance === 'hash-ip') lines.push('    hash $remote_addr consistent;');
    for (const backend of backends) {
      const weight = backend.weight === undefined ? '' : ` weight=${integer(backend.weight, 1, 1000)}`;
      lines.push(`    server ${backend.address}${weight}${backend.backup ? ' backup' : ''};`);
    }
    lines.push('}');
  }
  lines.push('server {');
  lines.push(...renderServerBody(record, port, backends, options));
  lines.push(`    proxy_pass ${needsUpstream(record) ? upstreamName(port) : (backends[0] as BackendSpec).address};`);
  lines.push('}');
  return lines;
}

/** The upstream block of one route of a port that routes by server name. */
function renderRouteUpstream(record: StreamRecord, name: string, backends: BackendSpec[]): string[] {
  const lines = [`upstream ${name} {`];
  if (record.balance === 'least-conn') lines.push('    least_conn;');
  if (record.balance === 'hash-ip') lines.push('    hash $remote_addr consistent;');
  for (const backend of backends) {
    const address = parseBackend(backend.address).address;
    const weight = backend.weight === undefined ? '' : ` weight=${integer(backend.weight, 1, 1000)}`;
    lines.push(`    server ${address}${weight}${backend.backup ? ' backup' : ''};`);
  }
  lines.push('}');
  return lines;
}

/**
 * A server name as a map key: checked again (lowercase labels, an optional leading *.), and
 * escaped. nginx reads some first words of a map line as its own parameters (`default`, `include`,
 * `hostnames`, `volatile`), so a route named `default` would become the catch-all and one named
 * `include` a file to read; a key that starts with a backslash is always a key (nginx drops the
 * backslash, then reads the wildcard). The backslash is written doubled: nginx's configuration
 * reader turns `\\` into one and would read `\t` of a name starting with t as a tab.
 */
function mapName(name: string | undefined): string {
  if (name === undefined || !/^(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(name) || name.includes('..'))
    throw new Error(`refusing to render server name ${JSON.stringify(name)}`);
  return `\\\\${name}`;
}

/**
 * The hash bucket of the maps that route by server name: nginx's default (one cache line, 64
 * bytes) holds exact names of at most 46 characters, and refuses the whole configuration for a
 * longer one; 512 holds the longest name a route may have (253).
 */
export const MAP_HASH_BUCKET_SIZE = 'map_hash_bucket_size 512;';

/**
 * A port that routes by server name (see shared/sni.ts): nginx reads the TLS hello (ssl_preread),
 * a map on the name picks a route's upstream (exact, then the longest leading wildcard, then the
 * default), a second map on the protocol sends a client that sent no hello to the no-tls route.
 * proxy_pass names an upstream block of this file, so nginx never resolves a name. A name that
 * matches nothing with no default route goes to an upstream whose one server is down: nginx
 * closes the connection ("no live upstreams").
 */
function renderRoutes(record: StreamRecord, options: StreamRenderOptions): string[] {
  const port = record.port;
  if (record.protocol !== 'tcp' || record.portEnd !== undefined || usesTls(record))
    throw new Error(`refusing to render routes on stream ${port}`);
  const routes = record.routes ?? [];
  if (routes.length === 0) throw new Error(`stream ${port} has no route`);
  const base = upstreamName(port);
  const lines: string[] = [];
  const none = `${base}_none`;
  lines.push(`upstream ${none} {`, '    server 127.0.0.1:1 down;', '}');
  let fallback = none;
  let noTls: string | undefined;
  const names: string[] = [];
  // The same choice again, giving the route's id for the access log (its per-route traffic):
  // an empty id for a session no route took (closed).
  let fallbackId = '';
  let noTlsId: string | undefined;
  const nameIds: string[] = [];
  for (const [index, route] of routes.entries()) {
    const upstream = `${base}_r${index}`;
    if (route.backends.length === 0) throw new Error(`stream ${port}: a route has no backend`);
    lines.push(...renderRouteUpstream(record, upstream, route.backends));
    const id = `"${routeId(route)}"`; // a checked server name, @default or @no-tls
    if (route.kind === 'default') [fallback, fallbackId] = [upstream, id];
    else if (route.kind === 'no-tls') [noTls, noTlsId] = [upstream, id];
    else {
      names.push(`    ${mapName(route.name)} ${upstream};`);
      nameIds.push(`    ${mapName(route.name)} ${id};`);
    }
  }
  const byName = `$${base}_sni`;
  lines.push(`map $ssl_preread_server_name ${byName} {`, '    hostnames;', ...names, `    default ${fallback};`, '}');
  lines.push(`map $ssl_preread_protocol $${base}_route {`);
  lines.push(`    "" ${noTls ?? fallback};`, `    default ${byName};`, '}');
  if (options.accessLog !== undefined) {
    const idByName = `$${base}_sni_id`;
    lines.push(`map $ssl_preread_server_name ${idByName} {`, '    hostnames;', ...nameIds);
    lines.push(`    default ${fallbackId === '' ? '""' : fallbackId};`, '}');
    lines.push(`map $ssl_preread_protocol $${base}_route_id {`);
    lines.push(`    "" ${noTlsId ?? (fallbackId === '' ? '""' : fallbackId)};`, `    default ${idByName};`, '}');
    lines.push(routeLogFormat(port, `$${base}_route_id`));
  }
  lines.push('server {');
  lines.push(...renderServerBody(record, port, record.backends, options, routeLogFormatName(port)));
  lines.push('    ssl_preread on;');
  lines.push(`    proxy_pass $${base}_route;`);
  lines.push('}');
  return lines;
}

/** What a server block says besides its proxy_pass: listen, TLS, allow, timeouts, limits, buffers, log (in `logFormat`). */
function renderServerBody(
  record: StreamRecord,
  port: number,
  backends: BackendSpec[],
  options: StreamRenderOptions,
  logFormat = ACCESS_LOG_FORMAT_NAME,
): string[] {
  const listenAddress = record.listenAddress ?? options.listenAddress;
  const lines: string[] = [];
  for (const protocol of protocolsOf(record)) {
    const ssl = protocol === 'tcp' && record.tlsCert !== undefined ? ' ssl' : '';
    lines.push(`    listen ${renderListen(port, listenAddress)}${protocol === 'udp' ? ' udp' : ''}${ssl};`);
  }
  lines.push(...renderTls(record, backends));
  if (record.allow.length > 0) {
    for (const network of record.allow) lines.push(`    allow ${parseCidr(network)};`);
    lines.push('    deny all;');
  }
  if (record.connectTimeoutMs !== undefined)
    lines.push(`    proxy_connect_timeout ${formatDuration(integer(record.connectTimeoutMs, 1, LIMITS.durationMs))};`);
  if (record.idleTimeoutMs !== undefined)
    lines.push(`    proxy_timeout ${formatDuration(integer(record.idleTimeoutMs, 1, LIMITS.durationMs))};`);
  if (record.proxyProtocol) lines.push('    proxy_protocol on;');
  const zones = limitZoneNames(record.port, record.portEnd);
  if (record.maxConnections !== undefined)
    lines.push(`    limit_conn ${zones.total} ${integer(record.maxConnections, 1, LIMITS.connections)};`);
  if (record.maxConnectionsPerClient !== undefined)
    lines.push(`    limit_conn ${zones.perClient} ${integer(record.maxConnectionsPerClient, 1, LIMITS.connections)};`);
  // Sessions refused by a limit are counted from the access log (status 503); nginx's own line for
  // each at error level would fill the error log under a flood.
  if (record.maxConnections !== undefined || record.maxConnectionsPerClient !== undefined)
    lines.push('    limit_conn_log_level info;');
  if (record.uploadRate !== undefined)
    lines.push(`    proxy_upload_rate ${integer(record.uploadRate, 1, LIMITS.rate)};`);
  if (record.downloadRate !== undefined)
    lines.push(`    proxy_download_rate ${integer(record.downloadRate, 1, LIMITS.rate)};`);
  if (record.protocol !== 'udp') {
    lines.push(`    proxy_buffer_size ${PROFILE_BUFFER[record.profile ?? 'default']};`);
    // A client that shuts down its sending side (nc -q, `printf ... | nc`) still gets the reply,
    // as it would on a direct connection: nginx passes the half-close on instead of closing both.
    lines.push('    proxy_half_close on;');
  }
  if (options.accessLog !== undefined) lines.push(`    access_log ${nginxPath(options.accessLog)} ${logFormat};`);
  return lines;
}

const HOST_NAME = /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/;

/**
 * TLS at the edge and to the backends. nginx reads the daemon's checked copies (tlsMaterial), never
 * the operator's files; a stream that names files but has no copies is not rendered.
 */
export function renderTls(record: StreamRecord, backends: BackendSpec[]): string[] {
  const lines: string[] = [];
  const material = record.tlsMaterial;
  if (record.tlsCert !== undefined) {
    if (record.protocol !== 'tcp') throw new Error(`refusing to render TLS on a ${record.protocol} stream`);
    if (material?.cert === undefined || material.key === undefined)
      throw new Error(`stream ${record.port}: its TLS files were not checked`);
    lines.push(`    ssl_certificate ${nginxPath(material.cert)};`);
    lines.push(`    ssl_certificate_key ${nginxPath(material.key)};`);
    lines.push('    ssl_protocols TLSv1.2 TLSv1.3;');
    lines.push('    ssl_handshake_timeout 10s;');
  }
  if (record.backendTls === true) {
    if (record.protocol !== 'tcp') throw new Error(`refusing to render TLS on a ${record.protocol} stream`);
    lines.push('    proxy_ssl on;');
    lines.push('    proxy_ssl_protocols TLSv1.2 TLSv1.3;');
    const first = backends[0] as BackendSpec;
    const name = record.backendName ?? backendHost(first.address);
    if (!HOST_NAME.test(name) && isIP(name) === 0)
      throw new Error(`refusing to render backend name ${JSON.stringify(name)}`);
    lines.push('    proxy_ssl_server_name on;');
    lines.push(`    proxy_ssl_name ${name};`);
    if (record.backendVerify !== false) {
      if (material?.ca === undefined) throw new Error(`stream ${record.port}: its backend CA was not checked`);
      lines.push('    proxy_ssl_verify on;');
      lines.push('    proxy_ssl_verify_depth 4;');
      lines.push(`    proxy_ssl_trusted_certificate ${nginxPath(material.ca)};`);
    }
  }
  return lines;
}

function integer(value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) throw new Error(`refusing to render ${String(value)}`);
  return value;
}

export interface MainConfOptions {
  pidFile: string;
  errorLog: string;
  /** Absolute path of the stream module to load, or undefined when nginx has it built in. */
  streamModule: string | undefined;
  /** The glob of the per-stream files. */
  includeGlob: string;
  workerConnections: number;
  workerRlimitNofile: number;
  /** Worker processes of this master: a number, or auto (one per core). */
  workerProcesses: number | 'auto';
}

const SAFE_PATH = /^[A-Za-z0-9_./@+=,:*-]+$/;

/** Whether a path can be written into nginx's configuration as it is. */
export function isNginxSafePath(path: string): boolean {
  return SAFE_PATH.test(path);
}

/** A path for nginx's configuration; refuses characters nginx would treat specially. */
export function nginxPath(path: string): string {
  if (!isNginxSafePath(path)) {
    throw new Error(
      `path ${JSON.stringify(path)} holds characters that cannot be written into nginx's configuration safely`,
    );
  }
  return path;
}

/**
 * The main configuration of a managed nginx. `daemon` is set on nginx's command line: off for a
 * master the daemon runs as its child, on for one started under the reaper (see ManagedNginx).
 */
export function renderMainConf(options: MainConfOptions): string {
  return [
    '# Generated by stream-conductor for the nginx it manages; rewritten at every start.',
    'master_process on;',
    `worker_processes ${options.workerProcesses === 'auto' ? 'auto' : integer(options.workerProcesses, 1, 64)};`,
    `pid ${nginxPath(options.pidFile)};`,
    `error_log ${nginxPath(options.errorLog)} warn;`,
    `worker_rlimit_nofile ${options.workerRlimitNofile};`,
    ...(options.streamModule === undefined ? [] : [`load_module ${nginxPath(options.streamModule)};`]),
    '',
    'events {',
    `    worker_connections ${options.workerConnections};`,
    '}',
    '',
    'stream {',
    `    ${ACCESS_LOG_FORMAT}`,
    `    ${MAP_HASH_BUCKET_SIZE}`,
    `    include ${nginxPath(options.includeGlob)};`,
    '}',
    '',
  ].join('\n');
}

/**
 * Connection limits sized so that a full port range always fits: every stream is one listening
 * socket in every worker, and each proxied session takes two connections.
 */
export function sizeConnections(
  rangeSize: number,
  hardNofileLimit: number | undefined,
): { workerConnections: number; workerRlimitNofile: number } {
  const sessionHeadroom = 4096;
  let workerConnections = rangeSize + 16 + sessionHeadroom;
  let workerRlimitNofile = workerConnections + 1024;
  if (hardNofileLimit !== undefined && workerRlimitNofile > hardNofileLimit) {
    workerRlimitNofile = hardNofileLimit;
    workerConnections = Math.max(rangeSize + 16, hardNofileLimit - 1024);
  }
  return { workerConnections, workerRlimitNofile };
}

/** External mode: the file that defines the access log format, included before the streams. */
export function logFormatFileName(prefix: string): string {
  return `${prefix}+log-format.conf`;
}

export function renderLogFormatFile(): string {
  return [
    '# stream-conductor: the format of the per-session access log its streams write, and the map',
    '# hash bucket its server-name routes need.',
    ACCESS_LOG_FORMAT,
    MAP_HASH_BUCKET_SIZE,
    '',
  ].join('\n');
}

export type LegacyParse = { spec: StreamSpec } | { error: string };

/**
 * Reads an old-format file `<prefix><port>-<backend>.conf` holding
 * `server { listen <port>; proxy_pass <backend>; }`. The file must say nothing else (comments
 * aside) and its backend must pass today's validation; anything else is refused, since the old
 * service wrote whatever it was sent.
 */
export function parseLegacyFile(prefix: string, name: string, content: string): LegacyParse | undefined {
  if (!name.startsWith(prefix) || !name.endsWith('.conf')) return undefined;
  const match = /^([0-9]+)-(.+)$/.exec(name.slice(prefix.length, -'.conf'.length));
  if (!match) return undefined;
  const body = content
    .split('\n')
    .filter((line) => !/^\s*#/.test(line))
    .join(' ')
    .trim();
  const server = /^server\s*\{\s*listen\s+([0-9]+)\s*;\s*proxy_pass\s+([^;\s{}]+)\s*;\s*\}$/.exec(body);
  if (!server) return { error: 'its content is not a plain `server { listen <port>; proxy_pass <backend>; }`' };
  const port = Number(server[1]);
  if (String(port) !== match[1]) return { error: `it listens on ${server[1]} but its name says ${match[1]}` };
  try {
    return { spec: simpleSpec(port, server[2] ?? '') };
  } catch (error) {
    return { error: (error as Error).message };
  }
}
