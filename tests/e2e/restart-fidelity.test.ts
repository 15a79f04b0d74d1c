/**
 * Every kind of stream, with every field a client can set, comes back exactly as it was after a
 * restart of the daemon (its nginx stopped with it, so every stream is rendered again from the
 * store) and after a SIGKILL (its nginx adopted): the same definitions in the listing, every one
 * live, nothing reported as a problem, and bytes flowing through each. A field the store cannot
 * read back would drop its stream here.
 */

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { StreamView } from '@stream-conductor/shared';
import { type Certs, makeCerts, tlsRoundTrip } from '../helpers/certs.js';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { EchoBackend, roundTrip, UdpEchoBackend, udpRoundTrip } from '../helpers/net.js';
import { eventually } from '../helpers/wait.js';

let certs: Certs;
let dir: string;
let echo: EchoBackend;
let udpEcho: UdpEchoBackend;
let tlsBackend: TlsServer;
let tlsBackendPort: number;
const rangeEchoes: EchoBackend[] = [];
const daemons = daemonFixture();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sc-restart-fidelity-'));
  certs = await makeCerts(dir);
  echo = await EchoBackend.start('e');
  udpEcho = await UdpEchoBackend.start('u');
  tlsBackend = createTlsServer(
    { cert: await readFile(certs.serverCert), key: await readFile(certs.serverKey) },
    (s) => {
      s.on('data', (chunk: Buffer) => s.write(`t:${chunk.toString('utf8')}`));
      s.on('error', () => s.destroy());
    },
  );
  await new Promise<void>((resolve) => tlsBackend.listen(0, '127.0.0.1', () => resolve()));
  tlsBackendPort = (tlsBackend.address() as { port: number }).port;
}, 60_000);

afterAll(async () => {
  await echo?.close();
  await udpEcho?.close();
  await Promise.all(rangeEchoes.map((backend) => backend.close()));
  await new Promise<void>((resolve) => (tlsBackend ? tlsBackend.close(() => resolve()) : resolve()));
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

/** The definitions a client sees, without what describes the moment (state, sessions). */
async function definitions(daemon: Daemon): Promise<unknown[]> {
  const { streams } = (await daemon.get('/v1/streams')).json as { streams: StreamView[] };
  return streams.map(({ state, reason, openSessions, stats, hosts, ...definition }) => {
    expect({ port: definition.port, state, reason }).toEqual({
      port: definition.port,
      state: 'live',
      reason: undefined,
    });
    return definition;
  });
}

async function expectServed(daemon: Daemon, base: number): Promise<void> {
  const status = (await daemon.get('/v1/status')).json as { problems: string[] };
  expect(status.problems).toEqual([]);
  expect(await roundTrip(base, 'full')).toBe('e:full');
  expect(await udpRoundTrip(base + 1, 'dgram')).toBe('u:dgram');
  for (const port of [base + 2, base + 4]) expect(await roundTrip(port, 'r')).toBe(`r${port}:r`);
  expect((await tlsRoundTrip(base + 5, 'edge', certs.ca)).answer).toBe('e:edge');
  expect(await roundTrip(base + 6, 'inner')).toBe('t:inner');
  // Routes by server name: TLS passed through to the named route, plain bytes to the no-TLS route.
  expect((await tlsRoundTrip(base + 7, 'by-name', certs.ca, 'localhost')).answer).toBe('t:by-name');
  expect(await roundTrip(base + 7, 'no-hello')).toBe('e:no-hello');
}

describe('a restart keeps every definition as it was', () => {
  it('after a stop and after a SIGKILL, with every field of every kind of stream', async () => {
    const first = await daemons.start({ rangeSize: 12, env: { CONDUCTOR_STREAM_TLS_INTERVAL: '0.2' } });
    const base = first.rangeStart;
    for (let port = base + 2; port <= base + 4; port += 1) {
      rangeEchoes.push(await EchoBackend.start(`r${port}`, port, '127.0.0.2'));
    }
    const bodies: Array<Record<string, unknown>> = [
      {
        port: base,
        backends: [
          { address: `127.0.0.1:${echo.port}`, weight: 3 },
          { address: `127.0.0.4:${echo.port}`, backup: true },
        ],
        balance: 'least-conn',
        allow: ['127.0.0.0/8', '::1/128'],
        connectTimeout: '5s',
        idleTimeout: '2m',
        profile: 'throughput',
        listenAddress: '127.0.0.1',
        labels: { team: 'edge', env: 'test' },
        description: 'every field there is',
        ttl: '7d',
        maxConnections: 100,
        maxConnectionsPerClient: 10,
        uploadRate: '10m',
        downloadRate: '512k',
      },
      {
        port: base + 1,
        protocol: 'udp',
        backend: `127.0.0.1:${udpEcho.port}`,
        expiresAt: new Date(Date.now() + 86_400_000).toISOString(),
      },
      { port: base + 2, portEnd: base + 4, backend: '127.0.0.2', proxyProtocol: false },
      { port: base + 5, backend: `127.0.0.1:${echo.port}`, tlsCert: certs.serverCert, tlsKey: certs.serverKey },
      {
        port: base + 6,
        backend: `127.0.0.1:${tlsBackendPort}`,
        backendTls: true,
        backendCa: certs.ca,
        backendName: 'localhost',
        backendVerify: true,
      },
      {
        port: base + 7,
        routes: [
          { sni: 'localhost', backend: `127.0.0.1:${tlsBackendPort}` },
          { noTls: true, backend: `127.0.0.1:${echo.port}` },
        ],
      },
    ];
    // Every field the API knows is set somewhere above: its refusal of an unknown one lists them.
    const unknown = await first.request('POST', '/v1/streams', { port: base, backend: '127.0.0.1:1', zz: 1 });
    const known = /known: ([^)]+)\)/.exec(unknown.text)?.[1]?.split(', ');
    expect(known?.length).toBeGreaterThan(20);
    const used = new Set(bodies.flatMap((body) => Object.keys(body)));
    expect(known?.filter((field) => !used.has(field))).toEqual([]);
    for (const body of bodies) {
      const created = await first.request('POST', '/v1/streams', body);
      expect({ port: body.port, status: created.status, text: created.text }).toMatchObject({ status: 201 });
    }
    const before = await definitions(first);
    expect(before).toHaveLength(bodies.length);
    await expectServed(first, base);

    // A stop takes nginx down with the daemon: every stream is rendered again from the store.
    expect(await first.stop()).toBe(0);
    const second = await daemons.start({
      home: first.home,
      rangeStart: base,
      rangeSize: 12,
      env: { CONDUCTOR_STREAM_TLS_INTERVAL: '0.2' },
    });
    expect(await definitions(second)).toEqual(before);
    await expectServed(second, base);

    // A SIGKILL leaves nginx running: the next daemon adopts it and must agree with it.
    await second.stop('SIGKILL');
    const third = await daemons.start({
      home: first.home,
      rangeStart: base,
      rangeSize: 12,
      env: { CONDUCTOR_STREAM_TLS_INTERVAL: '0.2' },
    });
    expect(
      await eventually(
        () => definitions(third),
        (found) => found.length === bodies.length,
      ),
    ).toEqual(before);
    await expectServed(third, base);
  });
});
