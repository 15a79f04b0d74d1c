/**
 * The API over the network: HTTPS with real certificates (made by the test with openssl), the
 * CLI verifying the daemon (--ca), mutual TLS, a renewed certificate picked up without a restart
 * (and a bad one refused, the old one kept), the CLI's refusal to send a token in clear text off
 * this machine, and tokens with roles: a read token looks, and is refused every change (403)
 * with nothing changed; the audit log names the token that acted.
 */

import { copyFile, rename, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  type Certs,
  certificateValidBetween,
  fingerprintOf,
  httpsRequest,
  makeCerts,
  signCertificate,
} from '../helpers/certs.js';
import { runCli } from '../helpers/cli.js';
import { type Daemon, daemonEnv, runDaemonExpectingExit, untilOutput } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';
import { freePortBlock } from '../helpers/ports.js';

const ADMIN = 'admin-token-0123456789abcdef';
const MONITORING = 'monitoring-token-0123456789';

const daemons = daemonFixture();
let certs: Certs;
/** The files the daemon serves: copies, so that the test can renew them in place. */
let tls: { dir: string; cert: string; key: string };
let tokenFile: string;
let backend: EchoBackend;
let daemon: Daemon;

beforeAll(async () => {
  const dir = await daemons.dir();
  certs = await makeCerts(dir);
  tls = { dir, cert: join(dir, 'served.pem'), key: join(dir, 'served.key') };
  await copyFile(certs.serverCert, tls.cert);
  await copyFile(certs.serverKey, tls.key);
  tokenFile = join(dir, 'tokens');
  await writeFile(tokenFile, `# name token role\nadmin ${ADMIN} write\nmonitoring ${MONITORING} read\n`, {
    mode: 0o600,
  });
  backend = await EchoBackend.start('tls');
  daemon = await daemons.start({
    rangeSize: 6,
    env: {
      CONDUCTOR_NGINX_INSTANCES: '1',
      CONDUCTOR_TLS_CERT: tls.cert,
      CONDUCTOR_TLS_KEY: tls.key,
      CONDUCTOR_TOKEN_FILE: tokenFile,
    },
  });
}, 60_000);

afterAll(async () => {
  await backend?.close();
});

/** The CLI with the write token and the CA (an empty CONDUCTOR_CA gives none). */
const cli = (args: string[], env: Record<string, string> = {}) =>
  runCli(args, { CONDUCTOR_URL: daemon.url, CONDUCTOR_TOKEN: ADMIN, CONDUCTOR_CA: certs.ca, ...env });

const api = (path: string, options: Parameters<typeof httpsRequest>[1] = {}) =>
  httpsRequest(`${daemon.url}${path}`, { ca: certs.ca, ...options });

describe('HTTPS', () => {
  it('serves HTTPS only: the daemon says so, and the CLI talks to it with --ca', async () => {
    expect(daemon.url).toMatch(/^https:/);
    expect(daemon.logs).toContain(`"msg":"ready","api":"https://127.0.0.1:${daemon.apiPort}"`);
    const run = await cli(['--ca', certs.ca, 'status', '--json'], { CONDUCTOR_CA: '' });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ version: expect.any(String) });
    // The variable works as the flag does.
    expect((await cli(['ls'])).code).toBe(0);
  });

  it('the CLI refuses a daemon it cannot verify: exit 3, the cause named, the token not sent', async () => {
    for (const args of [['ls'], ['--ca', certs.wrongCa, 'ls']]) {
      const run = await cli(args, { CONDUCTOR_CA: '' });
      expect(run.code).toBe(3);
      expect(run.stdout).toBe('');
      expect(run.stderr).toMatch(
        new RegExp(
          `^conductor: cannot verify the certificate of the daemon at https://127\\.0\\.0\\.1:${daemon.apiPort} \\((UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY): .*\\); nothing was sent\\nhint: give the CA that signed it with --ca FILE`,
        ),
      );
    }
  });

  it('--insecure skips the check and says so on stderr; CONDUCTOR_INSECURE does the same, a bad value is a usage error', async () => {
    const run = await cli(['--insecure', 'ls', '--json'], { CONDUCTOR_CA: '' });
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual(expect.any(Array));
    expect(run.stderr).toMatch(/^warning: --insecure: the certificate of https:\/\/127\.0\.0\.1:\d+ is not verified/);
    expect((await cli(['ls'], { CONDUCTOR_INSECURE: 'yes', CONDUCTOR_CA: '' })).code).toBe(0);
    const bad = await cli(['ls'], { CONDUCTOR_INSECURE: 'maybe', CONDUCTOR_CA: certs.ca });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('CONDUCTOR_INSECURE must be 1, true, yes, on or 0, false, no, off, got "maybe"');
  });

  it('plain HTTP to the HTTPS port gets no answer', async () => {
    const run = await cli(['ls'], { CONDUCTOR_URL: `http://127.0.0.1:${daemon.apiPort}`, CONDUCTOR_CA: '' });
    expect(run.code).toBe(3);
    expect(run.stdout).toBe('');
  });

  it('closes a connection that does not complete its handshake within 5 s', async () => {
    const { connect } = await import('node:net');
    const started = Date.now();
    const socket = connect({ host: '127.0.0.1', port: daemon.apiPort });
    // Connected, and then silent: no ClientHello.
    await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThan(4000);
    expect(elapsed).toBeLessThan(10_000);
  });

  it('refuses TLS older than 1.2', async () => {
    const { connect } = await import('node:tls');
    const outcome = await new Promise<string>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port: daemon.apiPort, maxVersion: 'TLSv1.1', minVersion: 'TLSv1' });
      socket.once('secureConnect', () => {
        socket.destroy();
        resolve('connected');
      });
      socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    });
    expect(outcome).not.toBe('connected');
  });
});

describe('the token in clear text', () => {
  it('the CLI refuses to send a token over http:// to a non-loopback address, before connecting', async () => {
    // 0.0.0.0 is not a loopback address, yet Linux sends a connection to it to 127.0.0.1: the
    // listener there sees whether anything was sent, and nothing can leave the host even if the
    // refusal broke.
    let connections = 0;
    const listener = createServer((socket) => {
      connections += 1;
      socket.destroy();
    });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const { port } = listener.address() as AddressInfo;
    try {
      const url = `http://0.0.0.0:${port}`;
      const run = await runCli(['ls'], { CONDUCTOR_URL: url, CONDUCTOR_TOKEN: ADMIN });
      expect(run.code).toBe(2);
      expect(run.stdout).toBe('');
      expect(run.stderr).toBe(
        `conductor: refusing to send the API token in clear text to ${url}: it is not a loopback address\n` +
          'hint: use https:// (the daemon serves it with CONDUCTOR_TLS_CERT and CONDUCTOR_TLS_KEY), or --insecure on a network you trust\n',
      );
      expect(connections).toBe(0);
    } finally {
      await new Promise((resolve) => listener.close(resolve));
    }
  });

  it('--ca with an http:// URL is a usage error: nothing would be verified', async () => {
    const run = await runCli(['--ca', certs.ca, 'ls'], { CONDUCTOR_URL: 'http://127.0.0.1:1' });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--ca, --cert and --key are for https:// URLs');
  });
});

describe('a renewed certificate', () => {
  const served = async (): Promise<string | undefined> => (await api('/status')).fingerprint256;

  it('is served to new connections without a restart; a set that cannot serve is refused and the old one kept', async () => {
    const pid = daemon.child.pid;
    expect(await served()).toBe(await fingerprintOf(certs.serverCert));

    // A renewal: the same key certified again, renamed into place as certificate tools do.
    const renewed = await signCertificate(certs.dir, 'ca', 'renewed', 'server', 10, 'server.key');
    const fingerprint = await fingerprintOf(renewed);
    const picked = untilOutput(
      daemon.child,
      new RegExp(`new certificate","cert":"[^"]*","fingerprint256":"${fingerprint}"`),
      20_000,
    );
    await copyFile(renewed, `${tls.cert}.new`);
    await rename(`${tls.cert}.new`, tls.cert);
    await picked;
    expect(await served()).toBe(fingerprint);
    expect((await cli(['--ca', certs.ca, 'ls'])).code).toBe(0);

    // A key that is not the certificate's: logged, and the renewed certificate still served.
    const refused = untilOutput(
      daemon.child,
      /"msg":"the API TLS files changed but cannot serve; the certificate in use is kept"/,
      20_000,
    );
    await copyFile(certs.wrongServerKey, tls.key);
    await refused;
    expect(await served()).toBe(fingerprint);
    expect((await cli(['--ca', certs.ca, 'ls'])).code).toBe(0);

    // A renewal that expired, and one not valid yet: both logged, the renewed certificate still served.
    for (const [name, start, end] of [
      ['expired', '20200101000000Z', '20200102000000Z'],
      ['not-yet', '20991231000000Z', '21000101000000Z'],
    ] as const) {
      const kept = untilOutput(
        daemon.child,
        /"msg":"the API TLS files changed but cannot serve; the certificate in use is kept".*"error":"the new certificate (expired|is not valid before)/,
        20_000,
      );
      const bad = await certificateValidBetween(certs.dir, 'ca', name, 'server.key', start, end);
      await copyFile(certs.serverKey, tls.key);
      await copyFile(bad, `${tls.cert}.new`);
      await rename(`${tls.cert}.new`, tls.cert);
      await kept;
      expect(await served()).toBe(fingerprint);
    }

    // The right key back: served again, by the same process all along.
    const back = untilOutput(
      daemon.child,
      new RegExp(`new certificate","cert":"[^"]*","fingerprint256":"${fingerprint}"`),
      20_000,
    );
    await copyFile(renewed, `${tls.cert}.new`);
    await rename(`${tls.cert}.new`, tls.cert);
    await back;
    expect(await served()).toBe(fingerprint);
    expect(daemon.child.pid).toBe(pid);
    expect(daemon.child.exitCode).toBeNull();
  });
});

interface StreamsBody {
  streams: Array<{ port: number; backends: Array<{ address: string }>; expiresAt?: string; state: string }>;
}

interface EventsBody {
  events: Array<{ actor: string; action: string; ports: number[]; result: string }>;
}

describe('token roles', () => {
  it('a read token looks: listings, get, status, stats, events, metrics, the legacy reads, a dry-run apply', async () => {
    const port = daemon.rangeStart;
    expect((await cli(['create', String(port), `127.0.0.1:${backend.port}`])).code).toBe(0);
    const read = { CONDUCTOR_TOKEN: MONITORING, CONDUCTOR_CA: certs.ca };
    for (const args of [['ls'], ['ls', '--stats'], ['get', String(port)], ['status'], ['events'], ['free-port']]) {
      const run = await cli(args, read);
      expect({ args, code: run.code, stderr: run.stderr }).toEqual({ args, code: 0, stderr: '' });
    }
    for (const path of [
      '/v1/streams',
      `/v1/streams/${port}?stats=1`,
      '/v1/status',
      '/v1/events',
      '/v1/free-port',
      '/metrics',
      '/getstreams',
      `/hasstream/${port}`,
      '/getfreeport',
      '/status',
    ]) {
      const answer = await api(path, { token: MONITORING });
      expect({ path, status: answer.status }).toEqual({ path, status: 200 });
    }
    expect((await api(`/v1/streams/${port}/health`, { method: 'POST', token: MONITORING })).status).toBe(200);
    const dryRun = await api('/v1/apply', {
      method: 'POST',
      token: MONITORING,
      body: { streams: [], prune: true, dryRun: true },
    });
    expect(dryRun.status).toBe(200);
    expect(dryRun.json).toMatchObject({ dryRun: true, applied: false, plan: { delete: [port] } });
  });

  it('a read token is refused every change with 403 FORBIDDEN, and nothing changes', async () => {
    const port = daemon.rangeStart;
    const other = daemon.rangeStart + 1;
    const before = (await api('/v1/streams', { token: ADMIN })).json as StreamsBody;
    expect(before.streams.map((stream) => stream.port)).toEqual([port]);
    const eventsBefore = ((await api('/v1/events?limit=1000', { token: ADMIN })).json as EventsBody).events.length;

    const openApi = await openApiChecker(
      daemon,
      async () => (await api('/v1/openapi.json', { token: MONITORING })).json,
    );
    const v1: Array<[string, string, unknown, string]> = [
      ['POST', '/v1/streams', { port: other, backend: `127.0.0.1:${backend.port}` }, '/v1/streams'],
      ['POST', '/v1/streams', { backend: `127.0.0.1:${backend.port}` }, '/v1/streams'],
      ['PUT', `/v1/streams/${port}`, { backend: '127.0.0.1:1' }, '/v1/streams/{port}'],
      ['PUT', `/v1/streams/${other}`, { backend: `127.0.0.1:${backend.port}` }, '/v1/streams/{port}'],
      ['DELETE', `/v1/streams/${port}`, undefined, '/v1/streams/{port}'],
      ['DELETE', `/v1/streams/${port}?kill_sessions=1`, undefined, '/v1/streams/{port}'],
      ['POST', `/v1/streams/${port}/renew`, { ttl: '1h' }, '/v1/streams/{port}/renew'],
      ['POST', `/v1/streams/${port}/drain`, { timeout: '1m' }, '/v1/streams/{port}/drain'],
      ['DELETE', `/v1/streams/${port}/drain`, undefined, '/v1/streams/{port}/drain'],
      ['POST', '/v1/apply', { streams: [], prune: true }, '/v1/apply'],
      ['POST', '/v1/apply', { streams: [], prune: true, dryRun: false }, '/v1/apply'],
      // Planning a TLS file reads it: a read token could learn whether a path exists and holds a key.
      [
        'POST',
        '/v1/apply',
        {
          streams: [
            { port: other, backend: `127.0.0.1:${backend.port}`, tlsCert: '/etc/passwd', tlsKey: '/etc/passwd' },
          ],
          dryRun: true,
        },
        '/v1/apply',
      ],
      ['POST', `/V1/Streams/${port}/Renew/`, { ttl: '1h' }, '/v1/streams/{port}/renew'],
    ];
    for (const [method, path, body, template] of v1) {
      const answer = await api(path, { method, token: MONITORING, body });
      openApi.check(template, method.toLowerCase(), 403, answer.json);
      expect({ method, path, status: answer.status, body: answer.json }).toEqual({
        method,
        path,
        status: 403,
        body: {
          error: {
            code: 'FORBIDDEN',
            message: `the token monitoring has the read role, which may only look: ${method} ${path.split('?')[0]} needs the write role`,
            hint: expect.stringContaining('write role'),
          },
        },
      });
    }
    // The legacy paths that change (GET, any case, a trailing slash, HEAD): refused in their own shape.
    for (const [method, path] of [
      ['GET', `/createstream/${other}/${`127.0.0.1:${backend.port}`}`],
      ['GET', `/removestream/${port}`],
      ['GET', `/RemoveStream/${port}/`],
      ['HEAD', `/removestream/${port}`],
    ] as const) {
      const answer = await api(path, { method, token: MONITORING });
      expect({ path, status: answer.status }).toEqual({ path, status: 403 });
      if (method === 'GET' && path === path.toLowerCase()) {
        expect(answer.text).toBe(
          `{"result": "error", "errors": "the token monitoring has the read role, which may only look: GET ${path} needs the write role"}`,
        );
      }
    }
    // The document lists the 403 where, and only where, a read token gets it.
    expect(Object.keys(openApi.document.paths['/v1/streams']?.get?.responses ?? {})).not.toContain('403');
    expect(Object.keys(openApi.document.paths['/removestream/{port}']?.get?.responses ?? {})).toContain('403');
    expect((openApi.document as unknown as { servers: Array<{ url: string }> }).servers[0]?.url).toMatch(/^https:/);
    // The CLI says why, exit 1 (refused by the daemon).
    const read = { CONDUCTOR_TOKEN: MONITORING, CONDUCTOR_CA: certs.ca };
    for (const args of [
      ['create', String(other), `127.0.0.1:${backend.port}`],
      ['rm', String(port)],
      ['renew', String(port), '--ttl', '1h'],
    ]) {
      const run = await cli(args, read);
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('conductor: the token monitoring has the read role, which may only look');
    }

    // Nothing changed: the same streams, the port still forwards, the other never opened, no event.
    const after = (await api('/v1/streams', { token: ADMIN })).json as StreamsBody;
    expect(after).toEqual(before);
    expect(await connectOutcome(port)).toBe('open');
    expect(await connectOutcome(other)).toBe('refused');
    const events = ((await api('/v1/events?limit=1000', { token: ADMIN })).json as EventsBody).events;
    expect(events.length).toBe(eventsBefore);
    expect(events.filter((event) => event.actor === 'monitoring')).toEqual([]);
    expect(daemon.logs).toContain('"msg":"refused a call to a read token","token":"monitoring"');
  });

  it('a write token changes, through both APIs; the audit log names it', async () => {
    const created = daemon.rangeStart + 2;
    const legacy = daemon.rangeStart + 3;
    expect((await cli(['--ca', certs.ca, 'create', String(created), `127.0.0.1:${backend.port}`])).code).toBe(0);
    const made = await api(`/createstream/${legacy}/${`127.0.0.1:${backend.port}`}`, { token: ADMIN });
    expect(made.json).toMatchObject({ result: 'ok' });
    expect(await connectOutcome(legacy)).toBe('open');
    const removed = await api(`/removestream/${legacy}`, { token: ADMIN });
    expect(removed.json).toMatchObject({ result: 'ok' });
    expect(await connectOutcome(legacy)).toBe('refused');
    const events = ((await api('/v1/events?limit=1000', { token: MONITORING })).json as EventsBody).events;
    const mine = events
      .filter((event) => event.ports.includes(created) || event.ports.includes(legacy))
      .map(({ actor, action, ports, result }) => ({ actor, action, ports, result }));
    expect(mine).toEqual([
      { actor: 'admin', action: 'create', ports: [created], result: 'ok' },
      { actor: 'admin', action: 'create', ports: [legacy], result: 'ok' },
      { actor: 'admin', action: 'remove', ports: [legacy], result: 'ok' },
    ]);
    // The token itself is written nowhere the daemon writes.
    expect(daemon.logs).not.toContain(ADMIN);
  });
});

describe('mutual TLS', () => {
  it('with a client CA the daemon takes only clients with a certificate it signed', async () => {
    await daemons.run(
      {
        rangeSize: 2,
        env: {
          CONDUCTOR_NGINX_INSTANCES: '1',
          CONDUCTOR_TLS_CERT: certs.serverCert,
          CONDUCTOR_TLS_KEY: certs.serverKey,
          CONDUCTOR_TLS_CLIENT_CA: certs.ca,
          CONDUCTOR_TOKEN_FILE: tokenFile,
        },
      },
      async (mtls) => {
        const env = { CONDUCTOR_URL: mtls.url, CONDUCTOR_TOKEN: MONITORING, CONDUCTOR_CA: certs.ca };
        const without = await runCli(['ls'], env);
        expect(without.code).toBe(3);
        expect(without.stderr).toMatch(
          /^conductor: the daemon at https:\/\/127\.0\.0\.1:\d+ refused the TLS handshake \([A-Z_0-9]+\): it requires a client certificate it trusts\nhint: give one with --cert FILE --key FILE/,
        );
        const wrong = await runCli(['--cert', certs.wrongClientCert, '--key', certs.wrongClientKey, 'ls'], env);
        expect(wrong.code).toBe(3);
        // The daemon's alert can race the request the client already wrote: a reset then.
        expect(wrong.stderr).toMatch(/refused the TLS handshake|ECONNRESET\)\nhint: .*client certificate/);
        const right = await runCli(['--cert', certs.clientCert, '--key', certs.clientKey, 'ls', '--json'], env);
        expect(right.stderr).toBe('');
        expect(right.code).toBe(0);
        const byVariables = await runCli(['ls'], {
          ...env,
          CONDUCTOR_CLIENT_CERT: certs.clientCert,
          CONDUCTOR_CLIENT_KEY: certs.clientKey,
        });
        expect(byVariables.code).toBe(0);
        const half = await runCli(['--cert', certs.clientCert, 'ls'], env);
        expect(half.code).toBe(2);
        expect(half.stderr).toContain('a client certificate needs both --cert and --key');
      },
    );
  });
});

describe('start-up', () => {
  it.each<[string, (dir: string) => Record<string, string>, RegExp]>([
    [
      'a certificate without a key',
      () => ({ CONDUCTOR_TLS_CERT: certs.serverCert }),
      /^conductor-daemon: CONDUCTOR_TLS_KEY \(--tls-key\): HTTPS needs both CONDUCTOR_TLS_CERT and CONDUCTOR_TLS_KEY\n$/,
    ],
    [
      'a key without a certificate',
      () => ({ CONDUCTOR_TLS_KEY: certs.serverKey }),
      /^conductor-daemon: CONDUCTOR_TLS_CERT \(--tls-cert\): HTTPS needs both CONDUCTOR_TLS_CERT and CONDUCTOR_TLS_KEY\n$/,
    ],
    [
      'a client CA without HTTPS',
      () => ({ CONDUCTOR_TLS_CLIENT_CA: certs.ca }),
      /^conductor-daemon: CONDUCTOR_TLS_CLIENT_CA \(--tls-client-ca\): a client CA needs CONDUCTOR_TLS_CERT and CONDUCTOR_TLS_KEY\n$/,
    ],
    [
      'a certificate that cannot be read',
      (dir) => ({ CONDUCTOR_TLS_CERT: join(dir, 'missing.pem'), CONDUCTOR_TLS_KEY: certs.serverKey }),
      /^conductor-daemon: CONDUCTOR_TLS_CERT \(--tls-cert\): cannot read .*missing\.pem: ENOENT\n$/,
    ],
    [
      'a key that is not the certificate’s',
      () => ({ CONDUCTOR_TLS_CERT: certs.serverCert, CONDUCTOR_TLS_KEY: certs.wrongServerKey }),
      /^conductor-daemon: CONDUCTOR_TLS_CERT \(--tls-cert\): .*server\.pem and .*wrong-server\.key cannot serve HTTPS: .*(mismatch|key)/i,
    ],
    [
      'a client CA file without a certificate',
      () => ({
        CONDUCTOR_TLS_CERT: certs.serverCert,
        CONDUCTOR_TLS_KEY: certs.serverKey,
        CONDUCTOR_TLS_CLIENT_CA: tokenFile,
      }),
      /^conductor-daemon: CONDUCTOR_TLS_CLIENT_CA \(--tls-client-ca\): .*tokens: the client CA file holds no PEM certificate\n$/,
    ],
    [
      'a token file with a bad role',
      (dir) => ({ CONDUCTOR_TOKEN_FILE: join(dir, 'bad-tokens') }),
      /^conductor-daemon: CONDUCTOR_TOKEN_FILE \(--token-file\): .*bad-tokens line 3: the role must be read or write, got "admin"\n$/,
    ],
  ])('refuses %s, with one line naming the setting', async (_what, extra, message) => {
    const dir = await daemons.dir();
    await writeFile(join(dir, 'bad-tokens'), `# tokens\nops ${ADMIN}\nroot ${MONITORING} admin\n`, { mode: 0o600 });
    const base = await freePortBlock(3);
    const result = await runDaemonExpectingExit(daemonEnv(join(dir, 'home'), base, 2, base + 2, extra(dir)));
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(message);
  });
});
