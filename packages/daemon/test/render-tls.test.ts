import { describe, expect, it } from '@jest/globals';
import { parseStreamInput, type StreamRecord } from '@stream-conductor/shared';
import { renderStreamFile } from '../src/nginx/render.js';

const record = (fields: Record<string, unknown>, backend = '127.0.0.1:8080'): StreamRecord => ({
  ...parseStreamInput({ port: 9443, backend, ...fields }, { now: new Date() }),
  createdAt: '2026-12-01T00:00:00.000Z',
});

const material = {
  id: 'abc',
  cert: '/var/lib/sc/stream-tls/abc.cert.pem',
  key: '/var/lib/sc/stream-tls/abc.key.pem',
  ca: '/var/lib/sc/stream-tls/abc.ca.pem',
  certificates: [],
};

describe('renderStreamFile with TLS', () => {
  it("terminates TLS with the daemon's checked copies, never the operator's files", () => {
    const text = renderStreamFile(
      { ...record({ tlsCert: '/etc/le/fullchain.pem', tlsKey: '/etc/le/privkey.pem' }), tlsMaterial: material },
      { listenAddress: '127.0.0.1' },
    );
    expect(text).toContain('    listen 127.0.0.1:9443 ssl;\n');
    expect(text).toContain(`    ssl_certificate ${material.cert};\n    ssl_certificate_key ${material.key};\n`);
    expect(text).toContain('    ssl_protocols TLSv1.2 TLSv1.3;\n');
    expect(text).not.toContain('/etc/le/');
    expect(text).not.toContain('proxy_ssl');
  });

  it('originates TLS verified against the CA copy, by the backend name or host', () => {
    const named = renderStreamFile(
      { ...record({ backendTls: true, backendCa: '/etc/ca.pem', backendName: 'db.internal' }), tlsMaterial: material },
      { listenAddress: undefined },
    );
    expect(named).toContain(
      [
        '    proxy_ssl on;',
        '    proxy_ssl_protocols TLSv1.2 TLSv1.3;',
        '    proxy_ssl_server_name on;',
        '    proxy_ssl_name db.internal;',
        '    proxy_ssl_verify on;',
        '    proxy_ssl_verify_depth 4;',
        `    proxy_ssl_trusted_certificate ${material.ca};`,
      ].join('\n'),
    );
    expect(named).toContain('    listen 9443;\n');
    const byHost = renderStreamFile(
      { ...record({ backendTls: true, backendCa: '/etc/ca.pem' }, 'db.internal:5432'), tlsMaterial: material },
      { listenAddress: undefined },
    );
    expect(byHost).toContain('    proxy_ssl_name db.internal;\n');
    const unverified = renderStreamFile(record({ backendTls: true, backendVerify: false }), {
      listenAddress: undefined,
    });
    expect(unverified).toContain('    proxy_ssl on;\n');
    expect(unverified).not.toContain('proxy_ssl_verify');
  });

  it('refuses to render TLS files that were not checked, or a copy path nginx would misread', () => {
    expect(() =>
      renderStreamFile(record({ tlsCert: '/c.pem', tlsKey: '/k.pem' }), { listenAddress: undefined }),
    ).toThrow(/its TLS files were not checked/);
    expect(() =>
      renderStreamFile(record({ backendTls: true, backendCa: '/ca.pem', backendName: 'x.internal' }), {
        listenAddress: undefined,
      }),
    ).toThrow(/its backend CA was not checked/);
    expect(() =>
      renderStreamFile(
        { ...record({ tlsCert: '/c.pem', tlsKey: '/k.pem' }), tlsMaterial: { ...material, cert: '/a b;.pem' } },
        { listenAddress: undefined },
      ),
    ).toThrow(/cannot be written into nginx's configuration/);
    expect(() =>
      renderStreamFile(
        { ...record({ tlsCert: '/c.pem', tlsKey: '/k.pem' }), protocol: 'udp', tlsMaterial: material },
        { listenAddress: undefined },
      ),
    ).toThrow(/refusing to render TLS on a udp stream/);
  });
});
