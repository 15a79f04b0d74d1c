/**
 * The OpenAPI 3.1 description of the daemon's API, served at GET /v1/openapi.json. The test suite
 * checks real answers against these schemas, so the document stays true.
 */
import {
  BACKEND_TLS_REASONS,
  BALANCES,
  ErrorCode,
  LIMITS,
  MAX_RANGE_PORTS,
  MAX_ROUTES,
  PROFILES,
  PROTOCOLS,
} from '@stream-conductor/shared';
import { accessFor } from './access.js';

const ref = (name: string): { $ref: string } => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown): unknown => ({ content: { 'application/json': { schema } } });
const errorResponse = (description: string): unknown => ({ description, ...(json(ref('Error')) as object) });
const RANGE_PATTERN = '^[1-9][0-9]{0,4}-[1-9][0-9]{0,4}$';
const portParameter = {
  name: 'port',
  in: 'path',
  required: true,
  description:
    'a port, or a range FIRST-LAST as the daemon has it; a port inside a range finds the range (a DELETE of one is refused with 409: a range is removed whole, by its first port or as FIRST-LAST)',
  schema: {
    oneOf: [
      { type: 'integer', minimum: 1, maximum: 65535 },
      { type: 'string', pattern: RANGE_PATTERN },
    ],
  },
};
/** A range's last port, beside its first (`port`). */
const portEndField = {
  type: 'integer',
  minimum: 1,
  maximum: 65535,
  description: `a port range's last port (inclusive, at most ${MAX_RANGE_PORTS} ports with port); left out for one port. Each backend's port is the backend port of the first port, shifted as far for each next one`,
};

const backend = {
  type: 'object',
  additionalProperties: false,
  required: ['address'],
  properties: {
    address: { type: 'string', description: 'host:port, IPv4:port or [IPv6]:port' },
    weight: { type: 'integer', minimum: 1, maximum: LIMITS.weight },
    backup: { type: 'boolean' },
  },
};

/** TLS on a stream (TCP only): the operator's files by absolute path, checked when given. */
const PATH_RULE =
  'no control character (C0 or C1), bidirectional mark, override or isolate, or invisible character (400 naming it as U+XXXX), no ..';
const tlsFields = {
  tlsCert: {
    type: 'string',
    pattern: '^/',
    description: `TLS at the edge: absolute path of the PEM certificate (chain) clients are shown; with tlsKey. ${PATH_RULE}`,
  },
  tlsKey: {
    type: 'string',
    pattern: '^/',
    description: `absolute path of the PEM private key of tlsCert. ${PATH_RULE}`,
  },
  backendTls: { type: 'boolean', description: 'speak TLS to the backends' },
  backendCa: {
    type: 'string',
    pattern: '^/',
    description: `absolute path of the PEM CA certificates the backends' certificates must chain to (required unless backendVerify is false). ${PATH_RULE}`,
  },
  backendName: {
    type: 'string',
    description: "the name the backends' certificates must carry, sent as SNI (default: the backend's host)",
  },
  backendVerify: { type: 'boolean', description: "false: the backends' certificates are not checked (default true)" },
};

const certificateFacts = {
  type: 'object',
  additionalProperties: false,
  required: ['field', 'subject', 'notBefore', 'notAfter', 'fingerprint256'],
  properties: {
    field: { enum: ['tlsCert', 'backendCa'] },
    subject: { type: 'string' },
    notBefore: { type: 'string', format: 'date-time' },
    notAfter: { type: 'string', format: 'date-time', description: 'end of validity' },
    fingerprint256: { type: 'string' },
  },
};

/** A stream's failed TLS handshakes with its backends (from nginx's error log). */
const backendTlsFailures = {
  type: 'object',
  additionalProperties: false,
  required: ['count', 'reasons'],
  description:
    "TLS to the backends: the handshakes nginx could not complete since the daemon started or the stream was created (the client's connection was closed). Left out when there were none",
  properties: {
    count: { type: 'integer', minimum: 1 },
    reasons: {
      type: 'object',
      additionalProperties: false,
      description: 'the count by reason',
      properties: Object.fromEntries(BACKEND_TLS_REASONS.map((reason) => [reason, { type: 'integer', minimum: 1 }])),
    },
    last: {
      type: 'object',
      additionalProperties: false,
      required: ['at', 'reason', 'message', 'backend', 'client'],
      description:
        'the latest failure, while it is news: left out once the stream was changed after it (a replace, or renewed TLS files served) or a session went through that same backend after it',
      properties: {
        at: { type: 'string', format: 'date-time', description: 'when nginx logged it, to the second' },
        reason: {
          enum: [...BACKEND_TLS_REASONS],
          description:
            'untrusted: the certificate does not chain to backendCa; expired, not-yet-valid; name-mismatch: it does not carry backendName (or the backend host); verify-other: another verification error; handshake: the handshake failed before the certificate was checked (not TLS, connection closed, no common protocol)',
        },
        message: {
          type: 'string',
          description: "nginx's words, such as certificate verify error 20: unable to get local issuer certificate",
        },
        backend: { type: 'string', description: 'the backend (host:port) nginx was talking to' },
        client: { type: 'string', description: 'the client whose connection was closed' },
      },
    },
  },
};

const tlsMaterial = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'certificates'],
  description:
    "set by the daemon: the certificates of its checked copies of the stream's TLS files (what nginx reads). Where the copies are is not shown",
  properties: {
    id: { type: 'string', description: "a digest of the files' content: a new one whenever any of them changes" },
    certificates: { type: 'array', items: certificateFacts },
  },
};

/** A route by TLS server name (see README, routing by server name). */
const routeMatch = {
  sni: {
    type: 'string',
    maxLength: 253,
    description: 'a server name, exact (git.example.com) or a leading wildcard (*.db.example.com); case-insensitive',
  },
  default: { const: true, description: 'the route for names that match no other route, and for hellos without a name' },
  noTls: { const: true, description: 'the route for clients that send no TLS hello at all (SSH, plain HTTP)' },
  kind: { enum: ['name', 'default', 'no-tls'], description: 'as the API shows a route (with name for kind name)' },
  name: { type: 'string', maxLength: 253 },
};

const routeInput = {
  type: 'object',
  additionalProperties: false,
  description: 'one of sni, default: true, noTls: true (or kind); and backend or backends',
  properties: {
    ...routeMatch,
    backend: { type: 'string' },
    backends: {
      type: 'array',
      minItems: 1,
      maxItems: LIMITS.backends,
      items: { oneOf: [{ type: 'string' }, backend] },
    },
  },
};

const routeShown = {
  type: 'object',
  additionalProperties: false,
  required: ['kind', 'backends'],
  properties: {
    kind: routeMatch.kind,
    name: routeMatch.name,
    backends: { type: 'array', minItems: 1, maxItems: LIMITS.backends, items: backend },
  },
};

const streamFields = {
  routes: {
    type: 'array',
    minItems: 1,
    maxItems: MAX_ROUTES,
    items: routeShown,
    description:
      "routing by TLS server name (passed through, not terminated): exact name, then the longest leading wildcard, then the default route; a client with no TLS hello takes the noTls route. backends is then every route's backends",
  },
  port: { type: 'integer', minimum: 1, maximum: 65535 },
  portEnd: portEndField,
  protocol: { enum: [...PROTOCOLS] },
  backends: { type: 'array', minItems: 1, maxItems: LIMITS.backends, items: backend },
  balance: { enum: [...BALANCES] },
  allow: {
    type: 'array',
    maxItems: LIMITS.allow,
    items: { type: 'string' },
    description: 'client networks (CIDR); empty means everyone',
  },
  connectTimeoutMs: { type: 'integer', minimum: 1 },
  idleTimeoutMs: { type: 'integer', minimum: 1 },
  proxyProtocol: { type: 'boolean' },
  profile: { enum: [...PROFILES], description: 'default (256 KiB buffers) or throughput (1 MiB)' },
  listenAddress: { type: 'string' },
  labels: { type: 'object', additionalProperties: { type: 'string' } },
  description: { type: 'string', maxLength: LIMITS.description },
  expiresAt: { type: 'string', format: 'date-time' },
  maxConnections: {
    type: 'integer',
    minimum: 1,
    maximum: LIMITS.connections,
    description: 'most sessions open at once, all clients together; more are refused',
  },
  maxConnectionsPerClient: {
    type: 'integer',
    minimum: 1,
    maximum: LIMITS.connections,
    description: 'most sessions open at once from one client address',
  },
  uploadRate: {
    type: 'integer',
    minimum: 1,
    maximum: LIMITS.rate,
    description: 'bytes per second read from the client, per session',
  },
  downloadRate: {
    type: 'integer',
    minimum: 1,
    maximum: LIMITS.rate,
    description: 'bytes per second sent to the client, per session',
  },
  ...tlsFields,
  createdAt: { type: 'string', format: 'date-time' },
  updatedAt: { type: 'string', format: 'date-time' },
};

const duration = {
  oneOf: [
    { type: 'number', description: 'seconds' },
    { type: 'string', pattern: '^[0-9]+(ms|s|m|h|d)?$' },
  ],
};

const count = {
  oneOf: [
    { type: 'integer', minimum: 1, maximum: LIMITS.connections },
    { type: 'string', pattern: '^[1-9][0-9]*$' },
  ],
};

const rate = {
  oneOf: [
    { type: 'integer', minimum: 1, maximum: LIMITS.rate, description: 'bytes per second' },
    {
      type: 'string',
      pattern: '^[1-9][0-9]*[kKmMgG]?$',
      description: 'such as 512k, 10m, 1g (KiB, MiB, GiB per second)',
    },
  ],
};

const nginxStatus = {
  type: 'object',
  additionalProperties: false,
  required: ['state', 'restarts'],
  properties: {
    state: { enum: ['running', 'down', 'starting'] },
    pid: { type: 'integer' },
    restarts: { type: 'integer' },
    message: { type: 'string' },
    lastReload: {
      type: 'object',
      additionalProperties: false,
      required: ['at', 'ok'],
      properties: { at: { type: 'string', format: 'date-time' }, ok: { type: 'boolean' }, message: { type: 'string' } },
    },
    startedAt: { type: 'string', format: 'date-time' },
    workers: { type: 'integer', description: 'workers taking connections' },
    drainingWorkers: { type: 'integer', description: 'old workers still serving sessions of an earlier configuration' },
    audit: {
      type: 'object',
      description:
        "the last audit of the kernel's listening sockets and their owners against the streams (managed mode)",
      additionalProperties: false,
      required: ['at', 'inLine', 'missing', 'extra', 'workers', 'strays', 'straysEnded'],
      properties: {
        at: { type: 'string', format: 'date-time' },
        inLine: {
          type: 'boolean',
          description: 'the master serves exactly the live streams and no stray process of ours holds a port',
        },
        missing: {
          type: 'array',
          items: { type: 'integer' },
          description: 'ports of live streams the master holds no socket for',
        },
        extra: {
          type: 'array',
          items: { type: 'integer' },
          description: 'ports the master serves that no live stream has',
        },
        workers: {
          type: 'integer',
          description: 'workers taking connections; 0 with streams to serve means nothing accepts',
        },
        strays: {
          type: 'integer',
          description: 'processes of ours outside the serving generation found holding ports',
        },
        straysEnded: { type: 'integer', description: 'strays told to go since the daemon started' },
      },
    },
    incidents: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['at', 'message'],
        properties: { at: { type: 'string', format: 'date-time' }, message: { type: 'string' } },
      },
    },
  },
};

const schemas = {
  Error: {
    type: 'object',
    additionalProperties: false,
    required: ['error'],
    properties: {
      error: {
        type: 'object',
        additionalProperties: false,
        required: ['code', 'message'],
        properties: { code: { enum: Object.values(ErrorCode) }, message: { type: 'string' }, hint: { type: 'string' } },
      },
    },
  },
  Stream: {
    type: 'object',
    additionalProperties: false,
    required: ['port', 'protocol', 'backends', 'balance', 'allow', 'proxyProtocol', 'labels', 'createdAt', 'state'],
    properties: {
      ...streamFields,
      state: {
        enum: ['live', 'failed', 'draining', 'removing'],
        description:
          "draining: the port refuses new connections while its open sessions end. removing (fleet mode): the fleet's set no longer has it, or this host's own removal of it runs; its ports may be closed already",
      },
      reason: {
        type: 'string',
        description:
          'failed: why the stream is not served (outside PORT_RANGE; TLS copies missing at start-up that could not be made again from the files named); removing: why it goes',
      },
      drainingUntil: {
        type: 'string',
        format: 'date-time',
        description: 'draining: when the sessions left are cut and the stream removed',
      },
      openSessions: { type: 'integer', description: 'draining: TCP sessions still open at the last look' },
      backendTlsFailures,
      tlsMaterial,
      tlsProblem: {
        type: 'string',
        description: 'why the last change of its TLS files was not served (the previous files are served)',
      },
      stats: { $ref: '#/components/schemas/Stats' },
      hosts: {
        type: 'array',
        description: 'fleet mode: how each host of the fleet runs the stream',
        items: {
          type: 'object',
          additionalProperties: false,
          required: ['host', 'state'],
          properties: {
            host: { type: 'string' },
            state: {
              enum: ['live', 'failed', 'pending', 'draining', 'drained'],
              description:
                'draining: the port refuses new connections on that host, openSessions still open; drained: none left there',
            },
            reason: { type: 'string' },
            openSessions: { type: 'integer', description: 'draining: TCP sessions still open on that host' },
          },
        },
      },
    },
  },
  Stats: {
    type: 'object',
    additionalProperties: false,
    required: [
      'sessions',
      'failedSessions',
      'deniedSessions',
      'limitedSessions',
      'bytesIn',
      'bytesOut',
      'activeConnections',
      'backends',
    ],
    properties: {
      sessions: {
        type: 'integer',
        description: 'finished sessions since the daemon started or the stream was created',
      },
      failedSessions: { type: 'integer', description: 'sessions no backend answered' },
      deniedSessions: { type: 'integer', description: 'connections refused by the allow-list' },
      limitedSessions: {
        type: 'integer',
        description: 'connections refused by maxConnections or maxConnectionsPerClient',
      },
      bytesIn: { type: 'integer', description: 'bytes received from clients' },
      bytesOut: { type: 'integer', description: 'bytes sent to clients' },
      lastSessionAt: { type: 'string', format: 'date-time' },
      activeConnections: { type: 'integer' },
      backends: {
        type: 'array',
        items: {
          type: 'object',
          additionalProperties: false,
          required: ['backend', 'state'],
          properties: {
            backend: { type: 'string' },
            state: { enum: ['up', 'down', 'unknown'] },
            latencyMs: { type: 'number' },
            checkedAt: { type: 'string', format: 'date-time' },
            error: { type: 'string' },
          },
        },
      },
      routes: {
        type: 'array',
        description:
          "a port that routes by server name: each route's finished sessions, in the order of its routes. Sessions refused by the allow-list or a limit (before the TLS hello is read) and sessions no route took count for the port only",
        items: {
          type: 'object',
          additionalProperties: false,
          required: ['route', 'sessions', 'failedSessions', 'bytesIn', 'bytesOut'],
          properties: {
            route: { type: 'string', description: 'the route id: its server name, @default or @no-tls' },
            sessions: { type: 'integer' },
            failedSessions: { type: 'integer', description: 'sessions no backend of the route answered' },
            bytesIn: { type: 'integer' },
            bytesOut: { type: 'integer' },
            lastSessionAt: { type: 'string', format: 'date-time' },
          },
        },
      },
    },
  },
  Event: {
    type: 'object',
    additionalProperties: false,
    required: ['at', 'actor', 'remote', 'action', 'ports', 'result'],
    properties: {
      at: { type: 'string', format: 'date-time' },
      actor: { type: 'string' },
      remote: { type: 'string' },
      action: {
        enum: [
          'create',
          'replace',
          'remove',
          'renew',
          'apply',
          'expire',
          'set-aside',
          'audit',
          'drain',
          'undrain',
          'route-add',
          'route-remove',
          'tls-renewal',
        ],
      },
      ports: { type: 'array', items: { type: 'integer' } },
      detail: { type: 'string' },
      result: { enum: ['ok', 'refused'] },
      code: { type: 'string' },
      message: { type: 'string' },
    },
  },
  StreamInput: {
    type: 'object',
    additionalProperties: false,
    description: 'A stream as a client sends it: give backend or backends; ttl or expiresAt.',
    properties: {
      port: {
        oneOf: [
          { type: 'integer', minimum: 1, maximum: 65535 },
          { type: 'string', pattern: `^[0-9]+$|${RANGE_PATTERN}` },
        ],
        description: `a port, or a range FIRST-LAST (at most ${MAX_RANGE_PORTS} ports) whose backends may leave their port out (each port to the same port)`,
      },
      portEnd: { oneOf: [portEndField, { type: 'string', pattern: '^[0-9]+$' }] },
      protocol: streamFields.protocol,
      backend: { type: 'string' },
      backends: {
        type: 'array',
        minItems: 1,
        maxItems: LIMITS.backends,
        items: { oneOf: [{ type: 'string' }, backend] },
      },
      balance: streamFields.balance,
      allow: streamFields.allow,
      connectTimeout: duration,
      idleTimeout: duration,
      proxyProtocol: { type: 'boolean' },
      profile: streamFields.profile,
      listenAddress: { type: 'string' },
      labels: streamFields.labels,
      description: streamFields.description,
      ttl: duration,
      expiresAt: { type: 'string', format: 'date-time' },
      maxConnections: count,
      maxConnectionsPerClient: count,
      uploadRate: rate,
      downloadRate: rate,
      ...tlsFields,
      routes: {
        type: 'array',
        minItems: 1,
        maxItems: MAX_ROUTES,
        items: { oneOf: [routeInput, routeShown] },
        description: 'routing by TLS server name on this port (TCP, one port, no tlsCert); leave backend(s) out',
      },
    },
  },
  RouteInput: routeInput,
  RouteRemoved: {
    type: 'object',
    additionalProperties: false,
    required: ['port', 'route', 'removed', 'warnings'],
    properties: {
      port: { type: 'integer' },
      route: { type: 'string' },
      removed: { enum: ['route', 'stream'], description: 'stream: it was the last route, the port is closed' },
      result: ref('StreamAnswer'),
      warnings: { type: 'array', items: { type: 'string' } },
    },
  },
  StreamAnswer: {
    type: 'object',
    additionalProperties: false,
    required: ['stream', 'warnings'],
    properties: {
      stream: ref('Stream'),
      warnings: { type: 'array', items: { type: 'string' } },
      change: { enum: ['created', 'replaced', 'unchanged'] },
    },
  },
  Removed: {
    type: 'object',
    additionalProperties: false,
    required: ['port', 'warnings'],
    properties: {
      port: { type: 'integer' },
      portEnd: portEndField,
      warnings: { type: 'array', items: { type: 'string' } },
    },
  },
  ApplyResult: {
    type: 'object',
    additionalProperties: false,
    required: ['dryRun', 'applied', 'plan', 'warnings'],
    properties: {
      dryRun: { type: 'boolean' },
      applied: { type: 'boolean' },
      warnings: { type: 'array', items: { type: 'string' } },
      plan: {
        type: 'object',
        additionalProperties: false,
        required: ['create', 'update', 'delete', 'unchanged'],
        properties: Object.fromEntries(
          ['create', 'update', 'delete', 'unchanged'].map((key) => [
            key,
            { type: 'array', items: { type: 'integer' } },
          ]),
        ),
      },
    },
  },
  Status: {
    type: 'object',
    additionalProperties: false,
    required: ['version', 'mode', 'portRange', 'streams', 'nginx', 'nginxInstances', 'failed', 'problems', 'startedAt'],
    properties: {
      version: { type: 'string' },
      mode: { enum: ['managed', 'external'] },
      portRange: {
        type: 'object',
        additionalProperties: false,
        required: ['start', 'end'],
        properties: { start: { type: 'integer' }, end: { type: 'integer' } },
      },
      streams: {
        type: 'object',
        additionalProperties: false,
        required: ['total', 'live', 'failed'],
        properties: {
          total: { type: 'integer' },
          live: { type: 'integer' },
          failed: { type: 'integer' },
          draining: { type: 'integer', description: 'streams whose port refuses while their sessions end' },
          removing: { type: 'integer', description: 'fleet mode: streams this host is removing' },
        },
      },
      nginx: nginxStatus,
      nginxInstances: {
        type: 'array',
        items: {
          ...nginxStatus,
          required: [...nginxStatus.required, 'id', 'streams'],
          properties: { ...nginxStatus.properties, id: { type: 'integer' }, streams: { type: 'integer' } },
        },
      },
      failed: {
        type: 'array',
        items: {
          type: 'object',
          additionalProperties: false,
          required: ['port', 'backends', 'reason'],
          properties: { port: { type: 'integer' }, backends: { type: 'string' }, reason: { type: 'string' } },
        },
      },
      problems: { type: 'array', items: { type: 'string' } },
      startedAt: { type: 'string', format: 'date-time' },
      store: {
        type: 'object',
        description: 'fleet mode: the shared store',
        additionalProperties: false,
        required: ['kind', 'state'],
        properties: {
          kind: { enum: ['file', 'etcd'] },
          state: { enum: ['connected', 'unreachable'] },
          since: { type: 'string', format: 'date-time' },
          message: { type: 'string' },
          hostId: { type: 'string' },
          endpoints: { type: 'array', items: { type: 'string' } },
          prefix: { type: 'string' },
        },
      },
      hosts: {
        type: 'array',
        description: 'fleet mode: the hosts that are up',
        items: {
          type: 'object',
          additionalProperties: false,
          required: ['id', 'api', 'version', 'startedAt', 'live', 'failed', 'pending', 'draining'],
          properties: {
            id: { type: 'string' },
            api: { type: 'string' },
            version: { type: 'string' },
            startedAt: { type: 'string', format: 'date-time' },
            live: { type: 'integer' },
            failed: { type: 'integer' },
            pending: { type: 'integer' },
            draining: { type: 'integer' },
          },
        },
      },
    },
  },
};

const legacyBody = {
  description: "JSON in the old service's format",
  content: { 'application/json': { schema: { type: ['object', 'array'] } } },
};

/**
 * Adds the 403 of a read token to every operation that needs the write role (as access.ts decides,
 * so the document cannot drift from it), in the shape of the path's API.
 */
function withForbidden(paths: Record<string, Record<string, unknown>>): Record<string, Record<string, unknown>> {
  for (const [path, item] of Object.entries(paths)) {
    for (const [method, operation] of Object.entries(item)) {
      if (method === 'parameters') continue;
      const responses = (operation as { responses: Record<string, unknown> }).responses;
      if (accessFor(method, path) === 'read') continue;
      const legacy = !path.startsWith('/v1/');
      responses[403] = legacy
        ? { ...legacyBody, description: 'a read token: this call needs the write role' }
        : errorResponse(
            path === '/v1/apply'
              ? 'FORBIDDEN: a read token may only apply with dryRun: true and no TLS file (tlsCert, tlsKey, backendCa)'
              : 'FORBIDDEN: a read token; this call needs the write role',
          );
    }
  }
  return paths;
}

export function openApiDocument(): Record<string, unknown> {
  return {
    openapi: '3.1.0',
    servers: [
      {
        url: 'https://{host}:5000',
        description: 'with CONDUCTOR_TLS_CERT and CONDUCTOR_TLS_KEY set',
        variables: { host: { default: '127.0.0.1' } },
      },
      {
        url: 'http://{host}:5000',
        description: 'without TLS (loopback)',
        variables: { host: { default: '127.0.0.1' } },
      },
    ],
    info: {
      title: 'stream-conductor',
      version: '1',
      description:
        'Forward ports of an edge host, as TCP/UDP streams through nginx, to backends. Every change answers only once it is live (or refused, with everything left as it was).',
    },
    components: {
      schemas,
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          description:
            'required on every path but /status when the daemon has a token; a token of the read role may only look (403 FORBIDDEN otherwise)',
        },
      },
    },
    security: [{ bearer: [] }],
    paths: withForbidden({
      '/v1/status': {
        get: {
          summary: 'Daemon status',
          responses: { 200: { description: 'status', ...(json(ref('Status')) as object) } },
        },
      },
      '/v1/openapi.json': {
        get: { summary: 'This document', responses: { 200: { description: 'OpenAPI 3.1 document' } } },
      },
      '/v1/streams': {
        get: {
          summary: 'List streams',
          parameters: [
            {
              name: 'label',
              in: 'query',
              required: false,
              schema: { type: 'string' },
              description: 'key=value; repeat or comma-separate to require several',
            },
            {
              name: 'stats',
              in: 'query',
              required: false,
              schema: { type: 'boolean' },
              description: 'add traffic, open connections and backend health',
            },
          ],
          responses: {
            200: {
              description: 'the streams',
              ...(json({
                type: 'object',
                additionalProperties: false,
                required: ['streams'],
                properties: { streams: { type: 'array', items: ref('Stream') } },
              }) as object),
            },
            400: errorResponse('bad label selector'),
          },
        },
        post: {
          summary: 'Create a stream; without a port, on a free port the daemon picks',
          requestBody: { required: true, ...(json(ref('StreamInput')) as object) },
          responses: {
            201: { description: 'live', ...(json(ref('StreamAnswer')) as object) },
            400: errorResponse('invalid input'),
            409: errorResponse('port taken, in use, or no free port'),
            422: errorResponse('nginx refused the configuration'),
            503: errorResponse('nginx not running'),
          },
        },
      },
      '/v1/streams/{port}': {
        parameters: [portParameter],
        get: {
          summary: 'One stream',
          responses: {
            200: {
              description: 'the stream',
              ...(json({
                type: 'object',
                additionalProperties: false,
                required: ['stream'],
                properties: { stream: ref('Stream') },
              }) as object),
            },
            404: errorResponse('no stream on that port'),
          },
        },
        put: {
          summary: 'Create or replace a stream (idempotent)',
          requestBody: { required: true, ...(json(ref('StreamInput')) as object) },
          responses: {
            200: { description: 'replaced, or unchanged', ...(json(ref('StreamAnswer')) as object) },
            201: { description: 'created', ...(json(ref('StreamAnswer')) as object) },
            400: errorResponse('invalid input'),
            409: errorResponse(
              "port in use, or a single-port body on a range's first port (name the ports to replace or shrink the range)",
            ),
            422: errorResponse('nginx refused the configuration'),
          },
        },
        delete: {
          summary: 'Remove a stream',
          parameters: [
            {
              name: 'kill_sessions',
              in: 'query',
              required: false,
              schema: { type: 'boolean' },
              description: 'also cut its established sessions',
            },
          ],
          responses: {
            200: { description: 'removed; every port of it refuses connections', ...(json(ref('Removed')) as object) },
            404: errorResponse('no stream on that port'),
            409: errorResponse('a port inside a range: a range is removed whole'),
          },
        },
      },
      '/v1/streams/{port}/health': {
        parameters: [portParameter],
        post: {
          summary: "Probe the stream's backends now",
          responses: {
            200: {
              description: 'the stream with its stats',
              ...(json({
                type: 'object',
                additionalProperties: false,
                required: ['stream'],
                properties: { stream: ref('Stream') },
              }) as object),
            },
            404: errorResponse('no stream on that port'),
          },
        },
      },
      '/v1/events': {
        get: {
          summary: 'The audit log: the latest changes, who made them and how they ended',
          parameters: [
            { name: 'limit', in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 1000 } },
            { name: 'port', in: 'query', required: false, schema: { type: 'integer' } },
            { name: 'since', in: 'query', required: false, schema: { type: 'string', format: 'date-time' } },
          ],
          responses: {
            200: {
              description: 'events, oldest first',
              ...(json({
                type: 'object',
                additionalProperties: false,
                required: ['events'],
                properties: { events: { type: 'array', items: ref('Event') } },
              }) as object),
            },
            400: errorResponse('bad query'),
          },
        },
      },
      '/metrics': {
        get: {
          summary: 'Prometheus metrics (text exposition format)',
          responses: { 200: { description: 'metrics', content: { 'text/plain': { schema: { type: 'string' } } } } },
        },
      },
      '/v1/streams/{port}/renew': {
        parameters: [portParameter],
        post: {
          summary: 'Set a new expiry (ttl or expiresAt; expiresAt null keeps it for good)',
          requestBody: {
            required: true,
            ...(json({
              type: 'object',
              additionalProperties: false,
              properties: { ttl: duration, expiresAt: { type: ['string', 'null'] } },
            }) as object),
          },
          responses: {
            200: { description: 'renewed', ...(json(ref('StreamAnswer')) as object) },
            400: errorResponse('invalid input'),
            404: errorResponse('no stream on that port'),
          },
        },
      },
      '/v1/streams/{port}/drain': {
        parameters: [portParameter],
        post: {
          summary:
            'Drain: the port refuses new connections (answered once the kernel does), open sessions go on; the stream is removed when the last ends, or at the deadline with the rest cut. Again on a draining stream: a new deadline',
          requestBody: {
            required: false,
            ...(json({
              type: 'object',
              additionalProperties: false,
              properties: { timeout: { ...duration, description: 'time to wait for the sessions (default 10m)' } },
            }) as object),
          },
          responses: {
            200: {
              description: 'draining',
              ...(json({
                type: 'object',
                additionalProperties: false,
                required: ['stream'],
                properties: {
                  stream: ref('Stream'),
                  warnings: {
                    type: 'array',
                    items: { type: 'string' },
                    description: 'fleet mode: each host that has not said its port refuses connections, and why',
                  },
                },
              }) as object),
            },
            400: errorResponse('invalid input, or a UDP stream (its sessions cannot be seen)'),
            404: errorResponse('no stream on that port'),
            409: errorResponse('a port inside a range (a range is drained whole), or a change to the port under way'),
          },
        },
        delete: {
          summary: 'Call a drain off: the port takes connections again (answered once it does)',
          responses: {
            200: { description: 'live again', ...(json(ref('StreamAnswer')) as object) },
            404: errorResponse('the stream is not draining'),
          },
        },
      },
      '/v1/streams/{port}/routes': {
        parameters: [portParameter],
        post: {
          summary:
            "Add one route by TLS server name; a port without a stream is made with that route alone (answered once live). Other routes' sessions go on",
          requestBody: { required: true, ...(json(ref('RouteInput')) as object) },
          responses: {
            200: { description: 'added', ...(json(ref('StreamAnswer')) as object) },
            201: { description: 'the port was made with this route', ...(json(ref('StreamAnswer')) as object) },
            400: errorResponse('invalid route (the bad value named), or more than the routes a port takes'),
            409: errorResponse(
              'the port has a plain stream or a range, already routes that name, or is draining; fleet mode: other changes of the port got in first every time',
            ),
            503: errorResponse("fleet mode: the fleet's store (etcd) is not reachable"),
          },
        },
      },
      '/v1/streams/{port}/routes/{route}': {
        parameters: [
          portParameter,
          {
            name: 'route',
            in: 'path',
            required: true,
            description: 'the server name of the route, @default or @no-tls',
            schema: { type: 'string' },
          },
        ],
        delete: {
          summary: 'Remove one route; the last one removes the port. Sessions already routed go on',
          responses: {
            200: { description: 'removed', ...(json(ref('RouteRemoved')) as object) },
            400: errorResponse('not a server name'),
            404: errorResponse('no stream, or no such route'),
            409: errorResponse('the port is draining; fleet mode: other changes of the port got in first every time'),
            503: errorResponse("fleet mode: the fleet's store (etcd) is not reachable"),
          },
        },
      },
      '/v1/free-port': {
        get: {
          summary: 'A port without a stream that no other process holds (not reserved)',
          responses: {
            200: {
              description: 'a free port',
              ...(json({
                type: 'object',
                additionalProperties: false,
                required: ['port'],
                properties: { port: { type: 'integer' } },
              }) as object),
            },
            409: errorResponse('none free'),
          },
        },
      },
      '/v1/apply': {
        post: {
          summary: 'Declarative apply: make the streams match a set, all or nothing',
          requestBody: {
            required: true,
            ...(json({
              type: 'object',
              additionalProperties: false,
              required: ['streams'],
              properties: {
                streams: { type: 'array', items: ref('StreamInput') },
                prune: { type: 'boolean' },
                dryRun: { type: 'boolean' },
              },
            }) as object),
          },
          responses: {
            200: { description: 'the plan, and whether it was applied', ...(json(ref('ApplyResult')) as object) },
            400: errorResponse('invalid input'),
            409: errorResponse(
              "a port is in use, or an entry lists a range's first port alone (name the ports to replace or shrink the range)",
            ),
            422: errorResponse('nginx refused the configuration; nothing was changed'),
          },
        },
      },
      '/status': { get: { summary: 'Legacy: version and port range', security: [], responses: { 200: legacyBody } } },
      '/getstreams': { get: { summary: 'Legacy: list', responses: { 200: legacyBody } } },
      '/createstream/{port}/{backend}': {
        get: {
          summary: 'Legacy: create',
          parameters: [portParameter, { name: 'backend', in: 'path', required: true, schema: { type: 'string' } }],
          responses: { 200: legacyBody, 404: legacyBody },
        },
      },
      '/removestream/{port}': {
        get: {
          summary: 'Legacy: remove',
          parameters: [portParameter],
          responses: { 200: legacyBody, 404: legacyBody },
        },
      },
      '/hasstream/{port}': {
        get: {
          summary: 'Legacy: exists?',
          parameters: [portParameter],
          responses: { 200: legacyBody, 404: legacyBody },
        },
      },
      '/getfreeport': { get: { summary: 'Legacy: a free port', responses: { 200: legacyBody } } },
    }),
  };
}
