/**
 * The table of every setting: its variable, its flag, a line of help and its default. The usage
 * text is printed from it, and the README's table of settings mirrors it.
 */

export interface Setting {
  env: string;
  flag: string;
  help: string;
  /** A switch: `--flag` takes no value. */
  boolean?: boolean;
  /** The value, as an operator would write it, when the setting is not given. */
  fallback?: string;
  /** The help text says the default in its own words; otherwise usage adds "(default <fallback>)". */
  helpNamesFallback?: boolean;
}

/**
 * How many nginx masters managed mode runs unless told. Each master pauses after a reload; new
 * streams go to a master out of its pause, so more masters overlap their pauses (see
 * ManagedNginx.reload).
 */
export const DEFAULT_NGINX_INSTANCES = 2;

export const settings = {
  mode: {
    env: 'CONDUCTOR_NGINX_MODE',
    flag: 'nginx-mode',
    help: 'managed (own nginx, default) or external',
    fallback: 'managed',
    helpNamesFallback: true,
  },
  home: { env: 'CONDUCTOR_HOME', flag: 'home', help: 'state folder', fallback: './.conductor' },
  streamConfigPath: {
    env: 'STREAM_CONFIG_PATH',
    flag: 'stream-config-path',
    help: 'folder of the per-stream files (managed: $CONDUCTOR_HOME/stream.d, external: /etc/nginx/stream.d/)',
  },
  nginxBin: { env: 'NGINX_BIN', flag: 'nginx-bin', help: 'nginx binary', fallback: '/usr/sbin/nginx' },
  streamPrefix: {
    env: 'STREAM_PREFIX',
    flag: 'stream-prefix',
    help: 'file name prefix of the per-stream files',
    fallback: '_conductor_',
  },
  portRange: { env: 'PORT_RANGE', flag: 'port-range', help: 'ports streams may use, inclusive', fallback: '9000-9009' },
  bindAddress: {
    env: 'BIND_ADDRESS',
    flag: 'bind-address',
    help: 'address of the API (managed: 127.0.0.1, external: 0.0.0.0)',
  },
  bindPort: { env: 'BIND_PORT', flag: 'bind-port', help: 'port of the API', fallback: '5000' },
  token: { env: 'CONDUCTOR_TOKEN', flag: 'token', help: 'API token; requests must send Authorization: Bearer <token>' },
  tokenFile: {
    env: 'CONDUCTOR_TOKEN_FILE',
    flag: 'token-file',
    help: 'file holding the API token, or several as lines "<name> <token> [read|write]" (keeps them out of ps)',
  },
  tlsCert: {
    env: 'CONDUCTOR_TLS_CERT',
    flag: 'tls-cert',
    help: 'certificate (PEM) of the API: serve HTTPS (with CONDUCTOR_TLS_KEY; picked up again when it changes)',
  },
  tlsKey: { env: 'CONDUCTOR_TLS_KEY', flag: 'tls-key', help: "the certificate's private key (PEM)" },
  tlsClientCa: {
    env: 'CONDUCTOR_TLS_CLIENT_CA',
    flag: 'tls-client-ca',
    help: 'CA (PEM) of the client certificates the API then requires (mutual TLS)',
  },
  allowNoAuth: {
    env: 'CONDUCTOR_ALLOW_NO_AUTH',
    flag: 'allow-no-auth',
    help: 'serve the API on a non-loopback address without a token (1/true)',
    boolean: true,
  },
  allowSharedFolders: {
    env: 'CONDUCTOR_ALLOW_SHARED_FOLDERS',
    flag: 'allow-shared-folders',
    help: 'start even when other users can change the home or stream folder (1/true; a warning instead)',
    boolean: true,
  },
  listenAddress: {
    env: 'CONDUCTOR_LISTEN_ADDRESS',
    flag: 'listen-address',
    help: 'address the streams listen on (default: all IPv4 addresses)',
  },
  nginxConf: { env: 'CONDUCTOR_NGINX_CONF', flag: 'nginx-conf', help: "external: nginx's main configuration file" },
  nginxPidFile: { env: 'CONDUCTOR_NGINX_PID_FILE', flag: 'nginx-pid-file', help: "external: nginx's pid file" },
  nginxErrorLog: { env: 'CONDUCTOR_NGINX_ERROR_LOG', flag: 'nginx-error-log', help: "external: nginx's error log" },
  reloadTimeout: {
    env: 'CONDUCTOR_RELOAD_TIMEOUT',
    flag: 'reload-timeout',
    help: 'seconds a reload may take before it counts as failed',
    fallback: '15',
  },
  nginxInstances: {
    env: 'CONDUCTOR_NGINX_INSTANCES',
    flag: 'nginx-instances',
    help: 'managed: nginx masters that share the port range, 1-32',
    fallback: String(DEFAULT_NGINX_INSTANCES),
  },
  nginxWorkers: {
    env: 'CONDUCTOR_NGINX_WORKERS',
    flag: 'nginx-workers',
    help: 'managed: worker processes per nginx master, 1-64 or auto',
    fallback: '1',
  },
  testBeforeReload: {
    env: 'CONDUCTOR_TEST_BEFORE_RELOAD',
    flag: 'test-before-reload',
    help: 'managed: also run nginx -t before each reload (1/true; external mode always does)',
    boolean: true,
  },
  nginxHandoff: {
    env: 'CONDUCTOR_NGINX_HANDOFF',
    flag: 'nginx-handoff',
    help: 'managed: hand removes and in-place changes for a busy master to a new master (SIGUSR2 under a reaper) instead of reloading it (default false: reloads with SIGHUP)',
  },
  healthInterval: {
    env: 'CONDUCTOR_HEALTH_INTERVAL',
    flag: 'health-interval',
    help: 'seconds between TCP probes of the backends, 0 for on demand only',
    fallback: '10',
  },
  streamTlsInterval: {
    env: 'CONDUCTOR_STREAM_TLS_INTERVAL',
    flag: 'stream-tls-interval',
    help: "seconds between looks at the streams' TLS files (a renewed certificate is checked and served without a restart)",
    fallback: '5',
  },
  streamTlsDirs: {
    env: 'CONDUCTOR_STREAM_TLS_DIRS',
    flag: 'stream-tls-dirs',
    help: "colon-separated absolute folders the streams' TLS files (tlsCert, tlsKey, backendCa) must lie in, after links are resolved; unset: any readable file outside /proc, /sys and /dev (set it, e.g. /etc/letsencrypt:/etc/ssl:/etc/stream-conductor, so that a write token cannot make the daemon read other files of the host)",
  },
  logMaxBytes: {
    env: 'CONDUCTOR_LOG_MAX_BYTES',
    flag: 'log-max-bytes',
    help: 'size past which each access log, the audit log and each nginx error log is rotated',
    fallback: String(16 * 1024 * 1024),
  },
  retryInterval: {
    env: 'CONDUCTOR_RETRY_INTERVAL',
    flag: 'retry-interval',
    help: 'seconds between tries of streams nginx could not take',
    fallback: '30',
  },
  auditInterval: {
    env: 'CONDUCTOR_AUDIT_INTERVAL',
    flag: 'audit-interval',
    help: "seconds between audits of each nginx master's sockets and processes against the streams; 0 turns it off",
    fallback: '5',
  },
  apiMaxConnections: {
    env: 'CONDUCTOR_API_MAX_CONNECTIONS',
    flag: 'api-max-connections',
    help: 'most connections to the API open at once, 16-65536; more are closed as they arrive',
    fallback: '512',
  },
  logLevel: { env: 'CONDUCTOR_LOG_LEVEL', flag: 'log-level', help: 'debug, info, warn or error', fallback: 'info' },
  logFormat: {
    env: 'CONDUCTOR_LOG_FORMAT',
    flag: 'log-format',
    help: 'auto (readable lines on a terminal, JSON otherwise), json or text',
    fallback: 'auto',
  },
  store: {
    env: 'CONDUCTOR_STORE',
    flag: 'store',
    help: 'file (default: $CONDUCTOR_HOME/streams.json) or etcd://host:2379[,host:2379...] (etcds:// for TLS) for a fleet',
    fallback: 'file',
    helpNamesFallback: true,
  },
  etcdPrefix: {
    env: 'CONDUCTOR_ETCD_PREFIX',
    flag: 'etcd-prefix',
    help: 'fleet: key prefix in etcd',
    fallback: '/stream-conductor/',
  },
  hostId: { env: 'CONDUCTOR_HOST_ID', flag: 'host-id', help: "fleet: this host's name (default: the host name)" },
  advertiseUrl: {
    env: 'CONDUCTOR_ADVERTISE_URL',
    flag: 'advertise-url',
    help: "fleet: this host's API URL as the others see it (default from BIND_ADDRESS and BIND_PORT)",
  },
  etcdCa: { env: 'CONDUCTOR_ETCD_CA', flag: 'etcd-ca', help: "fleet: CA certificate (PEM) of etcd's TLS" },
  etcdCert: { env: 'CONDUCTOR_ETCD_CERT', flag: 'etcd-cert', help: 'fleet: client certificate (PEM) for mutual TLS' },
  etcdKey: { env: 'CONDUCTOR_ETCD_KEY', flag: 'etcd-key', help: 'fleet: client key (PEM) for mutual TLS' },
  etcdUser: {
    env: 'CONDUCTOR_ETCD_USER',
    flag: 'etcd-user',
    help: 'fleet: etcd user (with CONDUCTOR_ETCD_PASSWORD_FILE)',
  },
  etcdPasswordFile: {
    env: 'CONDUCTOR_ETCD_PASSWORD_FILE',
    flag: 'etcd-password-file',
    help: "fleet: file holding the etcd user's password",
  },
} satisfies Record<string, Setting>;

export type SettingName = keyof typeof settings;

/** The settings that have a default in the table. */
export type SettingWithFallback = {
  [Name in SettingName]: (typeof settings)[Name] extends { fallback: string } ? Name : never;
}[SettingName];

/** Every setting as its name and its row. */
export function settingRows(): Array<[SettingName, Setting]> {
  return Object.entries(settings) as Array<[SettingName, Setting]>;
}

export const usage = (): string => {
  const lines = [
    'usage: conductor-daemon [options]',
    '',
    'Every option can also be set by its environment variable.',
    '',
  ];
  const row = (flag: string, env: string, help: string): string => `  ${flag.padEnd(32)} ${env.padEnd(26)} ${help}`;
  for (const [, setting] of settingRows()) {
    const flag = setting.boolean ? `--${setting.flag}` : `--${setting.flag} <value>`;
    const shown = setting.fallback === undefined || setting.helpNamesFallback;
    lines.push(row(flag, setting.env, shown ? setting.help : `${setting.help} (default ${setting.fallback})`));
  }
  lines.push(row('--help', '', 'this text'), row('--version', '', 'the version'));
  return lines.join('\n');
};
