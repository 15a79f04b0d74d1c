import { describe, expect, it } from '@jest/globals';
import { parseServerName, parseStreamInput, type StreamRecord } from '@stream-conductor/shared';
import { renderStreamFile } from '../src/nginx/render.js';

const record = (routes: unknown[]): StreamRecord => ({
  ...parseStreamInput({ port: 8443, routes }, { now: new Date() }),
  createdAt: '2026-12-01T00:00:00.000Z',
});

describe('renderStreamFile with routes by server name', () => {
  it('maps names to upstreams of the file (hostnames), the rest to the default, no hello to the no-tls route', () => {
    const text = renderStreamFile(
      record([
        { sni: 'Git.Example.com', backend: '127.0.0.1:3443' },
        { sni: '*.db.example.com', backends: ['127.0.0.1:5433', { address: '127.0.0.2:5433', backup: true }] },
        { default: true, backend: '127.0.0.1:4443' },
        { noTls: true, backend: '127.0.0.1:22' },
      ]),
      { listenAddress: '127.0.0.1' },
    );
    expect(text).toContain('upstream conductor_8443_none {\n    server 127.0.0.1:1 down;\n}');
    expect(text).toContain(
      'upstream conductor_8443_r1 {\n    server 127.0.0.1:5433;\n    server 127.0.0.2:5433 backup;\n}',
    );
    expect(text).toContain(
      'map $ssl_preread_server_name $conductor_8443_sni {\n    hostnames;\n    \\\\git.example.com conductor_8443_r0;\n    \\\\*.db.example.com conductor_8443_r1;\n    default conductor_8443_r2;\n}',
    );
    expect(text).toContain(
      'map $ssl_preread_protocol $conductor_8443_route {\n    "" conductor_8443_r3;\n    default $conductor_8443_sni;\n}',
    );
    expect(text).toContain('    listen 127.0.0.1:8443;\n');
    expect(text).toContain('    ssl_preread on;\n    proxy_pass $conductor_8443_route;\n}');
    expect(text).not.toContain(' ssl;');
  });

  it('closes what matches nothing when there is no default or no-tls route: the down upstream', () => {
    const text = renderStreamFile(record([{ sni: 'git.example.com', backend: '127.0.0.1:3443' }]), {
      listenAddress: undefined,
    });
    expect(text).toContain('    default conductor_8443_none;\n}');
    expect(text).toContain('    "" conductor_8443_none;\n');
  });

  it("logs each session with the id of the route it took, in the port's own log format", () => {
    const routes = [
      { sni: 'git.example.com', backend: '127.0.0.1:3443' },
      { sni: '*.db.example.com', backend: '127.0.0.1:5433' },
      { default: true, backend: '127.0.0.1:4443' },
      { noTls: true, backend: '127.0.0.1:22' },
    ];
    const text = renderStreamFile(record(routes), { listenAddress: undefined, accessLog: '/var/log/access.log' });
    expect(text).toContain(
      'map $ssl_preread_server_name $conductor_8443_sni_id {\n    hostnames;\n    \\\\git.example.com "git.example.com";\n    \\\\*.db.example.com "*.db.example.com";\n    default "@default";\n}',
    );
    expect(text).toContain(
      'map $ssl_preread_protocol $conductor_8443_route_id {\n    "" "@no-tls";\n    default $conductor_8443_sni_id;\n}',
    );
    expect(text).toMatch(
      /^log_format conductor_v1_8443 escape=json '\{"t":.*,"route":"\$conductor_8443_route_id"\}';$/m,
    );
    expect(text).toContain('    access_log /var/log/access.log conductor_v1_8443;\n');
    // Without a default or no-tls route: an empty id, the session is the port's only.
    const bare = renderStreamFile(record(routes.slice(0, 1)), { listenAddress: undefined, accessLog: '/a.log' });
    expect(bare).toContain('    default "";\n}');
    expect(bare).toContain('    "" "";\n');
    // Without an access log, no format to name.
    expect(renderStreamFile(record(routes), { listenAddress: undefined })).not.toContain('log_format');
  });

  it('refuses a name that bypassed the API', () => {
    const bad = record([{ sni: 'git.example.com', backend: '127.0.0.1:3443' }]);
    const route = bad.routes?.[0];
    if (route) route.name = 'x; }';
    expect(() => renderStreamFile(bad, { listenAddress: undefined })).toThrow(/refusing to render server name/);
  });
});

describe('parseServerName', () => {
  it.each([
    ['GIT.example.com', 'git.example.com'],
    ['*.db.example.com', '*.db.example.com'],
    ['a-b.c0', 'a-b.c0'],
  ])('takes %s as %s', (given, name) => {
    expect(parseServerName(given, 'sni')).toBe(name);
  });
  it.each([
    ['', /must be a server name/],
    ['a.', /ends with a dot/],
    ['a..b', /an empty label/],
    ['*', /a wildcard is \*\.suffix/],
    ['*.*.b', /\* may only be the whole first label/],
    ['a.*', /\* may only be the whole first label/],
    ['10.0.0.1', /is an IP address/],
    ['[::1]', /is an IP address/],
    ['a_b.c', /label "a_b"/],
    [`${'a'.repeat(64)}.com`, /is not 1-63/],
    [`${'a.'.repeat(127)}com`, /longer than 253/],
  ])('refuses %j', (given, message) => {
    expect(() => parseServerName(given, 'sni')).toThrow(message);
  });
});
