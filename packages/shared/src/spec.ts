/**
 * The full definition of a stream and its validation. Everything a client sends goes through
 * parseStreamInput before it reaches the daemon's store or nginx's configuration; anything it does
 * not know, or cannot prove safe, is refused with the path of the offending field.
 */
import { isIPv6 } from 'node:net';
import { ConductorError, ErrorCode } from './errors.js';
import {
  checkRangeBackend,
  describeRangeBackend,
  isRangeText,
  type PortSpan,
  parsePortSpan,
  rangeBackendText,
} from './port-ranges.js';
import { checkRouteBackendsEcho, checkRoutesFit, parseRoutes, routeBackends, routeLabel } from './sni.js';
import { isIPv4, parseBackend, parsePort, quote, shown, unsafeCharacter } from './validate.js';

export const PROTOCOLS = ['tcp', 'udp', 'tcp+udp'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/**
 * default: 256 KiB proxy buffers (nginx's own default is 16 KiB), a good share of a direct
 * connection's throughput; throughput: 1 MiB buffers, for bulk transfers, at four times the
 * memory per busy session (see BENCHMARKS.md).
 */
export const PROFILES = ['default', 'throughput'] as const;
export type Profile = (typeof PROFILES)[number];

/** nginx's proxy_buffer_size for each profile (one buffer each way per session). */
export const PROFILE_BUFFER: Record<Profile, string> = { default: '256k', throughput: '1m' };

export const BALANCES = ['round-robin', 'least-conn', 'hash-ip'] as const;
/** round-robin (nginx's default), least-conn (fewest active connections), hash-ip (a client sticks to one backend). */
export type Balance = (typeof BALANCES)[number];

export interface BackendSpec {
  /** Canonical host:port. */
  address: string;
  /** Relative share of new connections, 1-1000; 1 when left out. */
  weight?: number;
  /** Used only when every other backend is down. */
  backup?: boolean;
}

/** A stream as a client defines it. */
export interface StreamSpec {
  /** The port, or the first port of a range. */
  port: number;
  /** A range's last port (inclusive); left out for a single port. See port-ranges.ts. */
  portEnd?: number;
  protocol: Protocol;
  backends: BackendSpec[];
  balance: Balance;
  /** Client networks allowed to connect (CIDRs); empty means everyone. */
  allow: string[];
  /** Time allowed to connect to a backend, in milliseconds (nginx's default: 60 s). */
  connectTimeoutMs?: number;
  /** A session idle this long is closed, in milliseconds (nginx's default: 10 min). */
  idleTimeoutMs?: number;
  /** Send the PROXY protocol header to the backend so that it sees the real client address. */
  proxyProtocol: boolean;
  /** Buffer sizes: default, or throughput for bulk transfers (more memory per session). */
  profile?: Profile;
  /** Address to listen on; the daemon's CONDUCTOR_LISTEN_ADDRESS when left out. */
  listenAddress?: string;
  labels: Record<string, string>;
  description?: string;
  /** ISO 8601 time at which the daemon removes the stream. */
  expiresAt?: string;
  /** Most sessions open at once, all clients together; more are refused (nginx's limit_conn). */
  maxConnections?: number;
  /** Most sessions open at once from one client address. */
  maxConnectionsPerClient?: number;
  /** Bytes per second read from the client, per session (nginx's proxy_upload_rate). */
  uploadRate?: number;
  /** Bytes per second sent to the client, per session (nginx's proxy_download_rate). */
  downloadRate?: number;
  /** TLS at the edge: the certificate chain (PEM) clients are shown; absolute path, with tlsKey. */
  tlsCert?: string;
  /** The private key (PEM) of tlsCert; absolute path. */
  tlsKey?: string;
  /** Speak TLS to the backends (nginx's proxy_ssl). */
  backendTls?: boolean;
  /** The CA certificates (PEM) a backend's certificate must chain to; absolute path. */
  backendCa?: string;
  /** The name a backend's certificate must carry (and the SNI sent); the backend's host when left out. */
  backendName?: string;
  /** false: the backend's certificate is not checked. Verified when left out. */
  backendVerify?: boolean;
  /**
   * Set by the daemon, never by a client: the copies of the TLS files it checked and serves, and
   * what their certificates say. A renewal of the operator's files gives a new set.
   */
  tlsMaterial?: TlsMaterial;
  /**
   * Routing by TLS server name (SNI) on this port: each route sends the connections it matches to
   * its own backends; the TLS bytes pass through untouched (nginx's ssl_preread). `backends` is then
   * every route's backends together (set by the daemon, for health checks and listings). See
   * sni.ts for the names and the precedence.
   */
  routes?: RouteSpec[];
}

/** What a route matches: a server name (exact or *.suffix), no match (default), or no TLS hello at all. */
export type RouteKind = 'name' | 'default' | 'no-tls';

/** One route of a port that routes by server name. */
export interface RouteSpec {
  kind: RouteKind;
  /** The server name, lowercase, for kind name: git.example.com or *.db.example.com. */
  name?: string;
  backends: BackendSpec[];
}

/** One certificate the daemon serves or trusts for a stream. */
export interface CertificateFacts {
  /** The field whose file holds it: tlsCert or backendCa. */
  field: 'tlsCert' | 'backendCa';
  subject: string;
  notBefore: string;
  /** ISO 8601 end of validity. */
  notAfter: string;
  fingerprint256: string;
}

/** The daemon's checked copies of a stream's TLS files. */
export interface TlsMaterial {
  /** Digest of the files' content: a new one whenever any of them changes. */
  id: string;
  cert?: string;
  key?: string;
  ca?: string;
  certificates: CertificateFacts[];
}

/** What a client may send: a spec with defaults left out, a single `backend`, a `ttl`. */
export interface StreamInput {
  /** A port, or a range such as "30000-30100". */
  port?: number | string;
  portEnd?: number | string;
  protocol?: Protocol;
  backend?: string;
  backends?: Array<string | { address: string; weight?: number; backup?: boolean }>;
  balance?: Balance;
  allow?: string[];
  connectTimeout?: string | number;
  idleTimeout?: string | number;
  proxyProtocol?: boolean;
  profile?: Profile;
  listenAddress?: string;
  labels?: Record<string, string>;
  description?: string;
  /** Time to live: seconds, or a duration such as 90s, 30m, 12h, 7d. */
  ttl?: string | number;
  expiresAt?: string;
  maxConnections?: number | string;
  maxConnectionsPerClient?: number | string;
  /** Bytes per second: a number, or digits with k, m or g (KiB, MiB, GiB), such as 512k or 10m. */
  uploadRate?: number | string;
  downloadRate?: number | string;
  tlsCert?: string;
  tlsKey?: string;
  backendTls?: boolean;
  backendCa?: string;
  backendName?: string;
  backendVerify?: boolean;
  /** Routing by server name: [{sni: "git.example.com", backend}, {default: true, backend}, {noTls: true, backend}]. */
  routes?: unknown[];
}

export const LIMITS = {
  backends: 32,
  weight: 1000,
  allow: 64,
  labels: 32,
  labelKey: 63,
  labelValue: 63,
  description: 256,
  /** Longest time to live or timeout: one year. */
  durationMs: 365 * 24 * 3600 * 1000,
  /** Most concurrent sessions a limit may name: nginx's stream limit_conn takes at most 65535. */
  connections: 65_535,
  /** Highest rate a limit may name: 10 GiB per second. */
  rate: 10 * 1024 ** 3,
} as const;

/** How long a drain waits for the sessions of a stream before it cuts them, when not told: 10 minutes. */
export const DEFAULT_DRAIN_MS = 10 * 60_000;

/** The TLS fields of a stream (see parseTls). */
export const TLS_FIELDS = ['tlsCert', 'tlsKey', 'backendTls', 'backendCa', 'backendName', 'backendVerify'] as const;

/** The host of a canonical host:port (an IPv6 address without its brackets). */
export function backendHost(address: string): string {
  const host = address.slice(0, address.lastIndexOf(':'));
  return host.startsWith('[') ? host.slice(1, -1) : host;
}

/** Whether a stream speaks TLS on either side. */
export function usesTls(spec: StreamSpec): boolean {
  return spec.tlsCert !== undefined || spec.backendTls === true;
}

const FIELDS = new Set<string>([
  'port',
  'portEnd',
  'protocol',
  'backend',
  'backends',
  'balance',
  'allow',
  'connectTimeout',
  'idleTimeout',
  'proxyProtocol',
  'profile',
  'listenAddress',
  'labels',
  'description',
  'ttl',
  'expiresAt',
  'maxConnections',
  'maxConnectionsPerClient',
  'uploadRate',
  'downloadRate',
  ...TLS_FIELDS,
  'routes',
]);

export function invalid(field: string, message: string, hint?: string): ConductorError {
  return new ConductorError(ErrorCode.InvalidInput, `${field}: ${message}`, { hint });
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Reads a duration: a number of seconds, or digits with a unit (ms, s, m, h, d). Milliseconds. */
export function parseDuration(value: unknown, field: string): number {
  let ms: number;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw invalid(field, 'must be a finite number of seconds');
    ms = Math.round(value * 1000);
  } else if (typeof value === 'string') {
    const match = /^([0-9]{1,10})(ms|s|m|h|d)?$/.exec(value);
    if (!match) throw invalid(field, `must be a duration such as 30s, 5m, 2h or 7d, got ${quote(value)}`);
    ms = Number(match[1]) * (UNITS[match[2] ?? 's'] ?? 1000);
  } else {
    throw invalid(field, 'must be a duration such as 30s, 5m, 2h or 7d');
  }
  if (ms < 1) throw invalid(field, 'must be at least 1 ms');
  if (ms > LIMITS.durationMs) throw invalid(field, 'must be at most 365 days');
  return ms;
}

/** Writes milliseconds as the shortest exact nginx time (500ms, 30s, 5m, 2h, 1d). */
export function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = UNITS[unit] as number;
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** Reads a count of sessions: a whole number, or its decimal digits, from 1 to LIMITS.connections. */
export function parseCount(value: unknown, field: string): number {
  const count =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && /^[1-9][0-9]{0,9}$/.test(value)
        ? Number(value)
        : NaN;
  if (!Number.isInteger(count) || count < 1 || count > LIMITS.connections)
    throw invalid(field, `must be a whole number of sessions from 1 to ${LIMITS.connections}, got ${shown(value)}`);
  return count;
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/**
 * Reads a rate in bytes per second: a whole number, or digits with k, m or g (KiB, MiB, GiB per
 * second, as nginx reads sizes), such as 512k or 10m. From 1 byte to LIMITS.rate.
 */
export function parseRate(value: unknown, field: string): number {
  let rate = NaN;
  if (typeof value === 'number') rate = value;
  else if (typeof value === 'string') {
    const match = /^([1-9][0-9]{0,10})([kKmMgG]?)$/.exec(value);
    if (match) rate = Number(match[1]) * (SIZE_UNITS[(match[2] ?? '').toLowerCase()] ?? NaN);
  }
  if (!Number.isInteger(rate) || rate < 1)
    throw invalid(field, `must be bytes per second such as 512k, 10m or 1g, got ${shown(value)}`);
  if (rate > LIMITS.rate) throw invalid(field, `must be at most 10g (10 GiB per second), got ${shown(value)}`);
  return rate;
}

/** A rate for people: 10 MiB/s, 512 KiB/s, 1000 B/s (exact units only). */
export function formatRate(bytesPerSecond: number): string {
  for (const [unit, size] of [
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ] as const) {
    if (bytesPerSecond % size === 0) return `${bytesPerSecond / size} ${unit}/s`;
  }
  return `${bytesPerSecond} B/s`;
}

/** RFC 5952 form of an IPv6 address (lowercase, longest zero run compressed, hex only). */
function canonicalIPv6(address: string): string {
  return new URL(`http://[${address}]/`).hostname.slice(1, -1);
}

function ipv6ToBigInt(address: string): bigint {
  const [head = '', tail] = canonicalIPv6(address).split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined
      ? left
      : [...left, ...Array.from({ length: 8 - left.length - right.length }, () => '0'), ...right];
  return groups.reduce((value, group) => (value << 16n) | BigInt(Number.parseInt(group, 16)), 0n);
}

function bigIntToIPv6(value: bigint): string {
  const groups = Array.from({ length: 8 }, (_, i) => ((value >> BigInt((7 - i) * 16)) & 0xffffn).toString(16));
  return canonicalIPv6(groups.join(':'));
}

/**
 * Parses a client network: an address (a single host) or address/prefix. The result is the
 * network in canonical form (host bits cleared), e.g. 10.1.2.3/8 becomes 10.0.0.0/8.
 */
export function parseCidr(value: unknown, field = 'allow'): string {
  if (typeof value !== 'string' || value.length > 64)
    throw invalid(field, `must be an IPv4 or IPv6 network such as 10.0.0.0/8, got ${shown(value)}`);
  const [address = '', prefixText, extra] = value.split('/');
  if (extra !== undefined) throw invalid(field, `${quote(value)} is not a network`);
  if (prefixText !== undefined && !/^(0|[1-9][0-9]{0,2})$/.test(prefixText))
    throw invalid(field, `${quote(value)} has an invalid prefix length`);
  if (isIPv4(address)) {
    const prefix = prefixText === undefined ? 32 : Number(prefixText);
    if (prefix > 32) throw invalid(field, `${quote(value)}: an IPv4 prefix is at most 32`);
    const word = address.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
    const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    const network = (word & mask) >>> 0;
    return `${[network >>> 24, (network >>> 16) & 255, (network >>> 8) & 255, network & 255].join('.')}/${prefix}`;
  }
  if (!address.includes('%') && isIPv6(address)) {
    const prefix = prefixText === undefined ? 128 : Number(prefixText);
    if (prefix > 128) throw invalid(field, `${quote(value)}: an IPv6 prefix is at most 128`);
    const all = (1n << 128n) - 1n;
    const mask = prefix === 0 ? 0n : (all << BigInt(128 - prefix)) & all;
    return `${bigIntToIPv6(ipv6ToBigInt(address) & mask)}/${prefix}`;
  }
  throw invalid(field, `must be an IPv4 or IPv6 network such as 10.0.0.0/8, got ${quote(value)}`);
}

/** An IP literal to listen on (brackets allowed around IPv6), canonical and without brackets. */
export function parseListenAddress(value: unknown, field = 'listenAddress'): string {
  if (typeof value !== 'string') throw invalid(field, 'must be an IPv4 or IPv6 address');
  const bare = value.startsWith('[') && value.endsWith(']') ? value.slice(1, -1) : value;
  if (isIPv4(bare)) return bare;
  if (!bare.includes('%') && isIPv6(bare)) return canonicalIPv6(bare);
  throw invalid(field, `must be an IPv4 or IPv6 address, got ${quote(value)}`);
}

const LABEL_KEY = /^[a-z0-9]([a-z0-9._/-]{0,62})$/;
const LABEL_VALUE = /^[A-Za-z0-9._:/@+-]{0,63}$/;

export function parseLabels(value: unknown, field = 'labels'): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw invalid(field, 'must be an object of key: value');
  const entries = Object.entries(value as Record<string, unknown>);
  if (entries.length > LIMITS.labels) throw invalid(field, `at most ${LIMITS.labels} labels`);
  const labels: Record<string, string> = {};
  for (const [key, text] of entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (!LABEL_KEY.test(key))
      throw invalid(
        `${field}.${key}`,
        'a label key is 1-63 lowercase letters, digits, and . _ / - inside',
        'e.g. env, team, owner',
      );
    if (typeof text !== 'string' || !LABEL_VALUE.test(text)) {
      throw invalid(`${field}.${key}`, 'a label value is up to 63 letters, digits and . _ : / @ + -');
    }
    labels[key] = text;
  }
  return labels;
}

/** Reads a label selector `key=value` (as in `conductor ls --label env=prod`). */
export function parseLabelSelector(value: string): [string, string] {
  const equals = value.indexOf('=');
  if (equals < 1) throw invalid('label', `a selector is key=value, got ${quote(value)}`);
  const key = value.slice(0, equals);
  const labels = parseLabels({ [key]: value.slice(equals + 1) }, 'label');
  return [key, labels[key] ?? ''];
}

export function parseBackendEntry(value: unknown, field: string, span: PortSpan): BackendSpec {
  if (typeof value === 'string') return { address: checkedBackend(rangeBackendText(value, span), field, span) };
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw invalid(field, 'must be host:port or {address, weight, backup}');
  const { address, weight, backup, ...rest } = value as Record<string, unknown>;
  const unknown = Object.keys(rest);
  if (unknown.length > 0)
    throw invalid(`${field}.${unknown[0]}`, 'unknown field (address, weight and backup are known)');
  if (typeof address !== 'string') throw invalid(`${field}.address`, 'is required: host:port');
  const backend: BackendSpec = { address: checkedBackend(rangeBackendText(address, span), `${field}.address`, span) };
  if (weight !== undefined) {
    if (typeof weight !== 'number' || !Number.isInteger(weight) || weight < 1 || weight > LIMITS.weight) {
      throw invalid(`${field}.weight`, `must be a whole number from 1 to ${LIMITS.weight}`);
    }
    if (weight !== 1) backend.weight = weight;
  }
  if (backup !== undefined) {
    if (typeof backup !== 'boolean') throw invalid(`${field}.backup`, 'must be true or false');
    if (backup) backend.backup = true;
  }
  return backend;
}

function checkedBackend(text: string, field: string, span: PortSpan): string {
  try {
    const address = parseBackend(text).address;
    checkRangeBackend(address, span, field);
    return address;
  } catch (error) {
    // parseBackend's messages already start with "backend": only a deeper field needs its path.
    if (error instanceof ConductorError && field !== 'backend') {
      throw new ConductorError(ErrorCode.InvalidInput, `${field}: ${error.message}`, { hint: error.hint });
    }
    throw error;
  }
}

function choice<T extends string>(value: unknown, allowed: readonly T[], field: string): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalid(field, `must be one of ${allowed.join(', ')}, got ${shown(value)}`);
  }
  return value as T;
}

export interface ParseOptions {
  /** The port from the URL, when the body may leave it out. */
  port?: number;
  /** The last port, when the URL names a range (30000-30100). */
  portEnd?: number;
  /** Whether a missing port is allowed (the daemon picks one). */
  portOptional?: boolean;
  /** "Now", to turn a ttl into expiresAt. */
  now: Date;
}

/** What parseStreamInput returns: a spec, with port 0 when the daemon is to pick one. */
export function parseStreamInput(input: unknown, options: ParseOptions): StreamSpec {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConductorError(ErrorCode.InvalidInput, 'a stream must be a JSON object');
  }
  const body = input as Record<string, unknown>;
  for (const key of Object.keys(body)) {
    if (!FIELDS.has(key)) throw invalid(key, `unknown field (known: ${[...FIELDS].join(', ')})`);
  }

  let port = 0;
  let portEnd: number | undefined;
  if (body.port !== undefined && body.port !== null) {
    if (typeof body.port !== 'number' && typeof body.port !== 'string')
      throw invalid('port', 'must be a whole number from 1 to 65535');
    if (typeof body.port === 'string' && isRangeText(body.port)) ({ port, portEnd } = parsePortSpan(body.port));
    else port = parsePort(body.port);
    if (options.port !== undefined && port !== options.port)
      throw invalid('port', `the body says ${port} but the path says ${options.port}`);
  } else if (options.port !== undefined) {
    port = options.port;
  } else if (!options.portOptional) {
    throw invalid('port', 'is required: a whole number from 1 to 65535');
  }
  if (body.portEnd !== undefined && body.portEnd !== null) {
    if (portEnd !== undefined) throw invalid('portEnd', 'give either port "FIRST-LAST" or portEnd, not both');
    if (port === 0) throw invalid('portEnd', 'a range needs its first port (port)');
    if (typeof body.portEnd !== 'number' && typeof body.portEnd !== 'string')
      throw invalid('portEnd', 'must be a whole number from 1 to 65535');
    ({ port, portEnd } = parsePortSpan(`${port}-${String(body.portEnd)}`, 'portEnd'));
  }
  // A path FIRST-LAST gives the last port to a body that names no span of its own (no port, or the
  // first port alone, and no portEnd); a body that names one must name the same.
  const bodyNamesSpan =
    (body.portEnd !== undefined && body.portEnd !== null) || (typeof body.port === 'string' && isRangeText(body.port));
  if (options.portEnd !== undefined && !bodyNamesSpan) portEnd = options.portEnd;
  if (options.port !== undefined && options.portEnd !== undefined && portEnd !== options.portEnd)
    throw invalid(
      'port',
      `the body names ${portEnd === undefined ? `port ${port}` : `ports ${port}-${portEnd}`} but the path names ${options.port}-${options.portEnd}`,
    );
  const span: PortSpan = portEnd === undefined ? { port } : { port, portEnd };

  if (body.backend !== undefined && body.backends !== undefined)
    throw invalid('backend', 'give either backend or backends, not both');
  let backends: BackendSpec[];
  const routes = body.routes === undefined ? undefined : parseRoutes(body.routes, span);
  if (routes !== undefined) {
    backends = routeBackends(routes);
    checkRouteBackendsEcho(body, backends);
  } else if (body.backends !== undefined) {
    if (!Array.isArray(body.backends) || body.backends.length === 0)
      throw invalid('backends', 'must be a non-empty list');
    if (body.backends.length > LIMITS.backends) throw invalid('backends', `at most ${LIMITS.backends} backends`);
    backends = body.backends.map((entry, index) => parseBackendEntry(entry, `backends[${index}]`, span));
  } else if (body.backend !== undefined) {
    if (typeof body.backend !== 'string') throw invalid('backend', 'must be host:port');
    backends = [{ address: checkedBackend(rangeBackendText(body.backend, span), 'backend', span) }];
  } else {
    throw invalid('backend', 'is required: host:port (or backends: a list)');
  }
  const seen = new Set<string>();
  for (const backend of backends) {
    if (seen.has(backend.address)) throw invalid('backends', `${backend.address} appears twice`);
    seen.add(backend.address);
  }
  if (backends.every((backend) => backend.backup))
    throw invalid('backends', 'at least one backend must not be a backup');

  const protocol = body.protocol === undefined ? 'tcp' : choice(body.protocol, PROTOCOLS, 'protocol');
  const balance = body.balance === undefined ? 'round-robin' : choice(body.balance, BALANCES, 'balance');
  if (balance === 'hash-ip' && backends.some((backend) => backend.backup)) {
    throw invalid('balance', 'hash-ip cannot be combined with backup backends (nginx refuses it)');
  }

  let allow: string[] = [];
  if (body.allow !== undefined) {
    if (!Array.isArray(body.allow)) throw invalid('allow', 'must be a list of networks such as 10.0.0.0/8');
    if (body.allow.length > LIMITS.allow) throw invalid('allow', `at most ${LIMITS.allow} networks`);
    allow = [...new Set(body.allow.map((entry, index) => parseCidr(entry, `allow[${index}]`)))];
  }

  const spec: StreamSpec = { port, protocol, backends, balance, allow, proxyProtocol: false, labels: {} };
  if (portEnd !== undefined) spec.portEnd = portEnd;
  if (body.connectTimeout !== undefined) spec.connectTimeoutMs = parseDuration(body.connectTimeout, 'connectTimeout');
  if (body.idleTimeout !== undefined) spec.idleTimeoutMs = parseDuration(body.idleTimeout, 'idleTimeout');
  if (body.proxyProtocol !== undefined) {
    if (typeof body.proxyProtocol !== 'boolean') throw invalid('proxyProtocol', 'must be true or false');
    spec.proxyProtocol = body.proxyProtocol;
  }
  if (spec.proxyProtocol && protocol !== 'tcp')
    throw invalid('proxyProtocol', 'the PROXY protocol is for TCP streams only');
  if (body.profile !== undefined) {
    const profile = choice(body.profile, PROFILES, 'profile');
    if (profile !== 'default') spec.profile = profile;
  }
  if (body.listenAddress !== undefined && body.listenAddress !== null)
    spec.listenAddress = parseListenAddress(body.listenAddress);
  if (body.labels !== undefined) spec.labels = parseLabels(body.labels);
  if (body.description !== undefined) {
    if (
      typeof body.description !== 'string' ||
      body.description.length > LIMITS.description ||
      /[\u0000-\u001f\u007f]/.test(body.description)
    ) {
      throw invalid(
        'description',
        `must be text of at most ${LIMITS.description} characters without control characters`,
      );
    }
    if (body.description !== '') spec.description = body.description;
  }
  if (body.ttl !== undefined && body.expiresAt !== undefined)
    throw invalid('ttl', 'give either ttl or expiresAt, not both');
  if (body.ttl !== undefined)
    spec.expiresAt = new Date(options.now.getTime() + parseDuration(body.ttl, 'ttl')).toISOString();
  if (body.expiresAt !== undefined) {
    const at =
      typeof body.expiresAt === 'string' &&
      /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9]{2}:[0-9]{2})$/.test(body.expiresAt)
        ? new Date(body.expiresAt)
        : undefined;
    if (at === undefined || Number.isNaN(at.getTime()))
      throw invalid('expiresAt', 'must be an ISO 8601 time such as 2026-12-01T18:00:00Z');
    if (at.getTime() <= options.now.getTime()) throw invalid('expiresAt', 'lies in the past');
    if (at.getTime() - options.now.getTime() > LIMITS.durationMs)
      throw invalid('expiresAt', 'lies more than 365 days ahead');
    spec.expiresAt = at.toISOString();
  }
  parseLimits(body, spec);
  parseTls(body, spec);
  if (routes !== undefined) {
    spec.routes = routes;
    checkRoutesFit(spec);
  }
  return spec;
}

/** A file of the operator's: an absolute path of plain characters (it is copied, never written into nginx's files). */
function tlsPath(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '')
    throw invalid(field, `must be the absolute path of a PEM file, got ${shown(value)}`);
  if (!value.startsWith('/')) throw invalid(field, `must be an absolute path, got ${shown(value)}`);
  const unsafe = unsafeCharacter(value);
  if (unsafe !== undefined)
    throw invalid(
      field,
      `must be a plain absolute path: ${unsafe} (a control, bidirectional or invisible character) in ${shown(value)}`,
    );
  if (value.length > 4096 || value.split('/').includes('..'))
    throw invalid(field, `must be a plain absolute path without control characters or .., got ${shown(value)}`);
  return value;
}

function flag(value: unknown, field: string): boolean {
  if (typeof value !== 'boolean') throw invalid(field, `must be true or false, got ${shown(value)}`);
  return value;
}

/**
 * TLS at the edge (tlsCert and tlsKey, both or neither) and to the backends (backendTls, with
 * backendCa to verify them unless backendVerify is false). TCP streams only. Whether the files can
 * be read, are PEM, match and are valid now is the daemon's check (it reads them).
 */
function parseTls(body: Record<string, unknown>, spec: StreamSpec): void {
  if (body.tlsCert !== undefined) spec.tlsCert = tlsPath(body.tlsCert, 'tlsCert');
  if (body.tlsKey !== undefined) spec.tlsKey = tlsPath(body.tlsKey, 'tlsKey');
  if (spec.tlsCert !== undefined && spec.tlsKey === undefined)
    throw invalid('tlsKey', 'is required with tlsCert: the private key of the certificate');
  if (spec.tlsKey !== undefined && spec.tlsCert === undefined)
    throw invalid('tlsCert', 'is required with tlsKey: the certificate of the key');
  if (body.backendTls !== undefined && flag(body.backendTls, 'backendTls')) spec.backendTls = true;
  if (body.backendVerify !== undefined && !flag(body.backendVerify, 'backendVerify')) spec.backendVerify = false;
  if (body.backendCa !== undefined) spec.backendCa = tlsPath(body.backendCa, 'backendCa');
  if (body.backendName !== undefined) {
    if (
      typeof body.backendName !== 'string' ||
      !/^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(body.backendName)
    )
      throw invalid('backendName', `must be a host name such as db.internal, got ${shown(body.backendName)}`);
    spec.backendName = body.backendName.toLowerCase();
  }
  if (spec.backendTls !== true) {
    for (const field of ['backendCa', 'backendName', 'backendVerify'] as const)
      if (spec[field] !== undefined) throw invalid(field, 'needs backendTls: true (TLS to the backends)');
  } else if (spec.backendVerify !== false && spec.backendCa === undefined) {
    throw invalid('backendCa', "is required to verify the backends' certificates (or set backendVerify: false)");
  } else if (spec.backendVerify === false && spec.backendCa !== undefined) {
    throw invalid('backendCa', 'is not used with backendVerify: false');
  }
  if (spec.backendTls === true && spec.backendVerify !== false && spec.backendName === undefined) {
    const hosts = new Set(spec.backends.map((backend) => backendHost(backend.address)));
    const [host] = hosts;
    if (hosts.size > 1)
      throw invalid(
        'backendName',
        'is required when the backends have different hosts: the name their certificates carry',
      );
    if (host !== undefined && (isIPv4(host) || isIPv6(host)))
      throw invalid(
        'backendName',
        `is required for a backend given by address (${host}): the DNS name its certificate carries`,
      );
  }
  if (usesTls(spec) && spec.protocol !== 'tcp')
    throw invalid(
      spec.tlsCert !== undefined ? 'tlsCert' : 'backendTls',
      `TLS is for TCP streams only, not ${spec.protocol}`,
    );
}

/** The session limits of a stream: counts and rates, each left out when not given. */
function parseLimits(body: Record<string, unknown>, spec: StreamSpec): void {
  if (body.maxConnections !== undefined) spec.maxConnections = parseCount(body.maxConnections, 'maxConnections');
  if (body.maxConnectionsPerClient !== undefined)
    spec.maxConnectionsPerClient = parseCount(body.maxConnectionsPerClient, 'maxConnectionsPerClient');
  if (
    spec.maxConnections !== undefined &&
    spec.maxConnectionsPerClient !== undefined &&
    spec.maxConnectionsPerClient > spec.maxConnections
  ) {
    throw invalid(
      'maxConnectionsPerClient',
      `${spec.maxConnectionsPerClient} is more than maxConnections (${spec.maxConnections}), which would always stop it first`,
    );
  }
  if (body.uploadRate !== undefined) spec.uploadRate = parseRate(body.uploadRate, 'uploadRate');
  if (body.downloadRate !== undefined) spec.downloadRate = parseRate(body.downloadRate, 'downloadRate');
}

/** The spec of a plain legacy stream: one TCP backend, nothing else. */
export function simpleSpec(port: number, backend: string): StreamSpec {
  return {
    port,
    protocol: 'tcp',
    backends: [{ address: parseBackend(backend).address }],
    balance: 'round-robin',
    allow: [],
    proxyProtocol: false,
    labels: {},
  };
}

/** Whether two specs describe the same stream (what a PUT of the same body leaves alone). */
export function sameSpec(a: StreamSpec, b: StreamSpec): boolean {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

function canonicalBackends(backends: BackendSpec[]): unknown {
  return backends.map((backend) => [backend.address, backend.weight ?? 1, backend.backup === true]);
}

function canonical(spec: StreamSpec): unknown {
  return {
    port: spec.port,
    portEnd: spec.portEnd ?? null,
    protocol: spec.protocol,
    backends: canonicalBackends(spec.backends),
    balance: spec.balance,
    allow: [...spec.allow].sort(),
    connectTimeoutMs: spec.connectTimeoutMs ?? null,
    idleTimeoutMs: spec.idleTimeoutMs ?? null,
    proxyProtocol: spec.proxyProtocol,
    profile: spec.profile ?? 'default',
    listenAddress: spec.listenAddress ?? null,
    labels: Object.entries(spec.labels).sort(),
    description: spec.description ?? null,
    expiresAt: spec.expiresAt ?? null,
    maxConnections: spec.maxConnections ?? null,
    maxConnectionsPerClient: spec.maxConnectionsPerClient ?? null,
    uploadRate: spec.uploadRate ?? null,
    downloadRate: spec.downloadRate ?? null,
    tlsCert: spec.tlsCert ?? null,
    tlsKey: spec.tlsKey ?? null,
    backendTls: spec.backendTls === true,
    backendCa: spec.backendCa ?? null,
    backendName: spec.backendName ?? null,
    backendVerify: spec.backendVerify !== false,
    tlsMaterial: spec.tlsMaterial?.id ?? null,
    routes: spec.routes?.map((route) => [route.kind, route.name ?? null, canonicalBackends(route.backends)]) ?? null,
  };
}

/** Whether two specs render the same nginx configuration (labels, description and expiry aside). */
export function sameTraffic(a: StreamSpec, b: StreamSpec): boolean {
  const strip = (spec: StreamSpec): unknown => ({
    ...(canonical(spec) as object),
    labels: null,
    description: null,
    expiresAt: null,
  });
  return JSON.stringify(strip(a)) === JSON.stringify(strip(b));
}

/** The protocols a spec listens with. */
export function protocolsOf(spec: Pick<StreamSpec, 'protocol'>): Array<'tcp' | 'udp'> {
  return spec.protocol === 'tcp+udp' ? ['tcp', 'udp'] : [spec.protocol];
}

/** A one-line description of the backends, for lists and messages. */
export function describeBackends(backends: BackendSpec[]): string {
  return backends
    .map(
      (backend) =>
        `${backend.address}${backend.weight !== undefined ? `*${backend.weight}` : ''}${backend.backup ? ' (backup)' : ''}`,
    )
    .join(', ');
}

/** describeBackends for a whole stream: a range's backends with the ports they take (host:40000-40100). */
export function describeStreamBackends(spec: Pick<StreamSpec, 'port' | 'portEnd' | 'backends' | 'routes'>): string {
  if (spec.routes !== undefined)
    return spec.routes.map((route) => `${routeLabel(route)} -> ${describeBackends(route.backends)}`).join('; ');
  if (spec.portEnd === undefined) return describeBackends(spec.backends);
  return describeBackends(
    spec.backends.map((backend) => ({ ...backend, address: describeRangeBackend(backend.address, spec) })),
  );
}
