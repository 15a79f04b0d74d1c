import { describe, expect, it } from '@jest/globals';
import { ConductorError, type StreamRecord, simpleSpec } from '@stream-conductor/shared';
import { ACCESS_LOG_FORMAT } from '../src/nginx/access-log.js';
import {
  type LegacyParse,
  type MainConfOptions,
  nginxPath,
  parseLegacyFile,
  portOfStreamFileName,
  renderListen,
  renderMainConf,
  renderStreamFile,
  sizeConnections,
  streamFileName,
} from '../src/nginx/render.js';

const PREFIX = '_conductor_';

describe('streamFileName', () => {
  it.each<[string, number, string]>([
    [PREFIX, 9000, '_conductor_9000.conf'],
    [PREFIX, 1, '_conductor_1.conf'],
    [PREFIX, 65535, '_conductor_65535.conf'],
    ['edge-', 443, 'edge-443.conf'],
  ])('prefix %j port %d -> %j', (prefix, port, expected) => {
    expect(streamFileName(prefix, port)).toBe(expected);
  });

  it.each<number>([1, 22, 9000, 9009, 65535])('round-trips port %d through portOfStreamFileName', (port) => {
    expect(portOfStreamFileName(PREFIX, streamFileName(PREFIX, port))).toBe(port);
  });
});

describe('portOfStreamFileName', () => {
  it.each<[string, number | undefined]>([
    ['_conductor_9000.conf', 9000],
    ['_conductor_1.conf', 1],
    ['_conductor_65535.conf', 65535],
    // not ours
    ['_conductor_09000.conf', undefined],
    ['_conductor_0.conf', undefined],
    ['_conductor_70000.conf', undefined],
    ['_conductor_65536.conf', undefined],
    ['_conductor_123456.conf', undefined],
    ['_conductor_9000-x:1.conf', undefined],
    ['_conductor_9000-10.0.0.5:5432.conf', undefined],
    ['_conductor_.conf', undefined],
    ['_conductor_-1.conf', undefined],
    ['_conductor_+9000.conf', undefined],
    ['_conductor_9000 .conf', undefined],
    ['_conductor_9e3.conf', undefined],
    ['_conductor_9000.conf.bak', undefined],
    ['_conductor_9000.conf.adopted', undefined],
    ['_conductor_9000.CONF', undefined],
    ['_conductor_9000', undefined],
    ['.tmp-_conductor_9000.conf.1a2b3c4d', undefined],
    ['other_9000.conf', undefined],
    ['conductor_9000.conf', undefined],
    ['_CONDUCTOR_9000.conf', undefined],
    ['9000.conf', undefined],
    ['default.conf', undefined],
  ])('%j -> %j', (name, expected) => {
    expect(portOfStreamFileName(PREFIX, name)).toBe(expected);
  });

  it('uses the prefix it is given', () => {
    expect(portOfStreamFileName('edge-', 'edge-8080.conf')).toBe(8080);
    expect(portOfStreamFileName('edge-', '_conductor_8080.conf')).toBeUndefined();
  });
});

describe('renderListen', () => {
  it.each<[number, string | undefined, string]>([
    [9000, undefined, '9000'],
    [1, undefined, '1'],
    [65535, undefined, '65535'],
    [9000, '127.0.0.1', '127.0.0.1:9000'],
    [9000, '0.0.0.0', '0.0.0.0:9000'],
    [9000, '10.1.2.3', '10.1.2.3:9000'],
    [9000, '::1', '[::1]:9000'],
    [9000, '::', '[::]:9000'],
    [443, '2001:db8::1', '[2001:db8::1]:443'],
  ])('port %d address %j -> %j', (port, address, expected) => {
    expect(renderListen(port, address)).toBe(expected);
  });

  it.each<[number, string]>([
    [0, 'refusing to render port 0'],
    [-1, 'refusing to render port -1'],
    [65536, 'refusing to render port 65536'],
    [9000.5, 'refusing to render port 9000.5'],
    [Number.NaN, 'refusing to render port NaN'],
    [Number.POSITIVE_INFINITY, 'refusing to render port Infinity'],
  ])('refuses port %d', (port, message) => {
    expect(() => renderListen(port, undefined)).toThrow(new Error(message));
    expect(() => renderListen(port, '127.0.0.1')).toThrow(new Error(message));
  });

  it.each<string>([
    'localhost',
    'example.com',
    '',
    '[::1]',
    '127.0.0.1:80',
    '127.0.0.1; evil',
    '127.0.0.1 ',
    '1.2.3.04',
    '256.1.1.1',
    '::1]; proxy_pass x:1; [',
  ])('refuses listen address %j', (address) => {
    expect(() => renderListen(9000, address)).toThrow(
      new Error(`refusing to render listen address ${JSON.stringify(address)}`),
    );
  });
});

/** A plain one-backend TCP record, built by hand so that invalid values reach the renderer. */
function rec(port: number, backend: string, createdAt: string): StreamRecord {
  return {
    port,
    protocol: 'tcp',
    backends: [{ address: backend }],
    balance: 'round-robin',
    allow: [],
    proxyProtocol: false,
    labels: {},
    createdAt,
  };
}

describe('renderStreamFile', () => {
  const record: StreamRecord = rec(9000, '10.0.0.5:5432', '2026-01-02T03:04:05.678Z');

  it('renders the exact text for a record on every IPv4 address', () => {
    expect(renderStreamFile(record, { listenAddress: undefined })).toBe(
      [
        '# stream-conductor: port 9000 -> 10.0.0.5:5432 (created 2026-01-02T03:04:05.678Z)',
        '# Generated file: change streams through the conductor API, not here.',
        'server {',
        '    listen 9000;',
        '    proxy_buffer_size 256k;',
        '    proxy_half_close on;',
        '    proxy_pass 10.0.0.5:5432;',
        '}',
        '',
      ].join('\n'),
    );
  });

  it.each<[string | undefined, string, string]>([
    ['127.0.0.1', 'db.internal:5432', '127.0.0.1:9001'],
    ['::1', '[2001:db8::5]:443', '[::1]:9001'],
  ])('renders listen address %j with backend %j', (listenAddress, backend, listen) => {
    const text = renderStreamFile(rec(9001, backend, '2026-01-02T03:04:05+02:00'), { listenAddress });
    expect(text).toBe(
      `# stream-conductor: port 9001 -> ${backend} (created 2026-01-02T03:04:05+02:00)\n` +
        '# Generated file: change streams through the conductor API, not here.\n' +
        'server {\n' +
        `    listen ${listen};\n` +
        '    proxy_buffer_size 256k;\n' +
        '    proxy_half_close on;\n' +
        `    proxy_pass ${backend};\n` +
        '}\n',
    );
  });

  it('renders the canonical form of the backend', () => {
    const text = renderStreamFile(rec(9002, 'DB.Example.COM:22', '2026-01-02T03:04:05Z'), { listenAddress: undefined });
    expect(text.split('\n')[0]).toBe(
      '# stream-conductor: port 9002 -> db.example.com:22 (created 2026-01-02T03:04:05Z)',
    );
    expect(text.split('\n')[6]).toBe('    proxy_pass db.example.com:22;');
  });

  it.each<string>([
    '2026-01-02 03:04:05',
    '2026-01-02T03:04:05Z\nserver { listen 1; }',
    '2026-01-02T03:04:05Z; evil',
    '2026-01-02T03:04:05Z)',
    'yesterday',
    '',
  ])('leaves createdAt %j out of the comment', (createdAt) => {
    const text = renderStreamFile(rec(9000, '10.0.0.5:5432', createdAt), { listenAddress: undefined });
    expect(text).toBe(
      [
        '# stream-conductor: port 9000 -> 10.0.0.5:5432',
        '# Generated file: change streams through the conductor API, not here.',
        'server {',
        '    listen 9000;',
        '    proxy_buffer_size 256k;',
        '    proxy_half_close on;',
        '    proxy_pass 10.0.0.5:5432;',
        '}',
        '',
      ].join('\n'),
    );
  });

  it.each<string>([
    'a:1;proxy_timeout 1s',
    'a:1; } server { listen 22; proxy_pass b:2',
    'no-port',
    '',
    '10.0.0.5:0',
    '10.0.0.5:70000',
    '999.1.1.1:80',
    '::1:80',
    'host name:80',
    'a\n:1',
  ])('throws INVALID_INPUT for backend %j', (backend) => {
    const render = (): string =>
      renderStreamFile(rec(9000, backend, '2026-01-02T03:04:05Z'), { listenAddress: undefined });
    expect(render).toThrow(ConductorError);
    let code: string | undefined;
    try {
      render();
    } catch (error) {
      code = (error as ConductorError).code;
    }
    expect(code).toBe('INVALID_INPUT');
  });

  it.each<[number, string | undefined, string]>([
    [0, undefined, 'refusing to render port 0'],
    [70000, undefined, 'refusing to render port 70000'],
    [9000, 'localhost', 'refusing to render listen address "localhost"'],
  ])('throws for port %d / listen address %j', (port, listenAddress, message) => {
    expect(() => renderStreamFile(rec(port, 'a:1', '2026-01-02T03:04:05Z'), { listenAddress })).toThrow(
      new Error(message),
    );
  });
});

describe('renderStreamFile with features', () => {
  const full = (spec: Partial<StreamRecord>): StreamRecord => ({
    ...rec(9100, 'a.example:80', '2026-01-02T03:04:05Z'),
    ...spec,
  });

  it('renders an upstream block for several backends, weights, backups and a balancing method', () => {
    const text = renderStreamFile(
      full({
        backends: [
          { address: 'a.example:80' },
          { address: 'b.example:80', weight: 3 },
          { address: '[2001:db8::1]:80', backup: true },
        ],
        balance: 'least-conn',
      }),
      { listenAddress: undefined },
    );
    expect(text).toBe(
      [
        '# stream-conductor: port 9100 -> a.example:80, b.example:80, [2001:db8::1]:80 (created 2026-01-02T03:04:05Z)',
        '# Generated file: change streams through the conductor API, not here.',
        'upstream conductor_9100 {',
        '    least_conn;',
        '    server a.example:80;',
        '    server b.example:80 weight=3;',
        '    server [2001:db8::1]:80 backup;',
        '}',
        'server {',
        '    listen 9100;',
        '    proxy_buffer_size 256k;',
        '    proxy_half_close on;',
        '    proxy_pass conductor_9100;',
        '}',
        '',
      ].join('\n'),
    );
  });

  it("logs each session to the access log it is given, in the daemon's format", () => {
    const text = renderStreamFile(full({}), {
      listenAddress: undefined,
      accessLog: '/srv/sc/.conductor/nginx/0/access.log',
    });
    expect(text).toContain('    access_log /srv/sc/.conductor/nginx/0/access.log conductor_v1;\n');
    expect(renderStreamFile(full({}), { listenAddress: undefined })).not.toContain('access_log');
  });

  it('hashes on the client address with hash-ip', () => {
    const text = renderStreamFile(
      full({ backends: [{ address: 'a.example:80' }, { address: 'b.example:80' }], balance: 'hash-ip' }),
      { listenAddress: undefined },
    );
    expect(text).toContain('    hash $remote_addr consistent;\n');
  });

  it.each<[StreamRecord['protocol'], string[]]>([
    ['udp', ['    listen 127.0.0.2:9100 udp;']],
    ['tcp+udp', ['    listen 127.0.0.2:9100;', '    listen 127.0.0.2:9100 udp;']],
  ])('listens with %s', (protocol, listens) => {
    const text = renderStreamFile(full({ protocol, listenAddress: '127.0.0.2' }), { listenAddress: '127.0.0.1' });
    expect(text.split('\n').filter((line) => line.includes('listen'))).toEqual(listens);
    expect(text.includes('proxy_buffer_size')).toBe(protocol !== 'udp');
    expect(text.includes('proxy_half_close on;')).toBe(protocol !== 'udp');
  });

  it('renders the allow-list, the timeouts, the PROXY protocol and the throughput profile', () => {
    const text = renderStreamFile(
      full({
        allow: ['10.0.0.0/8', '2001:db8::/32'],
        connectTimeoutMs: 500,
        idleTimeoutMs: 1_800_000,
        proxyProtocol: true,
        profile: 'throughput',
      }),
      { listenAddress: undefined },
    );
    expect(text.split('\n').slice(2, 13)).toEqual([
      'server {',
      '    listen 9100;',
      '    allow 10.0.0.0/8;',
      '    allow 2001:db8::/32;',
      '    deny all;',
      '    proxy_connect_timeout 500ms;',
      '    proxy_timeout 30m;',
      '    proxy_protocol on;',
      '    proxy_buffer_size 1m;',
      '    proxy_half_close on;',
      '    proxy_pass a.example:80;',
    ]);
  });

  it('renders the session limits: zones of their own at the stream level, the counts and rates in the server', () => {
    const text = renderStreamFile(
      full({ maxConnections: 100, maxConnectionsPerClient: 4, uploadRate: 524_288, downloadRate: 10_485_760 }),
      { listenAddress: undefined },
    );
    expect(text.split('\n').slice(2, 16)).toEqual([
      'limit_conn_zone $server_port zone=conductor_9100_sessions:1m;',
      'limit_conn_zone $binary_remote_addr zone=conductor_9100_clients:1m;',
      'server {',
      '    listen 9100;',
      '    limit_conn conductor_9100_sessions 100;',
      '    limit_conn conductor_9100_clients 4;',
      '    limit_conn_log_level info;',
      '    proxy_upload_rate 524288;',
      '    proxy_download_rate 10485760;',
      '    proxy_buffer_size 256k;',
      '    proxy_half_close on;',
      '    proxy_pass a.example:80;',
      '}',
      '',
    ]);
  });

  it('renders only the limits a stream has: a rate alone needs no zone', () => {
    const text = renderStreamFile(full({ downloadRate: 1024 }), { listenAddress: undefined });
    expect(text).toContain('    proxy_download_rate 1024;\n');
    expect(text).not.toMatch(/limit_conn|proxy_upload_rate/);
    const perClient = renderStreamFile(full({ maxConnectionsPerClient: 2 }), { listenAddress: undefined });
    expect(perClient.match(/^.*limit_conn.*$/gm)).toEqual([
      'limit_conn_zone $binary_remote_addr zone=conductor_9100_clients:1m;',
      '    limit_conn conductor_9100_clients 2;',
      '    limit_conn_log_level info;',
    ]);
  });

  it.each<[string, Partial<StreamRecord>]>([
    ['a session limit of zero', { maxConnections: 0 }],
    ['a per-client limit that is not a whole number', { maxConnectionsPerClient: 2.5 }],
    ['a rate with syntax in it', { uploadRate: '1m; deny all' as unknown as number }],
    ['a rate past the largest', { downloadRate: 11 * 1024 ** 3 }],
    ['an allow entry that is not a network', { allow: ['all; deny'] }],
    ['a weight out of range', { backends: [{ address: 'a.example:80', weight: 0 }, { address: 'b.example:80' }] }],
    ['a timeout that is not a whole number', { idleTimeoutMs: 1.5 }],
    ['a backend with syntax in it', { backends: [{ address: 'a.example:80;' }] }],
  ])('refuses to render %s, even when it bypassed the API', (_what, spec) => {
    expect(() => renderStreamFile(full(spec), { listenAddress: undefined })).toThrow();
  });
});

describe('nginxPath', () => {
  it.each<string>([
    '/run/nginx.pid',
    '/var/lib/conductor/.conductor/nginx/error.log',
    '/home/u/.conductor/stream.d/_conductor_*.conf',
    '/usr/lib/nginx/modules/ngx_stream_module.so',
    '/a/b-c_d/e+f=g,h:i@j',
    'relative/path.conf',
  ])('accepts %j unchanged', (path) => {
    expect(nginxPath(path)).toBe(path);
  });

  it.each<string>([
    '/home/my user/.conductor/nginx.pid',
    '/tmp/a"b',
    "/tmp/a'b",
    '/tmp/a;b',
    '/tmp/$prefix/x',
    '/tmp/a{b',
    '/tmp/a}b',
    '/tmp/a\nb',
    '/tmp/a\tb',
    '/tmp/a\\b',
    '/tmp/a#b',
    '/tmp/é',
    '',
  ])('refuses %j', (path) => {
    expect(() => nginxPath(path)).toThrow(
      new Error(
        `path ${JSON.stringify(path)} holds characters that cannot be written into nginx's configuration safely`,
      ),
    );
  });
});

describe('renderMainConf', () => {
  const base: MainConfOptions = {
    pidFile: '/srv/sc/.conductor/nginx/nginx.pid',
    errorLog: '/srv/sc/.conductor/nginx/error.log',
    streamModule: '/usr/lib/nginx/modules/ngx_stream_module.so',
    includeGlob: '/srv/sc/.conductor/stream.d/_conductor_*.conf',
    workerConnections: 4122,
    workerRlimitNofile: 5146,
    workerProcesses: 'auto',
  };

  it('renders the exact text with a dynamic stream module', () => {
    expect(renderMainConf(base)).toBe(
      [
        '# Generated by stream-conductor for the nginx it manages; rewritten at every start.',
        'master_process on;',
        'worker_processes auto;',
        'pid /srv/sc/.conductor/nginx/nginx.pid;',
        'error_log /srv/sc/.conductor/nginx/error.log warn;',
        'worker_rlimit_nofile 5146;',
        'load_module /usr/lib/nginx/modules/ngx_stream_module.so;',
        '',
        'events {',
        '    worker_connections 4122;',
        '}',
        '',
        'stream {',
        `    ${ACCESS_LOG_FORMAT}`,
        '    map_hash_bucket_size 512;',
        '    include /srv/sc/.conductor/stream.d/_conductor_*.conf;',
        '}',
        '',
      ].join('\n'),
    );
  });

  it('renders no load_module line when nginx has the stream module built in', () => {
    expect(
      renderMainConf({ ...base, streamModule: undefined, workerConnections: 3072, workerRlimitNofile: 4096 }),
    ).toBe(
      [
        '# Generated by stream-conductor for the nginx it manages; rewritten at every start.',
        'master_process on;',
        'worker_processes auto;',
        'pid /srv/sc/.conductor/nginx/nginx.pid;',
        'error_log /srv/sc/.conductor/nginx/error.log warn;',
        'worker_rlimit_nofile 4096;',
        '',
        'events {',
        '    worker_connections 3072;',
        '}',
        '',
        'stream {',
        `    ${ACCESS_LOG_FORMAT}`,
        '    map_hash_bucket_size 512;',
        '    include /srv/sc/.conductor/stream.d/_conductor_*.conf;',
        '}',
        '',
      ].join('\n'),
    );
  });

  it.each<[keyof MainConfOptions, string]>([
    ['pidFile', '/srv/my home/nginx.pid'],
    ['errorLog', '/srv/sc/error.log; load_module /tmp/evil.so'],
    ['streamModule', '/usr/lib/"x"/ngx_stream_module.so'],
    ['includeGlob', '/srv/$x/*.conf'],
    ['includeGlob', '/srv/sc/stream.d/{a,b}.conf'],
  ])('refuses a %s of %j', (field, value) => {
    expect(() => renderMainConf({ ...base, [field]: value })).toThrow(
      new Error(
        `path ${JSON.stringify(value)} holds characters that cannot be written into nginx's configuration safely`,
      ),
    );
  });
});

describe('sizeConnections', () => {
  it.each<[number, number | undefined, number, number]>([
    // rangeSize, hard limit, workerConnections, workerRlimitNofile
    [10, undefined, 4122, 5146],
    [1, undefined, 4113, 5137],
    [1000, undefined, 5112, 6136],
    [65535, undefined, 69647, 70671],
    [10, 1_048_576, 4122, 5146],
    [10, 5146, 4122, 5146],
    [10, 5145, 4121, 5145],
    [10, 4096, 3072, 4096],
    [10, 1024, 26, 1024],
    [5000, 4096, 5016, 4096],
    [65535, 65536, 65551, 65536],
  ])(
    'range of %d ports, hard limit %j -> %d connections, rlimit %d',
    (rangeSize, hard, workerConnections, workerRlimitNofile) => {
      expect(sizeConnections(rangeSize, hard)).toEqual({ workerConnections, workerRlimitNofile });
    },
  );

  it.each<[number, number | undefined]>([
    [1, undefined],
    [10, 1024],
    [10, 4096],
    [5000, 4096],
    [65535, 1024],
    [65535, undefined],
  ])('always leaves room for the whole range (%d ports, hard limit %j)', (rangeSize, hard) => {
    const { workerConnections, workerRlimitNofile } = sizeConnections(rangeSize, hard);
    expect(workerConnections).toBeGreaterThanOrEqual(rangeSize + 16);
    if (hard !== undefined) expect(workerRlimitNofile).toBeLessThanOrEqual(hard);
  });
});

describe('parseLegacyFile', () => {
  const oldFile = (port: string, backend: string): string =>
    [
      '# created 2019-05-01 12:00:00 by stream-api',
      'server {',
      `    listen ${port};`,
      `    proxy_pass ${backend};`,
      '}',
      '',
    ].join('\n');

  it.each<[string, string, LegacyParse]>([
    [
      '_conductor_9000-10.0.0.5:5432.conf',
      oldFile('9000', '10.0.0.5:5432'),
      { spec: simpleSpec(9000, '10.0.0.5:5432') },
    ],
    [
      '_conductor_9001-DB.Example.com:22.conf',
      oldFile('9001', 'DB.Example.com:22'),
      { spec: simpleSpec(9001, 'db.example.com:22') },
    ],
    [
      '_conductor_9002-[2001:db8::1]:443.conf',
      oldFile('9002', '[2001:DB8::1]:443'),
      { spec: simpleSpec(9002, '[2001:db8::1]:443') },
    ],
    ['_conductor_9003-a:1.conf', 'server { listen 9003; proxy_pass a:1; }', { spec: simpleSpec(9003, 'a:1') }],
    ['_conductor_9004-a:1.conf', 'server{listen 9004;proxy_pass a:1;}\n', { spec: simpleSpec(9004, 'a:1') }],
    [
      '_conductor_9005-a:1.conf',
      '  # one\n# two\r\nserver {\r\n\tlisten 9005;\r\n\tproxy_pass a:1;\r\n}\r\n',
      { spec: simpleSpec(9005, 'a:1') },
    ],
  ])('adopts %j', (name, content, expected) => {
    expect(parseLegacyFile(PREFIX, name, content)).toEqual(expected);
  });

  const notPlain: LegacyParse = {
    error: 'its content is not a plain `server { listen <port>; proxy_pass <backend>; }`',
  };

  it.each<[string, string]>([
    ['injected directive after proxy_pass', 'server { listen 9000; proxy_pass a:1;proxy_timeout 1s; }'],
    ['injected directive on its own line', oldFile('9000', 'a:1').replace('}', '    proxy_timeout 1s;\n}')],
    ['a second server block', 'server { listen 9000; proxy_pass a:1; } server { listen 22; proxy_pass b:2; }'],
    ['an inline comment', 'server { listen 9000; proxy_pass a:1; # note\n}'],
    ['a listen address', 'server { listen 127.0.0.1:9000; proxy_pass a:1; }'],
    ['a listen option', 'server { listen 9000 udp; proxy_pass a:1; }'],
    ['directives in the other order', 'server { proxy_pass a:1; listen 9000; }'],
    ['no server block', 'listen 9000; proxy_pass a:1;'],
    ['an unclosed block', 'server { listen 9000; proxy_pass a:1;'],
    ['a missing semicolon', 'server { listen 9000; proxy_pass a:1 }'],
    ['an empty file', ''],
    ['only comments', '# created 2019-05-01\n# nothing else\n'],
    ['a nested block', 'server { listen 9000; proxy_pass a:1; upstream x { } }'],
  ])('refuses %s', (_what, content) => {
    expect(parseLegacyFile(PREFIX, '_conductor_9000-a:1.conf', content)).toEqual(notPlain);
  });

  it.each<[string, string, string]>([
    ['_conductor_9000-a:1.conf', '9001', 'it listens on 9001 but its name says 9000'],
    ['_conductor_9001-a:1.conf', '9000', 'it listens on 9000 but its name says 9001'],
    ['_conductor_09000-a:1.conf', '9000', 'it listens on 9000 but its name says 09000'],
  ])('refuses %j listening on %s', (name, listen, error) => {
    expect(parseLegacyFile(PREFIX, name, oldFile(listen, 'a:1'))).toEqual({ error });
  });

  it.each<[string, string]>([
    ['bad', 'backend "bad" has no port'],
    ['a:0', 'backend port must be a whole number from 1 to 65535, got 0'],
    ['a:70000', 'backend port must be a whole number from 1 to 65535, got 70000'],
    ['999.1.1.1:80', 'backend "999.1.1.1:80": "999.1.1.1" is not a valid IPv4 address'],
    ['unix:/tmp/sock', 'backend port must be a whole number from 1 to 65535, got "/tmp/sock"'],
    [
      '$upstream:80',
      'backend "$upstream:80": the host name label "$upstream" may hold only letters, digits and inner hyphens',
    ],
    ['-a:80', 'backend "-a:80": the host name label "-a" may hold only letters, digits and inner hyphens'],
  ])('refuses the backend %j', (backend, error) => {
    expect(parseLegacyFile(PREFIX, '_conductor_9000-x.conf', oldFile('9000', backend))).toEqual({ error });
  });

  it.each<string>([
    '_conductor_9000.conf',
    '_conductor_abc-a:1.conf',
    '_conductor_-a:1.conf',
    '_conductor_9000-.conf',
    '_conductor_9000-a:1.conf.adopted',
    '_conductor_9000-a:1.conf.rejected',
    '_conductor_9000-a:1',
    'other_9000-a:1.conf',
    '9000-a:1.conf',
    'default.conf',
  ])('returns undefined for the name %j', (name) => {
    expect(parseLegacyFile(PREFIX, name, oldFile('9000', 'a:1'))).toBeUndefined();
  });
});
