/**
 * The daemon's settings, read once at start-up from the environment and the command line into a
 * typed Config: one function per group of settings. Every value is validated here; the first bad
 * one is refused with a StartupError naming its variable and flag.
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  formatPortRange,
  isPortInRange,
  type NginxMode,
  type PortRange,
  parsePort,
  parsePortRange,
  StartupError,
} from '@stream-conductor/shared';
import { isLogLevel, type LogLevel } from '../log.js';
import { isNginxSafePath } from '../nginx/render.js';
import { readStore, type StoreConfig } from './etcd.js';
import { settingRows, settings } from './settings.js';
import { type ApiTlsFiles, readApiTls } from './tls.js';
import { type Auth, readAuth } from './tokens.js';
import { type SettingArgs, SettingValues } from './values.js';

/** Where the daemon keeps its files and nginx's, and which nginx it drives. */
export interface Places {
  mode: NginxMode;
  /** State folder: the stream store, and in managed mode nginx's own files. Absolute. */
  home: string;
  /** Folder of the per-stream include files. Absolute. */
  streamConfigPath: string;
  nginxBin: string;
  streamPrefix: string;
  /** External mode: the main nginx configuration file (`-c`); undefined means nginx's default. */
  nginxConf: string | undefined;
  /** External mode: nginx's pid file; undefined means the one nginx was built with. */
  nginxPidFile: string | undefined;
  /** External mode: nginx's main error log, read to explain failed reloads. */
  nginxErrorLog: string | undefined;
  /** The operator's explicit consent to folders other users can change (see sys/trust.ts). */
  allowSharedFolders: boolean;
}

/** The ports: the streams' range and address, and the API's. */
export interface Ports {
  portRange: PortRange;
  /** Address every stream listens on; undefined means all IPv4 addresses (`listen <port>`). */
  listenAddress: string | undefined;
  bindAddress: string;
  bindPort: number;
  /** Most API connections open at once. */
  apiMaxConnections: number;
}

/** How nginx is run and watched. */
export interface Timings {
  /** How long a reload may take to show new worker processes before it counts as failed. */
  reloadTimeoutMs: number;
  /** How often set-aside streams are tried again. */
  retryIntervalMs: number;
  /** How often each master is audited against the kernel (see nginx/pipeline/audit.ts); 0: never. */
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
  /** The streams' TLS files are looked at every this many ms. */
  streamTlsIntervalMs: number;
  /** The folders the streams' TLS files must lie in (CONDUCTOR_STREAM_TLS_DIRS); undefined: any. */
  streamTlsDirs: string[] | undefined;
}

export interface Logs {
  /** Each access log (and the audit log) is rotated past this many bytes. */
  logMaxBytes: number;
  logLevel: LogLevel;
  /** auto: readable lines when stderr is a terminal, JSON otherwise (decided by main). */
  logFormat: 'auto' | 'json' | 'text';
}

export interface Config extends Places, Ports, Auth, Timings, Logs {
  /** Files of secrets (tokens, etcd's password) that anyone, not only their owner and group, can read. */
  exposedSecretFiles: string[];
  /** Where the definitions live: this host's file, or a fleet's etcd. */
  store: StoreConfig;
  /** HTTPS for the API (see config/tls.ts); undefined: plain HTTP. */
  apiTls?: ApiTlsFiles;
}

export interface RawArgs {
  help: boolean;
  version: boolean;
  values: SettingArgs;
}

/** Splits the command line into setting values (as text) and the help/version switches. */
export function parseCommandLine(argv: string[]): RawArgs {
  const options: Record<string, { type: 'string' | 'boolean' }> = {
    help: { type: 'boolean' },
    version: { type: 'boolean' },
  };
  for (const [, setting] of settingRows()) options[setting.flag] = { type: setting.boolean ? 'boolean' : 'string' };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: false });
  } catch (error) {
    throw new StartupError(`${(error as Error).message} (see --help)`);
  }
  const values: SettingArgs = {};
  for (const [name, setting] of settingRows()) {
    const value = parsed.values[setting.flag];
    if (value !== undefined) values[name] = String(value);
  }
  return { help: parsed.values.help === true, version: parsed.values.version === true, values };
}

const PREFIX = /^[A-Za-z0-9_.-]{1,64}$/;

const UNSAFE_FOR_NGINX = "holds characters nginx's configuration cannot carry safely (spaces, quotes, ';', '$'...)";

function readPlaces(values: SettingValues): Places {
  const mode = values.text('mode');
  if (mode !== 'managed' && mode !== 'external') {
    values.fail('mode', `expected managed or external, got ${JSON.stringify(mode)}`);
  }
  const home = values.path('home') ?? resolve(values.cwd, settings.home.fallback);
  const streamConfigPath =
    values.path('streamConfigPath') ?? (mode === 'managed' ? resolve(home, 'stream.d') : '/etc/nginx/stream.d');
  if (mode === 'managed') {
    // Managed mode writes these paths into nginx's own configuration.
    if (!isNginxSafePath(home)) values.fail('home', `${JSON.stringify(home)} ${UNSAFE_FOR_NGINX}`);
    if (!isNginxSafePath(streamConfigPath)) {
      values.fail('streamConfigPath', `${JSON.stringify(streamConfigPath)} ${UNSAFE_FOR_NGINX}`);
    }
  }
  const nginxBin = values.text('nginxBin');
  if (/[\0\n\r]/.test(nginxBin)) values.fail('nginxBin', 'a path may not hold NUL or line breaks');
  const streamPrefix = values.text('streamPrefix');
  if (!PREFIX.test(streamPrefix) || streamPrefix.startsWith('.')) {
    values.fail(
      'streamPrefix',
      `expected 1-64 letters, digits, '_', '-' or '.' (not leading), got ${JSON.stringify(streamPrefix)}`,
    );
  }
  return {
    mode: mode as NginxMode,
    home,
    streamConfigPath,
    nginxBin,
    streamPrefix,
    nginxConf: values.path('nginxConf'),
    nginxPidFile: values.path('nginxPidFile'),
    nginxErrorLog: values.path('nginxErrorLog'),
    allowSharedFolders: values.bool('allowSharedFolders'),
  };
}

function readPorts(values: SettingValues, mode: NginxMode): Ports {
  const portRange = values.checked('portRange', () => parsePortRange(values.text('portRange')));
  const bindAddress = values.ipAddress(
    'bindAddress',
    values.raw('bindAddress') ?? (mode === 'managed' ? '127.0.0.1' : '0.0.0.0'),
  );
  const bindPort = values.checked('bindPort', () => parsePort(values.text('bindPort'), 'port'));
  if (isPortInRange(bindPort, portRange)) {
    values.fail('bindPort', `the API port ${bindPort} lies inside PORT_RANGE ${formatPortRange(portRange)}`);
  }
  const listenText = values.raw('listenAddress');
  return {
    portRange,
    listenAddress: listenText === undefined ? undefined : values.ipAddress('listenAddress', listenText),
    bindAddress,
    bindPort,
    apiMaxConnections: values.wholeNumber('apiMaxConnections', 16, 65536, 5),
  };
}

function readWorkers(values: SettingValues): number | 'auto' {
  const text = values.text('nginxWorkers');
  if (text === 'auto') return 'auto';
  if (!/^[0-9]{1,2}$/.test(text) || Number(text) < 1 || Number(text) > 64) {
    values.fail('nginxWorkers', `expected auto or a whole number from 1 to 64, got ${JSON.stringify(text)}`);
  }
  return Number(text);
}

/** Backend probes: 0 (on demand only) or 0.1 to 3600 seconds, in milliseconds. */
function readHealthInterval(values: SettingValues): number {
  const text = values.text('healthInterval');
  const seconds = Number(text);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || (seconds !== 0 && seconds < 0.1) || seconds > 3600) {
    values.fail('healthInterval', `expected 0 or a number of seconds from 0.1 to 3600, got ${JSON.stringify(text)}`);
  }
  return Math.round(seconds * 1000);
}

/** CONDUCTOR_STREAM_TLS_DIRS: absolute folders, colon-separated, each without .. or control characters. */
function readStreamTlsDirs(values: SettingValues): string[] | undefined {
  const text = values.raw('streamTlsDirs');
  if (text === undefined || text.trim() === '') return undefined;
  return text.split(':').map((folder) => {
    if (!folder.startsWith('/') || folder.split('/').includes('..') || /[\u0000-\u001f\u007f-\u009f]/.test(folder))
      values.fail('streamTlsDirs', `expected absolute folders separated by colons, got ${JSON.stringify(folder)}`);
    return folder.length > 1 ? folder.replace(/\/+$/, '') : folder;
  });
}

function readTimings(values: SettingValues): Timings {
  return {
    reloadTimeoutMs: values.milliseconds('reloadTimeout', 1, 600),
    retryIntervalMs: values.milliseconds('retryInterval', 0.1, 3600),
    auditIntervalMs: values.milliseconds('auditInterval', 0, 3600),
    nginxHandoff: values.bool('nginxHandoff'),
    nginxInstances: values.wholeNumber('nginxInstances', 1, 32, 2),
    nginxWorkers: readWorkers(values),
    healthIntervalMs: readHealthInterval(values),
    streamTlsIntervalMs: values.milliseconds('streamTlsInterval', 0.1, 3600),
    streamTlsDirs: readStreamTlsDirs(values),
    testBeforeReload: values.bool('testBeforeReload'),
  };
}

function readLogs(values: SettingValues): Logs {
  const maxBytes = values.text('logMaxBytes');
  if (!/^[0-9]{1,12}$/.test(maxBytes) || Number(maxBytes) < 1024) {
    values.fail('logMaxBytes', `expected a number of bytes, at least 1024, got ${JSON.stringify(maxBytes)}`);
  }
  const logLevel = values.text('logLevel');
  if (!isLogLevel(logLevel)) {
    values.fail('logLevel', `expected debug, info, warn or error, got ${JSON.stringify(logLevel)}`);
  }
  const logFormat = values.text('logFormat');
  if (logFormat !== 'auto' && logFormat !== 'json' && logFormat !== 'text') {
    values.fail('logFormat', `expected auto, json or text, got ${JSON.stringify(logFormat)}`);
  }
  return { logMaxBytes: Number(maxBytes), logLevel: logLevel as LogLevel, logFormat: logFormat as Logs['logFormat'] };
}

/**
 * Builds the Config from the environment and the parsed command line. `cwd` anchors relative
 * paths. Throws a StartupError naming the variable (and its flag) of the first bad value.
 */
export function readConfig(env: NodeJS.ProcessEnv, args: SettingArgs = {}, cwd = process.cwd()): Config {
  const values = new SettingValues(env, args, cwd);
  const places = readPlaces(values);
  const ports = readPorts(values, places.mode);
  const exposedSecretFiles: string[] = [];
  const auth = readAuth(values, ports.bindAddress, exposedSecretFiles);
  const apiTls = readApiTls(values, exposedSecretFiles);
  const timings = readTimings(values);
  const logs = readLogs(values);
  const store = readStore(values, { ...ports, https: apiTls !== undefined }, exposedSecretFiles);
  const config: Config = { ...places, ...ports, ...auth, ...timings, ...logs, exposedSecretFiles, store };
  if (apiTls !== undefined) config.apiTls = apiTls;
  return config;
}
