/** The shapes exchanged between the daemon and its clients. */
import type { StreamSpec } from './spec.js';

/** A stream as the daemon stores it. */
export interface StreamRecord extends StreamSpec {
  /** ISO 8601 time the stream was created. */
  createdAt: string;
  /** ISO 8601 time of the last change (replace or renewal), when there was one. */
  updatedAt?: string;
  /**
   * Set while the stream drains: its port refuses new connections, its open sessions go on, and
   * at this ISO 8601 time the ones left are cut and the stream removed.
   */
  drainingUntil?: string;
}

/**
 * live: nginx serves it. failed: the daemon holds the definition but could not apply it (the
 * reason says why); it is retried when the daemon starts and when nginx comes back. draining: its
 * port refuses new connections while its open sessions end (see drainingUntil). removing (fleet
 * mode): the fleet's set no longer has it, or this host's own removal of it runs, and this host is
 * closing its ports (they may be closed already); it leaves the listing once its removal is done.
 */
export type StreamState = 'live' | 'failed' | 'draining' | 'removing';

export interface StreamView extends StreamRecord {
  state: StreamState;
  reason?: string;
  /** The last change of its TLS files that could not be served, and why (the previous files are served). */
  tlsProblem?: string;
  /** Draining: the TCP sessions still open on its port, at the daemon's last look. */
  openSessions?: number;
  /** TLS to the backends: the handshakes nginx could not complete, when there were any. */
  backendTlsFailures?: BackendTlsFailures;
  /** Traffic and health, when asked for (`?stats=1`). */
  stats?: StreamStats;
  /** Fleet mode: how each host of the fleet runs this stream. */
  hosts?: HostStreamState[];
}

/**
 * Why nginx could not complete a TLS handshake with a backend, a fixed set (a metric label):
 * untrusted: the certificate does not chain to backendCa; expired, not-yet-valid: outside its
 * validity; name-mismatch: it does not carry backendName (or the backend's host); verify-other:
 * another verification error; handshake: the handshake failed before the certificate was checked
 * (the backend does not speak TLS, closed the connection, offers no common protocol...). A
 * backend that never finishes the handshake leaves no line in nginx 1.22's error log (measured):
 * its sessions count as failed in the traffic, not here.
 */
export const BACKEND_TLS_REASONS = [
  'untrusted',
  'expired',
  'not-yet-valid',
  'name-mismatch',
  'verify-other',
  'handshake',
] as const;
export type BackendTlsReason = (typeof BACKEND_TLS_REASONS)[number];

/** One failed TLS handshake with a backend, as nginx's error log tells it. */
export interface BackendTlsFailure {
  /** When nginx logged it (to the second). */
  at: string;
  reason: BackendTlsReason;
  /** nginx's words, such as `certificate verify error 20: unable to get local issuer certificate`. */
  message: string;
  /** The backend it was talking to, host:port. */
  backend: string;
  /** The client whose session it was. */
  client: string;
}

/**
 * The TLS handshakes with a stream's backends that failed since the daemon started or the stream
 * was created. `last` is the latest, shown while it is news: it is left out once the stream was
 * changed after it (a replace, or renewed TLS files served) or a session through that same backend
 * went through after it.
 */
export interface BackendTlsFailures {
  count: number;
  reasons: Partial<Record<BackendTlsReason, number>>;
  last?: BackendTlsFailure;
}

/**
 * One host's report on one stream of the fleet. live: applied and served; failed: the host could
 * not apply it (the reason says why) and retries; pending: the host has not applied the latest
 * definition yet. While the fleet drains the stream: draining, its port refuses new connections
 * on that host and `openSessions` are still open there; drained, that host has none left and no
 * longer has the stream.
 */
export interface HostStreamState {
  host: string;
  state: 'live' | 'failed' | 'pending' | 'draining' | 'drained';
  reason?: string;
  /** Draining: the TCP sessions still open on that host at its last look. */
  openSessions?: number;
}

/**
 * A drain's answer: the draining stream, and (fleet mode) what the answer cannot vouch for: the
 * hosts that have not said their port refuses connections.
 */
export interface DrainAnswer {
  stream: StreamView;
  warnings?: string[];
}

/** A host of the fleet as it registered itself in the shared store. */
export interface FleetHost {
  id: string;
  /** Its API, as it announces it. */
  api: string;
  version: string;
  startedAt: string;
  /** Streams of the desired set it serves, could not apply, has not applied yet, or drains. */
  live: number;
  failed: number;
  pending: number;
  draining: number;
}

/** Where the definitions live: this host's file, or a fleet's etcd. */
export interface StoreStatus {
  kind: 'file' | 'etcd';
  /** etcd: connected, or unreachable (since when, why); this host serves what it has meanwhile. */
  state: 'connected' | 'unreachable';
  since?: string;
  message?: string;
  /** etcd: this host's name in the fleet, the endpoints and the key prefix. */
  hostId?: string;
  endpoints?: string[];
  prefix?: string;
}

/** Sessions of a stream since the daemon started or the stream was created, from nginx's access log. */
export interface TrafficStats {
  /** Finished sessions. */
  sessions: number;
  /** Sessions that found no backend answering (or failed otherwise). */
  failedSessions: number;
  /** Connections refused by the stream's allow-list. */
  deniedSessions: number;
  /** Connections refused by the stream's session limits (maxConnections, maxConnectionsPerClient). */
  limitedSessions: number;
  /** Bytes received from clients. */
  bytesIn: number;
  /** Bytes sent to clients. */
  bytesOut: number;
  /** When the last session ended. */
  lastSessionAt?: string;
}

export interface BackendHealth {
  /** up: a TCP connect worked; down: it did not; unknown: not probed (yet, or a UDP backend). */
  state: 'up' | 'down' | 'unknown';
  latencyMs?: number;
  checkedAt?: string;
  error?: string;
}

export interface StreamStats extends TrafficStats {
  /** Client connections open right now (TCP). */
  activeConnections: number;
  backends: Array<BackendHealth & { backend: string }>;
  /** A port that routes by server name: the finished sessions of each of its routes. */
  routes?: RouteStats[];
}

/**
 * One route's finished sessions (from the access log). Sessions the allow-list or a limit refused
 * come before nginx reads the TLS hello, so they count for the port only, as do sessions no route
 * took (no default route).
 */
export interface RouteStats {
  /** The route's id: its server name, @default or @no-tls. */
  route: string;
  sessions: number;
  /** Sessions no backend of the route answered. */
  failedSessions: number;
  bytesIn: number;
  bytesOut: number;
  lastSessionAt?: string;
}

/** One line of the audit log: who changed what, when, from where, and how it ended. */
export interface AuditEvent {
  at: string;
  /** The token's name, `token` for the single CONDUCTOR_TOKEN, `anonymous` without auth, `daemon` for its own doing. */
  actor: string;
  /** The client's address; empty for the daemon's own doing. */
  remote: string;
  /** set-aside: nginx stopped taking a live stream; audit: the audit found nginx out of line or ended a stray. */
  action:
    | 'create'
    | 'replace'
    | 'remove'
    | 'renew'
    | 'apply'
    | 'expire'
    | 'set-aside'
    | 'audit'
    | 'drain'
    | 'undrain'
    | 'route-add'
    | 'route-remove'
    | 'tls-renewal';
  ports: number[];
  /** What was asked, in short (the backends, the plan...). */
  detail?: string;
  result: 'ok' | 'refused';
  code?: string;
  message?: string;
}

export type NginxMode = 'managed' | 'external';

/** What the last audit of a master found: the kernel's sockets and their owners against the definitions. */
export interface NginxAudit {
  at: string;
  /** True when the master serves exactly the live streams with workers to take them, and no stray process holds a port. */
  inLine: boolean;
  /** Ports of live streams that the master does not hold a socket for. */
  missing: number[];
  /** Ports the master holds a socket for that no live stream has. */
  extra: number[];
  /** Workers of the master taking connections: none means nothing accepts on its ports (nginx could not fork them). */
  workers: number;
  /** Processes of ours outside the master's generation found holding listening sockets. */
  strays: number;
  /** Strays told to go since the daemon started. */
  straysEnded: number;
}

export interface NginxStatus {
  /** running: a master answers; down: none; starting: being (re)started. */
  state: 'running' | 'down' | 'starting';
  pid?: number;
  /** Times the daemon had to (re)start nginx since it started itself (managed mode). */
  restarts: number;
  lastReload?: { at: string; ok: boolean; message?: string };
  message?: string;
  /** What happened to nginx lately (died, stopped, restarted), newest last. */
  incidents?: Array<{ at: string; message: string }>;
  /** When the master started. */
  startedAt?: string;
  /** Workers taking connections. */
  workers?: number;
  /** Old workers still serving the sessions of an earlier configuration. */
  drainingWorkers?: number;
  /** The last audit (managed mode). */
  audit?: NginxAudit;
}

export interface DaemonStatus {
  version: string;
  mode: NginxMode;
  portRange: { start: number; end: number };
  /** draining: left out when none drains. */
  streams: { total: number; live: number; failed: number; draining?: number; removing?: number };
  /** All nginx masters together: running when every one runs; restarts and incidents summed up. */
  nginx: NginxStatus;
  /** Each nginx master on its own (managed mode splits the port range over several). */
  nginxInstances: Array<NginxStatus & { id: number; streams: number }>;
  /** Definitions the daemon holds but had to set aside, with the reason. */
  failed: Array<{ port: number; backends: string; reason: string }>;
  /** Things found at start-up that need an operator's eye (skipped store entries, old files not adopted). */
  problems: string[];
  startedAt: string;
  store?: StoreStatus;
  /** Fleet mode: the hosts that are up, this one included. */
  hosts?: FleetHost[];
}

/** Answer of a successful create, replace or renewal. */
export interface CreateResult {
  stream: StreamView;
  /** Things worth knowing that did not stop the change. */
  warnings: string[];
  /** What the change did: created a stream, replaced one, or found it already as asked. */
  change?: 'created' | 'replaced' | 'unchanged';
}

/** The answer of a declarative apply: what differs between the submitted set and the daemon's. */
export interface ApplyPlan {
  create: number[];
  update: number[];
  delete: number[];
  unchanged: number[];
}

export interface ApplyResult {
  dryRun: boolean;
  /** True once every change of the plan is live (false for a dry run). */
  applied: boolean;
  plan: ApplyPlan;
  warnings: string[];
}
