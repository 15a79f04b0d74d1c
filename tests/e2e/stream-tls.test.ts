/**
 * TLS on a stream, with certificates made by openssl and real clients on loopback: nginx
 * terminates TLS (a node TLS client that trusts the test CA reaches a plain backend), originates
 * it (a plain client reaches a node TLS server, verified against the CA; with the wrong CA the
 * session fails), a renewed certificate file is served without a restart while the sessions of
 * other streams go on, a bad renewal keeps the certificate in use and says why, every bad input is
 * refused naming its field with nothing changed, get and /metrics show each certificate's end of
 * validity, and a declarative file carries the TLS fields (fleet mode: fleet-tls.test.ts).
 */

import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFile, mkdtemp, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { AuditEvent, StreamView } from '@stream-conductor/shared';
import { type Certs, fingerprintOf, makeCerts, signCertificate, tlsRoundTrip } from '../helpers/certs.js';
import { runCli } from '../helpers/cli.js';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { EchoBackend, exchange, openSession, roundTrip } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';
import { folderContents, snapshot } from '../helpers/state.js';
import { eventually } from '../helpers/wait.js';

const run = promisify(execFile);

let daemon: Daemon;
let echo: EchoBackend;
let certs: Certs;
let dir: string;
let env: Record<string, string>;
let next = 0;
let tlsBackend: TlsServer;
let tlsBackendPort: number;
let api: Awaited<ReturnType<typeof openApiChecker>>;

const daemons = daemonFixture();

/** A certificate for 127.0.0.1 signed by the test CA whose validity lies wholly in the past or the future. */
async function certificateValidAt(name: string, start: string, end: string): Promise<string> {
  await writeFile(
    join(dir, `${name}.cnf`),
    '[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\ndefault_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n',
  );
  await writeFile(join(dir, 'index.txt'), '');
  await writeFile(join(dir, 'serial'), '1000\n');
  await run('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`], { cwd: dir });
  await run('openssl', ['req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`], {
    cwd: dir,
  });
  await run(
    'openssl',
    [
      'ca',
      '-batch',
      '-config',
      `${name}.cnf`,
      '-cert',
      'ca.pem',
      '-keyfile',
      'ca.key',
      '-in',
      `${name}.csr`,
      '-out',
      `${name}.pem`,
      '-startdate',
      start,
      '-enddate',
      end,
      '-notext',
    ],
    { cwd: dir },
  );
  return join(dir, `${name}.pem`);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sc-stream-tls-'));
  certs = await makeCerts(dir);
  echo = await EchoBackend.start('echo');
  tlsBackend = createTlsServer(
    { cert: await readFile(certs.serverCert), key: await readFile(certs.serverKey), minVersion: 'TLSv1.2' },
    (socket) => {
      socket.on('data', (chunk) => socket.write(`tls:${chunk.toString('utf8')}`));
      socket.on('error', () => socket.destroy());
    },
  );
  await new Promise<void>((resolve) => tlsBackend.listen(0, '127.0.0.1', () => resolve()));
  tlsBackendPort = (tlsBackend.address() as { port: number }).port;
  daemon = await daemons.start({ rangeSize: 80, env: { CONDUCTOR_STREAM_TLS_INTERVAL: '0.2' } });
  env = { CONDUCTOR_URL: daemon.url };
  api = await openApiChecker(daemon);
}, 60_000);

afterAll(async () => {
  await echo?.close();
  await new Promise<void>((resolve) => (tlsBackend ? tlsBackend.close(() => resolve()) : resolve()));
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

const port = (): number => daemon.rangeStart + next++;

/** One TLS session to a stream: the answer to `text`, and the certificate nginx showed. */
const tlsExchange = (at: number, text: string, ca = certs.ca): Promise<{ answer: string; fingerprint256: string }> =>
  tlsRoundTrip(at, text, ca);

async function getStream(at: number): Promise<StreamView> {
  const answer = await daemon.request('GET', `/v1/streams/${at}?stats=1`);
  api.check('/v1/streams/{port}', 'get', answer.status, answer.json);
  return (answer.json as { stream: StreamView }).stream;
}

async function events(at: number): Promise<AuditEvent[]> {
  return ((await daemon.get(`/v1/events?port=${at}`)).json as { events: AuditEvent[] }).events;
}

const remove = async (at: number): Promise<void> => {
  expect((await daemon.request('DELETE', `/v1/streams/${at}`)).status).toBe(200);
};

/** The daemon's copies of TLS files, with what else a refused change must leave as it was. */
async function everything(): Promise<unknown> {
  return {
    ...(await snapshot(daemon)),
    copies: await folderContents(join(daemon.home, 'stream-tls')).catch(() => ({})),
  };
}

describe.each<'api' | 'cli'>(['api', 'cli'])('terminating TLS through the %s', (via) => {
  it("serves the operator's certificate to a TLS client, forwards plain bytes, shows the expiry in get and /metrics", async () => {
    const at = port();
    let stream: StreamView;
    if (via === 'api') {
      const answer = await daemon.request('POST', '/v1/streams', {
        port: at,
        backend: `127.0.0.1:${echo.port}`,
        tlsCert: certs.serverCert,
        tlsKey: certs.serverKey,
      });
      api.check('/v1/streams', 'post', answer.status, answer.json);
      expect(answer.status).toBe(201);
      stream = (answer.json as { stream: StreamView }).stream;
    } else {
      const cli = await runCli(
        [
          '--json',
          'create',
          String(at),
          `127.0.0.1:${echo.port}`,
          '--tls-cert',
          certs.serverCert,
          '--tls-key',
          certs.serverKey,
        ],
        env,
      );
      expect(cli.stderr).toBe('');
      expect(cli.code).toBe(0);
      stream = (JSON.parse(cli.stdout) as { stream: StreamView }).stream;
    }
    const notAfter = new Date(new X509Certificate(await readFile(certs.serverCert)).validTo).toISOString();
    expect(stream).toMatchObject({ state: 'live', tlsCert: certs.serverCert, tlsKey: certs.serverKey });
    expect(stream.tlsMaterial?.certificates).toEqual([
      expect.objectContaining({ field: 'tlsCert', notAfter, fingerprint256: await fingerprintOf(certs.serverCert) }),
    ]);
    const served = await tlsExchange(at, 'secret');
    expect(served).toEqual({ answer: 'echo:secret', fingerprint256: await fingerprintOf(certs.serverCert) });
    // A client that does not trust the CA is refused by its own check; plain text gets no answer from the backend.
    await expect(tlsExchange(at, 'x', certs.wrongCa)).rejects.toThrow(/certificate/);
    expect(await roundTrip(at, 'plain', { timeoutMs: 3000 }).catch(() => 'failed')).not.toBe('echo:plain');

    const get = await runCli(['get', String(at), '--no-color'], env);
    expect(get.code).toBe(0);
    expect(get.stdout).toContain(`valid until ${notAfter}`);
    expect(get.stdout).toMatch(/terminated: .*server\.pem/);
    const wide = await runCli(['ls', '-o', 'wide', '--no-color'], env);
    expect(wide.stdout).toMatch(/TLS/);
    expect(wide.stdout.split('\n').find((line) => line.includes(` ${at} `))).toContain(
      `edge until ${notAfter.slice(0, 10)}`,
    );
    const metrics = await daemon.request('GET', '/metrics');
    expect(metrics.text).toMatch(
      new RegExp(
        `^conductor_stream_certificate_expiry_seconds\\{port="${at}",field="tlsCert"\\} ${Math.floor(Date.parse(notAfter) / 1000)}$`,
        'm',
      ),
    );
    const created = (await events(at)).find((event) => event.action === 'create');
    expect(created).toMatchObject({ result: 'ok' });
    await remove(at);
  });
});

describe('originating TLS to a backend', () => {
  it('verifies the backend against --backend-ca and forwards a plain client to it', async () => {
    const at = port();
    const cli = await runCli(
      [
        'create',
        String(at),
        `127.0.0.1:${tlsBackendPort}`,
        '--backend-tls',
        '--backend-ca',
        certs.ca,
        '--backend-name',
        'localhost',
      ],
      env,
    );
    expect(cli.stderr).toBe('');
    expect(cli.code).toBe(0);
    expect(await roundTrip(at, 'hello')).toBe('tls:hello');
    const stream = await getStream(at);
    expect(stream).toMatchObject({ backendTls: true, backendCa: certs.ca, backendName: 'localhost' });
    expect(stream.tlsMaterial?.certificates[0]).toMatchObject({ field: 'backendCa' });
    const get = await runCli(['get', String(at), '--no-color'], env);
    expect(get.stdout).toMatch(/backend tls:\s+verified against .*ca\.pem as localhost/);
    const metrics = await daemon.request('GET', '/metrics');
    expect(metrics.text).toMatch(
      new RegExp(`^conductor_stream_certificate_expiry_seconds\\{port="${at}",field="backendCa"\\} [0-9]+$`, 'm'),
    );
    await remove(at);
  });

  it('fails the session when the backend is not signed by the CA given, and counts it as failed', async () => {
    const at = port();
    const answer = await daemon.request('POST', '/v1/streams', {
      port: at,
      backend: `127.0.0.1:${tlsBackendPort}`,
      backendTls: true,
      backendCa: certs.wrongCa,
      backendName: 'localhost',
    });
    expect(answer.status).toBe(201);
    expect(await roundTrip(at, 'hello', { timeoutMs: 5000 }).catch(() => 'failed')).not.toBe('tls:hello');
    const stream = await eventually(
      () => getStream(at),
      (view) => (view.stats?.failedSessions ?? 0) >= 1,
    );
    expect(stream.stats?.sessions).toBeGreaterThanOrEqual(1);
    await remove(at);
  });

  it('checks the name: a backend certificate without the name given fails the session', async () => {
    const at = port();
    const answer = await daemon.request('POST', '/v1/streams', {
      port: at,
      backend: `127.0.0.1:${tlsBackendPort}`,
      backendTls: true,
      backendCa: certs.ca,
      backendName: 'other.localhost',
    });
    expect(answer.status).toBe(201);
    expect(await roundTrip(at, 'hello', { timeoutMs: 5000 }).catch(() => 'failed')).not.toBe('tls:hello');
    await remove(at);
  });
});

describe('renewal', () => {
  it('serves a renewed certificate without a restart, keeps the old one on a bad renewal, and leaves other sessions alone', async () => {
    const live = join(dir, 'live');
    await run('mkdir', ['-p', live]);
    const cert = join(live, 'fullchain.pem');
    const key = join(live, 'privkey.pem');
    await copyFile(certs.serverCert, cert);
    await copyFile(certs.serverKey, key);
    const at = port();
    const other = port();
    expect(
      (
        await daemon.request('POST', '/v1/streams', {
          port: at,
          backend: `127.0.0.1:${echo.port}`,
          tlsCert: cert,
          tlsKey: key,
        })
      ).status,
    ).toBe(201);
    expect(
      (await daemon.request('POST', '/v1/streams', { port: other, backend: `127.0.0.1:${echo.port}` })).status,
    ).toBe(201);
    const held = await openSession(other);
    const first = await tlsExchange(at, 'one');
    expect(first.fingerprint256).toBe(await fingerprintOf(certs.serverCert));

    // A renewal as certbot makes one: a new certificate written next to the old, renamed into place.
    const renewedPem = await signCertificate(dir, 'ca', 'renewed', 'server', 50);
    await copyFile(renewedPem, `${cert}.new`);
    await copyFile(join(dir, 'renewed.key'), `${key}.new`);
    await rename(`${key}.new`, key);
    await rename(`${cert}.new`, cert);
    const renewedPrint = await fingerprintOf(renewedPem);
    const renewal = await eventually(
      () => events(at),
      (list) => list.some((event) => event.action === 'tls-renewal' && event.result === 'ok'),
      15_000,
    );
    expect(renewal.find((event) => event.action === 'tls-renewal')).toMatchObject({ actor: 'daemon', ports: [at] });
    expect((await tlsExchange(at, 'two')).fingerprint256).toBe(renewedPrint);
    expect((await getStream(at)).tlsMaterial?.certificates[0]?.fingerprint256).toBe(renewedPrint);
    expect(await exchange(held, 'still')).toBe('echo:still');

    // A bad renewal: a key that is not the certificate's. The renewed certificate stays in use.
    await copyFile(certs.wrongServerKey, key);
    const refused = await eventually(
      () => getStream(at),
      (view) => view.tlsProblem !== undefined,
      15_000,
    );
    expect(refused.tlsProblem).toMatch(/^tlsKey: .* is not the key of the certificate/);
    expect(refused.state).toBe('live');
    expect((await tlsExchange(at, 'three')).fingerprint256).toBe(renewedPrint);
    const audit = await events(at);
    expect(audit.some((event) => event.action === 'tls-renewal' && event.result === 'refused')).toBe(true);
    const get = await runCli(['get', String(at), '--no-color'], env);
    expect(get.stdout).toMatch(/tls renewal:\s+not served: tlsKey: /);
    // A half-written certificate is not served either.
    await writeFile(cert, (await readFile(renewedPem, 'utf8')).slice(0, 200));
    await copyFile(join(dir, 'renewed.key'), key);
    await eventually(
      () => getStream(at),
      (view) => /tlsCert: /.test(view.tlsProblem ?? ''),
      15_000,
    );
    expect((await tlsExchange(at, 'four')).fingerprint256).toBe(renewedPrint);
    // Put right: served again, the problem gone.
    await copyFile(renewedPem, cert);
    await eventually(
      () => getStream(at),
      (view) => view.tlsProblem === undefined,
      15_000,
    );
    expect((await tlsExchange(at, 'five')).answer).toBe('echo:five');
    expect(await exchange(held, 'after')).toBe('echo:after');
    held.destroy();
    await remove(at);
    await remove(other);
  }, 60_000);
});

describe('bad input', () => {
  let notPem: string;
  let expired: string;
  let future: string;

  beforeAll(async () => {
    notPem = join(dir, 'not-pem.txt');
    await writeFile(notPem, 'this is not a certificate\n');
    expired = await certificateValidAt('expired', '20200101000000Z', '20200102000000Z');
    future = await certificateValidAt('future', '20991231000000Z', '21000101000000Z');
  });

  const base = (): Record<string, unknown> => ({ backend: `127.0.0.1:${echo.port}` });

  it.each<[string, () => Record<string, unknown>, () => string[], RegExp, 1 | 2]>([
    [
      'a missing file',
      () => ({ tlsCert: join(dir, 'nope.pem'), tlsKey: certs.serverKey }),
      () => ['--tls-cert', join(dir, 'nope.pem'), '--tls-key', certs.serverKey],
      /^tlsCert: cannot read .*nope\.pem \(ENOENT\)/,
      1,
    ],
    [
      'a file that is not PEM',
      () => ({ tlsCert: notPem, tlsKey: certs.serverKey }),
      () => ['--tls-cert', notPem, '--tls-key', certs.serverKey],
      /^tlsCert: .*not-pem\.txt holds no PEM certificate/,
      1,
    ],
    [
      'a key that is not PEM',
      () => ({ tlsCert: certs.serverCert, tlsKey: notPem }),
      () => ['--tls-cert', certs.serverCert, '--tls-key', notPem],
      /^tlsKey: .*holds no PEM private key/,
      1,
    ],
    [
      "a key that is not the certificate's",
      () => ({ tlsCert: certs.serverCert, tlsKey: certs.wrongServerKey }),
      () => ['--tls-cert', certs.serverCert, '--tls-key', certs.wrongServerKey],
      /^tlsKey: .*wrong-server\.key is not the key of the certificate in .*server\.pem/,
      1,
    ],
    [
      'an expired certificate',
      () => ({ tlsCert: expired, tlsKey: join(dir, 'expired.key') }),
      () => ['--tls-cert', expired, '--tls-key', join(dir, 'expired.key')],
      /^tlsCert: .*expired at 2020-01-02T00:00:00\.000Z/,
      1,
    ],
    [
      'a certificate not valid yet',
      () => ({ tlsCert: future, tlsKey: join(dir, 'future.key') }),
      () => ['--tls-cert', future, '--tls-key', join(dir, 'future.key')],
      /^tlsCert: .*is not valid before 2099-12-31/,
      1,
    ],
    [
      'a backend CA that is not PEM',
      () => ({ backendTls: true, backendCa: notPem, backendName: 'localhost' }),
      () => ['--backend-tls', '--backend-ca', notPem, '--backend-name', 'localhost'],
      /^backendCa: .*holds no PEM certificate/,
      1,
    ],
    [
      'a relative path',
      () => ({ tlsCert: 'server.pem', tlsKey: certs.serverKey }),
      () => ['--tls-cert', 'server.pem', '--tls-key', certs.serverKey],
      /^tlsCert: must be an absolute path, got "server\.pem"/,
      2,
    ],
    [
      'a path with ..',
      () => ({ tlsCert: `${dir}/../x.pem`, tlsKey: certs.serverKey }),
      () => ['--tls-cert', `${dir}/../x.pem`, '--tls-key', certs.serverKey],
      /^tlsCert: must be a plain absolute path/,
      2,
    ],
    [
      'a C1 control character in a path',
      () => ({ tlsCert: `${dir}/a\u009b31m.pem`, tlsKey: certs.serverKey }),
      () => ['--tls-cert', `${dir}/a\u009b31m.pem`, '--tls-key', certs.serverKey],
      /^tlsCert: must be a plain absolute path: U\+009B .* in ".*a\\u009b31m\.pem"/,
      2,
    ],
    [
      'a bidirectional override in a key path',
      () => ({ tlsCert: certs.serverCert, tlsKey: `${dir}/\u202emep.yek` }),
      () => ['--tls-cert', certs.serverCert, '--tls-key', `${dir}/\u202emep.yek`],
      /^tlsKey: must be a plain absolute path: U\+202E .* in ".*\\u202emep\.yek"/,
      2,
    ],
    [
      'a right-to-left mark in a CA path',
      () => ({ backendTls: true, backendCa: `${dir}/ca\u200f.pem`, backendName: 'localhost' }),
      () => ['--backend-tls', '--backend-ca', `${dir}/ca\u200f.pem`, '--backend-name', 'localhost'],
      /^backendCa: must be a plain absolute path: U\+200F .* in ".*ca\\u200f\.pem"/,
      2,
    ],
    [
      'an isolate in a path',
      () => ({ tlsCert: `${dir}/x\u2067.pem`, tlsKey: certs.serverKey }),
      () => ['--tls-cert', `${dir}/x\u2067.pem`, '--tls-key', certs.serverKey],
      /^tlsCert: must be a plain absolute path: U\+2067 /,
      2,
    ],
    [
      'a certificate without its key',
      () => ({ tlsCert: certs.serverCert }),
      () => ['--tls-cert', certs.serverCert],
      /^tlsKey: is required with tlsCert/,
      2,
    ],
    [
      'TLS on UDP',
      () => ({ protocol: 'udp', tlsCert: certs.serverCert, tlsKey: certs.serverKey }),
      () => ['--udp', '--tls-cert', certs.serverCert, '--tls-key', certs.serverKey],
      /^tlsCert: TLS is for TCP streams only, not udp/,
      2,
    ],
    [
      'a backend CA without backend TLS',
      () => ({ backendCa: certs.ca }),
      () => ['--backend-ca', certs.ca],
      /^backendCa: needs backendTls: true/,
      2,
    ],
    [
      'backend TLS verified without a CA',
      () => ({ backendTls: true, backendName: 'localhost' }),
      () => ['--backend-tls', '--backend-name', 'localhost'],
      /^backendCa: is required to verify/,
      2,
    ],
    [
      'a backend by address without a name to verify',
      () => ({ backendTls: true, backendCa: certs.ca }),
      () => ['--backend-tls', '--backend-ca', certs.ca],
      /^backendName: is required for a backend given by address \(127\.0\.0\.1\)/,
      2,
    ],
    [
      'a backend name with syntax',
      () => ({ backendTls: true, backendCa: certs.ca, backendName: 'a;b' }),
      () => ['--backend-tls', '--backend-ca', certs.ca, '--backend-name', 'a;b'],
      /^backendName: must be a host name/,
      2,
    ],
  ])(
    'refuses %s through the API and the CLI, naming the field, and changes nothing',
    async (_what, body, args, message, code) => {
      const kept = port();
      const made = await daemon.request('POST', '/v1/streams', {
        port: kept,
        ...base(),
        tlsCert: certs.serverCert,
        tlsKey: certs.serverKey,
      });
      expect(made.status).toBe(201);
      const before = await everything();
      const at = port();
      const answer = await daemon.request('POST', '/v1/streams', { port: at, ...base(), ...body() });
      api.check('/v1/streams', 'post', answer.status, answer.json);
      expect(answer.status).toBe(400);
      expect((answer.json as { error: { code: string; message: string } }).error).toMatchObject({
        code: 'INVALID_INPUT',
        message: expect.stringMatching(message),
      });
      const put = await daemon.request('PUT', `/v1/streams/${kept}`, { ...base(), ...body() });
      expect(put.status).toBe(400);
      const cli = await runCli(['create', String(at), `127.0.0.1:${echo.port}`, ...args()], env);
      // 2: the CLI refused it before sending; 1: the daemon did, having read the files.
      expect(cli.code).toBe(code);
      expect(cli.stderr).toMatch(new RegExp(message.source.replace(/^\^/, '')));
      expect(await everything()).toEqual(before);
      expect((await tlsExchange(kept, 'fine')).answer).toBe('echo:fine');
      await remove(kept);
    },
  );

  it('refuses a path that is not a regular file', async () => {
    const answer = await daemon.request('POST', '/v1/streams', {
      port: port(),
      ...base(),
      tlsCert: `${dir}`,
      tlsKey: certs.serverKey,
    });
    expect(answer.status).toBe(400);
    expect((answer.json as { error: { message: string } }).error.message).toMatch(/^tlsCert: .* is not a regular file/);
  });

  it('leaves no copy of a key behind when a change with valid TLS files is refused (a taken port)', async () => {
    const taken = port();
    expect((await daemon.request('POST', '/v1/streams', { port: taken, ...base() })).status).toBe(201);
    const before = await everything();
    const files = { tlsCert: certs.serverCert, tlsKey: certs.serverKey };
    const answer = await daemon.request('POST', '/v1/streams', { port: taken, ...base(), ...files });
    expect(answer.status).toBe(409);
    const applied = await daemon.request('POST', '/v1/apply', {
      streams: [
        { port: taken, ...base() },
        { port: taken, ...base(), ...files },
      ],
    });
    expect(applied.status).toBe(400);
    expect(await everything()).toEqual(before);
    await remove(taken);
  });

  it.each<[string, () => Promise<Record<string, unknown>>, RegExp]>([
    [
      'a FIFO (a read would wait for a writer for ever)',
      async () => {
        const fifo = join(dir, 'key.fifo');
        await rm(fifo, { force: true });
        await run('mkfifo', [fifo]);
        return { tlsCert: certs.serverCert, tlsKey: fifo };
      },
      /^tlsKey: .*key\.fifo is not a regular file/,
    ],
    [
      'a /proc file that claims size 0 and never ends',
      async () => ({ tlsCert: '/proc/self/pagemap', tlsKey: certs.serverKey }),
      /^tlsCert: \/proc\/self\/pagemap is under \/proc, \/sys or \/dev/,
    ],
    [
      'a link into /proc',
      async () => {
        const link = join(dir, 'ca-link.pem');
        await rm(link, { force: true });
        await symlink('/proc/self/environ', link);
        return { backendTls: true, backendName: 'localhost', backendCa: link };
      },
      /^backendCa: .*ca-link\.pem is under \/proc, \/sys or \/dev/,
    ],
  ])('refuses %s promptly, naming the field, with nothing changed', async (_name, fields, message) => {
    const before = await everything();
    const started = Date.now();
    const answer = await daemon.request('POST', '/v1/streams', { port: port(), ...base(), ...(await fields()) });
    expect(answer.status).toBe(400);
    expect((answer.json as { error: { message: string } }).error.message).toMatch(message);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(await everything()).toEqual(before);
  });
});

describe('declarative apply', () => {
  it('carries the TLS fields, changes nothing when applied again, and refuses a file set that cannot serve', async () => {
    const at = port();
    const file = join(dir, 'streams.yaml');
    const yaml = (key: string): string =>
      `streams:\n  - port: ${at}\n    backend: 127.0.0.1:${echo.port}\n    tlsCert: ${certs.serverCert}\n    tlsKey: ${key}\n`;
    await writeFile(file, yaml(certs.serverKey));
    const apply = await runCli(['apply', '-f', file], env);
    expect(apply.stderr).toMatch(/applied 1 change/);
    expect(apply.code).toBe(0);
    expect((await tlsExchange(at, 'declared')).answer).toBe('echo:declared');
    const again = await runCli(['--json', 'apply', '-f', file], env);
    expect(again.code).toBe(0);
    expect((JSON.parse(again.stdout) as { plan: { unchanged: number[] } }).plan.unchanged).toEqual([at]);
    const before = await everything();
    await writeFile(file, yaml(certs.wrongServerKey));
    const bad = await runCli(['apply', '-f', file], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/streams\[0\]\.tlsKey: .* is not the key of the certificate/);
    expect(await everything()).toEqual(before);
    await remove(at);
  });
});
