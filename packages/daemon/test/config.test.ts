import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { ErrorCode, StartupError } from '@stream-conductor/shared';
import { type Config, parseCommandLine, type RawArgs, readConfig } from '../src/config/read.js';
import { DEFAULT_NGINX_INSTANCES } from '../src/config/settings.js';

const CWD = '/srv/app';
const TOKEN = 'abcdefghijklmnop'; // 16 characters, the shortest accepted

/**
 * The line the daemon prints for the StartupError (BadConfig) `run` throws; fails the test when it
 * throws nothing or something else.
 */
function configErrorOf(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(StartupError);
    expect((error as StartupError).code).toBe(ErrorCode.BadConfig);
    return (error as StartupError).line();
  }
  throw new Error('expected a StartupError, but nothing was thrown');
}

const managedDefaults: Config = {
  mode: 'managed',
  home: '/srv/app/.conductor',
  streamConfigPath: '/srv/app/.conductor/stream.d',
  nginxBin: '/usr/sbin/nginx',
  streamPrefix: '_conductor_',
  portRange: { start: 9000, end: 9009 },
  bindAddress: '127.0.0.1',
  bindPort: 5000,
  tokens: [],
  exposedSecretFiles: [],
  allowNoAuth: false,
  allowSharedFolders: false,
  listenAddress: undefined,
  nginxConf: undefined,
  nginxPidFile: undefined,
  nginxErrorLog: undefined,
  reloadTimeoutMs: 15000,
  retryIntervalMs: 30000,
  auditIntervalMs: 5000,
  nginxInstances: DEFAULT_NGINX_INSTANCES,
  testBeforeReload: false,
  nginxHandoff: false,
  nginxWorkers: 1,
  healthIntervalMs: 10000,
  streamTlsIntervalMs: 5000,
  streamTlsDirs: undefined,
  logMaxBytes: 16777216,
  apiMaxConnections: 512,
  logLevel: 'info',
  logFormat: 'auto',
  store: { kind: 'file' },
};

let folder: string;

beforeAll(async () => {
  folder = await mkdtemp(join(tmpdir(), 'sc-test-'));
});

afterAll(async () => {
  await rm(folder, { recursive: true, force: true });
});

describe('readConfig defaults', () => {
  it('managed mode: home under cwd, stream files under home, API on loopback', () => {
    expect(readConfig({}, {}, CWD)).toEqual(managedDefaults);
  });

  it('managed mode puts the stream folder under a home that was set', () => {
    const config = readConfig({ CONDUCTOR_HOME: '/var/lib/conductor' }, {}, CWD);
    expect(config.home).toBe('/var/lib/conductor');
    expect(config.streamConfigPath).toBe('/var/lib/conductor/stream.d');
  });

  it('external mode: /etc/nginx/stream.d and 0.0.0.0, which needs a token', () => {
    expect(readConfig({ CONDUCTOR_NGINX_MODE: 'external', CONDUCTOR_TOKEN: TOKEN }, {}, CWD)).toEqual({
      ...managedDefaults,
      mode: 'external',
      streamConfigPath: '/etc/nginx/stream.d',
      bindAddress: '0.0.0.0',
      tokens: [{ name: 'token', token: TOKEN, role: 'write' }],
    });
  });

  it('external mode without a token is refused', () => {
    expect(configErrorOf(() => readConfig({ CONDUCTOR_NGINX_MODE: 'external' }, {}, CWD))).toBe(
      'BIND_ADDRESS (--bind-address): refusing to serve the API on 0.0.0.0 without a token; ' +
        'set CONDUCTOR_TOKEN (--token) or CONDUCTOR_TOKEN_FILE (--token-file), bind to 127.0.0.1, ' +
        'or opt in with CONDUCTOR_ALLOW_NO_AUTH=1 (--allow-no-auth)',
    );
  });

  it('external mode without a token is accepted with CONDUCTOR_ALLOW_NO_AUTH', () => {
    expect(readConfig({ CONDUCTOR_NGINX_MODE: 'external', CONDUCTOR_ALLOW_NO_AUTH: '1' }, {}, CWD)).toEqual({
      ...managedDefaults,
      mode: 'external',
      streamConfigPath: '/etc/nginx/stream.d',
      bindAddress: '0.0.0.0',
      allowNoAuth: true,
    });
  });

  it('reads CONDUCTOR_STREAM_TLS_DIRS (--stream-tls-dirs): absolute folders, colon-separated; unset is any', () => {
    expect(readConfig({}, {}, CWD).streamTlsDirs).toBeUndefined();
    expect(readConfig({ CONDUCTOR_STREAM_TLS_DIRS: '' }, {}, CWD).streamTlsDirs).toBeUndefined();
    expect(readConfig({ CONDUCTOR_STREAM_TLS_DIRS: '/etc/letsencrypt:/etc/ssl/:/' }, {}, CWD).streamTlsDirs).toEqual([
      '/etc/letsencrypt',
      '/etc/ssl',
      '/',
    ]);
    expect(readConfig({}, { streamTlsDirs: '/srv/tls' }, CWD).streamTlsDirs).toEqual(['/srv/tls']);
    for (const value of ['etc/ssl', '/etc/ssl:', '/etc/../root', '/etc/ssl::/srv', '/a\u0085b']) {
      const folder = value
        .split(':')
        .find((part) => !part.startsWith('/') || part.includes('..') || /\u0085/.test(part));
      expect(() => readConfig({ CONDUCTOR_STREAM_TLS_DIRS: value }, {}, CWD)).toThrow(
        `CONDUCTOR_STREAM_TLS_DIRS (--stream-tls-dirs): expected absolute folders separated by colons, got ${JSON.stringify(folder)}`,
      );
    }
  });

  it('reads CONDUCTOR_API_MAX_CONNECTIONS (--api-max-connections) and refuses what is not 16-65536', () => {
    expect(readConfig({ CONDUCTOR_API_MAX_CONNECTIONS: '2000' }, {}, CWD).apiMaxConnections).toBe(2000);
    expect(
      readConfig({ CONDUCTOR_API_MAX_CONNECTIONS: '2000' }, { apiMaxConnections: '64' }, CWD).apiMaxConnections,
    ).toBe(64);
    for (const value of ['15', '65537', '1e3', '-5', 'many', '0x100']) {
      expect(() => readConfig({ CONDUCTOR_API_MAX_CONNECTIONS: value }, {}, CWD)).toThrow(
        `CONDUCTOR_API_MAX_CONNECTIONS (--api-max-connections): expected a whole number from 16 to 65536, got ${JSON.stringify(value)}`,
      );
    }
  });

  it.each<[string, string]>([
    ['127.0.0.1', '127.0.0.1'],
    ['127.1.2.3', '127.1.2.3'],
    ['::1', '::1'],
    ['[::1]', '::1'],
  ])('external mode on loopback %j needs no token', (address, bindAddress) => {
    const config = readConfig({ CONDUCTOR_NGINX_MODE: 'external', BIND_ADDRESS: address }, {}, CWD);
    expect(config.bindAddress).toBe(bindAddress);
    expect(config.tokens).toEqual([]);
  });

  it.each<string>(['0.0.0.0', '::', '10.0.0.1', '[2001:db8::1]'])(
    'managed mode on non-loopback %j needs a token',
    (address) => {
      const bare = address.replace(/^\[|\]$/g, '');
      expect(configErrorOf(() => readConfig({ BIND_ADDRESS: address }, {}, CWD))).toMatch(
        new RegExp(
          `^BIND_ADDRESS \\(--bind-address\\): refusing to serve the API on ${bare.replace(/\./g, '\\.')} without a token;`,
        ),
      );
      expect(readConfig({ BIND_ADDRESS: address, CONDUCTOR_TOKEN: TOKEN }, {}, CWD).bindAddress).toBe(bare);
    },
  );

  it('empty environment values count as unset', () => {
    const env: NodeJS.ProcessEnv = {
      CONDUCTOR_NGINX_MODE: '',
      CONDUCTOR_HOME: '',
      STREAM_CONFIG_PATH: '',
      NGINX_BIN: '',
      STREAM_PREFIX: '',
      PORT_RANGE: '',
      BIND_ADDRESS: '',
      BIND_PORT: '',
      CONDUCTOR_TOKEN: '',
      CONDUCTOR_TOKEN_FILE: '',
      CONDUCTOR_ALLOW_NO_AUTH: '',
      CONDUCTOR_LISTEN_ADDRESS: '',
      CONDUCTOR_NGINX_CONF: '',
      CONDUCTOR_NGINX_PID_FILE: '',
      CONDUCTOR_NGINX_ERROR_LOG: '',
      CONDUCTOR_RELOAD_TIMEOUT: '',
      CONDUCTOR_LOG_LEVEL: '',
    };
    expect(readConfig(env, {}, CWD)).toEqual(managedDefaults);
  });
});

describe('readConfig values', () => {
  it('reads every setting from the environment', () => {
    const env: NodeJS.ProcessEnv = {
      CONDUCTOR_NGINX_MODE: 'external',
      CONDUCTOR_HOME: '/var/lib/sc',
      STREAM_CONFIG_PATH: '/etc/nginx/conductor.d',
      NGINX_BIN: '/opt/nginx/sbin/nginx',
      STREAM_PREFIX: 'edge-',
      PORT_RANGE: '20000-20099',
      BIND_ADDRESS: '10.0.0.1',
      BIND_PORT: '8080',
      CONDUCTOR_TOKEN: TOKEN,
      CONDUCTOR_LISTEN_ADDRESS: '192.0.2.10',
      CONDUCTOR_NGINX_CONF: '/etc/nginx/nginx.conf',
      CONDUCTOR_NGINX_PID_FILE: '/run/nginx.pid',
      CONDUCTOR_NGINX_ERROR_LOG: '/var/log/nginx/error.log',
      CONDUCTOR_RELOAD_TIMEOUT: '2.5',
      CONDUCTOR_NGINX_HANDOFF: 'false',
      CONDUCTOR_LOG_LEVEL: 'debug',
      CONDUCTOR_LOG_FORMAT: 'text',
    };
    expect(readConfig(env, {}, CWD)).toEqual({
      mode: 'external',
      home: '/var/lib/sc',
      streamConfigPath: '/etc/nginx/conductor.d',
      nginxBin: '/opt/nginx/sbin/nginx',
      streamPrefix: 'edge-',
      portRange: { start: 20000, end: 20099 },
      bindAddress: '10.0.0.1',
      bindPort: 8080,
      tokens: [{ name: 'token', token: TOKEN, role: 'write' }],
      exposedSecretFiles: [],
      allowNoAuth: false,
      allowSharedFolders: false,
      listenAddress: '192.0.2.10',
      nginxConf: '/etc/nginx/nginx.conf',
      nginxPidFile: '/run/nginx.pid',
      nginxErrorLog: '/var/log/nginx/error.log',
      reloadTimeoutMs: 2500,
      retryIntervalMs: 30000,
      auditIntervalMs: 5000,
      nginxInstances: DEFAULT_NGINX_INSTANCES,
      testBeforeReload: false,
      nginxHandoff: false,
      nginxWorkers: 1,
      healthIntervalMs: 10000,
      streamTlsIntervalMs: 5000,
      streamTlsDirs: undefined,
      logMaxBytes: 16777216,
      apiMaxConnections: 512,
      logLevel: 'debug',
      logFormat: 'text',
      store: { kind: 'file' },
    } satisfies Config);
  });

  it.each<[string, RawArgs['values'], NodeJS.ProcessEnv, Partial<Config>]>([
    ['mode', { mode: 'managed' }, { CONDUCTOR_NGINX_MODE: 'external' }, { mode: 'managed', bindAddress: '127.0.0.1' }],
    [
      'home',
      { home: '/flag/home' },
      { CONDUCTOR_HOME: '/env/home' },
      { home: '/flag/home', streamConfigPath: '/flag/home/stream.d' },
    ],
    ['port range', { portRange: '7000-7009' }, { PORT_RANGE: '8000-8009' }, { portRange: { start: 7000, end: 7009 } }],
    ['bind port', { bindPort: '6000' }, { BIND_PORT: '7000' }, { bindPort: 6000 }],
    ['log level', { logLevel: 'warn' }, { CONDUCTOR_LOG_LEVEL: 'error' }, { logLevel: 'warn' }],
    [
      'token',
      { token: 'flag-token-0123456789' },
      { CONDUCTOR_TOKEN: 'env-token-0123456789' },
      { tokens: [{ name: 'token', token: 'flag-token-0123456789', role: 'write' }] },
    ],
    [
      'a bad env value hidden by a good flag',
      { portRange: '7000-7009' },
      { PORT_RANGE: 'garbage' },
      { portRange: { start: 7000, end: 7009 } },
    ],
    ['allow-no-auth', { allowNoAuth: 'true' }, { CONDUCTOR_ALLOW_NO_AUTH: 'false' }, { allowNoAuth: true }],
    ['retry interval', { retryInterval: '0.5' }, { CONDUCTOR_RETRY_INTERVAL: '60' }, { retryIntervalMs: 500 }],
    ['audit interval', { auditInterval: '0' }, { CONDUCTOR_AUDIT_INTERVAL: '2' }, { auditIntervalMs: 0 }],
    [
      'nginx handoff',
      { nginxHandoff: 'true' },
      { CONDUCTOR_NGINX_HANDOFF: 'false' },
      { nginxHandoff: true, nginxInstances: DEFAULT_NGINX_INSTANCES },
    ],
  ])('a flag wins over its variable: %s', (_what, args, env, expected) => {
    expect(readConfig(env, args, CWD)).toMatchObject(expected);
  });

  it('flags parsed from the command line feed readConfig', () => {
    const { values } = parseCommandLine([
      '--nginx-mode',
      'external',
      '--allow-no-auth',
      '--port-range=7000-7009',
      '--bind-port',
      '7100',
    ]);
    expect(readConfig({ CONDUCTOR_ALLOW_NO_AUTH: 'no' }, values, CWD)).toMatchObject({
      mode: 'external',
      allowNoAuth: true,
      bindAddress: '0.0.0.0',
      portRange: { start: 7000, end: 7009 },
      bindPort: 7100,
      tokens: [],
    });
  });

  it.each<[string, boolean]>([
    ['1', true],
    ['true', true],
    ['TRUE', true],
    ['yes', true],
    ['On', true],
    ['0', false],
    ['false', false],
    ['No', false],
    ['off', false],
  ])('CONDUCTOR_ALLOW_NO_AUTH=%j -> %j', (value, expected) => {
    expect(readConfig({ CONDUCTOR_ALLOW_NO_AUTH: value }, {}, CWD).allowNoAuth).toBe(expected);
  });

  it.each<[string, number]>([
    ['1', 1000],
    ['1.5', 1500],
    ['15', 15000],
    ['600', 600000],
    ['600.0', 600000],
    ['2.0004', 2000],
  ])('CONDUCTOR_RELOAD_TIMEOUT=%j -> %d ms', (value, ms) => {
    expect(readConfig({ CONDUCTOR_RELOAD_TIMEOUT: value }, {}, CWD).reloadTimeoutMs).toBe(ms);
  });

  it.each<[string, string]>([
    ['127.0.0.1', '127.0.0.1'],
    ['::', '::'],
    ['[2001:db8::1]', '2001:db8::1'],
  ])('CONDUCTOR_LISTEN_ADDRESS=%j -> %j', (value, expected) => {
    expect(readConfig({ CONDUCTOR_LISTEN_ADDRESS: value }, {}, CWD).listenAddress).toBe(expected);
  });

  it.each<[string, NodeJS.ProcessEnv, keyof Config, string]>([
    ['home', { CONDUCTOR_HOME: 'state' }, 'home', '/srv/app/state'],
    ['home below', { CONDUCTOR_HOME: './a/../b' }, 'home', '/srv/app/b'],
    ['stream folder', { STREAM_CONFIG_PATH: '../conf/streams' }, 'streamConfigPath', '/srv/conf/streams'],
    ['stream folder under a relative home', { CONDUCTOR_HOME: 'state' }, 'streamConfigPath', '/srv/app/state/stream.d'],
    ['nginx conf', { CONDUCTOR_NGINX_CONF: 'nginx.conf' }, 'nginxConf', '/srv/app/nginx.conf'],
    ['pid file', { CONDUCTOR_NGINX_PID_FILE: 'run/nginx.pid' }, 'nginxPidFile', '/srv/app/run/nginx.pid'],
    ['error log', { CONDUCTOR_NGINX_ERROR_LOG: 'logs/error.log' }, 'nginxErrorLog', '/srv/app/logs/error.log'],
    ['an absolute path stays', { CONDUCTOR_NGINX_CONF: '/etc/nginx/nginx.conf' }, 'nginxConf', '/etc/nginx/nginx.conf'],
  ])('resolves a relative %s against cwd', (_what, env, field, expected) => {
    expect(readConfig(env, {}, CWD)[field]).toBe(expected);
  });

  it('keeps a bare nginx binary name as it is (found on PATH)', () => {
    expect(readConfig({ NGINX_BIN: 'nginx' }, {}, CWD).nginxBin).toBe('nginx');
  });

  it.each<string>([TOKEN, 'x'.repeat(200), '!"#$%&\'()*+,-./0123456789:;<=>?@[\\]^_`{|}~'])(
    'accepts the token %j',
    (token) => {
      expect(readConfig({ CONDUCTOR_TOKEN: token }, {}, CWD).tokens).toEqual([{ name: 'token', token, role: 'write' }]);
    },
  );

  it.each<string>(['0.0.0.0', '::', '192.0.2.1'])('allows a token to open a non-loopback address (%s)', (address) => {
    expect(readConfig({ BIND_ADDRESS: address, CONDUCTOR_TOKEN: TOKEN }, {}, CWD)).toMatchObject({
      bindAddress: address,
      tokens: [{ name: 'token', token: TOKEN, role: 'write' }],
    });
  });

  it.each<[number, number]>([
    [8999, 8999],
    [9010, 9010],
  ])('accepts BIND_PORT %d just outside PORT_RANGE', (port, expected) => {
    expect(readConfig({ BIND_PORT: String(port) }, {}, CWD).bindPort).toBe(expected);
  });
});

describe('readConfig token file', () => {
  it('reads named tokens, one "<name> <token>" a line, comments and blank lines ignored: write tokens', async () => {
    const file = join(folder, 'tokens');
    await writeFile(file, `# who may change streams\nops ${TOKEN}-ops\n\nci-deploy ${TOKEN}-ci\n`);
    expect(readConfig({ CONDUCTOR_TOKEN_FILE: file }, {}, CWD).tokens).toEqual([
      { name: 'ops', token: `${TOKEN}-ops`, role: 'write' },
      { name: 'ci-deploy', token: `${TOKEN}-ci`, role: 'write' },
    ]);
  });

  it('reads a role after the token: read or write', async () => {
    const file = join(folder, 'tokens-roles');
    await writeFile(file, `ops ${TOKEN}-ops write\n  monitoring\t${TOKEN}-mon   read  \nci ${TOKEN}-ci\n`);
    expect(readConfig({ CONDUCTOR_TOKEN_FILE: file }, {}, CWD).tokens).toEqual([
      { name: 'ops', token: `${TOKEN}-ops`, role: 'write' },
      { name: 'monitoring', token: `${TOKEN}-mon`, role: 'read' },
      { name: 'ci', token: `${TOKEN}-ci`, role: 'write' },
    ]);
  });

  it('reads the token from a file, trimmed: one token alone may do everything, as before roles', async () => {
    const file = join(folder, 'token');
    await writeFile(file, `  ${TOKEN}-from-file\n\n`, { mode: 0o600 });
    expect(readConfig({ CONDUCTOR_TOKEN_FILE: file }, {}, CWD).tokens).toEqual([
      { name: 'token', token: `${TOKEN}-from-file`, role: 'write' },
    ]);
  });

  it('names a file of secrets that others can read, so that start-up can warn of it', async () => {
    const open = join(folder, 'open-tokens');
    await writeFile(open, TOKEN);
    await chmod(open, 0o644);
    expect(readConfig({ CONDUCTOR_TOKEN_FILE: open }, {}, CWD).exposedSecretFiles).toEqual([open]);
    // Its owner, or its owner and a group of its own choosing: not a warning.
    for (const mode of [0o600, 0o640]) {
      const closed = join(folder, `closed-tokens-${mode.toString(8)}`);
      await writeFile(closed, TOKEN);
      await chmod(closed, mode);
      expect(readConfig({ CONDUCTOR_TOKEN_FILE: closed }, {}, CWD).exposedSecretFiles).toEqual([]);
    }
  });

  it('resolves a relative token file against cwd', async () => {
    await writeFile(join(folder, 'relative-token'), `${TOKEN}\n`);
    expect(readConfig({}, { tokenFile: 'relative-token' }, folder).tokens).toEqual([
      { name: 'token', token: TOKEN, role: 'write' },
    ]);
  });

  it('a token file opens a non-loopback address', async () => {
    const file = join(folder, 'token-external');
    await writeFile(file, TOKEN);
    expect(readConfig({ CONDUCTOR_NGINX_MODE: 'external', CONDUCTOR_TOKEN_FILE: file }, {}, CWD)).toMatchObject({
      bindAddress: '0.0.0.0',
      tokens: [{ name: 'token', token: TOKEN, role: 'write' }],
    });
  });

  const FORMAT =
    'expected "<name> <token>" or "<name> <token> read|write", with a name of lowercase letters, digits, _ . -';
  it.each<[string, string, string]>([
    ['short', 'short-token\n', 'FILE line 1: the token must be at least 16 characters long (got 11)'],
    ['empty', '\n', 'FILE holds no token'],
    ['comments only', '# nobody yet\n\n', 'FILE holds no token'],
    ['spaced', 'two words in one token\n', `FILE line 1: ${FORMAT}`],
    ['multi-line', `${TOKEN}\n${TOKEN}\n`, `FILE line 1: ${FORMAT}`],
    ['a bare token among named ones', `# ops\nops ${TOKEN}\n\n${TOKEN}x\n`, `FILE line 4: ${FORMAT}`],
    ['name in capitals', `Ops ${TOKEN}\nci ${TOKEN}x\n`, `FILE line 1: ${FORMAT}`],
    ['unknown role', `ops ${TOKEN}\nmon ${TOKEN}x admin\n`, 'FILE line 2: the role must be read or write, got "admin"'],
    ['role in capitals', `mon ${TOKEN}x READ\n`, 'FILE line 1: the role must be read or write, got "READ"'],
    ['role before the token', `mon read ${TOKEN}\n`, 'FILE line 1: the role must be read or write (the third field)'],
    ['four fields', `mon ${TOKEN} read extra\n`, `FILE line 1: ${FORMAT}`],
    ['named twice', `ops ${TOKEN}\nops ${TOKEN}x\n`, 'FILE line 2: the token name ops appears twice'],
    [
      'one token twice',
      `ops ${TOKEN}\nmon ${TOKEN} read\n`,
      'FILE line 2: the token of mon is the same as the token of ops',
    ],
    ['named, short', `\nops short\n`, 'FILE line 2: the token must be at least 16 characters long (got 5)'],
    [
      'control character',
      `ops ${TOKEN}\u0007\n`,
      'FILE line 1: the token may hold only printable ASCII without spaces',
    ],
  ])('refuses a %s token file, naming CONDUCTOR_TOKEN_FILE and the line', async (name, content, message) => {
    const file = join(folder, `token-${name.replace(/ /g, '-')}`);
    await writeFile(file, content);
    const error = configErrorOf(() => readConfig({ CONDUCTOR_TOKEN_FILE: file }, {}, CWD));
    expect(error).toBe(`CONDUCTOR_TOKEN_FILE (--token-file): ${message.replace('FILE', file)}`);
    // The token itself never shows in the refusal.
    expect(error).not.toContain(TOKEN);
  });

  it('refuses a token file that does not exist', () => {
    const file = join(folder, 'missing', 'token');
    expect(configErrorOf(() => readConfig({ CONDUCTOR_TOKEN_FILE: file }, {}, CWD))).toBe(
      `CONDUCTOR_TOKEN_FILE (--token-file): cannot read ${file}: ENOENT`,
    );
  });

  it('refuses a token file that is a folder', () => {
    expect(configErrorOf(() => readConfig({ CONDUCTOR_TOKEN_FILE: folder }, {}, CWD))).toBe(
      `CONDUCTOR_TOKEN_FILE (--token-file): cannot read ${folder}: EISDIR`,
    );
  });

  it('refuses a token and a token file together', async () => {
    const file = join(folder, 'token-both');
    await writeFile(file, TOKEN);
    await chmod(file, 0o600);
    expect(configErrorOf(() => readConfig({ CONDUCTOR_TOKEN: TOKEN, CONDUCTOR_TOKEN_FILE: file }, {}, CWD))).toBe(
      'CONDUCTOR_TOKEN_FILE (--token-file): set either CONDUCTOR_TOKEN or CONDUCTOR_TOKEN_FILE, not both',
    );
  });
});

describe('readConfig fleet store', () => {
  it('reads etcd endpoints, prefix, host name and the address it announces', () => {
    expect(
      readConfig(
        {
          CONDUCTOR_STORE: 'etcd://10.0.0.1:2379,etcd2.internal:2379',
          CONDUCTOR_ETCD_PREFIX: '/edge',
          CONDUCTOR_HOST_ID: 'edge-1',
          BIND_PORT: '5001',
        },
        {},
        CWD,
      ).store,
    ).toEqual({
      kind: 'etcd',
      endpoints: ['http://10.0.0.1:2379', 'http://etcd2.internal:2379'],
      prefix: '/edge/',
      hostId: 'edge-1',
      advertiseUrl: 'http://127.0.0.1:5001',
    });
  });

  it('uses TLS, mutual TLS and etcd users when given', async () => {
    for (const name of ['ca.pem', 'cert.pem', 'key.pem']) await writeFile(join(folder, name), 'pem');
    await writeFile(join(folder, 'etcd-password'), 'secret\n');
    expect(
      readConfig(
        {
          CONDUCTOR_STORE: 'etcds://[2001:db8::1]:2379',
          CONDUCTOR_HOST_ID: 'h',
          CONDUCTOR_ETCD_CA: join(folder, 'ca.pem'),
          CONDUCTOR_ETCD_CERT: join(folder, 'cert.pem'),
          CONDUCTOR_ETCD_KEY: join(folder, 'key.pem'),
          CONDUCTOR_ETCD_USER: 'conductor',
          CONDUCTOR_ETCD_PASSWORD_FILE: join(folder, 'etcd-password'),
          CONDUCTOR_ADVERTISE_URL: 'https://edge-1.example:5000/',
        },
        {},
        CWD,
      ).store,
    ).toEqual({
      kind: 'etcd',
      endpoints: ['https://[2001:db8::1]:2379'],
      prefix: '/stream-conductor/',
      hostId: 'h',
      advertiseUrl: 'https://edge-1.example:5000',
      tls: { ca: join(folder, 'ca.pem'), cert: join(folder, 'cert.pem'), key: join(folder, 'key.pem') },
      auth: { user: 'conductor', password: 'secret' },
    });
  });

  it.each<[NodeJS.ProcessEnv, string]>([
    [
      { CONDUCTOR_STORE: 'redis://x:1' },
      'CONDUCTOR_STORE (--store): expected file or etcd://host:port[,host:port...], got "redis://x:1"',
    ],
    [{ CONDUCTOR_STORE: 'etcd://x' }, 'CONDUCTOR_STORE (--store): "x" is not host:port'],
    [{ CONDUCTOR_STORE: 'etcd://x:1,' }, 'CONDUCTOR_STORE (--store): "" is not host:port'],
    [
      { CONDUCTOR_STORE: 'etcd://u:secret@x:1' },
      'CONDUCTOR_STORE (--store): credentials do not go in the address: use CONDUCTOR_ETCD_USER and CONDUCTOR_ETCD_PASSWORD_FILE',
    ],
    [
      { CONDUCTOR_STORE: 'etcd://:secret@x:1' },
      'CONDUCTOR_STORE (--store): credentials do not go in the address: use CONDUCTOR_ETCD_USER and CONDUCTOR_ETCD_PASSWORD_FILE',
    ],
    [
      { CONDUCTOR_STORE: 'etcds://x:1,u:secret@y' },
      'CONDUCTOR_STORE (--store): credentials do not go in the address: use CONDUCTOR_ETCD_USER and CONDUCTOR_ETCD_PASSWORD_FILE',
    ],
    [
      { CONDUCTOR_STORE: 'etcd://x:1/path' },
      'CONDUCTOR_STORE (--store): expected file or etcd://host:port[,host:port...], got "etcd://x:1/path"',
    ],
    [
      { CONDUCTOR_STORE: 'etcd://x:1', CONDUCTOR_ETCD_PREFIX: 'no-slash' },
      'CONDUCTOR_ETCD_PREFIX (--etcd-prefix): expected a key prefix such as /stream-conductor/',
    ],
    [
      { CONDUCTOR_STORE: 'etcd://x:1', CONDUCTOR_ETCD_PREFIX: '/a//b' },
      'CONDUCTOR_ETCD_PREFIX (--etcd-prefix): expected a key prefix',
    ],
    [
      { CONDUCTOR_STORE: 'etcd://x:1', CONDUCTOR_HOST_ID: 'Edge 1' },
      'CONDUCTOR_HOST_ID (--host-id): expected a name of lowercase letters, digits, _ . - (at most 63), got "Edge 1"',
    ],
    [
      { CONDUCTOR_STORE: 'etcd://x:1', CONDUCTOR_HOST_ID: 'h', CONDUCTOR_ETCD_CA: '/no/such/ca.pem' },
      'CONDUCTOR_STORE (--store): TLS files are given: use etcds:// for the endpoints',
    ],
    [
      { CONDUCTOR_STORE: 'etcds://x:1', CONDUCTOR_HOST_ID: 'h', CONDUCTOR_ETCD_CA: '/no/such/ca.pem' },
      'CONDUCTOR_ETCD_CA (--etcd-ca): cannot read /no/such/ca.pem: ENOENT',
    ],
    [
      { CONDUCTOR_STORE: 'etcds://x:1', CONDUCTOR_HOST_ID: 'h', CONDUCTOR_ETCD_CERT: '/c.pem' },
      'CONDUCTOR_ETCD_KEY (--etcd-key): mutual TLS needs both CONDUCTOR_ETCD_CERT and CONDUCTOR_ETCD_KEY',
    ],
    [
      { CONDUCTOR_STORE: 'etcd://x:1', CONDUCTOR_HOST_ID: 'h', CONDUCTOR_ETCD_USER: 'u' },
      'CONDUCTOR_ETCD_PASSWORD_FILE (--etcd-password-file): etcd authentication needs both',
    ],
    [
      { CONDUCTOR_STORE: 'etcd://x:1', CONDUCTOR_HOST_ID: 'h', CONDUCTOR_ADVERTISE_URL: 'ftp://x' },
      'CONDUCTOR_ADVERTISE_URL (--advertise-url): expected an http:// or https:// URL, got "ftp://x"',
    ],
  ])('refuses %j', (env, message) => {
    expect(() => readConfig(env, {}, CWD)).toThrow(message);
  });
});

describe('readConfig errors', () => {
  it.each<[NodeJS.ProcessEnv, string]>([
    [
      { CONDUCTOR_NGINX_MODE: 'docker' },
      'CONDUCTOR_NGINX_MODE (--nginx-mode): expected managed or external, got "docker"',
    ],
    [
      { CONDUCTOR_NGINX_MODE: 'Managed' },
      'CONDUCTOR_NGINX_MODE (--nginx-mode): expected managed or external, got "Managed"',
    ],
    [{ CONDUCTOR_HOME: 'a\nb' }, 'CONDUCTOR_HOME (--home): a path may not hold NUL or line breaks'],
    [
      { STREAM_CONFIG_PATH: '/etc/x\0y' },
      'STREAM_CONFIG_PATH (--stream-config-path): a path may not hold NUL or line breaks',
    ],
    [{ NGINX_BIN: '/usr/sbin/nginx\n' }, 'NGINX_BIN (--nginx-bin): a path may not hold NUL or line breaks'],
    [{ CONDUCTOR_NGINX_CONF: 'a\rb' }, 'CONDUCTOR_NGINX_CONF (--nginx-conf): a path may not hold NUL or line breaks'],
    [
      { CONDUCTOR_NGINX_PID_FILE: 'a\nb' },
      'CONDUCTOR_NGINX_PID_FILE (--nginx-pid-file): a path may not hold NUL or line breaks',
    ],
    [
      { CONDUCTOR_NGINX_ERROR_LOG: 'a\nb' },
      'CONDUCTOR_NGINX_ERROR_LOG (--nginx-error-log): a path may not hold NUL or line breaks',
    ],
    [{ CONDUCTOR_TOKEN_FILE: 'a\nb' }, 'CONDUCTOR_TOKEN_FILE (--token-file): a path may not hold NUL or line breaks'],
    [
      { STREAM_PREFIX: '.hidden_' },
      `STREAM_PREFIX (--stream-prefix): expected 1-64 letters, digits, '_', '-' or '.' (not leading), got ".hidden_"`,
    ],
    [
      { STREAM_PREFIX: 'a/b' },
      `STREAM_PREFIX (--stream-prefix): expected 1-64 letters, digits, '_', '-' or '.' (not leading), got "a/b"`,
    ],
    [
      { STREAM_PREFIX: 'a b' },
      `STREAM_PREFIX (--stream-prefix): expected 1-64 letters, digits, '_', '-' or '.' (not leading), got "a b"`,
    ],
    [
      { STREAM_PREFIX: 'p'.repeat(65) },
      `STREAM_PREFIX (--stream-prefix): expected 1-64 letters, digits, '_', '-' or '.' (not leading), got "${'p'.repeat(65)}"`,
    ],
    [
      { PORT_RANGE: '9000' },
      'PORT_RANGE (--port-range): port range must look like 9000-9009 (first and last port, inclusive), got "9000"',
    ],
    [
      { PORT_RANGE: '9009-9000' },
      'PORT_RANGE (--port-range): port range 9009-9000 is empty: the first port is above the last',
    ],
    [
      { PORT_RANGE: '0-10' },
      'PORT_RANGE (--port-range): first port of the range must be a whole number from 1 to 65535, got 0',
    ],
    [
      { PORT_RANGE: '9000-70000' },
      'PORT_RANGE (--port-range): last port of the range must be a whole number from 1 to 65535, got 70000',
    ],
    [{ BIND_ADDRESS: 'localhost' }, 'BIND_ADDRESS (--bind-address): expected an IPv4 or IPv6 address, got "localhost"'],
    [
      { BIND_ADDRESS: '127.0.0.1:5000' },
      'BIND_ADDRESS (--bind-address): expected an IPv4 or IPv6 address, got "127.0.0.1:5000"',
    ],
    [
      { CONDUCTOR_LISTEN_ADDRESS: 'fe80::1%lo' },
      'CONDUCTOR_LISTEN_ADDRESS (--listen-address): expected an IPv4 or IPv6 address, got "fe80::1%lo"',
    ],
    [{ BIND_PORT: 'abc' }, 'BIND_PORT (--bind-port): port must be a whole number from 1 to 65535, got "abc"'],
    [{ BIND_PORT: '05000' }, 'BIND_PORT (--bind-port): port must be a whole number from 1 to 65535, got "05000"'],
    [{ BIND_PORT: '70000' }, 'BIND_PORT (--bind-port): port must be a whole number from 1 to 65535, got 70000'],
    [{ BIND_PORT: '9000' }, 'BIND_PORT (--bind-port): the API port 9000 lies inside PORT_RANGE 9000-9009'],
    [{ BIND_PORT: '9005' }, 'BIND_PORT (--bind-port): the API port 9005 lies inside PORT_RANGE 9000-9009'],
    [{ BIND_PORT: '9009' }, 'BIND_PORT (--bind-port): the API port 9009 lies inside PORT_RANGE 9000-9009'],
    [{ PORT_RANGE: '4000-6000' }, 'BIND_PORT (--bind-port): the API port 5000 lies inside PORT_RANGE 4000-6000'],
    [{ CONDUCTOR_TOKEN: 'short' }, 'CONDUCTOR_TOKEN (--token): the token must be at least 16 characters long (got 5)'],
    [
      { CONDUCTOR_TOKEN: 'abcdefghijklmno' },
      'CONDUCTOR_TOKEN (--token): the token must be at least 16 characters long (got 15)',
    ],
    [
      { CONDUCTOR_TOKEN: 'has a space in it 1234' },
      'CONDUCTOR_TOKEN (--token): the token may hold only printable ASCII without spaces',
    ],
    [
      { CONDUCTOR_TOKEN: 'tab\tinside-the-token' },
      'CONDUCTOR_TOKEN (--token): the token may hold only printable ASCII without spaces',
    ],
    [
      { CONDUCTOR_TOKEN: 'non-ascii-tökén-1234' },
      'CONDUCTOR_TOKEN (--token): the token may hold only printable ASCII without spaces',
    ],
    [
      { CONDUCTOR_ALLOW_NO_AUTH: 'maybe' },
      'CONDUCTOR_ALLOW_NO_AUTH (--allow-no-auth): expected true or false, got "maybe"',
    ],
    [
      { CONDUCTOR_NGINX_HANDOFF: 'sometimes' },
      'CONDUCTOR_NGINX_HANDOFF (--nginx-handoff): expected true or false, got "sometimes"',
    ],
    [
      { CONDUCTOR_NGINX_INSTANCES: '0' },
      'CONDUCTOR_NGINX_INSTANCES (--nginx-instances): expected a whole number from 1 to 32, got "0"',
    ],
    [
      { CONDUCTOR_LISTEN_ADDRESS: 'eth0' },
      'CONDUCTOR_LISTEN_ADDRESS (--listen-address): expected an IPv4 or IPv6 address, got "eth0"',
    ],
    [
      { CONDUCTOR_RELOAD_TIMEOUT: '0' },
      'CONDUCTOR_RELOAD_TIMEOUT (--reload-timeout): expected a number of seconds from 1 to 600, got "0"',
    ],
    [
      { CONDUCTOR_RELOAD_TIMEOUT: '0.5' },
      'CONDUCTOR_RELOAD_TIMEOUT (--reload-timeout): expected a number of seconds from 1 to 600, got "0.5"',
    ],
    [
      { CONDUCTOR_RELOAD_TIMEOUT: '601' },
      'CONDUCTOR_RELOAD_TIMEOUT (--reload-timeout): expected a number of seconds from 1 to 600, got "601"',
    ],
    [
      { CONDUCTOR_RELOAD_TIMEOUT: '1e2' },
      'CONDUCTOR_RELOAD_TIMEOUT (--reload-timeout): expected a number of seconds from 1 to 600, got "1e2"',
    ],
    [
      { CONDUCTOR_RELOAD_TIMEOUT: '10s' },
      'CONDUCTOR_RELOAD_TIMEOUT (--reload-timeout): expected a number of seconds from 1 to 600, got "10s"',
    ],
    [
      { CONDUCTOR_RELOAD_TIMEOUT: '-5' },
      'CONDUCTOR_RELOAD_TIMEOUT (--reload-timeout): expected a number of seconds from 1 to 600, got "-5"',
    ],
    [
      { CONDUCTOR_LOG_LEVEL: 'verbose' },
      'CONDUCTOR_LOG_LEVEL (--log-level): expected debug, info, warn or error, got "verbose"',
    ],
    [
      { CONDUCTOR_LOG_LEVEL: 'INFO' },
      'CONDUCTOR_LOG_LEVEL (--log-level): expected debug, info, warn or error, got "INFO"',
    ],
    [
      { CONDUCTOR_LOG_FORMAT: 'pretty' },
      'CONDUCTOR_LOG_FORMAT (--log-format): expected auto, json or text, got "pretty"',
    ],
  ])('%j -> %j', (env, message) => {
    expect(configErrorOf(() => readConfig(env, {}, CWD))).toBe(message);
  });

  it.each<[RawArgs['values'], string]>([
    [{ mode: 'docker' }, 'CONDUCTOR_NGINX_MODE (--nginx-mode): expected managed or external, got "docker"'],
    [{ bindPort: '9001' }, 'BIND_PORT (--bind-port): the API port 9001 lies inside PORT_RANGE 9000-9009'],
    [{ token: 'short' }, 'CONDUCTOR_TOKEN (--token): the token must be at least 16 characters long (got 5)'],
    [{ allowNoAuth: 'perhaps' }, 'CONDUCTOR_ALLOW_NO_AUTH (--allow-no-auth): expected true or false, got "perhaps"'],
  ])('a bad flag value %j names the variable and the flag', (args, message) => {
    expect(configErrorOf(() => readConfig({}, args, CWD))).toBe(message);
  });

  it.each<NodeJS.ProcessEnv>([
    { CONDUCTOR_NGINX_MODE: 'x' },
    { PORT_RANGE: 'x' },
    { BIND_PORT: 'x' },
    { CONDUCTOR_TOKEN: 'x' },
    { CONDUCTOR_NGINX_MODE: 'external' },
    { CONDUCTOR_RELOAD_TIMEOUT: 'x' },
    { CONDUCTOR_LOG_LEVEL: 'x' },
  ])('every message starts with `VARIABLE (--flag):` (%j)', (env) => {
    expect(configErrorOf(() => readConfig(env, {}, CWD))).toMatch(/^[A-Z_]+ \(--[a-z-]+\): \S/);
  });
});

describe('parseCommandLine', () => {
  it.each<[string[], RawArgs]>([
    [[], { help: false, version: false, values: {} }],
    [['--help'], { help: true, version: false, values: {} }],
    [['--version'], { help: false, version: true, values: {} }],
    [['--help', '--version'], { help: true, version: true, values: {} }],
    [['--allow-no-auth'], { help: false, version: false, values: { allowNoAuth: 'true' } }],
    [
      ['--nginx-mode', 'external', '--port-range=7000-7009', '--token', TOKEN, '--home', 'state'],
      {
        help: false,
        version: false,
        values: { mode: 'external', portRange: '7000-7009', token: TOKEN, home: 'state' },
      },
    ],
    [
      [
        '--stream-config-path',
        '/etc/nginx/stream.d',
        '--nginx-bin=/opt/nginx',
        '--stream-prefix',
        'edge-',
        '--bind-address',
        '::1',
      ],
      {
        help: false,
        version: false,
        values: {
          streamConfigPath: '/etc/nginx/stream.d',
          nginxBin: '/opt/nginx',
          streamPrefix: 'edge-',
          bindAddress: '::1',
        },
      },
    ],
    [
      [
        '--bind-port',
        '6000',
        '--token-file',
        't',
        '--listen-address',
        '0.0.0.0',
        '--reload-timeout',
        '3',
        '--log-level',
        'debug',
      ],
      {
        help: false,
        version: false,
        values: { bindPort: '6000', tokenFile: 't', listenAddress: '0.0.0.0', reloadTimeout: '3', logLevel: 'debug' },
      },
    ],
    [
      [
        '--nginx-conf',
        '/etc/nginx/nginx.conf',
        '--nginx-pid-file',
        '/run/nginx.pid',
        '--nginx-error-log',
        '/var/log/nginx/error.log',
      ],
      {
        help: false,
        version: false,
        values: {
          nginxConf: '/etc/nginx/nginx.conf',
          nginxPidFile: '/run/nginx.pid',
          nginxErrorLog: '/var/log/nginx/error.log',
        },
      },
    ],
    [['--home', 'a', '--home', 'b'], { help: false, version: false, values: { home: 'b' } }],
  ])('%j', (argv, expected) => {
    expect(parseCommandLine(argv)).toEqual(expected);
  });

  it.each<[string[], string]>([
    [['--bogus'], '--bogus'],
    [['--bogus=1'], '--bogus'],
    [['-h'], '-h'],
    [['extra'], 'extra'],
    [['--home'], '--home'],
    [['--allow-no-auth=yes'], '--allow-no-auth'],
    [['--help=1'], '--help'],
  ])('refuses %j with a StartupError', (argv, mentioned) => {
    const message = configErrorOf(() => parseCommandLine(argv));
    expect(message).toContain(mentioned);
    expect(message.endsWith(' (see --help)')).toBe(true);
  });
});

describe('empty values', () => {
  it('treats an empty flag like an empty variable: unset, so the default holds', () => {
    const args = parseCommandLine(['--home=', '--stream-config-path=', '--port-range=']).values;
    const config = readConfig({}, args, CWD);
    expect(config.home).toBe('/srv/app/.conductor');
    expect(config.streamConfigPath).toBe('/srv/app/.conductor/stream.d');
    expect(config.portRange).toEqual({ start: 9000, end: 9009 });
  });
});
