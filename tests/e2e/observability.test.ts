/**
 * What the daemon shows about its streams, proved against real traffic through a real nginx on
 * loopback: bytes counted are the bytes sent, an open connection is seen while open and gone
 * after, a dead backend is down, a refused client is counted, the access logs stay bounded
 * without losing a session, /metrics carries the same figures, the audit log names who did what,
 * and `conductor status`, `ls --stats`, `top` and `events` print them.
 */

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { AuditEvent, DaemonStatus, StreamView } from '@stream-conductor/shared';
import { runCli } from '../helpers/cli.js';
import { CLI, type Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { EchoBackend, roundTrip } from '../helpers/net.js';
import { eventually, sleep } from '../helpers/wait.js';

const ALICE = 'alice-token-0123456789abcdef';
const BOB = 'bob-token-0123456789abcdef0000';
const LOG_MAX = 4096;

let daemon: Daemon;
let echo: EchoBackend;
let next = 0;
const as = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });
const port = (): number => daemon.rangeStart + next++;

/**
 * A backend that reads exactly `expectIn` bytes, answers with `reply` bytes and ends: the bytes of
 * a session are known on both sides.
 */
async function sizedBackend(
  expectIn: number,
  reply: number,
): Promise<{ server: Server; port: number; received: number[] }> {
  const received: number[] = [];
  const server = createServer((socket) => {
    let count = 0;
    socket.on('data', (chunk) => {
      count += chunk.length;
      if (count === expectIn) {
        received.push(count);
        socket.end(randomBytes(reply));
      }
    });
    socket.on('error', () => socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as { port: number }).port, received };
}

/** Sends `size` bytes to `to` and resolves with the number of bytes that came back once it closed. */
function session(to: number, size: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port: to, host: '127.0.0.1' });
    let got = 0;
    socket.on('connect', () => socket.write(randomBytes(size)));
    socket.on('data', (chunk) => {
      got += chunk.length;
    });
    socket.on('end', () => socket.end());
    socket.on('close', () => resolve(got));
    // nginx resets a client whose backend could not be reached: the session is over all the same.
    socket.on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' ? resolve(got) : reject(error)));
  });
}

async function streamWithStats(at: number): Promise<StreamView> {
  const answer = await daemon.request('GET', `/v1/streams/${at}?stats=1`, undefined, as(ALICE));
  expect(answer.status).toBe(200);
  return (answer.json as { stream: StreamView }).stream;
}

async function create(at: number, body: Record<string, unknown>, token = ALICE): Promise<void> {
  const answer = await daemon.request('POST', '/v1/streams', { port: at, ...body }, as(token));
  expect(answer.status).toBe(201);
}

const cli = (args: string[], token = ALICE): ReturnType<typeof runCli> =>
  runCli(args, { CONDUCTOR_URL: daemon.url, CONDUCTOR_TOKEN: token });

const daemons = daemonFixture();

beforeAll(async () => {
  echo = await EchoBackend.start('echo');
  const folder = await daemons.dir();
  const tokens = join(folder, 'tokens');
  writeFileSync(tokens, `# name token\nalice ${ALICE}\nbob ${BOB}\n`, { mode: 0o600 });
  daemon = await daemons.start({
    home: join(folder, 'home'),
    rangeSize: 30,
    env: { CONDUCTOR_TOKEN_FILE: tokens, CONDUCTOR_HEALTH_INTERVAL: '0.5', CONDUCTOR_LOG_MAX_BYTES: String(LOG_MAX) },
  });
});

afterAll(async () => {
  await echo?.close();
});

describe('per-stream traffic', () => {
  it('counts the bytes of each finished session exactly, in both directions', async () => {
    const backend = await sizedBackend(100_000, 250_000);
    const at = port();
    await create(at, { backend: `127.0.0.1:${backend.port}` });
    expect(await session(at, 100_000)).toBe(250_000);
    expect(await session(at, 100_000)).toBe(250_000);
    expect(backend.received).toEqual([100_000, 100_000]);

    const stream = await eventually(
      () => streamWithStats(at),
      (s) => s.stats?.sessions === 2,
    );
    expect(stream.stats).toMatchObject({
      sessions: 2,
      failedSessions: 0,
      deniedSessions: 0,
      bytesIn: 200_000,
      bytesOut: 500_000,
      activeConnections: 0,
    });
    const last = Date.parse(stream.stats?.lastSessionAt ?? '');
    expect(Math.abs(Date.now() - last)).toBeLessThan(10_000);
    backend.server.close();
  });

  it('shows an open connection and its bytes while it is open, and not after it closed', async () => {
    const at = port();
    await create(at, { backend: `127.0.0.1:${echo.port}` });
    const socket: Socket = connect({ port: at, host: '127.0.0.1' });
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    let answer = '';
    socket.on('data', (chunk) => {
      answer += chunk.toString('utf8');
    });
    socket.write('x'.repeat(5000));
    await eventually(
      async () => answer.length,
      (length) => length === 'echo:'.length + 5000,
    );

    const open = await eventually(
      () => streamWithStats(at),
      (s) => s.stats?.activeConnections === 1 && s.stats.bytesIn === 5000,
    );
    expect(open.stats).toMatchObject({ sessions: 0, activeConnections: 1, bytesIn: 5000, bytesOut: 5005 });

    socket.end();
    const closed = await eventually(
      () => streamWithStats(at),
      (s) => s.stats?.activeConnections === 0 && s.stats.sessions === 1,
    );
    // Counted once: from the kernel while open, from nginx's log after.
    expect(closed.stats).toMatchObject({ sessions: 1, activeConnections: 0, bytesIn: 5000, bytesOut: 5005 });
  });

  it('counts sessions no backend answered as failed, and shows the backend down, then up again', async () => {
    const dead = await sizedBackend(1, 1);
    const deadPort = dead.port;
    await new Promise<void>((resolve) => dead.server.close(() => resolve()));
    const at = port();
    await create(at, { backend: `127.0.0.1:${deadPort}` });
    expect(await session(at, 10)).toBe(0);

    const down = await eventually(
      () => streamWithStats(at),
      (s) => s.stats?.failedSessions === 1 && s.stats.backends[0]?.state === 'down',
    );
    expect(down.stats?.backends[0]).toMatchObject({
      backend: `127.0.0.1:${deadPort}`,
      state: 'down',
      error: 'ECONNREFUSED',
    });

    // Back to life on the same port: the on-demand probe sees it at once.
    const revived = createServer((socket) => socket.end());
    await new Promise<void>((resolve) => revived.listen(deadPort, '127.0.0.1', resolve));
    const probed = await daemon.request('POST', `/v1/streams/${at}/health`, undefined, as(ALICE));
    expect(probed.status).toBe(200);
    const health = (probed.json as { stream: StreamView }).stream.stats?.backends[0];
    expect(health).toMatchObject({ state: 'up' });
    expect(health?.latencyMs).toBeGreaterThanOrEqual(0);
    revived.close();
  });

  it('counts clients the allow-list refused', async () => {
    const at = port();
    await create(at, { backend: `127.0.0.1:${echo.port}`, allow: ['127.0.0.2/32'] });
    await expect(roundTrip(at, 'ping', { timeoutMs: 2000 })).rejects.toThrow();
    expect(await roundTrip(at, 'ping', { localAddress: '127.0.0.2' })).toBe('echo:ping');
    const stream = await eventually(
      () => streamWithStats(at),
      (s) => s.stats?.sessions === 2,
    );
    expect(stream.stats).toMatchObject({ sessions: 2, deniedSessions: 1, failedSessions: 0 });
  });

  it('keeps the access logs bounded on disk and loses no session across rotations', async () => {
    const at = port();
    await create(at, { backend: `127.0.0.1:${echo.port}` });
    // 20 rounds of 20 sessions, each session a line of about 140 bytes: 14 times the limit in all.
    // The daemon looks at the logs four times a second and rotates a log past the limit, so a log
    // holds at most the limit and what came in while it looked and rotated. (The test's home is in a
    // folder of mode 0700: nginx's workers cannot reopen their log there, and the daemon has the
    // master hand them the new one by a reload.)
    const rounds = 20;
    const perRound = 20;
    let sizes: number[] = [];
    const onDisk = async (): Promise<number[]> => {
      const found: number[] = [];
      for (const id of await readdir(join(daemon.home, 'nginx'))) {
        const files = (await readdir(join(daemon.home, 'nginx', id))).filter((name) => name.startsWith('access.log'));
        expect(files.every((name) => /^access\.log(\.[1-4])?$/.test(name))).toBe(true);
        for (const name of files) {
          // A rotated file the daemon has finished reading may go between the listing and this look.
          const size = await stat(join(daemon.home, 'nginx', id, name)).then(
            (info) => info.size,
            (error: NodeJS.ErrnoException) => {
              if (error.code === 'ENOENT') return undefined;
              throw error;
            },
          );
          if (size !== undefined) found.push(size);
        }
      }
      return found;
    };
    for (let round = 0; round < rounds; round += 1) {
      for (let i = 0; i < perRound; i += 1) expect(await roundTrip(at, 'hello')).toBe('echo:hello');
      await sleep(300);
      sizes = [...sizes, ...(await onDisk())];
    }
    const sessions = rounds * perRound;
    const stream = await eventually(
      () => streamWithStats(at),
      (s) => s.stats?.sessions === sessions,
      15_000,
    );
    expect(stream.stats).toMatchObject({ sessions, bytesIn: sessions * 5, bytesOut: sessions * 10 });

    const line = 160; // bytes, generously
    // A rotation waits for nginx to take a new file (a reload here): a look or two more come in.
    const bound = LOG_MAX + 3 * perRound * line;
    expect(Math.max(...sizes)).toBeLessThanOrEqual(bound);
    // Once the rotated files are read and nginx let go of them, they are gone: what stays on disk
    // is a live log within the bound, a fraction of what was written.
    const total = async (): Promise<number> => (await onDisk()).reduce((sum, size) => sum + size, 0);
    expect(await eventually(total, (bytes) => bytes <= bound, 10_000)).toBeLessThan((sessions * line) / 4);
    // As root, nginx's workers run as nobody, who cannot enter the 0700 folder.
    expect(daemon.logs).toMatch(
      process.getuid?.() === 0 ? /"msg":"rotated an access log".*"how":"reloaded"/ : /"msg":"rotated an access log"/,
    );
  });
});

describe('GET /metrics', () => {
  it('exposes the same figures in the Prometheus format, behind the token', async () => {
    const at = port();
    await create(at, { backend: `127.0.0.1:${echo.port}` });
    expect(await roundTrip(at, 'metrics')).toBe('echo:metrics');
    await eventually(
      () => streamWithStats(at),
      (s) => s.stats?.sessions === 1 && s.stats.backends[0]?.state === 'up',
    );

    expect((await daemon.request('GET', '/metrics')).status).toBe(401);
    const answer = await daemon.request('GET', '/metrics', undefined, as(BOB));
    expect(answer.status).toBe(200);
    expect(answer.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    const value = (name: string, labels: string): number => {
      const found = new RegExp(`^${name}\\{${labels}\\} ([0-9.e+-]+)$`, 'm').exec(answer.text);
      if (!found) throw new Error(`${name}{${labels}} not in /metrics`);
      return Number(found[1]);
    };
    const p = `port="${at}"`;
    expect(value('conductor_stream_sessions_total', p)).toBe(1);
    expect(value('conductor_stream_received_bytes_total', p)).toBe(7);
    expect(value('conductor_stream_sent_bytes_total', p)).toBe(12);
    expect(value('conductor_stream_active_connections', p)).toBe(0);
    expect(value('conductor_stream_up', `${p},protocol="tcp"`)).toBe(1);
    expect(value('conductor_backend_up', `${p},backend="127.0.0.1:${echo.port}"`)).toBe(1);
    expect(value('conductor_backend_connect_seconds', `${p},backend="127.0.0.1:${echo.port}"`)).toBeGreaterThan(0);
    expect(value('conductor_nginx_up', 'instance="0"')).toBe(1);
    expect(value('conductor_nginx_restarts_total', 'instance="0"')).toBe(0);
    expect(answer.text).toMatch(/^conductor_changes_total\{instance="[0-9]+",result="applied"\} [1-9]/m);
    expect(answer.text).toMatch(/^conductor_nginx_reloads_total\{instance="[0-9]+",result="ok"\} [1-9]/m);
    expect(answer.text).toMatch(/^conductor_apply_duration_seconds_count\{instance="[0-9]+"\} [1-9]/m);
    expect(answer.text).toMatch(/^conductor_nginx_draining_workers\{instance="0"\} [0-9]+$/m);
  });
});

describe('the audit log', () => {
  it('records who changed what from where, and the refusals, on disk and through the API', async () => {
    const at = port();
    const since = new Date().toISOString();
    await create(at, { backend: `127.0.0.1:${echo.port}` }, ALICE);
    const refused = await daemon.request(
      'POST',
      '/v1/streams',
      { port: at, backend: `127.0.0.1:${echo.port}` },
      as(ALICE),
    );
    expect(refused.status).toBe(409);
    expect((await daemon.request('DELETE', `/v1/streams/${at}`, undefined, as(BOB))).status).toBe(200);
    // The legacy API is audited too.
    expect((await daemon.request('GET', `/createstream/${at}/127.0.0.1:${echo.port}`, undefined, as(BOB))).status).toBe(
      200,
    );

    const answer = await daemon.request(
      'GET',
      `/v1/events?port=${at}&since=${encodeURIComponent(since)}`,
      undefined,
      as(ALICE),
    );
    expect(answer.status).toBe(200);
    const events = (answer.json as { events: AuditEvent[] }).events;
    expect(
      events.map((event) => [event.actor, event.remote, event.action, event.ports, event.result, event.code]),
    ).toEqual([
      ['alice', '127.0.0.1', 'create', [at], 'ok', undefined],
      ['alice', '127.0.0.1', 'create', [at], 'refused', 'STREAM_EXISTS'],
      ['bob', '127.0.0.1', 'remove', [at], 'ok', undefined],
      ['bob', '127.0.0.1', 'create', [at], 'ok', undefined],
    ]);
    expect(events[0]?.detail).toContain(`127.0.0.1:${echo.port}`);

    const { readFile } = await import('node:fs/promises');
    const lines = (await readFile(join(daemon.home, 'audit.log'), 'utf8'))
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as AuditEvent);
    expect(lines.filter((event) => event.ports.includes(at) && event.at > since)).toEqual(events);

    const run = await cli(['events', '--port', String(at), '--since', '10m']);
    expect(run.code).toBe(0);
    const printed = run.stdout.trim().split('\n');
    expect(printed).toHaveLength(4);
    expect(printed[0]).toMatch(
      new RegExp(`^\\S+Z alice@127\\.0\\.0\\.1 create ${at} 127\\.0\\.0\\.1:${echo.port} ok$`),
    );
    expect(printed[1]).toMatch(new RegExp(`alice@127\\.0\\.0\\.1 create ${at} .* refused STREAM_EXISTS: `));
    expect(printed[2]).toMatch(new RegExp(`bob@127\\.0\\.0\\.1 remove ${at} .*ok$`));

    const json = await cli(['--json', 'events', '--port', String(at), '--limit', '1']);
    expect(json.code).toBe(0);
    expect((JSON.parse(json.stdout) as AuditEvent[]).map((event) => event.actor)).toEqual(['bob']);
  });

  it('records what hostile input asked for quoted, and prints nothing a terminal would act on', async () => {
    const at = port();
    // A forged second event and terminal escapes (ESC, and the one-byte CSI of C1) in a backend.
    const hostile = `x:1 ok\n2026-01-01T00:00:00.000Z alice@10.0.0.1 remove 9000 \u001b[31mFAKE\u009b2J`;
    const answer = await daemon.request(
      'GET',
      `/createstream/${at}/${encodeURIComponent(hostile)}`,
      undefined,
      as(BOB),
    );
    expect((answer.json as { result: string }).result).not.toBe('ok');
    const events = (
      (await daemon.request('GET', `/v1/events?port=${at}`, undefined, as(ALICE))).json as { events: AuditEvent[] }
    ).events;
    expect(events).toHaveLength(1);
    expect(events[0]?.result).toBe('refused');
    expect(events[0]?.detail?.startsWith('"x:1 ok\\n2026-01-01')).toBe(true);
    const run = await cli(['events', '--port', String(at)]);
    expect(run.code).toBe(0);
    expect(run.stdout.trim().split('\n')).toHaveLength(1);
    expect(run.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    expect(run.stdout).toContain('\\u001b[31mFAKE\\u009b2J');
  });

  it('follows new events as they happen', async () => {
    const at = port();
    const child = spawn(process.execPath, [CLI, 'events', '--follow', '--json', '--port', String(at)], {
      env: { PATH: process.env.PATH ?? '', CONDUCTOR_URL: daemon.url, CONDUCTOR_TOKEN: BOB },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString('utf8');
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await sleep(1500);
    await create(at, { backend: `127.0.0.1:${echo.port}` }, ALICE);
    expect((await daemon.request('DELETE', `/v1/streams/${at}`, undefined, as(BOB))).status).toBe(200);
    const lines = await eventually(
      async () =>
        out
          .trim()
          .split('\n')
          .filter((line) => line !== ''),
      (found) => found.length >= 2,
      10_000,
    );
    expect(lines.map((line) => (JSON.parse(line) as AuditEvent).action)).toEqual(['create', 'remove']);
    child.kill('SIGINT');
    expect(await exited).toBe(0);
  });

  it('answers only events after `since`: none for a time past the last event, however far', async () => {
    const at = port();
    await create(at, { backend: `127.0.0.1:${echo.port}` }, ALICE);
    expect((await daemon.request('DELETE', `/v1/streams/${at}`, undefined, as(ALICE))).status).toBe(200);
    const all = (await daemon.request('GET', '/v1/events?limit=1000', undefined, as(ALICE))).json as {
      events: AuditEvent[];
    };
    const last = all.events[all.events.length - 1];
    expect(last?.ports).toEqual([at]);
    const eventsAfter = (since: string) =>
      daemon.request('GET', `/v1/events?limit=1000&since=${encodeURIComponent(since)}`, undefined, as(ALICE));
    // "20000" is read as the year 20000 (as Date.parse does): after every event.
    for (const since of ['20000', '+020000-01-01T00:00:00Z', '9999-12-31T23:59:59Z', last?.at ?? '']) {
      const answer = await eventsAfter(since);
      expect([since, answer.status, answer.json]).toEqual([since, 200, { events: [] }]);
    }
    const before = await eventsAfter(new Date(Date.parse(last?.at ?? '') - 1).toISOString());
    expect((before.json as { events: AuditEvent[] }).events.at(-1)).toEqual(last);
  });

  it('refuses bad queries with a clear error', async () => {
    for (const query of ['limit=0', 'limit=1001', 'limit=x', 'port=0', 'port=70000', 'port=abc', 'since=yesterday']) {
      const answer = await daemon.request('GET', `/v1/events?${query}`, undefined, as(ALICE));
      expect([query, answer.status]).toEqual([query, 400]);
      expect((answer.json as { error: { message: string } }).error.message).not.toBe('');
    }
    for (const args of [
      ['--limit', '0'],
      ['--limit', 'many'],
      ['--port', '0'],
      ['--since', 'last week'],
    ]) {
      const run = await cli(['events', ...args]);
      expect([args, run.code, run.stdout]).toEqual([args, 2, '']);
      expect(run.stderr).toMatch(/^conductor: /);
    }
  });
});

describe('the CLI views', () => {
  it('ls --stats shows sessions, open connections, bytes and health per stream', async () => {
    const up = port();
    const down = port();
    await create(up, { backend: `127.0.0.1:${echo.port}` });
    await create(down, { backend: '127.0.0.1:1' });
    expect(await roundTrip(up, 'stats')).toBe('echo:stats');
    await eventually(
      () => streamWithStats(up),
      (s) => s.stats?.sessions === 1 && s.stats.backends[0]?.state === 'up',
    );
    await eventually(
      () => streamWithStats(down),
      (s) => s.stats?.backends[0]?.state === 'down',
    );

    const run = await cli(['ls', '--stats']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(
      /PORT.*PROTO.*BACKENDS.*STATE.*SESSIONS.*FAILED.*LIMITED.*ACTIVE.*IN.*OUT.*LAST SESSION.*HEALTH/,
    );
    const row = (at: number): string => run.stdout.split('\n').find((line) => line.includes(` ${at} `)) ?? '';
    expect(row(up)).toMatch(
      new RegExp(
        `│ ${up}\\s+│ tcp\\s+│ 127\\.0\\.0\\.1:${echo.port}\\s+│ live\\s+│ 1\\s+│ 0\\s+│ 0\\s+│ 0\\s+│ 5 B\\s+│ 10 B\\s+│ [0-9]+s ago\\s+│ up\\s+│`,
      ),
    );
    expect(row(down)).toMatch(/│ 0\s+│ 0\s+│ 0\s+│ 0 B\s+│ 0 B\s+│ -\s+│ down\s+│/);

    const json = await cli(['--json', 'ls', '--stats']);
    const streams = JSON.parse(json.stdout) as StreamView[];
    expect(streams.find((stream) => stream.port === up)?.stats).toMatchObject({
      sessions: 1,
      bytesIn: 5,
      bytesOut: 10,
    });
    // Without --stats, no stats: a plain `ls` stays cheap.
    const plain = JSON.parse((await cli(['--json', 'ls'])).stdout) as StreamView[];
    expect(plain.every((stream) => stream.stats === undefined)).toBe(true);
  });

  it('top shows traffic rates of a flowing stream and stops after -n refreshes', async () => {
    const at = port();
    await create(at, { backend: `127.0.0.1:${echo.port}` });
    const socket = connect({ port: at, host: '127.0.0.1' });
    socket.on('data', () => undefined);
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    // About 200 KB/s each way for the whole run.
    const pump = setInterval(() => socket.write('y'.repeat(20_000)), 100);
    try {
      const run = await cli(['--json', 'top', '-n', '3', '--interval', '1s']);
      expect(run.code).toBe(0);
      const frames = run.stdout
        .trim()
        .split('\n')
        .map(
          (line) =>
            JSON.parse(line) as {
              streams: Array<{
                port: number;
                inPerSecond: number | null;
                outPerSecond: number | null;
                stats: { activeConnections: number };
              }>;
            },
        );
      expect(frames).toHaveLength(3);
      expect(frames[0]?.streams.find((stream) => stream.port === at)?.inPerSecond).toBeNull();
      const last = frames[2]?.streams.find((stream) => stream.port === at);
      expect(last?.stats.activeConnections).toBe(1);
      expect(last?.inPerSecond).toBeGreaterThan(50_000);
      expect(last?.inPerSecond).toBeLessThan(1_000_000);
      expect(last?.outPerSecond).toBeGreaterThan(50_000);

      const text = await cli(['top', '-n', '2', '--interval', '500ms', '--sort', 'rate']);
      expect(text.code).toBe(0);
      const second = text.stdout.split('\n\n')[1] ?? '';
      expect(second).toMatch(
        /^conductor top {2}http:\/\/127\.0\.0\.1:[0-9]+ {2}[0-9:]{8} UTC {2}every 0\.5s, sorted by rate/,
      );
      // Busiest first: the flowing stream heads the table.
      const firstRow = second.split('\n').find((line) => /^│ [0-9]/.test(line)) ?? '';
      expect(firstRow).toMatch(new RegExp(`^│ ${at} .*KiB/s`));
    } finally {
      clearInterval(pump);
      socket.destroy();
    }
  });

  it('top on a terminal draws in place and gives the screen back on q and on Ctrl-C', async () => {
    for (const key of ['q', '\\003']) {
      const shell = `stty rows 40 cols 200; ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} top --interval 300ms; echo "exit=$?"`;
      const child = spawn('script', ['-qec', shell, '/dev/null'], {
        env: { PATH: process.env.PATH ?? '', CONDUCTOR_URL: daemon.url, CONDUCTOR_TOKEN: ALICE, TERM: 'xterm' },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => {
        out += chunk.toString('utf8');
      });
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      await eventually(
        async () => (out.match(/conductor top/g) ?? []).length,
        (frames) => frames >= 2,
        10_000,
      );
      child.stdin.write(key === 'q' ? 'q' : '\u0003');
      expect(await exited).toBe(0);
      expect(out).toContain('\u001b[?1049h'); // the alternate screen...
      expect(out).toMatch(/\u001b\[\?25h\u001b\[\?1049l\s*exit=0/); // ...given back, and a clean exit
      expect(out).toContain('q quits, s sorts');
    }
  });

  it('top and ls --stats refuse bad options without asking the daemon', async () => {
    for (const args of [
      ['top', '--interval', '0'],
      ['top', '--interval', '50ms'],
      ['top', '--interval', 'soon'],
      ['top', '--sort', 'name'],
      ['top', '-n', '0'],
      ['top', '-n', 'x'],
      ['top', '--label', 'nolabel'],
      ['ls', '--stats', '--label', '=x'],
    ]) {
      const run = await runCli(args, { CONDUCTOR_URL: 'http://127.0.0.1:1' });
      expect([args, run.code, run.stdout]).toEqual([args, 2, '']);
    }
  });

  it('top exits 3 when the daemon is not there', async () => {
    const run = await runCli(['top', '-n', '1'], { CONDUCTOR_URL: 'http://127.0.0.1:1' });
    expect(run.code).toBe(3);
    expect(run.stdout).toBe('');
  });
});

describe('conductor status', () => {
  it('shows version, mode, nginx pids, uptime, workers, the last apply and port usage', async () => {
    const run = await cli(['status']);
    expect(run.code).toBe(0);
    const status = JSON.parse((await cli(['--json', 'status'])).stdout) as DaemonStatus;
    const masters = status.nginxInstances.length;
    expect(run.stdout).toMatch(
      new RegExp(
        `^daemon: {5}http://127\\.0\\.0\\.1:${daemon.apiPort} \\(version [0-9.]+, managed mode, up [0-9]+[smhd]`,
        'm',
      ),
    );
    expect(run.stdout).toMatch(
      new RegExp(`^nginx: {6}running \\(${masters} masters, pids [0-9, ]+\\), 0 restarts, up [0-9]+[smhd]`, 'm'),
    );
    expect(run.stdout).toMatch(new RegExp(`^workers: {4}${masters} serving, [0-9]+ old ones? draining sessions$`, 'm'));
    expect(run.stdout).toMatch(/^last apply: \S+Z \([0-9]+[smhd][0-9]*s? ago\) ok$/m);
    expect(run.stdout).toMatch(
      new RegExp(
        `^ports: {6}${daemon.rangeStart}-${daemon.rangeEnd} \\(30 ports, ${status.streams.total} used, ${30 - status.streams.total} free\\)$`,
        'm',
      ),
    );
  });

  it('counts old workers that still serve sessions after a reload, until the sessions end', async () => {
    // One master, so that the next change reloads (or hands off) the master of the open session.
    await daemons.run(
      { rangeSize: 5, env: { CONDUCTOR_NGINX_INSTANCES: '1', CONDUCTOR_NGINX_WORKERS: '2' } },
      async (single) => {
        const status = async (): Promise<DaemonStatus> => (await single.get('/v1/status')).json as DaemonStatus;
        // Right after start a worker may not have retitled itself yet: wait for both to run.
        const started = await eventually(status, (value) => value.nginxInstances[0]?.workers === 2);
        expect(started.nginxInstances[0]).toMatchObject({ workers: 2, drainingWorkers: 0 });
        expect(
          (await single.request('POST', '/v1/streams', { port: single.rangeStart, backend: `127.0.0.1:${echo.port}` }))
            .status,
        ).toBe(201);
        const socket = connect({ port: single.rangeStart, host: '127.0.0.1' });
        let answer = '';
        socket.on('data', (chunk) => {
          answer += chunk.toString('utf8');
        });
        socket.write('hold');
        await eventually(
          async () => answer,
          (text) => text === 'echo:hold',
        );

        expect(
          (
            await single.request('POST', '/v1/streams', {
              port: single.rangeStart + 1,
              backend: `127.0.0.1:${echo.port}`,
            })
          ).status,
        ).toBe(201);
        // The new generation may still be starting its second worker when the change is answered
        // (the first one already serves every port).
        const draining = await eventually(
          status,
          (s) => s.nginxInstances[0]?.drainingWorkers === 1 && s.nginxInstances[0]?.workers === 2,
        );
        expect(draining.nginxInstances[0]).toMatchObject({ workers: 2, drainingWorkers: 1 });
        const run = await runCli(['status'], { CONDUCTOR_URL: single.url });
        expect(run.stdout).toMatch(/^workers: {4}2 serving, 1 old one draining sessions$/m);
        expect(run.stdout).toMatch(/^nginx: {6}running \(pid [0-9]+\), 0 restarts, up /m);

        socket.destroy();
        await eventually(status, (s) => s.nginxInstances[0]?.drainingWorkers === 0);
      },
    );
  });
});
