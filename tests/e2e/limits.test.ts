/**
 * Session limits, proved with real clients on loopback: a stream past its most concurrent
 * sessions (in total, or from one client address) closes new ones while the open ones go on; a
 * rate caps the bytes each way; refused sessions are counted in `get --stats`, `ls --stats` and
 * /metrics; a changed limit keeps the count of the sessions already open; bad values are refused
 * with their field named and nothing changed; a declarative file carries the limits too.
 */

import { writeFile } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { StreamView } from '@stream-conductor/shared';
import { runCli } from '../helpers/cli.js';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { EchoBackend, exchange, openSession, roundTrip } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';
import { snapshot } from '../helpers/state.js';
import { eventually } from '../helpers/wait.js';

let daemon: Daemon;
let echo: EchoBackend;
let env: Record<string, string>;
let next = 0;
const held: Socket[] = [];

const daemons = daemonFixture();

beforeAll(async () => {
  echo = await EchoBackend.start('echo');
  daemon = await daemons.start({ rangeSize: 30 });
  env = { CONDUCTOR_URL: daemon.url };
});

afterAll(async () => {
  for (const socket of held) socket.destroy();
  await echo?.close();
});

const port = (): number => daemon.rangeStart + next++;

/** A session that reached the backend and stays open (closed after the file's tests). */
async function hold(at: number, localAddress = '127.0.0.1'): Promise<Socket> {
  const socket = await openSession(at, { localAddress });
  held.push(socket);
  return socket;
}

/** One new session: `served` when the backend answered, `closed` when nginx ended it unanswered. */
async function outcome(at: number, localAddress = '127.0.0.1'): Promise<'served' | 'closed'> {
  const socket = connect({ port: at, host: '127.0.0.1', localAddress });
  socket.on('error', () => undefined);
  try {
    const answer = await exchange(socket, 'x');
    return answer === 'echo:x' ? 'served' : 'closed';
  } finally {
    socket.destroy();
  }
}

async function withStats(at: number): Promise<StreamView> {
  const answer = await daemon.request('GET', `/v1/streams/${at}?stats=1`);
  return (answer.json as { stream: StreamView }).stream;
}

const remove = async (at: number): Promise<void> => {
  expect((await daemon.request('DELETE', `/v1/streams/${at}`)).status).toBe(200);
};

/** Creates through the API (a v1 body) or the CLI (arguments after `create <port>`). */
async function create(
  via: 'api' | 'cli',
  at: number,
  body: Record<string, unknown>,
  args: string[],
): Promise<StreamView> {
  if (via === 'api') {
    const answer = await daemon.request('POST', '/v1/streams', {
      port: at,
      backend: `127.0.0.1:${echo.port}`,
      ...body,
    });
    expect(answer.status).toBe(201);
    return (answer.json as { stream: StreamView }).stream;
  }
  const run = await runCli(['--json', 'create', String(at), `127.0.0.1:${echo.port}`, ...args], env);
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  return (JSON.parse(run.stdout) as { stream: StreamView }).stream;
}

describe.each<'api' | 'cli'>(['api', 'cli'])('through the %s', (via) => {
  it('closes sessions past the most open at once, serves the open ones, and counts the refusals', async () => {
    const at = port();
    const stream = await create(via, at, { maxConnections: 2 }, ['--max-connections', '2']);
    expect(stream).toMatchObject({ state: 'live', maxConnections: 2 });
    const first = await hold(at);
    const second = await hold(at);
    expect(await outcome(at)).toBe('closed');
    expect(await outcome(at, '127.0.0.2')).toBe('closed');
    expect(await exchange(first, 'still')).toBe('echo:still');
    expect(await exchange(second, 'here')).toBe('echo:here');
    first.destroy();
    // nginx counts the session down once it sees the close; until then new ones are refused.
    let refused = 2;
    await eventually(
      async () => {
        const result = await outcome(at);
        if (result === 'closed') refused += 1;
        return result;
      },
      (result) => result === 'served',
    );
    const stats = await eventually(
      () => withStats(at),
      (view) => view.stats?.limitedSessions === refused,
    );
    expect(stats.stats).toMatchObject({ failedSessions: 0, deniedSessions: 0 });
    second.destroy();
    await remove(at);
  });

  it('closes a second session from one client address while another address is served', async () => {
    const at = port();
    const stream = await create(via, at, { maxConnectionsPerClient: 1 }, ['--max-connections-per-client', '1']);
    expect(stream.maxConnectionsPerClient).toBe(1);
    const first = await hold(at, '127.0.0.1');
    expect(await outcome(at, '127.0.0.1')).toBe('closed');
    const other = await hold(at, '127.0.0.3');
    expect(await exchange(first, 'on')).toBe('echo:on');
    first.destroy();
    other.destroy();
    await remove(at);
  });
});

/** A backend that sends `size` bytes to each client and closes, or counts what a client uploads. */
class BulkBackend {
  private readonly server: Server;
  constructor(mode: 'send' | 'count', size: number) {
    this.server = createServer((socket) => {
      socket.on('error', () => socket.destroy());
      if (mode === 'send') {
        socket.end(Buffer.alloc(size, 7));
        return;
      }
      let received = 0;
      socket.on('data', (chunk: Buffer) => {
        received += chunk.length;
      });
      socket.on('end', () => socket.end(String(received)));
    });
  }
  listen(): Promise<number> {
    return new Promise((resolve) =>
      this.server.listen(0, '127.0.0.1', () => resolve((this.server.address() as { port: number }).port)),
    );
  }
  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Milliseconds to download everything `at` sends, and the byte count. */
function download(at: number): Promise<{ ms: number; bytes: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    let bytes = 0;
    const socket = connect({ port: at, host: '127.0.0.1' });
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
    });
    socket.on('end', () => resolve({ ms: Date.now() - started, bytes }));
    socket.on('error', reject);
  });
}

/** Milliseconds until the backend behind `at` has all of `size` bytes and says how many it got. */
function upload(at: number, size: number): Promise<{ ms: number; counted: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    let answer = '';
    const socket = connect({ port: at, host: '127.0.0.1' }, () => socket.end(Buffer.alloc(size, 9)));
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString('utf8');
    });
    socket.on('end', () => resolve({ ms: Date.now() - started, counted: Number(answer) }));
    socket.on('error', reject);
  });
}

describe('rates', () => {
  const SIZE = 256 * 1024;

  it('caps the bytes sent to a client per session; the same transfer without a rate is far faster', async () => {
    const bulk = new BulkBackend('send', SIZE);
    const backend = `127.0.0.1:${await bulk.listen()}`;
    try {
      const limited = port();
      const free = port();
      const run = await runCli(['create', String(limited), backend, '--download-rate', '64k'], env);
      expect(run.code).toBe(0);
      expect((await daemon.request('POST', '/v1/streams', { port: free, backend })).status).toBe(201);
      const slow = await download(limited);
      const fast = await download(free);
      expect([slow.bytes, fast.bytes]).toEqual([SIZE, SIZE]);
      // 256 KiB at 64 KiB/s: nginx lets the first second's worth through at once, then 64 KiB a
      // second, so no less than 3 s; a machine that is slow only makes it longer.
      expect(slow.ms).toBeGreaterThanOrEqual(2500);
      expect(fast.ms).toBeLessThan(slow.ms / 2);
      const get = await runCli(['get', String(limited)], env);
      expect(get.stdout).toMatch(/^download rate: +64 KiB\/s per session$/m);
      await remove(limited);
      await remove(free);
    } finally {
      await bulk.close();
    }
  });

  it('caps the bytes read from a client per session', async () => {
    const bulk = new BulkBackend('count', 0);
    const backend = `127.0.0.1:${await bulk.listen()}`;
    try {
      const at = port();
      const answer = await daemon.request('POST', '/v1/streams', { port: at, backend, uploadRate: '64k' });
      expect(answer.status).toBe(201);
      expect((answer.json as { stream: StreamView }).stream.uploadRate).toBe(65_536);
      const sent = await upload(at, SIZE);
      expect(sent.counted).toBe(SIZE);
      expect(sent.ms).toBeGreaterThanOrEqual(2500);
      await remove(at);
    } finally {
      await bulk.close();
    }
  });
});

describe('changing and showing limits', () => {
  it('keeps counting the open sessions when the limit changes (a reload keeps the count)', async () => {
    const at = port();
    await create('api', at, { maxConnections: 1 }, []);
    const first = await hold(at);
    expect(await outcome(at)).toBe('closed');
    const put = await daemon.request('PUT', `/v1/streams/${at}`, {
      backend: `127.0.0.1:${echo.port}`,
      maxConnections: 2,
    });
    expect(put.status).toBe(200);
    expect(await exchange(first, 'kept')).toBe('echo:kept');
    // The open session still counts: one more is served, the next is closed.
    const second = await hold(at);
    expect(await outcome(at)).toBe('closed');
    // Without a limit, every session is served.
    expect((await daemon.request('PUT', `/v1/streams/${at}`, { backend: `127.0.0.1:${echo.port}` })).status).toBe(200);
    expect(await outcome(at)).toBe('served');
    first.destroy();
    second.destroy();
    await remove(at);
  });

  it('shows the limits in get, the refusals in ls --stats and /metrics', async () => {
    const at = port();
    await create('cli', at, {}, ['--max-connections', '1', '--max-connections-per-client', '1', '--upload-rate', '1m']);
    const first = await hold(at);
    expect(await outcome(at)).toBe('closed');
    await eventually(
      () => withStats(at),
      (view) => view.stats?.limitedSessions === 1,
    );
    const get = await runCli(['get', String(at)], env);
    expect(get.code).toBe(0);
    expect(get.stdout).toMatch(/^max connections: +1$/m);
    expect(get.stdout).toMatch(/^max per client: +1$/m);
    expect(get.stdout).toMatch(/^upload rate: +1 MiB\/s per session$/m);
    const ls = await runCli(['ls', '--stats', '--no-color'], env);
    const head = ls.stdout.split('\n').find((line) => line.includes('LIMITED')) ?? '';
    const row = ls.stdout.split('\n').find((line) => line.includes(` ${at} `)) ?? '';
    const cells = (line: string): string[] => line.split(/[│|]/).map((cell) => cell.trim());
    expect(cells(row)[cells(head).indexOf('LIMITED')]).toBe('1');
    const { check } = await openApiChecker(daemon);
    check('/v1/streams/{port}', 'get', 200, (await daemon.request('GET', `/v1/streams/${at}?stats=1`)).json);
    check('/v1/streams', 'get', 200, (await daemon.request('GET', '/v1/streams?stats=1')).json);
    const metrics = await daemon.request('GET', '/metrics');
    expect(metrics.text).toMatch(new RegExp(`^conductor_stream_limited_sessions_total\\{port="${at}"\\} 1$`, 'm'));
    first.destroy();
    await remove(at);
  });

  it('carries the limits in a declarative file, and refuses one written in octal', async () => {
    const at = port();
    const file = join(daemon.home, 'limits.yaml');
    await writeFile(
      file,
      `streams:\n  - port: ${at}\n    backend: 127.0.0.1:${echo.port}\n    maxConnections: 1\n    downloadRate: 2m\n`,
    );
    const apply = await runCli(['apply', '-f', file], env);
    expect(apply.code).toBe(0);
    const stream = await withStats(at);
    expect(stream).toMatchObject({ maxConnections: 1, downloadRate: 2 * 1024 * 1024 });
    const first = await hold(at);
    expect(await outcome(at)).toBe('closed');
    first.destroy();
    const before = await snapshot(daemon);
    await writeFile(file, `streams:\n  - port: ${at}\n    backend: 127.0.0.1:${echo.port}\n    maxConnections: 0o10\n`);
    const octal = await runCli(['apply', '-f', file], env);
    expect(octal.code).toBe(2);
    expect(octal.stderr).toMatch(/streams\[0\]\.maxConnections: write it in decimal digits, got 0o10/);
    expect(await snapshot(daemon)).toEqual(before);
    await remove(at);
  });
});

describe('bad limits', () => {
  it.each<[string, Record<string, unknown>, string[], RegExp]>([
    ['zero sessions', { maxConnections: 0 }, ['--max-connections', '0'], /maxConnections: must be a whole number/],
    ['a fraction', { maxConnectionsPerClient: 1.5 }, ['--max-connections-per-client', '1.5'], /got 1\.5|got "1\.5"/],
    [
      'more per client than in total',
      { maxConnections: 2, maxConnectionsPerClient: 3 },
      ['--max-connections', '2', '--max-connections-per-client', '3'],
      /maxConnectionsPerClient: 3 is more than maxConnections \(2\)/,
    ],
    ['a rate in an unknown unit', { uploadRate: '10t' }, ['--upload-rate', '10t'], /uploadRate: .*got "10t"/],
    ['a rate past 10g', { downloadRate: '11g' }, ['--download-rate', '11g'], /downloadRate: must be at most 10g/],
    ['a rate with syntax', { downloadRate: '1m;' }, ['--download-rate', '1m;'], /downloadRate: /],
  ])('refuses %s through the API and the CLI, and changes nothing', async (_what, body, args, message) => {
    const kept = port();
    await create('api', kept, { maxConnections: 5 }, []);
    const before = await snapshot(daemon);
    const at = port();
    const answer = await daemon.request('POST', '/v1/streams', {
      port: at,
      backend: `127.0.0.1:${echo.port}`,
      ...body,
    });
    expect(answer.status).toBe(400);
    expect((answer.json as { error: { code: string; message: string } }).error).toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringMatching(message),
    });
    const put = await daemon.request('PUT', `/v1/streams/${kept}`, { backend: `127.0.0.1:${echo.port}`, ...body });
    expect(put.status).toBe(400);
    const run = await runCli(['create', String(at), `127.0.0.1:${echo.port}`, ...args], env);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
    expect(await snapshot(daemon)).toEqual(before);
    expect((await withStats(kept)).maxConnections).toBe(5);
    expect(await roundTrip(kept, 'fine')).toBe('echo:fine');
    await remove(kept);
  });
});
