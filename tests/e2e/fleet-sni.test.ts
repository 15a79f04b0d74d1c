/**
 * Routes by TLS server name in fleet mode: two daemons, each with its own nginx on its own loopback
 * address (127.0.0.2, .3), one desired set in a real etcd. Routes added through one host are served
 * by both (openssl s_client through each host's address reaches the TLS backend its name picks,
 * each backend showing its own certificate CN=<name>; a client that sends no TLS hello reaches the
 * no-tls route); a route removed through the other host leaves a session of another route passing
 * bytes; route adds to one port through both hosts at once all end up in the definition, on both
 * hosts (a new port made by six adds at once too, and closed by six removes at once); refusals (a name twice, a plain stream, bad names) change nothing on either host or in the
 * kernel; route changes on a draining port are refused 409 through either host with nothing
 * changed, and taken once the drain is called off; an apply with routes through the second host is served by both; the last route removed
 * closes the port on both (the kernel's sockets).
 */

import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server as TlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { StreamView } from '@stream-conductor/shared';
import { makeCerts, namedTlsBackend, openTlsSession, tlsExchange } from '../helpers/certs.js';
import { runCli } from '../helpers/cli.js';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { startFleetHosts } from '../helpers/fleet-hosts.js';
import { EchoBackend, listeningOn, roundTrip } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';
import { eventually } from '../helpers/wait.js';

const SIZE = 6;
const ADDRESSES = ['127.0.0.2', '127.0.0.3'];
const ROUNDS = 4;

const daemons = daemonFixture();
let hosts: Daemon[];
let P: number;
let dir: string;
let plain: EchoBackend;
let api: Awaited<ReturnType<typeof openApiChecker>>;
const backends = new Map<string, { server: TlsServer; port: number }>();

/** A TLS backend with its own certificate (CN=name): it answers each chunk with `<name>:<chunk>`. */
async function tlsBackend(name: string, serial: number): Promise<void> {
  backends.set(name, await namedTlsBackend(dir, name, serial));
}

const at = (name: string): string => `127.0.0.1:${backends.get(name)?.port ?? 0}`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sc-fleet-sni-'));
  await makeCerts(dir);
  let serial = 100;
  for (const name of ['git', 'db', 'other', 'fallback']) await tlsBackend(name, serial++);
  plain = await EchoBackend.start('plain');
  ({ start: P, hosts } = await startFleetHosts(daemons, { name: 'fleet-sni', size: SIZE, addresses: ADDRESSES }));
  api = await openApiChecker(hosts[0] as Daemon);
}, 60_000);

afterAll(async () => {
  for (const { server } of backends.values()) await new Promise<void>((resolve) => server.close(() => resolve()));
  await plain?.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

const host = (i: number): Daemon => hosts[i] as Daemon;

/**
 * openssl s_client to `address`:`port` with `servername`: the CN of the certificate the answering
 * backend showed, or 'closed' when no TLS session came up.
 */
async function whoAnswers(address: string, port: number, servername: string): Promise<string> {
  const answer = await new Promise<{ stdout: string }>((resolve) => {
    const child = execFile(
      'openssl',
      ['s_client', '-connect', `${address}:${port}`, '-servername', servername],
      { timeout: 10_000 },
      (_error, stdout) => resolve({ stdout }),
    );
    child.stdin?.end();
  });
  const subject = /^subject=\s*CN\s*=\s*([a-z]+)/m.exec(answer.stdout);
  return subject?.[1] ?? 'closed';
}

/** Who answers `servername` on `port` through each host's address. */
const onBoth = (port: number, servername: string): Promise<string[]> =>
  Promise.all(ADDRESSES.map((address) => whoAnswers(address, port, servername)));

/** Waits until each host's nginx sends `servername` on `port` to `backend` (or 'closed'). */
async function servedByBoth(port: number, servername: string, backend: string): Promise<void> {
  const seen = await eventually(
    () => onBoth(port, servername),
    (names) => names.every((name) => name === backend),
    20_000,
  );
  expect(seen).toEqual([backend, backend]);
}

/**
 * A plain TCP client (no TLS hello) through each host's address: what answered. It sends at least
 * the 5 bytes of a TLS record header: nginx's ssl_preread waits for those before it tells.
 */
const plainOnBoth = (port: number): Promise<string[]> =>
  Promise.all(
    ADDRESSES.map((address) =>
      roundTrip(port, 'hello', { host: address, timeoutMs: 5_000 }).catch((error: Error) => `failed: ${error.message}`),
    ),
  );

const streamsOf = async (i: number): Promise<StreamView[]> =>
  ((await host(i).get('/v1/streams')).json as { streams: StreamView[] }).streams;

const routeNames = (stream: StreamView | undefined): string[] =>
  (stream?.routes ?? []).map((route) => route.name ?? `@${route.kind}`).sort();

/** What each host lists (ports, routes, state) and which ports of the range listen on each address. */
async function everything(): Promise<unknown> {
  const lists = await Promise.all(
    ADDRESSES.map(async (_, i) =>
      (await streamsOf(i)).map((stream) => ({
        port: stream.port,
        state: stream.state,
        routes: routeNames(stream),
        backends: stream.backends,
      })),
    ),
  );
  const kernel = await Promise.all(
    ADDRESSES.map(async (address) =>
      [...(await listeningOn(address))].filter((port) => port >= P && port < P + SIZE).sort(),
    ),
  );
  return { lists, kernel };
}

/** Waits until both hosts list `port` with exactly `names`, live on every host. */
async function listedOnBoth(port: number, names: string[]): Promise<void> {
  for (const i of [0, 1]) {
    const stream = await eventually(
      async () => (await streamsOf(i)).find((each) => each.port === port),
      (found) =>
        JSON.stringify(routeNames(found)) === JSON.stringify([...names].sort()) &&
        found?.hosts?.length === 2 &&
        found.hosts.every((entry) => entry.state === 'live'),
      20_000,
    );
    expect(routeNames(stream)).toEqual([...names].sort());
  }
}

describe('routes by TLS server name in fleet mode, on two hosts', () => {
  it('adds routes through one host (the port made by the first), served by both hosts to the right backend', async () => {
    const env = { CONDUCTOR_URL: host(0).url };
    const first = await runCli(['create', String(P), '--sni', 'git.example.com', at('git')], env);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toContain(`git.example.com -> ${at('git')}`);
    // The host that took the call serves it when it answers.
    expect(await whoAnswers(ADDRESSES[0] as string, P, 'git.example.com')).toBe('git');
    const added = await host(0).request('POST', `/v1/streams/${P}/routes`, {
      sni: 'db.example.com',
      backend: at('db'),
    });
    api.check('/v1/streams/{port}/routes', 'post', added.status, added.json);
    expect(added.status).toBe(200);
    expect((added.json as { change: string; stream: StreamView }).change).toBe('replaced');
    expect(routeNames((added.json as { stream: StreamView }).stream)).toEqual(['db.example.com', 'git.example.com']);
    expect((await runCli(['create', String(P), '--sni-default', at('fallback')], env)).code).toBe(0);
    expect((await runCli(['create', String(P), '--plain', `127.0.0.1:${plain.port}`], env)).code).toBe(0);
    await listedOnBoth(P, ['git.example.com', 'db.example.com', '@default', '@no-tls']);
    await servedByBoth(P, 'git.example.com', 'git');
    await servedByBoth(P, 'DB.example.com', 'db');
    await servedByBoth(P, 'elsewhere.example.com', 'fallback');
    // A client that sends no TLS hello reaches the no-tls route, through either host.
    expect(await plainOnBoth(P)).toEqual(['plain:hello', 'plain:hello']);
    const got = await host(1).get(`/v1/streams/${P}`);
    api.check('/v1/streams/{port}', 'get', got.status, got.json);
    expect((got.json as { stream: StreamView }).stream.hosts).toEqual([
      { host: 'host-0', state: 'live' },
      { host: 'host-1', state: 'live' },
    ]);
  }, 120_000);

  it('removes a route through the other host while a session of another route, open through the first, passes bytes', async () => {
    const session = await openTlsSession(P, 'git.example.com', ADDRESSES[0] as string);
    try {
      expect(await tlsExchange(session, 'before')).toBe('git:before');
      const removed = await host(1).request('DELETE', `/v1/streams/${P}/routes/db.example.com`);
      api.check('/v1/streams/{port}/routes/{route}', 'delete', removed.status, removed.json);
      expect(removed.json).toMatchObject({ port: P, route: 'db.example.com', removed: 'route' });
      // The name now goes to the default route on both hosts.
      await servedByBoth(P, 'db.example.com', 'fallback');
      await listedOnBoth(P, ['git.example.com', '@default', '@no-tls']);
      expect(await tlsExchange(session, 'after')).toBe('git:after');
    } finally {
      session.destroy();
    }
  }, 60_000);

  it('takes route adds to one port through both hosts at once: every one ends up in the definition, on both hosts', async () => {
    const names: string[] = [];
    for (let round = 0; round < ROUNDS; round += 1) {
      const a = `r${round}-a.example.com`;
      const b = `r${round}-b.example.com`;
      const answers = await Promise.all([
        host(0).request('POST', `/v1/streams/${P}/routes`, { sni: a, backend: at('other') }),
        host(1).request('POST', `/v1/streams/${P}/routes`, { sni: b, backend: at('db') }),
      ]);
      expect(answers.map((answer) => [answer.status, answer.json])).toEqual([
        [200, expect.objectContaining({ change: 'replaced' })],
        [200, expect.objectContaining({ change: 'replaced' })],
      ]);
      names.push(a, b);
      // Each answer's definition holds its own route, whichever went second.
      const [first, second] = answers.map((answer) => (answer.json as { stream: StreamView }).stream);
      expect(routeNames(first)).toContain(a);
      expect(routeNames(second)).toContain(b);
    }
    await listedOnBoth(P, ['git.example.com', '@default', '@no-tls', ...names]);
    for (const round of [0, ROUNDS - 1]) {
      await servedByBoth(P, `r${round}-a.example.com`, 'other');
      await servedByBoth(P, `r${round}-b.example.com`, 'db');
    }
    // The same removes at once through both hosts: each route goes, the others stay.
    for (let round = 0; round < ROUNDS; round += 1) {
      const answers = await Promise.all([
        host(0).request('DELETE', `/v1/streams/${P}/routes/r${round}-b.example.com`),
        host(1).request('DELETE', `/v1/streams/${P}/routes/r${round}-a.example.com`),
      ]);
      expect(answers.map((answer) => [answer.status, (answer.json as { removed?: string }).removed])).toEqual([
        [200, 'route'],
        [200, 'route'],
      ]);
    }
    await listedOnBoth(P, ['git.example.com', '@default', '@no-tls']);
    await servedByBoth(P, `r${ROUNDS - 1}-a.example.com`, 'fallback');
  }, 180_000);

  it('makes a new port from six adds sent at once through both hosts, keeps every route, and closes it when all six are removed at once', async () => {
    const port = P + 3;
    const names = [0, 1, 2, 3, 4, 5].map((n) => `n${n}.example.com`);
    const added = await Promise.all(
      names.map((name, n) =>
        host(n % 2).request('POST', `/v1/streams/${port}/routes`, { sni: name, backend: at('other') }),
      ),
    );
    // Exactly one made the port; the others added to it.
    expect(added.map((answer) => answer.status).sort()).toEqual([200, 200, 200, 200, 200, 201]);
    await listedOnBoth(port, names);
    await servedByBoth(port, 'n5.example.com', 'other');
    const removed = await Promise.all(
      names.map((name, n) => host((n + 1) % 2).request('DELETE', `/v1/streams/${port}/routes/${name}`)),
    );
    expect(removed.map((answer) => [answer.status, (answer.json as { removed?: string }).removed]).sort()).toEqual([
      [200, 'route'],
      [200, 'route'],
      [200, 'route'],
      [200, 'route'],
      [200, 'route'],
      [200, 'stream'],
    ]);
    const kernel = await eventually(
      () => Promise.all(ADDRESSES.map(async (address) => (await listeningOn(address)).has(port))),
      (held) => held.every((one) => !one),
      20_000,
    );
    expect(kernel).toEqual([false, false]);
  }, 120_000);

  it('refuses a name twice, routes on a plain stream and bad names through either host, with nothing changed anywhere', async () => {
    const made = await host(0).request('PUT', `/v1/streams/${P + 1}`, { backend: `127.0.0.1:${plain.port}` });
    expect(made.status).toBe(201);
    await listedOnBoth(P + 1, []);
    const before = await everything();
    const refusals: Array<[number, string, string, unknown, number, RegExp]> = [
      [
        1,
        'POST',
        `/v1/streams/${P}/routes`,
        { sni: 'git.example.com', backend: at('db') },
        409,
        new RegExp(`port ${P} already routes git.example.com`),
      ],
      [0, 'POST', `/v1/streams/${P}/routes`, { default: true, backend: at('db') }, 409, /already routes @default/],
      [
        1,
        'POST',
        `/v1/streams/${P + 1}/routes`,
        { sni: 'git.example.com', backend: at('git') },
        409,
        new RegExp(`port ${P + 1} has a plain stream`),
      ],
      [0, 'POST', `/v1/streams/${P}/routes`, { sni: 'bad_name!', backend: at('db') }, 400, /bad_name!/],
      [1, 'POST', `/v1/streams/${P}/routes`, { sni: 'a..example.com', backend: at('db') }, 400, /a\.\.example\.com/],
      [0, 'DELETE', `/v1/streams/${P}/routes/bad_name!`, undefined, 400, /bad_name!/],
      [
        1,
        'DELETE',
        `/v1/streams/${P}/routes/nothing.example.com`,
        undefined,
        404,
        /has no route nothing\.example\.com/,
      ],
      [0, 'DELETE', `/v1/streams/${P + 1}/routes/git.example.com`, undefined, 404, /has a plain stream/],
      [
        1,
        'PUT',
        `/v1/streams/${P + 2}`,
        {
          routes: [
            { sni: 'x.example.com', backend: at('git') },
            { sni: 'X.example.com', backend: at('db') },
          ],
        },
        400,
        /x\.example\.com/i,
      ],
    ];
    // A plain stream on the port where the routes live, by create and by replace.
    refusals.push(
      [1, 'POST', '/v1/streams', { port: P, backend: `127.0.0.1:${plain.port}` }, 409, /already has a stream/],
      [0, 'POST', '/v1/streams', { port: P, routes: [{ sni: 'y.example.com', backend: at('git') }] }, 409, /already/],
    );
    for (const [i, method, path, body, status, pattern] of refusals) {
      const answer = await host(i).request(method, path, body);
      expect([method, path, answer.status]).toEqual([method, path, status]);
      expect((answer.json as { error: { message: string } }).error.message).toMatch(pattern);
      const template = path
        .replace(/^\/v1\/streams\/[0-9]+\/routes\/.*$/, '/v1/streams/{port}/routes/{route}')
        .replace(/^\/v1\/streams\/[0-9]+/, '/v1/streams/{port}');
      api.check(template, method.toLowerCase(), answer.status, answer.json);
    }
    const cli = await runCli(['create', String(P), '--sni', 'git.example.com', at('db')], {
      CONDUCTOR_URL: host(1).url,
    });
    expect(cli.code).not.toBe(0);
    expect(cli.stderr).toContain(`already routes git.example.com`);
    expect(await everything()).toEqual(before);
    expect(await onBoth(P, 'git.example.com')).toEqual(['git', 'git']);
    expect((await host(1).request('DELETE', `/v1/streams/${P + 1}`)).status).toBe(200);
  }, 120_000);

  it('refuses route changes through either host while the port drains, with nothing changed; takes them once the drain is off', async () => {
    const port = P + 4;
    expect(
      (await host(0).request('POST', `/v1/streams/${port}/routes`, { sni: 'git.example.com', backend: at('git') }))
        .status,
    ).toBe(201);
    await listedOnBoth(port, ['git.example.com']);
    // A session through each host keeps the drain going.
    const sessions = await Promise.all(ADDRESSES.map((address) => openTlsSession(port, 'git.example.com', address)));
    try {
      const drained = await host(0).request('POST', `/v1/streams/${port}/drain`, { timeout: '5m' });
      expect(drained.status).toBe(200);
      const before = await everything();
      const refusals: Array<[number, string, string, unknown]> = [
        [1, 'POST', `/v1/streams/${port}/routes`, { sni: 'db.example.com', backend: at('db') }],
        [0, 'POST', `/v1/streams/${port}/routes`, { default: true, backend: at('fallback') }],
        [1, 'DELETE', `/v1/streams/${port}/routes/git.example.com`, undefined],
      ];
      for (const [i, method, path, body] of refusals) {
        const answer = await host(i).request(method, path, body);
        expect([method, path, answer.status]).toEqual([method, path, 409]);
        expect((answer.json as { error: { message: string } }).error.message).toMatch(
          new RegExp(`stream ${port} is draining until .*: its routes cannot change now`),
        );
        api.check(
          method === 'POST' ? '/v1/streams/{port}/routes' : '/v1/streams/{port}/routes/{route}',
          method.toLowerCase(),
          answer.status,
          answer.json,
        );
      }
      expect(await everything()).toEqual(before);
      // The sessions of the draining port go on, on both hosts.
      expect(await Promise.all(sessions.map((session) => tlsExchange(session, 'still')))).toEqual([
        'git:still',
        'git:still',
      ]);
      expect((await host(1).request('DELETE', `/v1/streams/${port}/drain`)).status).toBe(200);
      const added = await host(1).request('POST', `/v1/streams/${port}/routes`, {
        sni: 'db.example.com',
        backend: at('db'),
      });
      expect(added.status).toBe(200);
      await listedOnBoth(port, ['git.example.com', 'db.example.com']);
      await servedByBoth(port, 'db.example.com', 'db');
    } finally {
      for (const session of sessions) session.destroy();
    }
    expect((await host(0).request('DELETE', `/v1/streams/${port}`)).status).toBe(200);
  }, 120_000);

  it('applies a set with routes through the second host: served by both; the same set again changes nothing', async () => {
    const streams = [
      {
        port: P + 2,
        routes: [
          { sni: 'git.example.com', backend: at('git') },
          { sni: '*.db.example.com', backend: at('db') },
        ],
      },
    ];
    const applied = await host(1).request('POST', '/v1/apply', { streams });
    api.check('/v1/apply', 'post', applied.status, applied.json);
    expect(applied.status).toBe(200);
    expect(applied.json).toMatchObject({ applied: true, plan: { create: [P + 2] } });
    await listedOnBoth(P + 2, ['git.example.com', '*.db.example.com']);
    await servedByBoth(P + 2, 'git.example.com', 'git');
    await servedByBoth(P + 2, 'a.db.example.com', 'db');
    // No default route: another name is closed on both hosts.
    expect(await onBoth(P + 2, 'elsewhere.example.com')).toEqual(['closed', 'closed']);
    const again = await host(0).request('POST', '/v1/apply', { streams });
    expect(again.json).toMatchObject({ applied: true, plan: { unchanged: [P + 2] } });
  }, 120_000);

  it('removes the last route through either host: the port closes on both hosts', async () => {
    const first = await runCli(['rm', String(P + 2), '--sni', 'git.example.com', '--json'], {
      CONDUCTOR_URL: host(0).url,
    });
    expect(first.code).toBe(0);
    expect(JSON.parse(first.stdout)).toMatchObject({ port: P + 2, removed: 'route' });
    await listedOnBoth(P + 2, ['*.db.example.com']);
    const last = await host(1).request('DELETE', `/v1/streams/${P + 2}/routes/*.db.example.com`);
    api.check('/v1/streams/{port}/routes/{route}', 'delete', last.status, last.json);
    expect(last.json).toMatchObject({ port: P + 2, removed: 'stream' });
    const kernel = await eventually(
      () => Promise.all(ADDRESSES.map(async (address) => (await listeningOn(address)).has(P + 2))),
      (held) => held.every((one) => !one),
      20_000,
    );
    expect(kernel).toEqual([false, false]);
    for (const i of [0, 1]) {
      await eventually(
        async () => (await host(i).get(`/v1/streams/${P + 2}`)).status,
        (status) => status === 404,
        20_000,
      );
    }
    // The port with the other routes still serves, on both.
    await servedByBoth(P, 'git.example.com', 'git');
  }, 120_000);
});
