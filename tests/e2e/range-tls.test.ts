/**
 * TLS on a port range, with the real daemon, nginx and CLI on loopback: every port of a range
 * terminates TLS with the operator's certificate and forwards the plain bytes to the same port of
 * its backend; a range that originates TLS verifies each backend's certificate on every port and
 * refuses to forward to one the CA did not sign; a renewed certificate is served on every port of
 * the range; a restart of the daemon (its nginx stopped with it) serves them all again from its
 * store; rm closes them all.
 */

import { mkdtemp, readFile, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { StreamView } from '@stream-conductor/shared';
import { type Certs, fingerprintOf, makeCerts, signCertificate, tlsRoundTrip } from '../helpers/certs.js';
import { runCli } from '../helpers/cli.js';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';
import { eventually } from '../helpers/wait.js';

let daemon: Daemon;
let env: Record<string, string>;
let certs: Certs;
let dir: string;
let S: number;
const echoes: EchoBackend[] = [];
const tlsBackends: TlsServer[] = [];

const daemons = daemonFixture();

/** The ports first..last, inclusive. */
const span = (first: number, last: number): number[] =>
  Array.from({ length: last - first + 1 }, (_, index) => first + index);

/** A TLS echo server on `host:port` showing `cert`, answering `name:<text>`. */
async function tlsEcho(name: string, port: number, host: string, cert: string, key: string): Promise<TlsServer> {
  const server = createTlsServer({ cert: await readFile(cert), key: await readFile(key) }, (socket) => {
    socket.on('data', (chunk: Buffer) => socket.write(`${name}:${chunk.toString('utf8')}`));
    socket.on('error', () => socket.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host }, () => resolve());
  });
  tlsBackends.push(server);
  return server;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sc-range-tls-'));
  certs = await makeCerts(dir);
  daemon = await daemons.start({ rangeSize: 12, env: { CONDUCTOR_STREAM_TLS_INTERVAL: '0.2' } });
  env = { CONDUCTOR_URL: daemon.url };
  S = daemon.rangeStart;
  // Plain echo backends on the range's own port numbers, on another loopback address than nginx's.
  for (const port of span(S, S + 2)) echoes.push(await EchoBackend.start(`p${port}`, port, '127.0.0.2'));
  // TLS backends for the originating range: two signed by the test CA, one by a CA nobody trusts.
  await tlsEcho(`t${S + 4}`, S + 4, '127.0.0.3', certs.serverCert, certs.serverKey);
  await tlsEcho(`t${S + 5}`, S + 5, '127.0.0.3', certs.serverCert, certs.serverKey);
  await tlsEcho(`w${S + 6}`, S + 6, '127.0.0.3', certs.wrongServerCert, certs.wrongServerKey);
}, 60_000);

afterAll(async () => {
  await Promise.all(echoes.map((backend) => backend.close()));
  await Promise.all(tlsBackends.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('TLS on a port range', () => {
  it('terminates TLS on every port of the range and serves a renewal on all of them', async () => {
    const created = await runCli(
      ['--json', 'create', `${S}-${S + 2}`, '127.0.0.2', '--tls-cert', certs.serverCert, '--tls-key', certs.serverKey],
      env,
    );
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    const { stream } = JSON.parse(created.stdout) as { stream: StreamView };
    expect(stream).toMatchObject({ port: S, portEnd: S + 2, state: 'live', tlsCert: certs.serverCert });
    const served = await fingerprintOf(certs.serverCert);
    for (const port of span(S, S + 2)) {
      // The client's bytes arrive in clear at the same port of the backend; TLS ends at nginx.
      expect(await tlsRoundTrip(port, 'hello', certs.ca)).toEqual({ answer: `p${port}:hello`, fingerprint256: served });
    }

    // certbot's way: a new certificate for the same key, renamed over the old file.
    const renewed = await signCertificate(dir, 'ca', 'renewed', 'server', 50, 'server.key');
    await rename(renewed, certs.serverCert);
    const renewedPrint = await fingerprintOf(certs.serverCert);
    expect(renewedPrint).not.toBe(served);
    for (const port of span(S, S + 2)) {
      const seen = await eventually(
        () => tlsRoundTrip(port, 'again', certs.ca),
        (result) => result.fingerprint256 === renewedPrint,
        15_000,
      );
      expect(seen.answer).toBe(`p${port}:again`);
    }

    const removed = await runCli(['rm', String(S)], env);
    expect(removed.code).toBe(0);
    for (const port of span(S, S + 2)) expect(await connectOutcome(port)).toBe('refused');
  });

  it('serves a TLS range again after a restart of the daemon, from its store and its checked copies', async () => {
    const created = await runCli(
      ['create', `${S}-${S + 2}`, '127.0.0.2', '--tls-cert', certs.serverCert, '--tls-key', certs.serverKey],
      env,
    );
    expect(created.code).toBe(0);
    const served = await fingerprintOf(certs.serverCert);
    await daemon.stop();
    for (const port of span(S, S + 2)) expect(await connectOutcome(port)).toBe('refused');
    daemon = await daemons.start({
      home: daemon.home,
      rangeStart: S,
      rangeSize: 12,
      env: { CONDUCTOR_STREAM_TLS_INTERVAL: '0.2' },
    });
    env = { CONDUCTOR_URL: daemon.url };
    for (const port of span(S, S + 2)) {
      expect(await tlsRoundTrip(port, 'back', certs.ca)).toEqual({ answer: `p${port}:back`, fingerprint256: served });
    }
    const status = (await daemon.get('/v1/status')).json as { problems: string[] };
    expect(status.problems).toEqual([]);
    expect((await runCli(['rm', String(S)], env)).code).toBe(0);
  });

  it('originates TLS to the backend of every port, verified against the CA given', async () => {
    const created = await runCli(
      [
        '--json',
        'create',
        `${S + 4}-${S + 6}`,
        '127.0.0.3',
        '--backend-tls',
        '--backend-ca',
        certs.ca,
        '--backend-name',
        'localhost',
      ],
      env,
    );
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    // A plain client; nginx speaks TLS to the backend on the same port number, checked by the CA.
    expect(await roundTrip(S + 4, 'a')).toBe(`t${S + 4}:a`);
    expect(await roundTrip(S + 5, 'b')).toBe(`t${S + 5}:b`);
    // The third port's backend shows a certificate another CA signed: nginx closes the session
    // without forwarding a byte.
    await expect(roundTrip(S + 6, 'c')).rejects.toThrow();
    // Verification is per session, not per definition: the other ports still forward.
    expect(await roundTrip(S + 4, 'd')).toBe(`t${S + 4}:d`);
    const removed = await runCli(['rm', String(S + 4)], env);
    expect(removed.code).toBe(0);
    for (const port of span(S + 4, S + 6)) expect(await connectOutcome(port)).toBe('refused');
  });
});
