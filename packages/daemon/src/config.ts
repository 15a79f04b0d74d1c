/**
 * The daemon's settings, read once at start-up from the environment and the command line (a flag
 * wins over its variable). Every setting is validated here; a bad value throws a ConfigError whose
 * message is the one line main() prints before it exits.
 */
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  type NginxMode,
  type PortRange,
  formatPortRange,
  isPortInRange,
  parsePort,
  parsePortRange,
} from '@stream-conductor/shared';
import { type LogLevel, isLogLevel } from './log.js';
import { isNginxSafePath } from './nginx/render.js';

export interface Config {
  mode: NginxMode;
  /** State folder: the stream store, and in managed mode nginx's own files. Absolute. */
  home: string;
  /** Folder of the per-stream include files. Absolute. */
  streamConfigPath: string;
  nginxBin: string;
  streamPrefix: string;
  portRange: PortRange;
  bindAddress: string;
  bindPort: number;
  /** API tokens, each with the name the audit log records; empty: no authentication. */
  tokens: NamedToken[];
  /** Files of secrets (tokens, etcd's password) that anyone, not only their owner and group, can read. */
  exposedSecretFiles: string[];
  /** The operator's explicit consent to serve the API on a non-loopback address without a token. */
  allowNoAuth: boolean;
  /** The operator's explicit consent to folders other users can change (see sys/trust.ts). */
  allowSharedFolders: boolean;
  /** Address every stream listens on; undefined means all IPv4 addresses (`listen <port>`). */
  listenAddress: string | undefined;
  /** External mode: the main nginx configuration file (`-c`); undefined means nginx's default. */
  nginxConf: string | undefined;
  /** External mode: nginx's pid file; undefined means the one nginx was built with. */
  nginxPidFile: string | undefined;
  /** External mode: nginx's main error log, read to explain failed reloads. */
  nginxErrorLog: string | undefined;
  /** How long a reload may take to show new worker processes before it counts as failed. */
  reloadTimeoutMs: number;
  /** How often set-aside streams are tried again. */
  retryIntervalMs: number;
  /** How often each master is audited against the kernel (see nginx/audit.ts); 0: never. */
  auditIntervalMs: number;
  /** Managed mode: how many nginx masters share the port range. */
  nginxInstances: number;
  /** Run `nginx -t` before every reload also in managed mode. */
  testBeforeReload: boolean;
  /** Managed mode: hand changes to a new nginx master (no pause) rather than reload one. */
  nginxHandoff: boolean;
  /** Managed mode: worker processes per nginx master. */
  nginxWorkers: number | 'auto';
  /** Backend probes every this many ms; 0: only on demand. */
  healthIntervalMs: number;
  /** Each access log (and the audit log) is rotated past this many bytes. */
  logMaxBytes: number;
  /** Most API connections open at once. */
  apiMaxConnections: number;
  logLevel: LogLevel;
  /** Where the definitions live: this host's file, or a fleet's etcd. */
  store: StoreConfig;
}

export type StoreConfig =
  | { kind: 'file' }
  | {
      kind: 'etcd';
      /** Client URLs of the etcd members (http:// or https://). */
      endpoints: string[];
      /** Key prefix of this fleet, ending with '/'. */
      prefix: string;
      /** This host's name in the fleet. */
      hostId: string;
      /** The API URL this host announces to the fleet. */
      advertiseUrl: string;
      /** TLS: CA, client certificate and key (PEM files), for mutual TLS. */
      tls?: { ca: string; cert?: string; key?: string };
      /** etcd's own authentication. */
      auth?: { user: string; password: string };
    };

export interface NamedToken {
  name: string;
  token: string;
}

/** A fleet host's name: it is part of etcd keys and shown in every host's status. */
export const HOST_ID = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

interface Setting {
  env: string;
  flag: string;
  help: string;
  boolean?: boolean;
}

/** Every setting: its variable, its flag and a line of help. The README's table mirrors this. */
export const settings = {
  mode: { env: 'CONDUCTOR_NGINX_MODE', flag: 'nginx-mode', help: 'managed (own nginx, default) or external' },
  home: { env: 'CONDUCTOR_HOME', flag: 'home', help: 'state folder (default ./.conductor)' },
  streamConfigPath: {
    env: 'STREAM_CONFIG_PATH',
    flag: 'stream-config-path',
    help: 'folder of the per-stream files (managed: $CONDUCTOR_HOME/stream.d, external: /etc/nginx/stream.d/)',
  },
  nginxBin: { env: 'NGINX_BIN', flag: 'nginx-bin', help: 'nginx binary (default /usr/sbin/nginx)' },
  streamPrefix: { env: 'STREAM_PREFIX', flag: 'stream-prefix', help: 'file name prefix of the per-stream files (default _conductor_)' },
  portRange: { env: 'PORT_RANGE', flag: 'port-range', help: 'ports streams may use, inclusive (default 9000-9009)' },
  bindAddress: {
    env: 'BIND_ADDRESS',
    flag: 'bind-address',
    help: 'address of the API (managed: 127.0.0.1, external: 0.0.0.0)',
  },
  bindPort: { env: 'BIND_PORT', flag: 'bind-port', help: 'port of the API (default 5000)' },
  token: { env: 'CONDUCTOR_TOKEN', flag: 'token', help: 'API token; requests must send Authorization: Bearer <token>' },
  tokenFile: {
    env: 'CONDUCTOR_TOKEN_FILE',
    flag: 'token-file',
    help: 'file holding the API token, or several as lines "<name> <token>" (keeps them out of ps)',
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
    help: 'seconds a reload may take before it counts as failed (default 15)',
  },
  nginxInstances: {
    env: 'CONDUCTOR_NGINX_INSTANCES',
    flag: 'nginx-instances',
    help: 'managed: nginx masters that share the port range, 1-32 (default 2)',
  },
  nginxWorkers: {
    env: 'CONDUCTOR_NGINX_WORKERS',
    flag: 'nginx-workers',
    help: 'managed: worker processes per nginx master, 1-64 or auto (default 1)',
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
    help: 'seconds between TCP probes of the backends, 0 for on demand only (default 10)',
  },
  logMaxBytes: {
    env: 'CONDUCTOR_LOG_MAX_BYTES',
    flag: 'log-max-bytes',
    help: 'size past which each access log, the audit log and each nginx error log is rotated (default 16777216)',
  },
  retryInterval: {
    env: 'CONDUCTOR_RETRY_INTERVAL',
    flag: 'retry-interval',
    help: 'seconds between tries of streams nginx could not take (default 30)',
  },
  auditInterval: {
    env: 'CONDUCTOR_AUDIT_INTERVAL',
    flag: 'audit-interval',
    help: "seconds between audits of each nginx master's sockets and processes against the streams; 0 turns it off (default 5)",
  },
  apiMaxConnections: {
    env: 'CONDUCTOR_API_MAX_CONNECTIONS',
    flag: 'api-max-connections',
    help: 'most connections to the API open at once, 16-65536; more are closed as they arrive (default 512)',
  },
  logLevel: { env: 'CONDUCTOR_LOG_LEVEL', flag: 'log-level', help: 'debug, info, warn or error (default info)' },
  store: {
    env: 'CONDUCTOR_STORE',
    flag: 'store',
    help: 'file (default: $CONDUCTOR_HOME/streams.json) or etcd://host:2379[,host:2379...] (etcds:// for TLS) for a fleet',
  },
  etcdPrefix: { env: 'CONDUCTOR_ETCD_PREFIX', flag: 'etcd-prefix', help: 'fleet: key prefix in etcd (default /stream-conductor/)' },
  hostId: { env: 'CONDUCTOR_HOST_ID', flag: 'host-id', help: "fleet: this host's name (default: the host name)" },
  advertiseUrl: { env: 'CONDUCTOR_ADVERTISE_URL', flag: 'advertise-url', help: "fleet: this host's API URL as the others see it (default from BIND_ADDRESS and BIND_PORT)" },
  etcdCa: { env: 'CONDUCTOR_ETCD_CA', flag: 'etcd-ca', help: "fleet: CA certificate (PEM) of etcd's TLS" },
  etcdCert: { env: 'CONDUCTOR_ETCD_CERT', flag: 'etcd-cert', help: 'fleet: client certificate (PEM) for mutual TLS' },
  etcdKey: { env: 'CONDUCTOR_ETCD_KEY', flag: 'etcd-key', help: 'fleet: client key (PEM) for mutual TLS' },
  etcdUser: { env: 'CONDUCTOR_ETCD_USER', flag: 'etcd-user', help: "fleet: etcd user (with CONDUCTOR_ETCD_PASSWORD_FILE)" },
  etcdPasswordFile: { env: 'CONDUCTOR_ETCD_PASSWORD_FILE', flag: 'etcd-password-file', help: "fleet: file holding the etcd user's password" },
} satisfies Record<string, Setting>;

type SettingName = keyof typeof settings;

export const usage = (): string => {
  const lines = ['usage: conductor-daemon [options]', '', 'Every option can also be set by its environment variable.', ''];
  for (const setting of Object.values(settings) as Setting[]) {
    const flag = setting.boolean ? `--${setting.flag}` : `--${setting.flag} <value>`;
    lines.push(`  ${flag.padEnd(32)} ${setting.env.padEnd(26)} ${setting.help}`);
  }
  lines.push(`  ${'--help'.padEnd(32)} ${''.padEnd(26)} this text`, `  ${'--version'.padEnd(32)} ${''.padEnd(26)} the version`);
  return lines.join('\n');
};

/**
 * How many nginx masters managed mode runs unless told. Each master pauses after a reload; new
 * streams go to a master out of its pause, so more masters overlap their pauses (see
 * ManagedNginx.reload).
 */
export const DEFAULT_NGINX_INSTANCES = 2;

export interface RawArgs {
  help: boolean;
  version: boolean;
  values: Partial<Record<SettingName, string>>;
}

/** Splits the command line into setting values (as text) and the help/version switches. */
export function parseCommandLine(argv: string[]): RawArgs {
  const options: Record<string, { type: 'string' | 'boolean' }> = { help: { type: 'boolean' }, version: { type: 'boolean' } };
  for (const setting of Object.values(settings) as Setting[]) {
    options[setting.flag] = { type: setting.boolean ? 'boolean' : 'string' };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: false });
  } catch (error) {
    throw new ConfigError(`${(error as Error).message} (see --help)`);
  }
  const values: Partial<Record<SettingName, string>> = {};
  for (const [name, setting] of Object.entries(settings) as Array<[SettingName, Setting]>) {
    const value = parsed.values[setting.flag];
    if (value === undefined) continue;
    values[name] = typeof value === 'boolean' ? String(value) : String(value);
  }
  return { help: parsed.values.help === true, version: parsed.values.version === true, values };
}

function isLoopback(address: string): boolean {
  return address === '::1' || /^127\./.test(address) || address === 'localhost';
}

const PREFIX = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * Builds the Config from the environment and the parsed command line. `cwd` anchors relative
 * paths. Throws ConfigError naming the variable (and its flag) of the first bad value.
 */
export function readConfig(env: NodeJS.ProcessEnv, args: RawArgs['values'] = {}, cwd = process.cwd()): Config {
  const raw = (name: SettingName): string | undefined => {
    const fromFlag = args[name];
    if (fromFlag !== undefined && fromFlag !== '') return fromFlag;
    const fromEnv = env[settings[name].env];
    return fromEnv === undefined || fromEnv === '' ? undefined : fromEnv;
  };
  const fail = (name: SettingName, message: string): never => {
    const setting: Setting = settings[name];
    throw new ConfigError(`${setting.env} (--${setting.flag}): ${message}`);
  };
  const checked = <T>(name: SettingName, parse: () => T): T => {
    try {
      return parse();
    } catch (error) {
      if (error instanceof ConfigError) throw error;
      return fail(name, (error as Error).message);
    }
  };
  const bool = (name: SettingName, fallback = false): boolean => {
    const value = raw(name);
    if (value === undefined) return fallback;
    if (/^(1|true|yes|on)$/i.test(value)) return true;
    if (/^(0|false|no|off)$/i.test(value)) return false;
    return fail(name, `expected true or false, got ${JSON.stringify(value)}`);
  };
  const path = (name: SettingName): string | undefined => {
    const value = raw(name);
    if (value === undefined) return undefined;
    if (value.includes('\0') || /[\n\r]/.test(value)) fail(name, 'a path may not hold NUL or line breaks');
    return resolve(cwd, value);
  };
  const ipAddress = (name: SettingName, value: string): string => {
    const bare = value.startsWith('[') && value.endsWith(']') ? value.slice(1, -1) : value;
    // Zone ids (fe80::1%eth0) pass isIP but nginx's listen and proxy_pass refuse them.
    if (isIP(bare) === 0 || bare.includes('%')) fail(name, `expected an IPv4 or IPv6 address, got ${JSON.stringify(value)}`);
    return bare;
  };

  const modeText = raw('mode') ?? 'managed';
  if (modeText !== 'managed' && modeText !== 'external') {
    fail('mode', `expected managed or external, got ${JSON.stringify(modeText)}`);
  }
  const mode = modeText as NginxMode;

  const home = path('home') ?? resolve(cwd, '.conductor');
  const streamConfigPath =
    path('streamConfigPath') ?? (mode === 'managed' ? resolve(home, 'stream.d') : '/etc/nginx/stream.d');

  if (mode === 'managed') {
    // Managed mode writes these paths into nginx's own configuration.
    if (!isNginxSafePath(home)) fail('home', `${JSON.stringify(home)} holds characters nginx's configuration cannot carry safely (spaces, quotes, ';', '$'...)`);
    if (!isNginxSafePath(streamConfigPath)) {
      fail('streamConfigPath', `${JSON.stringify(streamConfigPath)} holds characters nginx's configuration cannot carry safely (spaces, quotes, ';', '$'...)`);
    }
  }

  const nginxBin = raw('nginxBin') ?? '/usr/sbin/nginx';
  if (/[\0\n\r]/.test(nginxBin)) fail('nginxBin', 'a path may not hold NUL or line breaks');

  const streamPrefix = raw('streamPrefix') ?? '_conductor_';
  if (!PREFIX.test(streamPrefix) || streamPrefix.startsWith('.')) {
    fail('streamPrefix', `expected 1-64 letters, digits, '_', '-' or '.' (not leading), got ${JSON.stringify(streamPrefix)}`);
  }

  const portRange = checked('portRange', () => parsePortRange(raw('portRange') ?? '9000-9009'));

  const bindAddress = ipAddress('bindAddress', raw('bindAddress') ?? (mode === 'managed' ? '127.0.0.1' : '0.0.0.0'));
  const bindPort = checked('bindPort', () => parsePort(raw('bindPort') ?? '5000', 'port'));
  if (isPortInRange(bindPort, portRange)) {
    fail('bindPort', `the API port ${bindPort} lies inside PORT_RANGE ${formatPortRange(portRange)}`);
  }

  const token = raw('token');
  const exposedSecretFiles: string[] = [];
  const noteExposed = (file: string): void => {
    if ((statSync(file).mode & 0o007) !== 0) exposedSecretFiles.push(file);
  };
  const tokenFile = path('tokenFile');
  if (token !== undefined && tokenFile !== undefined) {
    fail('tokenFile', 'set either CONDUCTOR_TOKEN or CONDUCTOR_TOKEN_FILE, not both');
  }
  const tokens: NamedToken[] = [];
  if (token !== undefined) tokens.push({ name: 'token', token });
  if (tokenFile !== undefined) {
    let text = '';
    try {
      text = readFileSync(tokenFile, 'utf8');
      noteExposed(tokenFile);
    } catch (error) {
      fail('tokenFile', `cannot read ${tokenFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
    }
    // One token alone, or one "<name> <token>" per line (# comments and blank lines ignored).
    const lines = text.split('\n').map((line) => line.trim()).filter((line) => line !== '' && !line.startsWith('#'));
    for (const [index, line] of lines.entries()) {
      const parts = line.split(/\s+/);
      if (parts.length === 1 && lines.length === 1) tokens.push({ name: 'token', token: parts[0] ?? '' });
      else if (parts.length === 2 && /^[a-z0-9][a-z0-9_.-]{0,31}$/.test(parts[0] ?? '')) tokens.push({ name: parts[0] ?? '', token: parts[1] ?? '' });
      else fail('tokenFile', `line ${index + 1}: expected "<name> <token>" with a name of lowercase letters, digits, _ . -`);
    }
    if (lines.length === 0) fail('tokenFile', `${tokenFile} holds no token`);
  }
  const which: SettingName = tokenFile !== undefined ? 'tokenFile' : 'token';
  const names = new Set<string>();
  for (const { name, token: value } of tokens) {
    if (value.length < 16) fail(which, `the token must be at least 16 characters long (got ${value.length})`);
    if (!/^[\x21-\x7e]+$/.test(value)) fail(which, 'the token may hold only printable ASCII without spaces');
    if (names.has(name)) fail(which, `the token name ${name} appears twice`);
    names.add(name);
  }
  const allowNoAuth = bool('allowNoAuth');
  if (tokens.length === 0 && !allowNoAuth && !isLoopback(bindAddress)) {
    throw new ConfigError(
      `BIND_ADDRESS (--bind-address): refusing to serve the API on ${bindAddress} without a token; ` +
        'set CONDUCTOR_TOKEN (--token) or CONDUCTOR_TOKEN_FILE (--token-file), bind to 127.0.0.1, ' +
        'or opt in with CONDUCTOR_ALLOW_NO_AUTH=1 (--allow-no-auth)',
    );
  }

  const listenText = raw('listenAddress');
  const listenAddress = listenText === undefined ? undefined : ipAddress('listenAddress', listenText);

  const seconds = (name: SettingName, fallback: string, min: number, max: number): number =>
    checked(name, () => {
      const text = raw(name) ?? fallback;
      const value = Number(text);
      if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || value < min || value > max) {
        throw new Error(`expected a number of seconds from ${min} to ${max}, got ${JSON.stringify(text)}`);
      }
      return value;
    });
  const reloadSeconds = seconds('reloadTimeout', '15', 1, 600);
  const retrySeconds = seconds('retryInterval', '30', 0.1, 3600);
  const auditSeconds = seconds('auditInterval', '5', 0, 3600);

  const nginxHandoff = bool('nginxHandoff', false);
  const nginxInstances = checked('nginxInstances', () => {
    const text = raw('nginxInstances') ?? String(DEFAULT_NGINX_INSTANCES);
    if (!/^[0-9]{1,2}$/.test(text) || Number(text) < 1 || Number(text) > 32) throw new Error(`expected a whole number from 1 to 32, got ${JSON.stringify(text)}`);
    return Number(text);
  });

  const nginxWorkers = checked('nginxWorkers', (): number | 'auto' => {
    const text = raw('nginxWorkers') ?? '1';
    if (text === 'auto') return 'auto';
    if (!/^[0-9]{1,2}$/.test(text) || Number(text) < 1 || Number(text) > 64) throw new Error(`expected auto or a whole number from 1 to 64, got ${JSON.stringify(text)}`);
    return Number(text);
  });

  const healthSeconds = checked('healthInterval', () => {
    const text = raw('healthInterval') ?? '10';
    const value = Number(text);
    if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || (value !== 0 && value < 0.1) || value > 3600) {
      throw new Error(`expected 0 or a number of seconds from 0.1 to 3600, got ${JSON.stringify(text)}`);
    }
    return value;
  });
  const logMaxBytes = checked('logMaxBytes', () => {
    const text = raw('logMaxBytes') ?? String(16 * 1024 * 1024);
    if (!/^[0-9]{1,12}$/.test(text) || Number(text) < 1024) throw new Error(`expected a number of bytes, at least 1024, got ${JSON.stringify(text)}`);
    return Number(text);
  });
  const apiMaxConnections = checked('apiMaxConnections', () => {
    const text = raw('apiMaxConnections') ?? '512';
    if (!/^[0-9]{1,5}$/.test(text) || Number(text) < 16 || Number(text) > 65536) {
      throw new Error(`expected a whole number from 16 to 65536, got ${JSON.stringify(text)}`);
    }
    return Number(text);
  });

  const store = checked('store', (): StoreConfig => {
    const text = raw('store') ?? 'file';
    if (text === 'file') return { kind: 'file' };
    // A password in the address would be echoed in the error below, and in logs: never taken.
    if (/^etcds?:\/\/[^/?#]*@/.test(text)) throw new Error('credentials do not go in the address: use CONDUCTOR_ETCD_USER and CONDUCTOR_ETCD_PASSWORD_FILE');
    const match = /^(etcds?):\/\/([^/?#]+)\/?$/.exec(text);
    if (!match) throw new Error(`expected file or etcd://host:port[,host:port...], got ${JSON.stringify(text)}`);
    const scheme = match[1] === 'etcds' ? 'https' : 'http';
    const endpoints = (match[2] ?? '').split(',').map((member) => {
      let url: URL;
      try {
        url = new URL(`${scheme}://${member}`);
      } catch {
        throw new Error(`${JSON.stringify(member)} is not host:port`);
      }
      if (url.port === '' || url.username !== '' || url.pathname !== '/') throw new Error(`${JSON.stringify(member)} is not host:port`);
      return url.origin;
    });
    const prefixText = raw('etcdPrefix') ?? '/stream-conductor/';
    if (!/^\/[A-Za-z0-9_.\/-]{0,200}$/.test(prefixText) || prefixText.includes('//')) {
      fail('etcdPrefix', `expected a key prefix such as /stream-conductor/ (letters, digits, _ . - /), got ${JSON.stringify(prefixText)}`);
    }
    const prefix = prefixText.endsWith('/') ? prefixText : `${prefixText}/`;
    const hostText = raw('hostId') ?? hostname().toLowerCase();
    if (!HOST_ID.test(hostText)) {
      fail('hostId', `expected a name of lowercase letters, digits, _ . - (at most 63), got ${JSON.stringify(hostText)}`);
    }
    const ca = path('etcdCa');
    const cert = path('etcdCert');
    const key = path('etcdKey');
    if ((cert === undefined) !== (key === undefined)) fail(cert === undefined ? 'etcdCert' : 'etcdKey', 'mutual TLS needs both CONDUCTOR_ETCD_CERT and CONDUCTOR_ETCD_KEY');
    if ((ca !== undefined || cert !== undefined) && scheme !== 'https') fail('store', 'TLS files are given: use etcds:// for the endpoints');
    for (const [name, file] of [['etcdCa', ca], ['etcdCert', cert], ['etcdKey', key]] as const) {
      if (file !== undefined) {
        try {
          readFileSync(file);
        } catch (error) {
          fail(name, `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
        }
      }
    }
    const user = raw('etcdUser');
    const passwordFile = path('etcdPasswordFile');
    if ((user === undefined) !== (passwordFile === undefined)) fail(user === undefined ? 'etcdUser' : 'etcdPasswordFile', 'etcd authentication needs both CONDUCTOR_ETCD_USER and CONDUCTOR_ETCD_PASSWORD_FILE');
    let auth: { user: string; password: string } | undefined;
    if (user !== undefined && passwordFile !== undefined) {
      let password = '';
      try {
        password = readFileSync(passwordFile, 'utf8').trim();
        noteExposed(passwordFile);
      } catch (error) {
        fail('etcdPasswordFile', `cannot read ${passwordFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
      }
      if (password === '') fail('etcdPasswordFile', `${passwordFile} is empty`);
      auth = { user, password };
    }
    const advertiseText = raw('advertiseUrl');
    let advertiseUrl: string;
    if (advertiseText !== undefined) {
      try {
        const url = new URL(advertiseText);
        if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http');
        advertiseUrl = url.origin;
      } catch {
        return fail('advertiseUrl', `expected an http:// or https:// URL, got ${JSON.stringify(advertiseText)}`);
      }
    } else {
      const host = bindAddress.includes(':') ? `[${bindAddress}]` : bindAddress === '0.0.0.0' ? hostname() : bindAddress;
      advertiseUrl = `http://${host}:${bindPort}`;
    }
    const config: StoreConfig = { kind: 'etcd', endpoints, prefix, hostId: hostText, advertiseUrl };
    if (ca !== undefined) config.tls = { ca, ...(cert !== undefined && key !== undefined ? { cert, key } : {}) };
    if (auth !== undefined) config.auth = auth;
    return config;
  });

  const logLevel = raw('logLevel') ?? 'info';
  if (!isLogLevel(logLevel)) fail('logLevel', `expected debug, info, warn or error, got ${JSON.stringify(logLevel)}`);

  return {
    mode,
    home,
    streamConfigPath,
    nginxBin,
    streamPrefix,
    portRange,
    bindAddress,
    bindPort,
    tokens,
    exposedSecretFiles,
    allowNoAuth,
    allowSharedFolders: bool('allowSharedFolders'),
    listenAddress,
    nginxConf: path('nginxConf'),
    nginxPidFile: path('nginxPidFile'),
    nginxErrorLog: path('nginxErrorLog'),
    reloadTimeoutMs: Math.round(reloadSeconds * 1000),
    retryIntervalMs: Math.round(retrySeconds * 1000),
    auditIntervalMs: Math.round(auditSeconds * 1000),
    nginxInstances,
    testBeforeReload: bool('testBeforeReload'),
    nginxHandoff,
    nginxWorkers,
    healthIntervalMs: Math.round(healthSeconds * 1000),
    logMaxBytes,
    apiMaxConnections,
    store,
    logLevel: logLevel as LogLevel,
  };
}
