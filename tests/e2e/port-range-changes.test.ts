/**
 * Changing a port range in place with the real daemon, nginx and CLI on loopback: a PUT that grows
 * a range (or turns a single port into a range) onto a port another process holds is refused 409
 * PORT_IN_USE naming that port, with nothing changed and the range still serving; a PUT on
 * FIRST-LAST whose body gives no port or only the first takes the last port from the path; a PUT
 * on a range's first port with a single-port body is refused unless it names the ports; what the
 * legacy API does with a range (one /getstreams entry, /hasstream true inside, /createstream inside
 * and /removestream of any of its ports refused, nothing changed); a range drained whole (every
 * port refusing at once, sessions on any port going on, removed when the last ends or cut at the
 * deadline, called off with every port back), a drain of an inner port refused naming the range,
 * rm --kill-sessions cutting the sessions of every port; a range with a TTL expiring with every
 * port closed.
 */

import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { AuditEvent, StreamView } from '@stream-conductor/shared';
import { runCli } from '../helpers/cli.js';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, exchange, openSession, roundTrip } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';
import { snapshot } from '../helpers/state.js';
import { eventually } from '../helpers/wait.js';

let daemon: Daemon;
let S: number;
const backends: EchoBackend[] = [];
let api: Awaited<ReturnType<typeof openApiChecker>>;

const daemons = daemonFixture();

/** The ports first..last, inclusive. */
const span = (first: number, last: number): number[] =>
  Array.from({ length: last - first + 1 }, (_, index) => first + index);

beforeAll(async () => {
  daemon = await daemons.start({ rangeSize: 40 });
  S = daemon.rangeStart;
  // Backends on the streams' own port numbers, on another loopback address than nginx's 127.0.0.1.
  for (const port of span(S, S + 29)) backends.push(await EchoBackend.start(`a${port}`, port, '127.0.0.2'));
  api = await openApiChecker(daemon);
});

afterAll(async () => {
  await Promise.all(backends.map((backend) => backend.close()));
});

/** A plain TCP server of this process on 127.0.0.1:port, standing for another program. */
async function holdPort(port: number): Promise<Server> {
  const server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return server;
}

const close = (server: Server): Promise<void> => new Promise((resolve) => server.close(() => resolve()));

const env = (): Record<string, string> => ({ CONDUCTOR_URL: daemon.url });

const errorOf = (json: unknown): { code: string; message: string } =>
  (json as { error: { code: string; message: string } }).error;

describe('growing a range onto a port another process holds', () => {
  it('a range that grows is refused 409 PORT_IN_USE naming the port, nothing changed, the range still serves', async () => {
    const created = await daemon.request('POST', '/v1/streams', { port: `${S}-${S + 4}`, backend: '127.0.0.2' });
    expect(created.status).toBe(201);
    const holder = await holdPort(S + 7);
    try {
      const before = await snapshot(daemon);
      const grown = await daemon.request('PUT', `/v1/streams/${S}-${S + 9}`, {
        port: `${S}-${S + 9}`,
        backend: '127.0.0.2',
      });
      expect(grown.status).toBe(409);
      expect(errorOf(grown.json).code).toBe('PORT_IN_USE');
      expect(errorOf(grown.json).message).toContain(`port ${S + 7} is held by another process`);
      expect(await snapshot(daemon)).toEqual(before);
      const view = ((await daemon.get(`/v1/streams/${S}`)).json as { stream: StreamView }).stream;
      expect(view).toMatchObject({ port: S, portEnd: S + 4 });
      for (const port of [S, S + 4]) expect(await roundTrip(port, 'still')).toBe(`a${port}:still`);
    } finally {
      await close(holder);
    }
    // With the port free again the same change goes through, and every new port serves.
    const again = await daemon.request('PUT', `/v1/streams/${S}-${S + 9}`, {
      port: `${S}-${S + 9}`,
      backend: '127.0.0.2',
    });
    expect(again.status).toBe(200);
    for (const port of [S + 5, S + 7, S + 9]) expect(await roundTrip(port, 'new')).toBe(`a${port}:new`);
    expect((await daemon.request('DELETE', `/v1/streams/${S}-${S + 9}`)).status).toBe(200);
  });

  it('a single port turned into a range starting there is refused the same way', async () => {
    const P = S + 20;
    const created = await daemon.request('POST', '/v1/streams', { port: P, backend: `127.0.0.2:${P}` });
    expect(created.status).toBe(201);
    const holder = await holdPort(P + 3);
    try {
      const before = await snapshot(daemon);
      const grown = await daemon.request('PUT', `/v1/streams/${P}-${P + 4}`, {
        port: `${P}-${P + 4}`,
        backend: '127.0.0.2',
      });
      expect(grown.status).toBe(409);
      expect(errorOf(grown.json).code).toBe('PORT_IN_USE');
      expect(errorOf(grown.json).message).toContain(`port ${P + 3} is held by another process`);
      expect(await snapshot(daemon)).toEqual(before);
      expect(await roundTrip(P, 'still')).toBe(`a${P}:still`);
    } finally {
      await close(holder);
    }
    expect((await daemon.request('DELETE', `/v1/streams/${P}`)).status).toBe(200);
  });
});

describe('replacing a range by PUT', () => {
  const first = (): number => S + 10;
  const last = (): number => S + 14;
  const path = (): string => `/v1/streams/${first()}-${last()}`;
  const view = async (): Promise<StreamView> =>
    ((await daemon.get(`/v1/streams/${first()}`)).json as { stream: StreamView }).stream;

  beforeAll(async () => {
    const created = await daemon.request('POST', '/v1/streams', { port: `${first()}-${last()}`, backend: '127.0.0.2' });
    expect(created.status).toBe(201);
  });

  it('PUT /v1/streams/FIRST-LAST with no port, or only the first port, in the body replaces the range', async () => {
    const noPort = await daemon.request('PUT', path(), { backend: '127.0.0.2', description: 'no port' });
    expect(noPort.status).toBe(200);
    expect(await view()).toMatchObject({ port: first(), portEnd: last(), description: 'no port' });
    const firstOnly = await daemon.request('PUT', path(), {
      port: first(),
      backend: '127.0.0.2',
      description: 'first',
    });
    expect(firstOnly.status).toBe(200);
    expect(await view()).toMatchObject({ port: first(), portEnd: last(), description: 'first' });
    for (const port of [first(), last()]) expect(await roundTrip(port, 'r')).toBe(`a${port}:r`);
  });

  it('a body naming other ports than the path is refused 400 saying both, nothing changed', async () => {
    const before = await snapshot(daemon);
    const other = await daemon.request('PUT', path(), { port: `${first()}-${last() - 2}`, backend: '127.0.0.2' });
    expect(other.status).toBe(400);
    api.check('/v1/streams/{port}', 'put', 400, other.json);
    expect(errorOf(other.json).message).toBe(
      `port: the body names ports ${first()}-${last() - 2} but the path names ${first()}-${last()}`,
    );
    expect(await snapshot(daemon)).toEqual(before);
  });

  it('PUT on the first port with a single-port body is refused 409 CONFLICT with a hint, nothing changed', async () => {
    const before = await snapshot(daemon);
    for (const body of [{ port: first(), backend: `127.0.0.2:${first()}` }, { backend: `127.0.0.2:${first()}` }]) {
      const shrink = await daemon.request('PUT', `/v1/streams/${first()}`, body);
      expect(shrink.status).toBe(409);
      api.check('/v1/streams/{port}', 'put', 409, shrink.json);
      const error = (shrink.json as { error: { code: string; message: string; hint: string } }).error;
      expect(error.code).toBe('CONFLICT');
      expect(error.message).toContain(`the first port of the range ${first()}-${last()}`);
      expect(error.hint).toContain(`PUT /v1/streams/${first()}-${last()}`);
      expect(error.hint).toContain(`"port": "${first()}-${first()}"`);
    }
    expect(await snapshot(daemon)).toEqual(before);
    for (const port of [first(), first() + 2, last()]) expect(await roundTrip(port, 's')).toBe(`a${port}:s`);
  });

  it('apply listing the first port alone is refused 409 like PUT (also as a dry run), nothing changed; naming the ports applies', async () => {
    const before = await snapshot(daemon);
    const alone = { port: first(), backend: `127.0.0.2:${first()}`, description: 'alone' };
    for (const dryRun of [false, true]) {
      const applied = await daemon.request('POST', '/v1/apply', { streams: [alone], dryRun });
      expect([dryRun, applied.status]).toEqual([dryRun, 409]);
      api.check('/v1/apply', 'post', 409, applied.json);
      const error = (applied.json as { error: { code: string; message: string; hint: string } }).error;
      expect(error.code).toBe('CONFLICT');
      expect(error.message).toContain(`the first port of the range ${first()}-${last()}`);
      expect(error.hint).toContain(`"port": "${first()}-${first()}"`);
    }
    expect(await snapshot(daemon)).toEqual(before);
    for (const port of [first(), first() + 2, last()]) expect(await roundTrip(port, 'p')).toBe(`a${port}:p`);
    // Naming the ports, as a range or by portEnd, applies.
    for (const named of [
      { port: `${first()}-${last()}`, backend: '127.0.0.2', description: 'applied' },
      { port: first(), portEnd: last(), backend: '127.0.0.2', description: 'applied again' },
    ]) {
      const applied = await daemon.request('POST', '/v1/apply', { streams: [named] });
      expect(applied.status).toBe(200);
      expect(await view()).toMatchObject({ port: first(), portEnd: last(), description: named.description });
    }
    for (const port of [first(), last()]) expect(await roundTrip(port, 'q')).toBe(`a${port}:q`);
  });

  it('PUT on the first port naming the range by portEnd replaces it; "N-N" shrinks it to one port', async () => {
    const kept = await daemon.request('PUT', `/v1/streams/${first()}`, {
      port: first(),
      portEnd: last(),
      backend: '127.0.0.2',
      description: 'kept',
    });
    expect(kept.status).toBe(200);
    expect(await view()).toMatchObject({ port: first(), portEnd: last(), description: 'kept' });
    const shrunk = await daemon.request('PUT', `/v1/streams/${first()}`, {
      port: `${first()}-${first()}`,
      backend: `127.0.0.2:${first()}`,
    });
    expect(shrunk.status).toBe(200);
    expect((await view()).portEnd).toBeUndefined();
    expect(await roundTrip(first(), 'one')).toBe(`a${first()}:one`);
    for (const port of [first() + 1, last()]) expect(await connectOutcome(port)).toBe('refused');
    expect((await daemon.request('DELETE', `/v1/streams/${first()}`)).status).toBe(200);
  });
});

describe('a range seen through the legacy API', () => {
  const first = (): number => S + 20;
  const last = (): number => S + 24;

  beforeAll(async () => {
    const created = await daemon.request('POST', '/v1/streams', { port: `${first()}-${last()}`, backend: '127.0.0.2' });
    expect(created.status).toBe(201);
  });

  afterAll(async () => {
    expect((await daemon.request('DELETE', `/v1/streams/${first()}-${last()}`)).status).toBe(200);
  });

  it('/getstreams shows the range as one entry, its first port with listen_end its last', async () => {
    expect((await daemon.get('/getstreams')).text).toBe(
      `[{"listen": ${first()}, "listen_end": ${last()}, "proxy_pass": "127.0.0.2:${first()}"}]`,
    );
  });

  it('/hasstream answers "true" for a port inside the range, "false" past it', async () => {
    expect((await daemon.get(`/hasstream/${first() + 2}`)).text).toBe('{"result": "true"}');
    expect((await daemon.get(`/hasstream/${last() + 1}`)).text).toBe('{"result": "false"}');
  });

  it('/createstream on a port inside the range is refused naming the range, nothing changed', async () => {
    const before = await snapshot(daemon);
    const created = await daemon.get(`/createstream/${first() + 2}/127.0.0.1:1`);
    expect(created.status).toBe(200);
    const body = JSON.parse(created.text) as { result: string; errors: string };
    expect(body.result).toBe('error');
    expect(body.errors).toContain(`port ${first() + 2} already has a stream (${first()}-${last()}`);
    expect(await snapshot(daemon)).toEqual(before);
  });

  it('/removestream of its first port or a port inside is refused pointing to the v1 API, nothing changed', async () => {
    const before = await snapshot(daemon);
    const head = await daemon.get(`/removestream/${first()}`);
    expect(head.status).toBe(200);
    const headBody = JSON.parse(head.text) as { result: string; errors: string };
    expect(headBody.result).toBe('error');
    expect(headBody.errors).toContain(`the first port of the range ${first()}-${last()}`);
    expect(headBody.errors).toContain(`DELETE /v1/streams/${first()}-${last()}`);
    const inside = JSON.parse((await daemon.get(`/removestream/${first() + 2}`)).text) as {
      result: string;
      errors: string;
    };
    expect(inside.result).toBe('error');
    expect(inside.errors).toContain(`port ${first() + 2} is part of the range ${first()}-${last()}`);
    expect(await snapshot(daemon)).toEqual(before);
    for (const port of [first(), last()]) expect(await roundTrip(port, 'l')).toBe(`a${port}:l`);
  });
});

describe('drain and expiry of a range', () => {
  const first = (): number => S + 25;
  const last = (): number => S + 29;

  it('a drain of a port inside a range is refused 409 naming the range, nothing changed', async () => {
    const created = await daemon.request('POST', '/v1/streams', { port: `${first()}-${last()}`, backend: '127.0.0.2' });
    expect(created.status).toBe(201);
    const before = await snapshot(daemon);
    const drain = await daemon.request('POST', `/v1/streams/${first() + 2}/drain`, { timeout: '30s' });
    expect(drain.status).toBe(409);
    api.check('/v1/streams/{port}/drain', 'post', 409, drain.json);
    expect(errorOf(drain.json).message).toBe(
      `port ${first() + 2} is part of the range ${first()}-${last()}: a range is drained whole`,
    );
    const cli = await runCli(['drain', String(first() + 2)], env());
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain(`conductor drain ${first()}-${last()}`);
    expect(await snapshot(daemon)).toEqual(before);
    for (const port of [first(), last()]) expect(await roundTrip(port, 'd')).toBe(`a${port}:d`);
    expect((await daemon.request('DELETE', `/v1/streams/${first()}-${last()}`)).status).toBe(200);
  });

  it('drains a whole range: every port refuses at once, sessions on any port go on, removed when the last ends', async () => {
    expect(
      (await daemon.request('POST', '/v1/streams', { port: `${first()}-${last()}`, backend: '127.0.0.2' })).status,
    ).toBe(201);
    // Sessions on an inner port and on the last: the drain waits for both.
    const inner = await openSession(first() + 2);
    const end = await openSession(last());
    const drained = await runCli(['--json', 'drain', `${first()}-${last()}`, '--timeout', '10m'], env());
    expect(drained.stderr).toBe('');
    expect(drained.code).toBe(0);
    expect(JSON.parse(drained.stdout)).toMatchObject({
      port: first(),
      portEnd: last(),
      state: 'draining',
      openSessions: 2,
    });
    // Answered when the kernel refuses every port of the range, not only the first.
    for (const port of span(first(), last())) expect(await connectOutcome(port)).toBe('refused');
    expect(await exchange(inner, 'on')).toBe(`a${first() + 2}:on`);
    expect(await exchange(end, 'on')).toBe(`a${last()}:on`);
    const listed = await runCli(['ls'], env());
    expect(listed.stdout).toMatch(new RegExp(`${first()}-${last()}.*draining \\(2 open\\)`));
    // No port of a draining range can be taken meanwhile.
    const taken = await daemon.request('POST', '/v1/streams', { port: first() + 1, backend: '127.0.0.2:1' });
    expect(taken.status).toBe(409);
    inner.destroy();
    await eventually(
      async () => ((await daemon.get(`/v1/streams/${first()}`)).json as { stream?: StreamView }).stream?.openSessions,
      (open) => open === 1,
      15_000,
    );
    end.destroy();
    await eventually(
      async () => (await daemon.get(`/v1/streams/${first()}`)).status,
      (status) => status === 404,
      15_000,
    );
    const removal = await eventually(
      async () => ((await daemon.get(`/v1/events?port=${first()}`)).json as { events: AuditEvent[] }).events,
      (events) => events.some((event) => event.action === 'remove' && event.actor === 'daemon'),
    );
    expect(removal.find((event) => event.action === 'remove' && event.actor === 'daemon')?.detail).toBe(
      'drained: its last session ended',
    );
  });

  it('at the deadline cuts the sessions of every port of a range; a drain called off brings every port back', async () => {
    expect(
      (await daemon.request('POST', '/v1/streams', { port: `${first()}-${last()}`, backend: '127.0.0.2' })).status,
    ).toBe(201);
    const kept = await openSession(first() + 3);
    expect((await runCli(['drain', `${first()}-${last()}`], env())).code).toBe(0);
    for (const port of span(first(), last())) expect(await connectOutcome(port)).toBe('refused');
    const back = await runCli(['drain', `${first()}-${last()}`, '--cancel'], env());
    expect(back.stderr).toBe('');
    expect(back.code).toBe(0);
    // Live again on every port when answered; the open session never noticed.
    for (const port of span(first(), last())) expect(await roundTrip(port, 'b')).toBe(`a${port}:b`);
    expect(await exchange(kept, 'same')).toBe(`a${first() + 3}:same`);

    const closed = new Promise<void>((resolve) => kept.once('close', () => resolve()));
    expect((await runCli(['drain', `${first()}-${last()}`, '--timeout', '1s'], env())).code).toBe(0);
    await closed; // cut by the daemon at the deadline (ss -K), on an inner port of the range
    await eventually(
      async () => (await daemon.get(`/v1/streams/${first()}`)).status,
      (status) => status === 404,
      15_000,
    );
    const events = ((await daemon.get(`/v1/events?port=${first()}`)).json as { events: AuditEvent[] }).events;
    expect(events.some((event) => event.detail === 'drain deadline: 1 session(s) cut')).toBe(true);
  });

  it('rm --kill-sessions of a range cuts the sessions of every one of its ports', async () => {
    expect(
      (await daemon.request('POST', '/v1/streams', { port: `${first()}-${last()}`, backend: '127.0.0.2' })).status,
    ).toBe(201);
    const sessions = [await openSession(first()), await openSession(first() + 4)];
    const closed = sessions.map((socket) => new Promise<void>((resolve) => socket.once('close', () => resolve())));
    const removed = await runCli(['rm', `${first()}-${last()}`, '--kill-sessions'], env());
    expect(removed.stderr).toBe('');
    expect(removed.code).toBe(0);
    await Promise.all(closed);
    for (const port of span(first(), last())) expect(await connectOutcome(port)).toBe('refused');
  });

  it('a range with a TTL expires: it leaves the listing and every one of its ports closes', async () => {
    const created = await daemon.request('POST', '/v1/streams', {
      port: `${first()}-${last()}`,
      backend: '127.0.0.2',
      ttl: '2s',
    });
    expect(created.status).toBe(201);
    for (const port of [first(), last()]) expect(await roundTrip(port, 't')).toBe(`a${port}:t`);
    await eventually(
      async () => (await daemon.get(`/v1/streams/${first()}`)).status,
      (status) => status === 404,
      15_000,
    );
    for (const port of span(first(), last())) expect(await connectOutcome(port)).toBe('refused');
    expect(((await daemon.get('/v1/streams')).json as { streams: StreamView[] }).streams).toEqual([]);
  });
});
