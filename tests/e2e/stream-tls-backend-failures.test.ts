/**
 * Why a stream that speaks TLS to its backends closes its clients' connections: nginx writes the
 * failed handshake to its error log only, and the daemon reads it back into the stream's view
 * (backendTlsFailures), `conductor get` and /metrics. Real node TLS backends on loopback: one
 * whose certificate another CA signed, one whose certificate names other hosts than the one asked
 * for, a healthy one; streams on both nginx masters; the runbook's fix (the right CA file) clears
 * the failure while the counts stay.
 */

import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server as TlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { StreamView } from '@stream-conductor/shared';
import { type Certs, makeCerts, tlsBackendWith } from '../helpers/certs.js';
import { runCli } from '../helpers/cli.js';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { roundTrip } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';
import { eventually } from '../helpers/wait.js';

let daemon: Daemon;
let certs: Certs;
let dir: string;
let env: Record<string, string>;
let next = 0;
let api: Awaited<ReturnType<typeof openApiChecker>>;
const backends: TlsServer[] = [];
/** A TLS backend with the test CA's certificate (names 127.0.0.1 and localhost). */
let goodPort: number;
/** A TLS backend whose certificate (for 127.0.0.1 and localhost) the other CA signed. */
let otherCaPort: number;

const daemons = daemonFixture();

/** A TLS backend answering `tls:<chunk>`, closed after the file's tests. */
async function tlsBackend(cert: string, key: string, listen = 0): Promise<number> {
  const { server, port: at } = await tlsBackendWith(cert, key, { port: listen, answer: 'tls' });
  backends.push(server);
  return at;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sc-backend-tls-failures-'));
  certs = await makeCerts(dir);
  goodPort = await tlsBackend(certs.serverCert, certs.serverKey);
  otherCaPort = await tlsBackend(certs.wrongServerCert, certs.wrongServerKey);
  // Two masters (the default, said here): streams created together land on both.
  daemon = await daemons.start({
    rangeSize: 20,
    env: { CONDUCTOR_STREAM_TLS_INTERVAL: '0.2', CONDUCTOR_NGINX_INSTANCES: '2' },
  });
  env = { CONDUCTOR_URL: daemon.url };
  api = await openApiChecker(daemon);
}, 60_000);

afterAll(async () => {
  for (const server of backends) await new Promise<void>((resolve) => server.close(() => resolve()));
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

const port = (): number => daemon.rangeStart + next++;

async function getStream(at: number): Promise<StreamView> {
  const answer = await daemon.request('GET', `/v1/streams/${at}`);
  api.check('/v1/streams/{port}', 'get', answer.status, answer.json);
  return (answer.json as { stream: StreamView }).stream;
}

async function create(at: number, backendPort: number, tls: Record<string, unknown>): Promise<void> {
  const answer = await daemon.request('POST', '/v1/streams', {
    port: at,
    backend: `127.0.0.1:${backendPort}`,
    backendTls: true,
    ...tls,
  });
  expect(answer.status).toBe(201);
}

/** A plain client's session through a stream: the backend's answer, or `closed`. */
const session = (at: number): Promise<string> =>
  roundTrip(at, 'hello', { timeoutMs: 5000, expectLength: 'tls:hello'.length }).catch(() => 'closed');

const failuresMetric = (text: string, at: number, reason: string): number | undefined => {
  const match = new RegExp(
    `^conductor_stream_backend_tls_failures_total\\{port="${at}",reason="${reason}"\\} ([0-9]+)$`,
    'm',
  ).exec(text);
  return match ? Number(match[1]) : undefined;
};

describe('a backend that puts its own certificate right', () => {
  it('drops the latest failure once a session went through that backend, the stream unchanged', async () => {
    const { server, port: backendPort } = await tlsBackendWith(certs.wrongServerCert, certs.wrongServerKey);
    const at = port();
    await create(at, backendPort, { backendCa: certs.ca, backendName: 'localhost' });
    expect(await session(at)).toBe('closed');
    const failed = await eventually(
      () => getStream(at),
      (view) => view.backendTlsFailures?.last !== undefined,
    );
    expect(failed.backendTlsFailures?.last).toMatchObject({ reason: 'untrusted', backend: `127.0.0.1:${backendPort}` });
    // The backend comes back on its port with a certificate the CA signed.
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const fixed = await tlsBackend(certs.serverCert, certs.serverKey, backendPort);
    expect(fixed).toBe(backendPort);
    // nginx stamps to the second: a session in the failure's second may not be known to be after it.
    const cleared = await eventually(
      async () => {
        expect(await session(at)).toBe('tls:hello');
        return getStream(at);
      },
      (view) => view.backendTlsFailures?.last === undefined,
    );
    expect(cleared.backendTlsFailures).toEqual({ count: 1, reasons: { untrusted: 1 } });
    expect(cleared.updatedAt).toBeUndefined();
    expect((await daemon.request('DELETE', `/v1/streams/${at}`)).status).toBe(200);
  }, 30_000);
});

describe('a backend whose certificate fails the check', () => {
  it('shows why in get, the CLI and /metrics, on each master, per stream; the right CA clears it', async () => {
    // The operator's CA file, which the runbook fixes in place.
    const caFile = join(dir, 'backend-ca.pem');
    await copyFile(certs.ca, caFile);
    const otherCa = port();
    const otherName = port();
    const healthy = port();
    await Promise.all([
      create(otherCa, otherCaPort, { backendCa: caFile, backendName: 'localhost' }),
      create(otherName, goodPort, { backendCa: certs.ca, backendName: 'other.localhost' }),
    ]);
    await create(healthy, goodPort, { backendCa: certs.ca, backendName: 'localhost' });

    // The client only sees its connection closed.
    expect(await session(otherCa)).toBe('closed');
    expect(await session(otherName)).toBe('closed');
    expect(await session(healthy)).toBe('tls:hello');

    const untrusted = await eventually(
      () => getStream(otherCa),
      (view) => view.backendTlsFailures?.last !== undefined,
    );
    expect(untrusted.backendTlsFailures).toEqual({
      count: 1,
      reasons: { untrusted: 1 },
      last: {
        at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/),
        reason: 'untrusted',
        message: expect.stringMatching(
          /^certificate verify error (20: unable to get local issuer certificate|21: unable to verify the first certificate)$/,
        ),
        backend: `127.0.0.1:${otherCaPort}`,
        client: '127.0.0.1',
      },
    });
    expect(Math.abs(Date.parse(untrusted.backendTlsFailures?.last?.at ?? '') - Date.now())).toBeLessThan(60_000);
    const mismatch = await eventually(
      () => getStream(otherName),
      (view) => view.backendTlsFailures?.last !== undefined,
    );
    expect(mismatch.backendTlsFailures).toMatchObject({
      count: 1,
      reasons: { 'name-mismatch': 1 },
      last: {
        reason: 'name-mismatch',
        message: 'certificate does not match "other.localhost"',
        backend: `127.0.0.1:${goodPort}`,
      },
    });
    expect((await getStream(healthy)).backendTlsFailures).toBeUndefined();

    // Each master read its own error log: the two failing streams were placed on both.
    const logs = await Promise.all(
      [0, 1].map((id) => readFile(join(daemon.home, 'nginx', String(id), 'error.log'), 'utf8')),
    );
    const failing = logs.map((text) => [otherCa, otherName].filter((at) => text.includes(`server: 127.0.0.1:${at},`)));
    expect(failing.map((ports) => ports.length)).toEqual([1, 1]);

    // The listing and the CLI say the same.
    const list = await daemon.request('GET', '/v1/streams');
    api.check('/v1/streams', 'get', list.status, list.json);
    const listed = (list.json as { streams: StreamView[] }).streams;
    expect(listed.find((stream) => stream.port === otherCa)?.backendTlsFailures?.last?.reason).toBe('untrusted');
    expect(listed.find((stream) => stream.port === healthy)?.backendTlsFailures).toBeUndefined();
    const get = await runCli(['get', String(otherCa), '--no-color'], env);
    expect(get.code).toBe(0);
    expect(get.stderr).toBe('');
    expect(get.stdout).toMatch(
      new RegExp(
        `^tls to backend:  \\S+ untrusted: certificate verify error 2[01]: unable to [a-z ]+ certificate \\(backend 127\\.0\\.0\\.1:${otherCaPort}, client 127\\.0\\.0\\.1\\); 1 in all$`,
        'm',
      ),
    );
    expect((await runCli(['get', String(healthy), '--no-color'], env)).stdout).not.toMatch(/tls to backend:/);
    const wide = await runCli(['ls', '-o', 'wide', '--no-color'], env);
    expect(wide.stdout).toMatch(/backend failing \(untrusted\)/);

    const metrics = (await daemon.request('GET', '/metrics')).text;
    expect(failuresMetric(metrics, otherCa, 'untrusted')).toBe(1);
    expect(failuresMetric(metrics, otherName, 'name-mismatch')).toBe(1);
    expect(metrics).not.toMatch(new RegExp(`conductor_stream_backend_tls_failures_total\\{port="${healthy}"`));

    // A second client: counted again.
    expect(await session(otherCa)).toBe('closed');
    await eventually(
      () => getStream(otherCa),
      (view) => view.backendTlsFailures?.count === 2,
    );

    // The runbook's fix: the CA that signed the backend, in the file the stream names.
    const before = untrusted.tlsMaterial?.id;
    await copyFile(certs.wrongCa, caFile);
    const renewed = await eventually(
      () => getStream(otherCa),
      (view) => view.tlsMaterial?.id !== before,
    );
    expect(renewed.backendTlsFailures).toEqual({ count: 2, reasons: { untrusted: 2 } });
    expect(await session(otherCa)).toBe('tls:hello');
    const fixed = await getStream(otherCa);
    expect(fixed.backendTlsFailures).toEqual({ count: 2, reasons: { untrusted: 2 } });
    expect((await runCli(['get', String(otherCa), '--no-color'], env)).stdout).toMatch(
      /^tls to backend: {2}2 handshake\(s\) failed, none since the stream last changed or a session went through$/m,
    );
    // The counter stays a counter.
    expect(failuresMetric((await daemon.request('GET', '/metrics')).text, otherCa, 'untrusted')).toBe(2);

    // A new stream on a failing stream's port starts from nothing.
    expect((await daemon.request('DELETE', `/v1/streams/${otherName}`)).status).toBe(200);
    await create(otherName, goodPort, { backendCa: certs.ca, backendName: 'localhost' });
    expect((await getStream(otherName)).backendTlsFailures).toBeUndefined();
    expect(await session(otherName)).toBe('tls:hello');
    for (const at of [otherCa, otherName, healthy])
      expect((await daemon.request('DELETE', `/v1/streams/${at}`)).status).toBe(200);
  }, 60_000);
});
