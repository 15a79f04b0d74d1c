/**
 * Routing by TLS server name on a shared port, through a real nginx with real clients on loopback:
 * openssl s_client reaches the TLS backend its server name picks (each backend shows its own
 * certificate, CN=<route>, which nginx passes through untouched), by exact name, by the longest
 * leading wildcard, whatever the case, to the default route for other names and for a hello
 * without a name, and is closed when nothing matches and there is no default; an ssh client reaches
 * a real sshd through the route for clients that send no TLS hello, on the same port; a session
 * keeps passing bytes while other routes are added and removed; every bad input is refused naming
 * the value with nothing changed. Fleet mode: fleet-sni.test.ts.
 */

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server as TlsServer } from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { AuditEvent, StreamView } from '@stream-conductor/shared';
import { type Certs, makeCerts, namedTlsBackend, openTlsSession, tlsExchange } from '../helpers/certs.js';
import { runCli } from '../helpers/cli.js';
import { type Daemon, untilOutput } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { EchoBackend, exchange, roundTrip } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';
import { freePortBlock } from '../helpers/ports.js';
import { snapshot } from '../helpers/state.js';
import { eventually } from '../helpers/wait.js';

const run = promisify(execFile);

let daemon: Daemon;
let certs: Certs;
let dir: string;
let env: Record<string, string>;
let next = 0;
let api: Awaited<ReturnType<typeof openApiChecker>>;
const backends = new Map<string, { server: TlsServer; port: number }>();
let plain: EchoBackend;

const daemons = daemonFixture();

/** A TLS backend with its own certificate (CN=name): it answers each chunk with `<name>:<chunk>`. */
async function tlsBackend(name: string, serial: number): Promise<void> {
  backends.set(name, await namedTlsBackend(dir, name, serial));
}

const at = (name: string): string => `127.0.0.1:${backends.get(name)?.port ?? 0}`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sc-sni-'));
  certs = await makeCerts(dir);
  let serial = 100;
  for (const name of ['git', 'db', 'wide', 'fallback', 'other']) await tlsBackend(name, serial++);
  plain = await EchoBackend.start('plain');
  daemon = await daemons.start({ rangeSize: 40 });
  env = { CONDUCTOR_URL: daemon.url };
  api = await openApiChecker(daemon);
}, 60_000);

afterAll(async () => {
  for (const { server } of backends.values()) await new Promise<void>((resolve) => server.close(() => resolve()));
  await plain?.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

const port = (): number => daemon.rangeStart + next++;

/**
 * openssl s_client with `servername` (none: no SNI at all): the CN of the certificate the answering
 * backend showed, or 'closed' when no TLS session came up.
 */
async function whoAnswers(listen: number, servername: string | undefined): Promise<string> {
  const name = servername === undefined ? ['-noservername'] : ['-servername', servername];
  const answer = await new Promise<{ stdout: string }>((resolve) => {
    const child = execFile(
      'openssl',
      ['s_client', '-connect', `127.0.0.1:${listen}`, ...name],
      { timeout: 10_000 },
      (_error, stdout) => resolve({ stdout }),
    );
    child.stdin?.end();
  });
  // The input is /dev/null: s_client shakes hands, prints the peer certificate and quits.
  const subject = /^subject=\s*CN\s*=\s*([a-z]+)/m.exec(answer.stdout);
  return subject?.[1] ?? 'closed';
}

async function getStream(listen: number): Promise<StreamView> {
  const answer = await daemon.get(`/v1/streams/${listen}`);
  api.check('/v1/streams/{port}', 'get', answer.status, answer.json);
  return (answer.json as { stream: StreamView }).stream;
}

describe('routing by server name', () => {
  it('sends each name to its route: exact first, then the longest wildcard, any case; the default for the rest and for no name', async () => {
    const listen = port();
    const answer = await daemon.request('PUT', `/v1/streams/${listen}`, {
      routes: [
        { sni: '*.example.com', backend: at('wide') },
        { sni: 'git.example.com', backend: at('git') },
        { sni: '*.db.example.com', backend: at('db') },
        { default: true, backend: at('fallback') },
      ],
    });
    api.check('/v1/streams/{port}', 'put', answer.status, answer.json);
    expect(answer.status).toBe(201);
    expect(await whoAnswers(listen, 'git.example.com')).toBe('git');
    expect(await whoAnswers(listen, 'GIT.Example.COM')).toBe('git');
    expect(await whoAnswers(listen, 'a.db.example.com')).toBe('db');
    expect(await whoAnswers(listen, 'x.y.db.example.com')).toBe('db');
    // *.db.example.com does not match db.example.com itself: the shorter wildcard does.
    expect(await whoAnswers(listen, 'db.example.com')).toBe('wide');
    expect(await whoAnswers(listen, 'www.example.com')).toBe('wide');
    // Nor does *.example.com match example.com.
    expect(await whoAnswers(listen, 'example.com')).toBe('fallback');
    expect(await whoAnswers(listen, 'elsewhere.test')).toBe('fallback');
    expect(await whoAnswers(listen, undefined)).toBe('fallback');
    const stream = await getStream(listen);
    expect(stream.routes?.map((route) => route.name ?? route.kind)).toEqual([
      '*.example.com',
      'git.example.com',
      '*.db.example.com',
      'default',
    ]);
    // The same body again changes nothing.
    const again = await daemon.request('PUT', `/v1/streams/${listen}`, {
      routes: stream.routes,
      backends: stream.backends,
    });
    expect((again.json as { change: string }).change).toBe('unchanged');
  }, 60_000);

  it('routes names nginx would read as its own words (default, include, a name starting with t) and a 253-character name', async () => {
    const listen = port();
    // 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 characters: the longest a route may name.
    const long = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
    const answer = await daemon.request('PUT', `/v1/streams/${listen}`, {
      routes: [
        { sni: 'default', backend: at('git') },
        { sni: 'include', backend: at('db') },
        { sni: 'test.example.com', backend: at('wide') },
        { sni: long, backend: at('other') },
        { default: true, backend: at('fallback') },
      ],
    });
    expect(answer.status).toBe(201);
    expect(await whoAnswers(listen, 'default')).toBe('git');
    expect(await whoAnswers(listen, 'include')).toBe('db');
    expect(await whoAnswers(listen, 'test.example.com')).toBe('wide');
    expect(await whoAnswers(listen, long)).toBe('other');
    expect(await whoAnswers(listen, 'anything.else')).toBe('fallback');
    expect((await daemon.request('DELETE', `/v1/streams/${listen}`)).status).toBe(200);
  }, 60_000);

  it('closes a connection whose name matches no route when the port has no default route', async () => {
    const listen = port();
    const cli = await runCli(['create', String(listen), '--sni', 'git.example.com', at('git')], env);
    expect(cli.code).toBe(0);
    expect(cli.stdout).toContain(`git.example.com -> ${at('git')}`);
    expect(await whoAnswers(listen, 'git.example.com')).toBe('git');
    expect(await whoAnswers(listen, 'nothing.example.com')).toBe('closed');
    expect(await whoAnswers(listen, undefined)).toBe('closed');
    // The port's traffic counts every session: one served, two closed for want of a route.
    const stats = await eventually(
      async () => (await daemon.get(`/v1/streams/${listen}?stats=1`)).json as { stream: StreamView },
      (answer) => (answer.stream.stats?.sessions ?? 0) >= 3,
    );
    expect(stats.stream.stats).toMatchObject({ sessions: 3, failedSessions: 2 });
    const metrics = (await daemon.get('/metrics')).text;
    expect(metrics).toMatch(new RegExp(`conductor_stream_sessions_total\\{port="${listen}"\\} 3`));
    expect(metrics).toMatch(new RegExp(`conductor_stream_failed_sessions_total\\{port="${listen}"\\} 2`));
    // The CLI adds a wildcard route to the same port; it answers at once.
    expect((await runCli(['create', String(listen), '--sni', '*.db.example.com', at('db')], env)).code).toBe(0);
    expect(await whoAnswers(listen, 'a.db.example.com')).toBe('db');
    const ls = await runCli(['ls'], env);
    expect(ls.stdout).toContain(`git.example.com -> ${at('git')}; *.db.example.com -> ${at('db')}`);
    const rmRoute = await runCli(['rm', String(listen), '--sni', 'git.example.com'], env);
    expect(rmRoute.code).toBe(0);
    expect(await whoAnswers(listen, 'git.example.com')).toBe('closed');
    expect(await whoAnswers(listen, 'a.db.example.com')).toBe('db');
    // The last route takes the port with it.
    const last = await runCli(['rm', String(listen), '--sni', '*.db.example.com', '--json'], env);
    expect(JSON.parse(last.stdout)).toMatchObject({ port: listen, removed: 'stream' });
    expect((await daemon.get(`/v1/streams/${listen}`)).status).toBe(404);
    expect(await whoAnswers(listen, 'a.db.example.com')).toBe('closed');
    const events = ((await daemon.get(`/v1/events?port=${listen}`)).json as { events: AuditEvent[] }).events;
    expect(events.map((event) => event.action)).toEqual(
      expect.arrayContaining(['route-add', 'route-add', 'route-remove', 'route-remove']),
    );
  }, 60_000);

  it('keeps a session of one route passing bytes while another route is added and another removed', async () => {
    const listen = port();
    for (const route of [
      { sni: 'git.example.com', backend: at('git') },
      { sni: 'db.example.com', backend: at('db') },
    ]) {
      const answer = await daemon.request('POST', `/v1/streams/${listen}/routes`, route);
      api.check('/v1/streams/{port}/routes', 'post', answer.status, answer.json);
      expect(answer.status).toBeLessThan(300);
    }
    const session = await openTlsSession(listen, 'git.example.com');
    expect(await tlsExchange(session, 'before')).toBe('git:before');
    const added = await daemon.request('POST', `/v1/streams/${listen}/routes`, {
      sni: 'other.example.com',
      backend: at('other'),
    });
    expect(added.status).toBe(200);
    const removed = await daemon.request('DELETE', `/v1/streams/${listen}/routes/db.example.com`);
    api.check('/v1/streams/{port}/routes/{route}', 'delete', removed.status, removed.json);
    expect(removed.json).toMatchObject({ port: listen, route: 'db.example.com', removed: 'route' });
    expect(await whoAnswers(listen, 'other.example.com')).toBe('other');
    expect(await whoAnswers(listen, 'db.example.com')).toBe('closed');
    expect(await tlsExchange(session, 'after')).toBe('git:after');
    session.destroy();
  }, 60_000);

  it('refuses bad routes naming the value, with nothing changed', async () => {
    const listen = port();
    const plainPort = port();
    expect(
      (
        await daemon.request('PUT', `/v1/streams/${listen}`, {
          routes: [{ sni: 'git.example.com', backend: at('git') }],
        })
      ).status,
    ).toBe(201);
    expect(
      (await daemon.request('PUT', `/v1/streams/${plainPort}`, { backend: `127.0.0.1:${plain.port}` })).status,
    ).toBe(201);
    const fresh = port();
    const before = await snapshot(daemon);
    const route = (sni: unknown): unknown => ({ routes: [{ sni, backend: at('git') }] });
    const bad: Array<[string, string, unknown, number, RegExp]> = [
      [
        'PUT',
        `/v1/streams/${fresh}`,
        { protocol: 'udp', ...(route('a.example.com') as object) },
        400,
        /protocol: .*TCP only.*udp/,
      ],
      ['PUT', `/v1/streams/${fresh}-${fresh + 1}`, route('a.example.com'), 400, /single port, not the range/],
      [
        'PUT',
        `/v1/streams/${fresh}`,
        { ...(route('a.example.com') as object), tlsCert: certs.serverCert, tlsKey: certs.serverKey },
        400,
        /tlsCert: .*passes TLS through untouched/,
      ],
      ['PUT', `/v1/streams/${fresh}`, route(''), 400, /routes\[0\]\.sni: must be a server name/],
      ['PUT', `/v1/streams/${fresh}`, route(`${`${'a'.repeat(63)}.`.repeat(4)}com`), 400, /longer than 253/],
      ['PUT', `/v1/streams/${fresh}`, route('bad_label.example.com'), 400, /label "bad_label"/],
      ['PUT', `/v1/streams/${fresh}`, route('-x.example.com'), 400, /label "-x"/],
      ['PUT', `/v1/streams/${fresh}`, route('a.*.example.com'), 400, /\* may only be the whole first label/],
      ['PUT', `/v1/streams/${fresh}`, route('a*.example.com'), 400, /\* may only be the whole first label/],
      ['PUT', `/v1/streams/${fresh}`, route('127.0.0.1'), 400, /"127.0.0.1" is an IP address/],
      ['PUT', `/v1/streams/${fresh}`, route('::1'), 400, /"::1" is an IP address/],
      ['PUT', `/v1/streams/${fresh}`, route('git.example.com.'), 400, /ends with a dot/],
      [
        'PUT',
        `/v1/streams/${fresh}`,
        { routes: Array.from({ length: 65 }, (_, index) => ({ sni: `h${index}.example.com`, backend: at('git') })) },
        400,
        /at most 64 routes/,
      ],
      [
        'PUT',
        `/v1/streams/${fresh}`,
        {
          routes: [
            { sni: 'a.example.com', backend: at('git') },
            { sni: 'A.example.com', backend: at('db') },
          ],
        },
        400,
        /a\.example\.com appears twice/,
      ],
      [
        'PUT',
        `/v1/streams/${fresh}`,
        { backend: at('git'), routes: [{ sni: 'a.example.com', backend: at('db') }] },
        400,
        /takes its backends from its routes/,
      ],
      [
        'POST',
        `/v1/streams/${listen}/routes`,
        { sni: 'GIT.example.com', backend: at('db') },
        409,
        /already routes git\.example\.com/,
      ],
      [
        'POST',
        `/v1/streams/${plainPort}/routes`,
        { sni: 'a.example.com', backend: at('db') },
        409,
        /has a plain stream/,
      ],
      ['POST', '/v1/streams', { port: listen, backend: `127.0.0.1:${plain.port}` }, 409, /already has a stream/],
      [
        'POST',
        `/v1/streams/${listen}/routes`,
        { sni: 'a.example.com', default: true, backend: at('db') },
        400,
        /give one of sni/,
      ],
      [
        'DELETE',
        `/v1/streams/${listen}/routes/nothing.example.com`,
        undefined,
        404,
        /has no route nothing\.example\.com/,
      ],
      ['DELETE', `/v1/streams/${listen}/routes/1.2.3.4`, undefined, 400, /is an IP address/],
    ];
    for (const [method, path, body, status, message] of bad) {
      const answer = await daemon.request(method, path, body);
      const error = (answer.json as { error?: { message: string } }).error;
      expect([path, answer.status, error?.message]).toEqual([path, status, expect.stringMatching(message)]);
    }
    expect(await snapshot(daemon)).toEqual(before);
    expect(await whoAnswers(listen, 'git.example.com')).toBe('git');
  }, 120_000);
});

describe('traffic per route', () => {
  it("counts each route's sessions and bytes, in stats, get --stats and /metrics; a removed route leaves the listing", async () => {
    const listen = port();
    const answer = await daemon.request('PUT', `/v1/streams/${listen}`, {
      routes: [
        { sni: 'git.example.com', backend: at('git') },
        { sni: '*.db.example.com', backend: at('db') },
        { default: true, backend: at('fallback') },
        { noTls: true, backend: `127.0.0.1:${plain.port}` },
      ],
    });
    expect(answer.status).toBe(201);
    expect(await whoAnswers(listen, 'git.example.com')).toBe('git');
    expect(await whoAnswers(listen, 'GIT.example.com')).toBe('git');
    expect(await whoAnswers(listen, 'a.db.example.com')).toBe('db');
    expect(await whoAnswers(listen, 'elsewhere.test')).toBe('fallback');
    const tls = await openTlsSession(listen, 'git.example.com');
    expect(await tlsExchange(tls, 'counted')).toBe('git:counted');
    tls.destroy();
    expect(await roundTrip(listen, 'no hello')).toBe('plain:no hello');

    const stats = await eventually(
      async () => {
        const got = await daemon.get(`/v1/streams/${listen}?stats=1`);
        api.check('/v1/streams/{port}', 'get', got.status, got.json);
        return (got.json as { stream: StreamView }).stream.stats;
      },
      (value) => (value?.sessions ?? 0) >= 6,
    );
    expect(stats?.sessions).toBe(6);
    expect(stats?.routes?.map((route) => [route.route, route.sessions, route.failedSessions])).toEqual([
      ['git.example.com', 3, 0],
      ['*.db.example.com', 1, 0],
      ['@default', 1, 0],
      ['@no-tls', 1, 0],
    ]);
    const git = stats?.routes?.[0];
    // The TLS bytes pass through: the session that spoke carried more than a bare handshake.
    expect(git?.bytesIn).toBeGreaterThan(0);
    expect(git?.bytesOut).toBeGreaterThan(0);
    // What nginx read to choose the route (here all the client sent) is not in $bytes_received (nginx 1.22).
    expect(stats?.routes?.[3]).toMatchObject({ bytesIn: 0, bytesOut: 'plain:no hello'.length });
    const total = (stats?.routes ?? []).reduce((sum, route) => sum + route.bytesIn, 0);
    expect(total).toBe(stats?.bytesIn);

    const get = await runCli(['get', String(listen), '--stats', '--no-color'], env);
    expect(get.code).toBe(0);
    expect(get.stdout).toMatch(/^sessions:\s+6 finished \(0 failed\), 0 open$/m);
    expect(get.stdout).toMatch(
      /^route:\s+git\.example\.com: 3 finished \(0 failed\), [0-9.]+ K?i?B in, [0-9.]+ K?i?B out$/m,
    );
    expect(get.stdout).toMatch(/^route:\s+@no-tls: 1 finished \(0 failed\), 0 B in, 14 B out$/m);
    expect((await runCli(['get', String(listen), '--no-color'], env)).stdout).not.toMatch(/^route /m);

    const metrics = (await daemon.get('/metrics')).text;
    expect(metrics).toMatch(
      new RegExp(`^conductor_route_sessions_total\\{port="${listen}",route="git.example.com"\\} 3$`, 'm'),
    );
    expect(metrics).toMatch(
      new RegExp(`^conductor_route_sessions_total\\{port="${listen}",route="@no-tls"\\} 1$`, 'm'),
    );
    expect(metrics).toMatch(
      new RegExp(
        `^conductor_route_sent_bytes_total\\{port="${listen}",route="@no-tls"\\} ${'plain:no hello'.length}$`,
        'm',
      ),
    );
    // A name a client sent is never a label: only the routes'.
    expect(metrics).not.toMatch(/elsewhere\.test|a\.db\.example\.com/);

    const removed = await daemon.request(
      'DELETE',
      `/v1/streams/${listen}/routes/${encodeURIComponent('*.db.example.com')}`,
    );
    expect(removed.status).toBe(200);
    const after = (await daemon.get(`/v1/streams/${listen}?stats=1`)).json as { stream: StreamView };
    expect(after.stream.stats?.routes?.map((route) => route.route)).toEqual(['git.example.com', '@default', '@no-tls']);
    expect((await daemon.get('/metrics')).text).not.toContain(`{port="${listen}",route="*.db.example.com"}`);
    expect((await daemon.request('DELETE', `/v1/streams/${listen}`)).status).toBe(200);
  }, 60_000);
});

describe('route calls at the same moment', () => {
  it('keeps every route of eight adds sent at once to a new port, then of removals sent at once', async () => {
    const listen = port();
    const names = Array.from({ length: 8 }, (_, index) => `n${index}.example.com`);
    const added = await Promise.all(
      names.map((name, index) =>
        daemon.request('POST', `/v1/streams/${listen}/routes`, {
          sni: name,
          backend: at(index % 2 === 0 ? 'git' : 'db'),
        }),
      ),
    );
    expect(added.map((answer) => answer.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 201]);
    const stream = await getStream(listen);
    expect(stream.routes?.map((route) => route.name).sort()).toEqual(names);
    expect(await whoAnswers(listen, 'n7.example.com')).toBe('db');
    const removed = await Promise.all(
      names.slice(0, 4).map((name) => daemon.request('DELETE', `/v1/streams/${listen}/routes/${name}`)),
    );
    expect(removed.map((answer) => answer.status)).toEqual([200, 200, 200, 200]);
    expect((await getStream(listen)).routes?.map((route) => route.name).sort()).toEqual(names.slice(4));
    expect(await whoAnswers(listen, 'n0.example.com')).toBe('closed');
    expect(await whoAnswers(listen, 'n6.example.com')).toBe('git');
    expect((await daemon.request('DELETE', `/v1/streams/${listen}`)).status).toBe(200);
  }, 60_000);
});

describe('a draining port with routes', () => {
  it('refuses route changes while it drains, naming the drain, with nothing changed', async () => {
    const listen = port();
    const put = await daemon.request('PUT', `/v1/streams/${listen}`, {
      routes: [
        { sni: 'git.example.com', backend: at('git') },
        { sni: 'db.example.com', backend: at('db') },
      ],
    });
    expect(put.status).toBe(201);
    // An open session keeps the drain going (a drain with none ends at the daemon's next look).
    const session = await openTlsSession(listen, 'git.example.com');
    expect(await tlsExchange(session, 'held')).toBe('git:held');
    expect((await daemon.request('POST', `/v1/streams/${listen}/drain`, { timeout: '1m' })).status).toBe(200);
    const before = await snapshot(daemon);
    const added = await daemon.request('POST', `/v1/streams/${listen}/routes`, {
      sni: 'x.example.com',
      backend: at('other'),
    });
    const removed = await daemon.request('DELETE', `/v1/streams/${listen}/routes/db.example.com`);
    for (const answer of [added, removed])
      expect([answer.status, (answer.json as { error: { message: string } }).error.message]).toEqual([
        409,
        expect.stringContaining('draining'),
      ]);
    expect(await snapshot(daemon)).toEqual(before);
    expect(await tlsExchange(session, 'still')).toBe('git:still');
    expect((await daemon.request('DELETE', `/v1/streams/${listen}/drain`)).status).toBe(200);
    session.destroy();
    expect(await whoAnswers(listen, 'db.example.com')).toBe('db');
    expect((await daemon.request('DELETE', `/v1/streams/${listen}`)).status).toBe(200);
  }, 60_000);
});

describe('a declarative file with routes', () => {
  it('applies routes, shows a changed route in diff, and applies the change', async () => {
    const listen = port();
    const file = join(dir, 'routes.yaml');
    const write = (fallback: string): Promise<void> =>
      writeFile(
        file,
        [
          'streams:',
          `  - port: ${listen}`,
          '    routes:',
          `      - { sni: "git.example.com", backend: "${at('git')}" }`,
          `      - { default: true, backend: "${at(fallback)}" }`,
          '',
        ].join('\n'),
      );
    await write('fallback');
    expect((await runCli(['apply', '-f', file], env)).code).toBe(0);
    expect(await whoAnswers(listen, 'git.example.com')).toBe('git');
    expect(await whoAnswers(listen, 'x.example.com')).toBe('fallback');
    const same = await runCli(['diff', '-f', file], env);
    expect([same.code, same.stdout]).toEqual([0, '']);
    await write('other');
    const diff = await runCli(['diff', '-f', file, '--no-color'], env);
    expect(diff.code).toBe(1);
    expect(diff.stdout).toBe(
      [
        `~ ${listen}`,
        `    backends: git.example.com -> ${at('git')}; (default) -> ${at('fallback')} -> git.example.com -> ${at('git')}; (default) -> ${at('other')}`,
        '',
      ].join('\n'),
    );
    expect((await runCli(['apply', '-f', file], env)).code).toBe(0);
    expect(await whoAnswers(listen, 'x.example.com')).toBe('other');
    expect(await whoAnswers(listen, 'git.example.com')).toBe('git');
    expect((await daemon.request('DELETE', `/v1/streams/${listen}`)).status).toBe(200);
  }, 60_000);

  it('completes the route flags of create and rm', async () => {
    const { stdout } = await run('bash', [
      '-c',
      `source <(node ${join(process.cwd(), 'packages/cli/bin/conductor.cjs')} completion bash); COMP_WORDS=(conductor rm 1 --s); COMP_CWORD=3; _conductor; printf '%s\\n' "\${COMPREPLY[@]}"`,
    ]);
    expect(stdout.split('\n')).toEqual(expect.arrayContaining(['--sni', '--sni-default']));
  });
});

describe('SSH and HTTPS on one port', () => {
  let sshd: ChildProcess | undefined;
  let sshPort: number;
  let key: string;

  beforeAll(async () => {
    // sshd needs its privilege separation folder; its own config, host key and authorized key live
    // in the test's folder (StrictModes off: the folder lies under the world-writable /tmp).
    await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
    const home = join(dir, 'sshd');
    await mkdir(home, { mode: 0o700 });
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(home, 'host_key')]);
    key = join(home, 'client_key');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    await writeFile(join(home, 'authorized_keys'), await readFile(`${key}.pub`));
    await chmod(join(home, 'authorized_keys'), 0o600);
    sshPort = await freePortBlock(1);
    await writeFile(
      join(home, 'sshd_config'),
      [
        `HostKey ${join(home, 'host_key')}`,
        `AuthorizedKeysFile ${join(home, 'authorized_keys')}`,
        `PidFile ${join(home, 'sshd.pid')}`,
        'StrictModes no',
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        '',
      ].join('\n'),
    );
    sshd = spawn(
      '/usr/sbin/sshd',
      ['-D', '-e', '-f', join(home, 'sshd_config'), '-p', String(sshPort), '-o', 'ListenAddress=127.0.0.1'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    await untilOutput(sshd, /Server listening on 127\.0\.0\.1/, 10_000);
  }, 30_000);

  afterAll(() => {
    sshd?.kill('SIGTERM');
  });

  it('sends a client that sends no TLS hello (ssh) to the no-tls route and TLS clients by name, on one port', async () => {
    const listen = port();
    const plainRoute = await runCli(['create', String(listen), '--plain', `127.0.0.1:${sshPort}`], env);
    expect(plainRoute.code).toBe(0);
    expect((await runCli(['create', String(listen), '--sni', 'git.example.com', at('git')], env)).code).toBe(0);
    expect((await runCli(['create', String(listen), '--sni-default', at('fallback')], env)).code).toBe(0);
    const ssh = await run(
      'ssh',
      [
        '-p',
        String(listen),
        '-i',
        key,
        '-o',
        'StrictHostKeyChecking=no',
        '-o',
        'UserKnownHostsFile=/dev/null',
        '-o',
        'BatchMode=yes',
        '-o',
        'LogLevel=ERROR',
        'root@127.0.0.1',
        'echo',
        'through-the-no-tls-route',
      ],
      { timeout: 20_000 },
    );
    expect(ssh.stdout.trim()).toBe('through-the-no-tls-route');
    expect(await whoAnswers(listen, 'git.example.com')).toBe('git');
    expect(await whoAnswers(listen, 'x.example.com')).toBe('fallback');
    const get = await runCli(['get', String(listen), '--json'], env);
    const stream = JSON.parse(get.stdout) as StreamView;
    expect(stream.routes?.map((route) => route.kind)).toEqual(['no-tls', 'name', 'default']);
    expect((await runCli(['rm', String(listen), '--plain'], env)).code).toBe(0);
    expect((await getStream(listen)).routes?.length).toBe(2);
    expect((await runCli(['rm', String(listen)], env)).code).toBe(0);
  }, 60_000);
});

describe('plain streams next to routes', () => {
  it('a plain client on a port without a no-tls route goes to the default route, as bytes', async () => {
    const listen = port();
    expect(
      (
        await daemon.request('PUT', `/v1/streams/${listen}`, {
          routes: [{ default: true, backend: `127.0.0.1:${plain.port}` }],
        })
      ).status,
    ).toBe(201);
    const { connect } = await import('node:net');
    const socket = connect(listen, '127.0.0.1');
    await new Promise((resolve) => socket.once('connect', resolve));
    expect(await exchange(socket, 'hello')).toBe('plain:hello');
    socket.destroy();
  }, 30_000);
});

describe('the legacy API and a port with routes', () => {
  it('lists the port with its first backend and refuses /removestream of it, with nothing changed', async () => {
    const listen = port();
    const put = await daemon.request('PUT', `/v1/streams/${listen}`, {
      routes: [
        { sni: 'git.example.com', backend: at('git') },
        { default: true, backend: at('fallback') },
      ],
    });
    expect(put.status).toBe(201);
    const listed = JSON.parse((await daemon.get('/getstreams')).text) as Array<{ listen: number; proxy_pass: string }>;
    expect(listed.find((entry) => entry.listen === listen)).toEqual({ listen, proxy_pass: at('git') });
    const before = await snapshot(daemon);
    const refused = await daemon.get(`/removestream/${listen}`);
    expect(refused.text).toContain(`port ${listen} routes by TLS server name (2 route(s))`);
    expect(await snapshot(daemon)).toEqual(before);
    expect(await whoAnswers(listen, 'git.example.com')).toBe('git');
  }, 30_000);
});
