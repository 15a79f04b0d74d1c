/**
 * Draining a stream in fleet mode: two daemons, each with its own nginx on its own loopback
 * address (127.0.0.2, .3), one desired set in a real etcd. A drain through one host closes the
 * port on both (the kernel refuses on both addresses when it answers) while the sessions open on
 * each go on; every host lists it draining with the sessions of all hosts; it goes from the fleet
 * when the last session on the last host ends, or at the deadline with each host's sessions cut;
 * a cancel through the other host brings it back on both; what a draining stream refuses
 * (changes other than its own calls, a UDP stream, bad input) leaves both hosts as they were.
 */

import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { HostStreamState, StreamView } from '@stream-conductor/shared';
import { runCli } from '../helpers/cli.js';
import type { Daemon, DaemonOptions } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { startFleetHosts } from '../helpers/fleet-hosts.js';
import { connectOutcome, EchoBackend, exchange, listeningOn, openSession, roundTrip } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';
import { eventually } from '../helpers/wait.js';

const SIZE = 10;
const ADDRESSES = ['127.0.0.2', '127.0.0.3'];

const daemons = daemonFixture();
const sockets: Socket[] = [];
let echo: EchoBackend;
let hosts: Daemon[];
let options: DaemonOptions[];
let P: number;
let next = 0;
let api: Awaited<ReturnType<typeof openApiChecker>>;

beforeAll(async () => {
  ({
    start: P,
    hosts,
    options,
  } = await startFleetHosts(daemons, { name: 'fleet-drain', size: SIZE, addresses: ADDRESSES }));
  echo = await EchoBackend.start('echo');
  api = await openApiChecker(hosts[0] as Daemon);
});

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await echo?.close();
});

const host = (i: number): Daemon => hosts[i] as Daemon;
const env = (i: number): Record<string, string> => ({ CONDUCTOR_URL: host(i).url });
const port = (): number => P + next++;

async function streamOn(i: number, at: number): Promise<StreamView | undefined> {
  const answer = await host(i).get(`/v1/streams/${at}`);
  return answer.status === 200 ? (answer.json as { stream: StreamView }).stream : undefined;
}

/** Each host's state of the stream on `at`, as host `i` shows it. */
async function hostStates(i: number, at: number): Promise<Array<HostStreamState['state']> | undefined> {
  return (await streamOn(i, at))?.hosts?.map((entry) => entry.state);
}

/** Creates a stream to the echo backend through host 0, live on both hosts. */
async function create(at: number, body: Record<string, unknown> = {}): Promise<void> {
  const answer = await host(0).request('POST', '/v1/streams', { port: at, backend: `127.0.0.1:${echo.port}`, ...body });
  expect(answer.status).toBe(201);
  await eventually(
    () => hostStates(1, at),
    (states) => states?.length === 2 && states.every((state) => state === 'live'),
    15_000,
  );
}

/** An open session through host `i`'s address (closed after the file's tests). */
async function session(at: number, i: number): Promise<Socket> {
  const socket = await openSession(at, { host: ADDRESSES[i] as string });
  sockets.push(socket);
  return socket;
}

const closed = (socket: Socket): Promise<void> =>
  new Promise((done) => {
    if (socket.destroyed) done();
    else socket.once('close', () => done());
  });

/** Waits until neither host lists `at`. */
async function goneFromBoth(at: number): Promise<void> {
  for (const i of [0, 1])
    await eventually(
      () => streamOn(i, at),
      (view) => view === undefined,
      15_000,
    );
}

/** Per host address: whether `at` listens there, in the kernel's table. */
const listening = (at: number): Promise<boolean[]> =>
  Promise.all(ADDRESSES.map(async (address) => (await listeningOn(address)).has(at)));

/** What each host lists of `at` and whether the kernel listens on it, for a refusal to leave as it was. */
async function everything(at: number): Promise<unknown> {
  const views = await Promise.all(
    ADDRESSES.map(async (_, i) => {
      const view = await streamOn(i, at);
      return view && { state: view.state, drainingUntil: view.drainingUntil, backends: view.backends };
    }),
  );
  return { views, kernel: await listening(at) };
}

describe('a drain in fleet mode, on two hosts', () => {
  it('closes the port on both hosts when answered, keeps the sessions of both, and removes the stream after the last', async () => {
    const at = port();
    await create(at);
    const first = await session(at, 0);
    const second = await session(at, 1);
    const run = await runCli(['--json', 'drain', String(at), '--timeout', '5m'], env(0));
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const stream = JSON.parse(run.stdout) as StreamView;
    api.check('/v1/streams/{port}/drain', 'post', 200, { stream });
    expect(stream.state).toBe('draining');
    expect(stream.hosts?.map((entry) => entry.state)).toEqual(['draining', 'draining']);
    // True when it arrives: neither host's kernel listens, a new client is refused on both.
    expect(await listening(at)).toEqual([false, false]);
    for (const address of ADDRESSES) expect(await connectOutcome(at, address)).toBe('refused');
    // The open sessions go on.
    expect(await exchange(first, 'one')).toBe('echo:one');
    expect(await exchange(second, 'two')).toBe('echo:two');
    // Both hosts list it draining with the sessions of both.
    for (const i of [0, 1]) {
      await eventually(
        () => streamOn(i, at),
        (view) => view?.state === 'draining' && view.openSessions === 2,
        15_000,
      );
      const ls = await runCli(['ls', '--no-color'], env(i));
      expect(ls.stdout.split('\n').find((line) => line.includes(` ${at} `) || line.startsWith(`${at} `))).toContain(
        'draining (2 open)',
      );
    }
    const during = (await host(1).get('/v1/status')).json as {
      streams: { draining?: number };
      hosts: Array<{ draining: number }>;
    };
    api.check('/v1/status', 'get', 200, during);
    expect(during.streams.draining).toBe(1);
    expect(during.hosts.map((entry) => entry.draining)).toEqual([1, 1]);
    // The first host's session ends: that host has drained, the stream stays for the other's.
    first.destroy();
    await eventually(
      () => streamOn(1, at),
      (view) =>
        view?.openSessions === 1 &&
        JSON.stringify(view.hosts) ===
          JSON.stringify([
            { host: 'host-0', state: 'drained' },
            { host: 'host-1', state: 'draining', openSessions: 1 },
          ]),
      15_000,
    );
    const get = await runCli(['get', String(at), '--no-color'], env(0));
    expect(get.stdout).toMatch(/host host-0: +drained/);
    expect(get.stdout).toMatch(/host host-1: +draining: 1 session\(s\) open/);
    expect(await connectOutcome(at, ADDRESSES[0])).toBe('refused');
    expect(await exchange(second, 'still')).toBe('echo:still');
    // The last session ends: the stream goes from the fleet.
    second.destroy();
    await goneFromBoth(at);
    expect(await listening(at)).toEqual([false, false]);
    const status = (await host(1).get('/v1/status')).json as { hosts: Array<{ id: string; draining: number }> };
    expect(status.hosts.map((entry) => entry.draining)).toEqual([0, 0]);
  });

  it('is called off through the other host: both hosts take connections again, the sessions never noticed', async () => {
    const at = port();
    await create(at, { maxConnections: 5 });
    const open = await session(at, 1);
    expect((await runCli(['drain', String(at)], env(1))).code).toBe(0);
    expect(await listening(at)).toEqual([false, false]);
    const cancel = await runCli(['drain', String(at), '--cancel', '--no-color'], env(0));
    expect(cancel.stderr).toBe('');
    expect(cancel.code).toBe(0);
    expect(cancel.stdout).toMatch(new RegExp(`^${at} -> 127\\.0\\.0\\.1:${echo.port} live \\(replaced\\)$`, 'm'));
    // Live on the host that answered, at once; on the other once it converged.
    expect(await roundTrip(at, 'back', { host: ADDRESSES[0] })).toBe('echo:back');
    await eventually(
      () => hostStates(0, at),
      (states) => states?.every((state) => state === 'live') === true,
      15_000,
    );
    expect(await listening(at)).toEqual([true, true]);
    expect(await roundTrip(at, 'again', { host: ADDRESSES[1] })).toBe('echo:again');
    expect(await exchange(open, 'same')).toBe('echo:same');
    for (const i of [0, 1]) {
      const view = await streamOn(i, at);
      expect(view).toMatchObject({ state: 'live', maxConnections: 5 });
      expect(view).not.toHaveProperty('drainingUntil');
    }
    open.destroy();
    expect((await host(0).request('DELETE', `/v1/streams/${at}`)).status).toBe(200);
  });

  it('cuts the sessions left on every host at the deadline and removes the stream', async () => {
    const at = port();
    await create(at);
    const ends = [await session(at, 0), await session(at, 1)].map(closed);
    // --wait returns once the fleet no longer has it.
    const run = await runCli(['drain', String(at), '--timeout', '2s', '--wait'], env(1));
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(
      new RegExp(`^${at} draining: 2 session\\(s\\) open, .*\\n${at} drained and removed\\n$`),
    );
    await Promise.all(ends); // cut on each host at the deadline
    await goneFromBoth(at);
    expect(await listening(at)).toEqual([false, false]);
  });

  it('refuses what a draining stream does not take, with both hosts left as they were', async () => {
    const at = port();
    await create(at);
    const open = await session(at, 0);
    expect((await host(0).request('POST', `/v1/streams/${at}/drain`, { timeout: '10m' })).status).toBe(200);
    await eventually(
      () => hostStates(1, at),
      (states) => states?.length === 2 && states.every((state) => state === 'draining' || state === 'drained'),
      15_000,
    );
    const before = await everything(at);
    const refusals: Array<[number, string, string, unknown, number, RegExp]> = [
      [
        1,
        'PUT',
        `/v1/streams/${at}`,
        { backend: '127.0.0.1:1' },
        409,
        new RegExp(`port ${at} is draining until \\S+: its sessions are ending`),
      ],
      [0, 'POST', '/v1/streams', { port: at, backend: `127.0.0.1:${echo.port}` }, 409, /already has a stream/],
      [1, 'POST', `/v1/streams/${at}/renew`, { ttl: '1h' }, 404, new RegExp(`no stream listens on port ${at}`)],
      [0, 'POST', `/v1/streams/${at}/drain`, { timeout: 'soon' }, 400, /timeout/],
      [
        1,
        'POST',
        '/v1/apply',
        { streams: [{ port: at, backend: '127.0.0.1:1' }] },
        409,
        new RegExp(`port ${at} is draining`),
      ],
      [
        0,
        'POST',
        `/v1/streams/${P + SIZE - 1}/drain`,
        {},
        404,
        new RegExp(`no stream listens on port ${P + SIZE - 1}`),
      ],
    ];
    for (const [i, method, path, body, status, message] of refusals) {
      const answer = await host(i).request(method, path, body);
      expect({ path, status: answer.status }).toEqual({ path, status });
      expect((answer.json as { error: { message: string } }).error.message).toMatch(message);
      expect(await everything(at)).toEqual(before);
    }
    // An apply that lists it as it is leaves it draining.
    const same = await host(1).request('POST', '/v1/apply', {
      streams: [{ port: at, backend: `127.0.0.1:${echo.port}` }],
    });
    expect(same.status).toBe(200);
    expect((same.json as { plan: { unchanged: number[] } }).plan.unchanged).toEqual([at]);
    expect(await everything(at)).toEqual(before);
    expect(await exchange(open, 'on')).toBe('echo:on');
    // rm removes it on both at once, as for any stream.
    expect((await host(1).request('DELETE', `/v1/streams/${at}`)).status).toBe(200);
    await goneFromBoth(at);
  });

  it('goes on through a restart of a host: that host reports drained and never serves the port again', async () => {
    const at = port();
    await create(at);
    const open = await session(at, 0);
    expect((await host(0).request('POST', `/v1/streams/${at}/drain`, { timeout: '10m' })).status).toBe(200);
    await host(1).stop();
    hosts[1] = await daemons.start({ ...(options[1] as DaemonOptions), home: host(1).home });
    await eventually(
      () => hostStates(0, at),
      (states) => JSON.stringify(states) === JSON.stringify(['draining', 'drained']),
      15_000,
    );
    expect(await hostStates(1, at)).toEqual(['draining', 'drained']);
    expect(await listening(at)).toEqual([false, false]);
    expect(await connectOutcome(at, ADDRESSES[1])).toBe('refused');
    expect(await exchange(open, 'after')).toBe('echo:after');
    open.destroy();
    await goneFromBoth(at);
    expect(await listening(at)).toEqual([false, false]);
  });

  it('refuses a UDP stream, whose sessions it cannot see, with nothing changed', async () => {
    const at = port();
    const created = await host(0).request('POST', '/v1/streams', {
      port: at,
      backend: `127.0.0.1:${echo.port}`,
      protocol: 'udp',
    });
    expect(created.status).toBe(201);
    await eventually(
      () => hostStates(1, at),
      (states) => states?.every((state) => state === 'live') === true,
      15_000,
    );
    const answer = await host(1).request('POST', `/v1/streams/${at}/drain`);
    expect(answer.status).toBe(400);
    expect((answer.json as { error: { message: string } }).error.message).toBe(
      `stream ${at} is UDP: the daemon cannot see its sessions to drain them`,
    );
    for (const i of [0, 1]) expect(await hostStates(i, at)).toEqual(['live', 'live']);
    expect((await host(0).request('DELETE', `/v1/streams/${at}`)).status).toBe(200);
  });
});
