import { describe, expect, it } from '@jest/globals';
import { type NginxLogLine, parseNginxBuild, parseNginxLines, withoutPaths } from '../src/nginx/binary.js';

/** `/usr/sbin/nginx -V` of Debian's nginx 1.22.1 (stream as a dynamic module), verbatim. */
const DEBIAN_V = [
  'nginx version: nginx/1.22.1',
  'built with OpenSSL 3.0.22 25 Aug 2026 (running with OpenSSL 3.0.19 27 Jan 2026)',
  'TLS SNI support enabled',
  "configure arguments: --with-cc-opt='-g -O2 -ffile-prefix-map=/build/reproducible-path/nginx-1.22.1=. -fstack-protector-strong " +
    "-Wformat -Werror=format-security -fPIC -Wdate-time -D_FORTIFY_SOURCE=2' --with-ld-opt='-Wl,-z,relro -Wl,-z,now -fPIC' " +
    '--prefix=/usr/share/nginx --conf-path=/etc/nginx/nginx.conf --http-log-path=/var/log/nginx/access.log --error-log-path=stderr ' +
    '--lock-path=/var/lock/nginx.lock --pid-path=/run/nginx.pid --modules-path=/usr/lib/nginx/modules ' +
    '--http-client-body-temp-path=/var/lib/nginx/body --http-fastcgi-temp-path=/var/lib/nginx/fastcgi ' +
    '--http-proxy-temp-path=/var/lib/nginx/proxy --http-scgi-temp-path=/var/lib/nginx/scgi --http-uwsgi-temp-path=/var/lib/nginx/uwsgi ' +
    '--with-compat --with-debug --with-pcre-jit --with-http_ssl_module --with-http_stub_status_module --with-http_realip_module ' +
    '--with-http_auth_request_module --with-http_v2_module --with-http_dav_module --with-http_slice_module --with-threads ' +
    '--with-http_addition_module --with-http_flv_module --with-http_gunzip_module --with-http_gzip_static_module --with-http_mp4_module ' +
    '--with-http_random_index_module --with-http_secure_link_module --with-http_sub_module --with-mail_ssl_module ' +
    '--with-stream_ssl_module --with-stream_ssl_preread_module --with-stream_realip_module --with-http_geoip_module=dynamic ' +
    '--with-http_image_filter_module=dynamic --with-http_perl_module=dynamic --with-http_xslt_module=dynamic --with-mail=dynamic ' +
    '--with-stream=dynamic --with-stream_geoip_module=dynamic',
  '',
].join('\n');

/** The official nginx.org build: stream compiled in, no modules-path beyond its default. */
const OFFICIAL_V = [
  'nginx version: nginx/1.27.3',
  'built by gcc 12.2.0 (Debian 12.2.0-14)',
  'built with OpenSSL 3.0.11 19 Sep 2023 (running with OpenSSL 3.0.15 3 Sep 2024)',
  'TLS SNI support enabled',
  'configure arguments: --prefix=/etc/nginx --sbin-path=/usr/sbin/nginx --modules-path=/usr/lib/nginx/modules ' +
    '--conf-path=/etc/nginx/nginx.conf --error-log-path=/var/log/nginx/error.log --pid-path=/var/run/nginx.pid ' +
    '--with-http_ssl_module --with-stream --with-stream_realip_module --with-stream_ssl_module --with-stream_ssl_preread_module ' +
    "--with-cc-opt='-g -O2 -fstack-protector-strong -Wformat' --with-ld-opt='-Wl,-z,relro -Wl,-z,now -Wl,--as-needed -pie'",
  '',
].join('\n');

describe('parseNginxBuild', () => {
  it('reads the real Debian build (stream as a dynamic module)', () => {
    expect(parseNginxBuild(DEBIAN_V)).toEqual({
      version: '1.22.1',
      stream: 'dynamic',
      pidPath: '/run/nginx.pid',
      prefix: '/usr/share/nginx',
      modulesPath: '/usr/lib/nginx/modules',
    });
  });

  it('reads a build with stream compiled in', () => {
    expect(parseNginxBuild(OFFICIAL_V)).toEqual({
      version: '1.27.3',
      stream: 'builtin',
      pidPath: '/var/run/nginx.pid',
      prefix: '/etc/nginx',
      modulesPath: '/usr/lib/nginx/modules',
    });
  });

  it.each<[string, string, 'builtin' | 'dynamic' | 'missing']>([
    ['dynamic, last argument', DEBIAN_V.replace(' --with-stream_geoip_module=dynamic', ''), 'dynamic'],
    ['builtin instead of dynamic', DEBIAN_V.replace('--with-stream=dynamic', '--with-stream'), 'builtin'],
    [
      'builtin, last argument',
      DEBIAN_V.replace('--with-stream=dynamic --with-stream_geoip_module=dynamic', '--with-stream'),
      'builtin',
    ],
    [
      'builtin, last argument without newline',
      DEBIAN_V.replace('--with-stream=dynamic --with-stream_geoip_module=dynamic\n', '--with-stream'),
      'builtin',
    ],
    // Only stream_* sub-modules: they are not the stream module itself.
    ['missing, only sub-modules named', DEBIAN_V.replace('--with-stream=dynamic ', ''), 'missing'],
    [
      'missing, no stream at all',
      'nginx version: nginx/1.24.0\nconfigure arguments: --prefix=/usr --with-http_ssl_module\n',
      'missing',
    ],
    ['missing, no configure arguments', 'nginx version: nginx/1.24.0\n', 'missing'],
  ])('stream support: %s', (_what, text, stream) => {
    expect(parseNginxBuild(text).stream).toBe(stream);
  });

  it.each<[string, string, Omit<ReturnType<typeof parseNginxBuild>, 'stream'>]>([
    [
      'no modules-path: under the prefix',
      'nginx version: nginx/1.25.0\nconfigure arguments: --prefix=/opt/nginx --with-stream\n',
      { version: '1.25.0', pidPath: undefined, prefix: '/opt/nginx', modulesPath: '/opt/nginx/modules' },
    ],
    [
      'no prefix either: the default prefix',
      'nginx version: nginx/1.25.0 (custom)\nconfigure arguments: --with-stream=dynamic\n',
      { version: '1.25.0', pidPath: undefined, prefix: undefined, modulesPath: '/usr/share/nginx/modules' },
    ],
    [
      'not nginx at all',
      'bash: nginx: command not found\n',
      { version: 'unknown', pidPath: undefined, prefix: undefined, modulesPath: '/usr/share/nginx/modules' },
    ],
    [
      'empty output',
      '',
      { version: 'unknown', pidPath: undefined, prefix: undefined, modulesPath: '/usr/share/nginx/modules' },
    ],
  ])('%s', (_what, text, expected) => {
    const { stream: _stream, ...rest } = parseNginxBuild(text);
    expect(rest).toEqual(expected);
  });
});

describe('parseNginxLines', () => {
  it.each<[string, NginxLogLine[]]>([
    // nginx -t, with a prefix instead of a time stamp
    [
      'nginx: [emerg] unknown directive "foo" in /tmp/sc/stream.d/_conductor_9000.conf:3',
      [{ level: 'emerg', text: 'unknown directive "foo" in /tmp/sc/stream.d/_conductor_9000.conf:3' }],
    ],
    [
      'nginx: [warn] the "user" directive makes sense only if the master process runs with super-user privileges, ignored in /x/nginx.conf:1',
      [
        {
          level: 'warn',
          text: 'the "user" directive makes sense only if the master process runs with super-user privileges, ignored in /x/nginx.conf:1',
        },
      ],
    ],
    ['nginx: configuration file /etc/nginx/nginx.conf test failed', []],
    ['nginx: the configuration file /etc/nginx/nginx.conf syntax is ok', []],
    // error-log form: time stamp, pid#tid
    [
      '2026/11/25 20:43:30 [emerg] 2706#2706: bind() to 0.0.0.0:9000 failed (98: Address already in use)',
      [{ level: 'emerg', text: 'bind() to 0.0.0.0:9000 failed (98: Address already in use)' }],
    ],
    [
      '2026/11/25 20:43:30 [notice] 2706#2706: try again to bind() after 500ms',
      [{ level: 'notice', text: 'try again to bind() after 500ms' }],
    ],
    [
      '2026/11/25 20:43:32 [emerg] 2706#2706: still could not bind()',
      [{ level: 'emerg', text: 'still could not bind()' }],
    ],
    [
      '2026/11/25 21:07:19 [emerg] 15096#15096: open() "/nonexistent.conf" failed (2: No such file or directory)',
      [{ level: 'emerg', text: 'open() "/nonexistent.conf" failed (2: No such file or directory)' }],
    ],
    // with a connection id
    [
      '2026/11/25 20:44:02 [error] 2710#2710: *12 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, ' +
        'server: 0.0.0.0:9000, upstream: "127.0.0.1:1", bytes from/to client:0/0, bytes from/to upstream:0/0',
      [
        {
          level: 'error',
          text:
            'connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: 0.0.0.0:9000, ' +
            'upstream: "127.0.0.1:1", bytes from/to client:0/0, bytes from/to upstream:0/0',
        },
      ],
    ],
    [
      '2026/11/25 20:44:02 [info] 2710#2710: *123456 client 127.0.0.1:51234 connected to 0.0.0.0:9000',
      [{ level: 'info', text: 'client 127.0.0.1:51234 connected to 0.0.0.0:9000' }],
    ],
    [
      '2026/11/25 20:44:02 [alert] 1#1: *3 open socket #5 left in connection 4',
      [{ level: 'alert', text: 'open socket #5 left in connection 4' }],
    ],
    [
      '2026/11/25 20:44:02 [crit] 77#77: pwrite() "/x/error.log" failed (28: No space left on device)',
      [{ level: 'crit', text: 'pwrite() "/x/error.log" failed (28: No space left on device)' }],
    ],
    [
      '2026/11/25 20:44:02 [debug] 77#77: epoll add event: fd:6 op:1 ev:00002001',
      [{ level: 'debug', text: 'epoll add event: fd:6 op:1 ev:00002001' }],
    ],
    ['2026/11/25 20:44:02 [emerg] 77#77: trailing blanks   ', [{ level: 'emerg', text: 'trailing blanks' }]],
    // not nginx message lines
    ['', []],
    ['some other text', []],
    ['2026/11/25 20:44:02 [fatal] 77#77: not a level nginx has', []],
  ])('%j', (line, expected) => {
    expect(parseNginxLines(line)).toEqual(expected);
  });

  it('reads every message line of a multi-line output, in order', () => {
    const log = [
      '2026/11/25 20:43:30 [notice] 2706#2706: signal process started',
      '2026/11/25 20:43:30 [emerg] 2706#2706: bind() to 0.0.0.0:9000 failed (98: Address already in use)',
      '2026/11/25 20:43:30 [notice] 2706#2706: try again to bind() after 500ms',
      'nginx: configuration file /etc/nginx/nginx.conf test failed',
      '2026/11/25 20:43:32 [emerg] 2706#2706: still could not bind()',
      '',
    ].join('\n');
    expect(parseNginxLines(log)).toEqual([
      { level: 'notice', text: 'signal process started' },
      { level: 'emerg', text: 'bind() to 0.0.0.0:9000 failed (98: Address already in use)' },
      { level: 'notice', text: 'try again to bind() after 500ms' },
      { level: 'emerg', text: 'still could not bind()' },
    ]);
  });
});

describe('withoutPaths', () => {
  it.each<[string, string]>([
    ['unknown directive "foo" in /tmp/sc/stream.d/_conductor_9000.conf:3', 'unknown directive "foo"'],
    [
      'host not found in upstream "nosuch.invalid:80" in /srv/sc/.conductor/stream.d/_conductor_9001.conf:5',
      'host not found in upstream "nosuch.invalid:80"',
    ],
    [
      '"proxy_pass" directive is not allowed here in /srv/sc/.conductor/stream.d/_conductor_9000.conf:4',
      '"proxy_pass" directive is not allowed here',
    ],
    [
      'open() "/home/u/.conductor/stream.d/_conductor_9000.conf" failed (2: No such file or directory)',
      'open() "_conductor_9000.conf" failed (2: No such file or directory)',
    ],
    [
      'dlopen() "/usr/lib/nginx/modules/ngx_stream_module.so" failed (/usr/lib/nginx/modules/ngx_stream_module.so: cannot open shared object file: No such file or directory) in /x/nginx.conf:8',
      'dlopen() "ngx_stream_module.so" failed (ngx_stream_module.so: cannot open shared object file: No such file or directory)',
    ],
    [
      'bind() to 0.0.0.0:9000 failed (98: Address already in use)',
      'bind() to 0.0.0.0:9000 failed (98: Address already in use)',
    ],
    [
      'bind() to [::1]:9000 failed (98: Address already in use)',
      'bind() to [::1]:9000 failed (98: Address already in use)',
    ],
    ['still could not bind()', 'still could not bind()'],
    ['', ''],
  ])('%j -> %j', (text, expected) => {
    expect(withoutPaths(text)).toBe(expected);
  });
});
