/**
 * Draining a stream, with real clients on loopback and a real nginx: the port refuses new
 * connections the moment the drain answers while an open session goes on; the stream is listed
 * as draining with its open sessions and goes when the last one ends, or at the deadline with its
 * sessions cut; `--cancel` brings it back; `--wait` returns once it is gone; bad input and streams
 * that cannot drain are refused with nothing changed; a restart keeps the port closed.
 */

import { readFile } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { StreamView } from '@stream-conductor/shared';
import { runCli } from '../helpers/cli.js';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, exchange, openSession, roundTrip } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';
import { snapshot } from '../helpers/state.js';
import { eventually } from '../helpers/wait.js';

let daemon: Daemon;
let echo: EchoBackend;
let env: Record<string, string>;
let next = 0;
const sockets: Socket[] = [];

const daemons = daemonFixture();

beforeAll(async () => {
  echo = await EchoBackend.start('echo');
  daemon = await daemons.start({ rangeSize: 20 });
  env = { CONDUCTOR_URL: daemon.url };
});

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await echo?.close();
});

const port = (): number => daemon.rangeStart + next++;

async function create(at: number, body: Record<string, unknown> = {}): Promise<void> {
  const answer = await daemon.request('POST', '/v1/streams', { port: at, backend: `127.0.0.1:${echo.port}`, ...body });
  expect(answer.status).toBe(201);
}

/** An open session through `at` that reached the backend (closed after the file's tests). */
async function session(at: number): Promise<Socket> {
  const socket = await openSession(at);
  sockets.push(socket);
  return socket;
}

/** The records of the daemon's store file. */
async function stored(): Promise<Array<{ port: number; drainingUntil?: string }>> {
  const file = JSON.parse(await readFile(join(daemon.home, 'streams.json'), 'utf8')) as {
    streams: Array<{ port: number; drainingUntil?: string }>;
  };
  return file.streams;
}

async function streamOf(at: number): Promise<StreamView | undefined> {
  const answer = await daemon.request('GET', `/v1/streams/${at}`);
  return answer.status === 200 ? (answer.json as { stream: StreamView }).stream : undefined;
}

describe('a drain', () => {
  it('refuses new connections at once, keeps the open session, and removes the stream when it ends', async () => {
    const at = port();
    await create(at);
    const open = await session(at);
    const run = await runCli(['drain', String(at), '--timeout', '5m'], env);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(
      new RegExp(`^${at} draining: 1 session\\(s\\) open, cut and removed at \\S+Z at the latest\\n$`),
    );
    // The answer is true the moment it arrives.
    expect(await connectOutcome(at)).toBe('refused');
    expect(await exchange(open, 'still')).toBe('echo:still');

    const listed = await runCli(['ls', '--no-color'], env);
    expect(listed.stdout).toMatch(
      new RegExp(`│ ${at} +│ tcp +│ 127\\.0\\.0\\.1:${echo.port} +│ draining \\(1 open\\) +│`),
    );
    const got = await runCli(['get', String(at), '--no-color'], env);
    expect(got.stdout).toMatch(/^state: +draining: 1 session\(s\) open, removed at \S+Z at the latest$/m);
    const status = await runCli(['status', '--no-color'], env);
    expect(status.stdout).toMatch(/^streams: +0 live, 0 failed, 1 draining$/m);
    const { check } = await openApiChecker(daemon);
    check('/v1/streams/{port}', 'get', 200, (await daemon.request('GET', `/v1/streams/${at}`)).json);
    check('/v1/status', 'get', 200, (await daemon.request('GET', '/v1/status')).json);

    open.end();
    await eventually(
      () => streamOf(at),
      (stream) => stream === undefined,
    );
    expect(await connectOutcome(at)).toBe('refused');
    const events = (await daemon.request('GET', `/v1/events?port=${at}`)).json as {
      events: Array<{ action: string; actor: string; detail?: string }>;
    };
    expect(events.events.map((event) => [event.action, event.actor, event.detail])).toEqual(
      expect.arrayContaining([
        ['drain', 'anonymous', expect.stringMatching(/^until \S+Z$/)],
        ['remove', 'daemon', 'drained: its last session ended'],
      ]),
    );
    expect((await stored()).map((record) => record.port)).not.toContain(at);
  });

  it('waits for a half-closed session whose backend still replies', async () => {
    // A backend that answers only when told, after the client has finished sending.
    let reply = (): void => undefined;
    const replied = new Promise<void>((done) => {
      reply = done;
    });
    const slow = createServer({ allowHalfOpen: true }, (socket) => {
      socket.on('error', () => undefined);
      socket.resume();
      socket.on('end', () => void replied.then(() => socket.end('late reply')));
    });
    await new Promise<void>((done) => slow.listen(0, '127.0.0.1', () => done()));
    try {
      const at = port();
      const backend = `127.0.0.1:${(slow.address() as { port: number }).port}`;
      expect((await daemon.request('POST', '/v1/streams', { port: at, backend })).status).toBe(201);
      const client = connect({ port: at, host: '127.0.0.1' });
      sockets.push(client);
      let received = '';
      client.on('data', (chunk: Buffer) => {
        received += chunk.toString('utf8');
      });
      const ended = new Promise<void>((done) => client.once('end', () => done()));
      await new Promise<void>((done) => client.once('connect', () => done()));
      client.end('request'); // sends, then half-closes: nginx's side waits in CLOSE-WAIT
      await eventually(
        async () => ((await daemon.request('GET', `/v1/streams/${at}`)).json as { stream: StreamView }).stream,
        () => true,
      );
      const answer = await daemon.request('POST', `/v1/streams/${at}/drain`, { timeout: '5m' });
      expect((answer.json as { stream: StreamView }).stream).toMatchObject({ state: 'draining', openSessions: 1 });
      // Looked at again and again, the session is still there.
      await eventually(
        () => streamOf(at),
        (stream) => stream?.openSessions === 1 && stream.state === 'draining',
      );
      reply();
      await ended;
      expect(received).toBe('late reply');
      await eventually(
        () => streamOf(at),
        (stream) => stream === undefined,
      );
    } finally {
      await new Promise<void>((done) => slow.close(() => done()));
    }
  });

  it('cuts the sessions left at the deadline and removes the stream', async () => {
    const at = port();
    await create(at);
    const open = await session(at);
    const closed = new Promise<void>((done) => open.once('close', () => done()));
    const answer = await daemon.request('POST', `/v1/streams/${at}/drain`, { timeout: '1s' });
    expect(answer.status).toBe(200);
    expect((answer.json as { stream: StreamView }).stream).toMatchObject({ state: 'draining', openSessions: 1 });
    await closed; // cut by the daemon at the deadline
    await eventually(
      () => streamOf(at),
      (stream) => stream === undefined,
    );
    const events = (await daemon.request('GET', `/v1/events?port=${at}`)).json as {
      events: Array<{ action: string; detail?: string }>;
    };
    expect(events.events.some((event) => event.detail === 'drain deadline: 1 session(s) cut')).toBe(true);
  });

  it('is called off with --cancel: the port takes connections again, the open session never noticed', async () => {
    const at = port();
    await create(at, { maxConnections: 5 });
    const open = await session(at);
    expect((await runCli(['drain', String(at)], env)).code).toBe(0);
    expect(await connectOutcome(at)).toBe('refused');
    const cancel = await runCli(['drain', String(at), '--cancel', '--no-color'], env);
    expect(cancel.code).toBe(0);
    expect(cancel.stdout).toMatch(new RegExp(`^${at} -> 127\\.0\\.0\\.1:${echo.port} live \\(replaced\\)$`, 'm'));
    expect(await roundTrip(at, 'back')).toBe('echo:back');
    expect(await exchange(open, 'same')).toBe('echo:same');
    expect(await streamOf(at)).toMatchObject({ state: 'live', maxConnections: 5 });
    expect(await streamOf(at)).not.toHaveProperty('drainingUntil');
    expect((await stored()).find((record) => record.port === at)).not.toHaveProperty('drainingUntil');
    open.destroy();
    expect((await daemon.request('DELETE', `/v1/streams/${at}`)).status).toBe(200);
  });

  it('with --wait returns once the stream is gone', async () => {
    const at = port();
    await create(at);
    const open = await session(at);
    const waiting = runCli(['drain', String(at), '--wait'], env);
    await eventually(
      () => streamOf(at),
      (stream) => stream?.state === 'draining',
    );
    open.end();
    const run = await waiting;
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`${at} drained and removed\\n$`));
    expect(await streamOf(at)).toBeUndefined();
  });
});

describe('what a drain refuses', () => {
  it.each<[string, (at: number) => string[], number, RegExp]>([
    [
      'a timeout that is not a duration',
      (at) => ['drain', String(at), '--timeout', '10x'],
      2,
      /timeout: must be a duration/,
    ],
    ['a timeout past a year', (at) => ['drain', String(at), '--timeout', '400d'], 2, /at most 365 days/],
    ['--cancel with --wait', (at) => ['drain', String(at), '--cancel', '--wait'], 2, /--cancel takes neither/],
    ['a port without a stream', (at) => ['drain', String(at + 1)], 1, /no stream listens on port/],
    ['a cancel of a stream that is not draining', (at) => ['drain', String(at), '--cancel'], 1, /is not draining/],
  ])('refuses %s and changes nothing', async (_what, args, code, message) => {
    const at = port();
    next += 1; // at + 1 stays without a stream
    await create(at);
    const before = await snapshot(daemon);
    const run = await runCli(args(at), env);
    expect(run.code).toBe(code);
    expect(run.stderr).toMatch(message);
    expect(await snapshot(daemon)).toEqual(before);
    expect(await roundTrip(at, 'fine')).toBe('echo:fine');
  });

  it('refuses a UDP stream, whose sessions it cannot see', async () => {
    const at = port();
    expect(
      (await daemon.request('POST', '/v1/streams', { port: at, backend: `127.0.0.1:${echo.port}`, protocol: 'udp' }))
        .status,
    ).toBe(201);
    const answer = await daemon.request('POST', `/v1/streams/${at}/drain`);
    expect(answer.status).toBe(400);
    expect((answer.json as { error: { message: string } }).error.message).toBe(
      `stream ${at} is UDP: the daemon cannot see its sessions to drain them`,
    );
    expect((await streamOf(at))?.state).toBe('live');
  });

  it('refuses a create on a draining port, with the way out', async () => {
    const at = port();
    await create(at);
    const open = await session(at);
    expect((await daemon.request('POST', `/v1/streams/${at}/drain`)).status).toBe(200);
    const run = await runCli(['create', String(at), `127.0.0.1:${echo.port}`], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(new RegExp(`port ${at} is draining until \\S+: its sessions are ending`));
    expect(run.stderr).toMatch(/conductor drain [0-9]+ --cancel/);
    const legacy = await daemon.get(`/createstream/${at}/127.0.0.1:${echo.port}`);
    expect((legacy.json as { result: string }).result).toBe('error');
    expect(await connectOutcome(at)).toBe('refused');
    open.destroy();
    await eventually(
      () => streamOf(at),
      (stream) => stream === undefined,
    );
  });
});

describe('a restart while a stream drains', () => {
  const own = daemonFixture();

  it('keeps its port closed and finishes the drain', async () => {
    const first = await own.start({ rangeSize: 4 });
    const at = first.rangeStart;
    expect((await first.request('POST', '/v1/streams', { port: at, backend: `127.0.0.1:${echo.port}` })).status).toBe(
      201,
    );
    expect((await first.request('POST', `/v1/streams/${at}/drain`, { timeout: '1h' })).status).toBe(200);
    await first.stop();
    const second = await own.start({
      home: first.home,
      rangeStart: first.rangeStart,
      rangeSize: 4,
      apiPort: first.apiPort,
    });
    expect(await connectOutcome(at)).toBe('refused');
    // Its sessions ended with the first daemon's nginx: the drain ends at the next look.
    await eventually(
      async () => (await second.request('GET', `/v1/streams/${at}`)).status,
      (status) => status === 404,
    );
    expect(await connectOutcome(at)).toBe('refused');
  });
});
