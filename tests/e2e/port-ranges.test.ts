/**
 * Port ranges with the real daemon, nginx and CLI on loopback: one definition for consecutive
 * ports, each forwarded to the same port of its backends (echo backends on 127.0.0.2 and
 * 127.0.0.3 listening on the range's own port numbers) or to ports shifted by an offset; every
 * port live after create and refusing after rm (the kernel's view and a real connect); a range
 * overlapping any stream refused with nothing changed; free-port skipping the range; each kind of
 * bad range refused naming the value; ls, get, the audit log and a declarative apply.
 */

import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { AuditEvent, DaemonStatus, StreamView } from '@stream-conductor/shared';
import { runCli } from '../helpers/cli.js';
import { type Daemon, tempDir } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip, udpRoundTrip } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';
import { freePortBlock } from '../helpers/ports.js';
import { snapshot } from '../helpers/state.js';
import { eventually } from '../helpers/wait.js';

let daemon: Daemon;
let env: Record<string, string>;
let S: number;
let offsetBase: number;
const backends: EchoBackend[] = [];
let api: Awaited<ReturnType<typeof openApiChecker>>;

const daemons = daemonFixture();
const SIZE = 40;

/** The ports first..last, inclusive. */
const span = (first: number, last: number): number[] =>
  Array.from({ length: last - first + 1 }, (_, index) => first + index);

beforeAll(async () => {
  daemon = await daemons.start({ rangeSize: SIZE });
  env = { CONDUCTOR_URL: daemon.url };
  S = daemon.rangeStart;
  // Backends on the range's own port numbers, on other loopback addresses than nginx's 127.0.0.1.
  for (const port of span(S, S + 29)) {
    backends.push(await EchoBackend.start(`a${port}`, port, '127.0.0.2'));
    backends.push(await EchoBackend.start(`b${port}`, port, '127.0.0.3'));
  }
  // The offset form's backends: a block of their own on 127.0.0.1.
  offsetBase = await freePortBlock(5);
  for (const port of span(offsetBase, offsetBase + 4)) backends.push(await EchoBackend.start(`o${port}`, port));
  api = await openApiChecker(daemon);
});

afterAll(async () => {
  await Promise.all(backends.map((backend) => backend.close()));
});

const streams = async (): Promise<StreamView[]> =>
  ((await daemon.get('/v1/streams')).json as { streams: StreamView[] }).streams;

/** The TCP ports listening on 127.0.0.1, nginx's address (the backends hold the same numbers on .2 and .3). */
async function listeningPorts(): Promise<Set<number>> {
  const ports = new Set<number>();
  for (const line of (await readFile('/proc/net/tcp', 'utf8')).split('\n').slice(1)) {
    const [, local = '', , state] = line.trim().split(/\s+/);
    const [address, port = '0'] = local.split(':');
    if (state === '0A' && address === '0100007F') ports.add(Number.parseInt(port, 16));
  }
  return ports;
}

async function expectAllListening(ports: number[]): Promise<void> {
  const listening = await listeningPorts();
  expect(ports.filter((port) => !listening.has(port))).toEqual([]);
}

async function expectAllRefused(ports: number[]): Promise<void> {
  const listening = await listeningPorts();
  expect(ports.filter((port) => listening.has(port))).toEqual([]);
  for (const port of ports) expect(await connectOutcome(port)).toBe('refused');
}

describe('a range to the same ports (CLI)', () => {
  it('creates one definition whose every port forwards to the same port of the backend', async () => {
    const created = await runCli(['--json', 'create', `${S}-${S + 9}`, '127.0.0.2'], env);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    const { stream } = JSON.parse(created.stdout) as { stream: StreamView };
    expect(stream).toMatchObject({ port: S, portEnd: S + 9, backends: [{ address: `127.0.0.2:${S}` }], state: 'live' });
    // Live when answered: every port of the range listens, not only the first.
    await expectAllListening(span(S, S + 9));
    for (const port of [S, S + 5, S + 9]) expect(await roundTrip(port, 'ping')).toBe(`a${port}:ping`);
    // The audit against the kernel expects every port of the range: none missing, none extra.
    const audited = await eventually(
      async () => ((await daemon.get('/v1/status')).json as DaemonStatus).nginxInstances.map((one) => one.audit),
      (audits) => audits.every((audit) => audit !== undefined && Date.parse(audit.at) > Date.parse(stream.createdAt)),
      15_000,
    );
    for (const audit of audited) expect(audit).toMatchObject({ inLine: true, missing: [], extra: [] });
  });

  it('ls shows one row for the range, get finds it from any of its ports', async () => {
    const ls = await runCli(['ls'], env);
    expect(ls.code).toBe(0);
    const rows = ls.stdout.split('\n').filter((line) => line.includes(String(S)));
    expect(rows).toHaveLength(1);
    expect(rows[0]).toContain(`${S}-${S + 9}`);
    expect(rows[0]).toContain(`127.0.0.2:${S}-${S + 9}`);
    expect((await streams()).filter((one) => one.port >= S && one.port <= S + 9)).toHaveLength(1);

    const get = await runCli(['get', String(S + 5)], env);
    expect(get.code).toBe(0);
    expect(get.stdout).toMatch(new RegExp(`port:\\s+${S}-${S + 9}`));
    const byRange = await runCli(['--json', 'get', `${S}-${S + 9}`], env);
    expect((JSON.parse(byRange.stdout) as StreamView).portEnd).toBe(S + 9);
    const wrong = await runCli(['get', `${S}-${S + 8}`], env);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain(`port ${S} is part of ${S}-${S + 9}`);
  });

  it('refuses rm of a port inside the range, naming the range to remove, and changes nothing', async () => {
    const before = await snapshot(daemon);
    const rm = await runCli(['rm', String(S + 5)], env);
    expect(rm.code).toBe(1);
    expect(rm.stderr).toContain(`port ${S + 5} is part of the range ${S}-${S + 9}`);
    expect(rm.stderr).toContain(`conductor rm ${S}-${S + 9}`);
    const api409 = await daemon.request('DELETE', `/v1/streams/${S + 9}`);
    expect(api409.status).toBe(409);
    api.check('/v1/streams/{port}', 'delete', 409, api409.json);
    expect(await snapshot(daemon)).toEqual(before);
    expect(await roundTrip(S + 5, 'still')).toBe(`a${S + 5}:still`);
  });

  it('rm of the range closes every one of its ports', async () => {
    const rm = await runCli(['rm', `${S}-${S + 9}`], env);
    expect(rm.stderr).toBe('');
    expect(rm.code).toBe(0);
    expect(rm.stdout.trim()).toBe(`${S}-${S + 9} removed`);
    await expectAllRefused(span(S, S + 9));
    expect(await streams()).toEqual([]);
  });
});

describe('a range with an offset (v1 API)', () => {
  const first = (): number => S + 10;
  const last = (): number => S + 14;

  it('forwards each port to the backend port shifted as far, answers as the OpenAPI document says', async () => {
    const answer = await daemon.request('POST', '/v1/streams', {
      port: `${first()}-${last()}`,
      backend: `127.0.0.1:${offsetBase}`,
    });
    expect(answer.status).toBe(201);
    api.check('/v1/streams', 'post', 201, answer.json);
    await expectAllListening(span(first(), last()));
    for (const place of [0, 2, 4]) {
      expect(await roundTrip(first() + place, 'x')).toBe(`o${offsetBase + place}:x`);
    }
    const inside = await daemon.get(`/v1/streams/${first() + 3}`);
    expect(inside.status).toBe(200);
    api.check('/v1/streams/{port}', 'get', 200, inside.json);
    expect((inside.json as { stream: StreamView }).stream).toMatchObject({ port: first(), portEnd: last() });
    expect((await daemon.get(`/v1/streams/${first()}-${last()}`)).status).toBe(200);
    const list = await daemon.get('/v1/streams');
    api.check('/v1/streams', 'get', 200, list.json);
  });

  it('counts the sessions of every port of the range in its stats and metrics', async () => {
    // The three sessions of the test above, on its first, middle and last port, one byte each way.
    const stats = await eventually(
      async () => ((await daemon.get(`/v1/streams/${first()}?stats=1`)).json as { stream: StreamView }).stream.stats,
      (value) => value?.sessions === 3,
    );
    expect(stats).toMatchObject({ sessions: 3, bytesIn: 3 });
    const metrics = (await daemon.get('/metrics')).text;
    expect(metrics).toMatch(new RegExp(`conductor_stream_sessions_total\\{port="${first()}"\\} 3`));
  });

  it('refuses a stream or a range on any of its ports with 409 naming the port, and changes nothing', async () => {
    const before = await snapshot(daemon);
    const single = await daemon.request('POST', '/v1/streams', { port: first() + 2, backend: '127.0.0.2:1' });
    expect(single.status).toBe(409);
    api.check('/v1/streams', 'post', 409, single.json);
    expect(JSON.stringify(single.json)).toContain(`port ${first() + 2} already has a stream (${first()}-${last()}`);
    const overlapping = await daemon.request('POST', '/v1/streams', {
      port: `${first() - 3}-${first() + 1}`,
      backend: '127.0.0.2',
    });
    expect(overlapping.status).toBe(409);
    expect(JSON.stringify(overlapping.json)).toContain(`port ${first()} already has a stream`);
    const cli = await runCli(['create', `${last()}-${last() + 3}`, '127.0.0.2'], env);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain(`port ${last()} already has a stream`);
    expect(await snapshot(daemon)).toEqual(before);
  });

  it('free-port never hands out a port inside a range', async () => {
    // A range from the first port of PORT_RANGE: the free port is the first after every stream.
    const created = await daemon.request('POST', '/v1/streams', { port: `${S}-${S + 9}`, backend: '127.0.0.2' });
    expect(created.status).toBe(201);
    const free = await daemon.get('/v1/free-port');
    expect(free.status).toBe(200);
    expect((free.json as { port: number }).port).toBe(S + 15);
    const cli = await runCli(['free-port'], env);
    expect(cli.stdout.trim()).toBe(String(S + 15));
    // A create without a port lands outside the ranges too.
    const auto = await daemon.request('POST', '/v1/streams', { backend: '127.0.0.2:1' });
    expect((auto.json as { stream: StreamView }).stream.port).toBe(S + 15);
    expect((await daemon.request('DELETE', `/v1/streams/${S + 15}`)).status).toBe(200);
  });

  it('writes audit-log entries naming every port of the range', async () => {
    const events = (await daemon.get(`/v1/events?port=${first() + 4}`)).json as { events: AuditEvent[] };
    const create = events.events.find((event) => event.action === 'create' && event.result === 'ok');
    expect(create?.ports).toEqual(span(first(), last()));
    expect(create?.detail).toContain(`ports ${first()}-${last()} to 127.0.0.1:${offsetBase}`);
  });

  it('DELETE of the range by its first port closes every port; the audit log names them', async () => {
    const removed = await daemon.request('DELETE', `/v1/streams/${first()}`);
    expect(removed.status).toBe(200);
    api.check('/v1/streams/{port}', 'delete', 200, removed.json);
    expect(removed.json).toEqual({ port: first(), portEnd: last(), warnings: [] });
    await expectAllRefused(span(first(), last()));
    const events = (await daemon.get(`/v1/events?port=${last()}`)).json as { events: AuditEvent[] };
    expect(events.events.some((event) => event.action === 'remove' && event.ports.includes(last()))).toBe(true);
    expect((await daemon.request('DELETE', `/v1/streams/${S}-${S + 9}`)).status).toBe(200);
    await expectAllRefused(span(S, S + 9));
  });
});

describe('bad ranges', () => {
  const cases = (): Array<[string, Record<string, unknown>, RegExp]> => [
    ['reversed', { port: `${S + 5}-${S + 1}`, backend: '127.0.0.2' }, /is reversed/],
    [
      'outside PORT_RANGE',
      { port: `${S + 35}-${S + 45}`, backend: '127.0.0.2' },
      /not all inside the daemon's port range/,
    ],
    ['too wide', { port: '20000-21500', backend: '127.0.0.2' }, /spans 1501 ports, more than 1000/],
    ['malformed', { port: `${S}-`, backend: '127.0.0.2' }, /is not a port range/],
    ['malformed', { port: `${S}--${S + 3}`, backend: '127.0.0.2' }, /is not a port range/],
    ['above 65535', { port: '65530-65536', backend: '127.0.0.2' }, /a port is at most 65535/],
    ['an offset past 65535', { port: `${S}-${S + 9}`, backend: '127.0.0.1:65530' }, /would need backend port 65539/],
    ['portEnd and a range', { port: `${S}-${S + 2}`, portEnd: S + 2, backend: '127.0.0.2' }, /not both/],
  ];

  it('each is refused with 400 naming the value, nothing changed', async () => {
    const before = await snapshot(daemon);
    for (const [what, body, message] of cases()) {
      const answer = await daemon.request('POST', '/v1/streams', body);
      expect([what, answer.status]).toEqual([what, 400]);
      api.check('/v1/streams', 'post', 400, answer.json);
      const text = JSON.stringify(answer.json);
      expect(text).toMatch(message);
      const named = String(body.port).includes('-') && !what.includes('offset') ? String(body.port) : '127.0.0.1:65530';
      if (what !== 'portEnd and a range') expect(text).toContain(named);
    }
    expect(await snapshot(daemon)).toEqual(before);
  });

  it('the CLI refuses them before sending anything (exit 2), naming the value', async () => {
    for (const [range, backend, message] of [
      [`${S + 5}-${S + 1}`, '127.0.0.2', `"${S + 5}-${S + 1}" is reversed`],
      ['20000-21500', '127.0.0.2', '"20000-21500" spans 1501 ports'],
      [`${S}-x`, '127.0.0.2', `"${S}-x" is not a port range`],
      [`${S}-${S + 9}`, '127.0.0.1:65530', '"127.0.0.1:65530" for ports'],
    ]) {
      const run = await runCli(['create', range as string, backend as string], env);
      expect([range, run.code]).toEqual([range, 2]);
      expect(run.stderr).toContain(message);
    }
    // Outside PORT_RANGE is the daemon's to say.
    const outside = await runCli(['create', `${S + 35}-${S + 45}`, '127.0.0.2'], env);
    expect(outside.code).toBe(1);
    expect(outside.stderr).toContain(`(port ${S + 40} is outside)`);
  });
});

describe('several backends, and a declarative apply', () => {
  it('balances each port over its backends, each on the same port', async () => {
    const created = await daemon.request('POST', '/v1/streams', {
      port: `${S + 20}-${S + 22}`,
      backends: ['127.0.0.2', '127.0.0.3'],
    });
    expect(created.status).toBe(201);
    for (const port of [S + 20, S + 22]) {
      const seen = new Set<string>();
      for (let round = 0; round < 6; round += 1) seen.add((await roundTrip(port, 'p')).split(':')[0] ?? '');
      expect([...seen].sort()).toEqual([`a${port}`, `b${port}`]);
    }
    expect((await daemon.request('DELETE', `/v1/streams/${S + 20}`)).status).toBe(200);
    await expectAllRefused(span(S + 20, S + 22));
  });

  it('forwards UDP datagrams on every port of a --udp range to the same port', async () => {
    const sockets: UdpSocket[] = [];
    try {
      for (const port of span(S + 30, S + 32)) {
        const socket = createSocket('udp4');
        socket.on('message', (message, from) => socket.send(`u${port}:${message.toString()}`, from.port, from.address));
        await new Promise<void>((resolve) => socket.bind(port, '127.0.0.2', () => resolve()));
        sockets.push(socket);
      }
      const created = await runCli(['create', `${S + 30}-${S + 32}`, '127.0.0.2', '--udp'], env);
      expect(created.code).toBe(0);
      for (const port of [S + 30, S + 31, S + 32]) expect(await udpRoundTrip(port, 'd')).toBe(`u${port}:d`);
      expect((await runCli(['rm', `${S + 30}-${S + 32}`], env)).code).toBe(0);
    } finally {
      for (const socket of sockets) socket.close();
    }
  });

  it('conductor apply -f creates a range, leaves it as it is when applied again, and prunes it', async () => {
    const file = join(await tempDir(), 'streams.yaml');
    await writeFile(file, `streams:\n  - port: "${S + 25}-${S + 29}"\n    backend: 127.0.0.3\n`);
    const applied = await runCli(['--json', 'apply', '-f', file], env);
    expect(applied.stderr).toBe('');
    expect(applied.code).toBe(0);
    expect((JSON.parse(applied.stdout) as { plan: { create: number[] } }).plan.create).toEqual([S + 25]);
    await expectAllListening(span(S + 25, S + 29));
    expect(await roundTrip(S + 27, 'y')).toBe(`b${S + 27}:y`);
    const again = await runCli(['--json', 'apply', '-f', file], env);
    expect((JSON.parse(again.stdout) as { plan: { unchanged: number[] } }).plan.unchanged).toEqual([S + 25]);
    // A set with a stream inside the range is refused whole, naming the port, nothing changed.
    const before = await snapshot(daemon);
    const clash = await daemon.request('POST', '/v1/apply', {
      streams: [
        { port: `${S + 25}-${S + 29}`, backend: '127.0.0.3' },
        { port: S + 27, backend: '127.0.0.2:1' },
      ],
    });
    expect(clash.status).toBe(409);
    expect(JSON.stringify(clash.json)).toContain(`port ${S + 27} already has a stream (${S + 25}-${S + 29}`);
    expect(await snapshot(daemon)).toEqual(before);
    // diff names a changed range, and changes nothing.
    await writeFile(file, `streams:\n  - port: "${S + 25}-${S + 28}"\n    backend: 127.0.0.3\n`);
    const diff = await runCli(['diff', '-f', file], env);
    expect(diff.code).toBe(1);
    expect(diff.stdout).toContain(`ports: ${S + 25}-${S + 29} -> ${S + 25}-${S + 28}`);
    expect(diff.stdout).toContain(`backends: 127.0.0.3:${S + 25}-${S + 29} -> 127.0.0.3:${S + 25}-${S + 28}`);
    await writeFile(file, 'streams: []\n');
    const pruned = await runCli(['--json', 'apply', '--prune', '-f', file], env);
    expect(pruned.code).toBe(0);
    expect((JSON.parse(pruned.stdout) as { plan: { delete: number[] } }).plan.delete).toEqual([S + 25]);
    await expectAllRefused(span(S + 25, S + 29));
  });
});

describe('across a restart of the daemon', () => {
  it('serves every port of a stored range again, and a removed one stays closed', async () => {
    const created = await daemon.request('POST', '/v1/streams', { port: `${S}-${S + 4}`, backend: '127.0.0.2' });
    expect(created.status).toBe(201);
    const home = daemon.home;
    const { rangeStart, rangeEnd, apiPort } = daemon;
    expect(await daemon.stop()).toBe(0);
    daemon = await daemons.start({ home, rangeStart, rangeSize: rangeEnd - rangeStart + 1, apiPort });
    await expectAllListening(span(S, S + 4));
    for (const port of [S, S + 2, S + 4]) expect(await roundTrip(port, 'again')).toBe(`a${port}:again`);
    expect((await daemon.request('DELETE', `/v1/streams/${S}-${S + 4}`)).status).toBe(200);
    await expectAllRefused(span(S, S + 4));
  });
});

describe('a range and a stream on one of its ports, asked for at the same time', () => {
  it('one is refused, and the kernel listens on exactly the ports the listing shows', async () => {
    // Two nginx masters (the default): the two changes may be placed on different ones, where
    // only the kernel's probe or nginx's bind stands between them.
    const other = await daemons.start({ rangeSize: 10 });
    const T = other.rangeStart;
    const held = async (): Promise<number[]> => {
      const listening = await listeningPorts();
      return span(T, T + 9).filter((port) => listening.has(port));
    };
    for (let round = 0; round < 10; round += 1) {
      const asks = [
        () => other.request('POST', '/v1/streams', { port: `${T}-${T + 4}`, backend: '127.0.0.2' }),
        () => other.request('POST', '/v1/streams', { port: T + 2, backend: '127.0.0.2:1' }),
      ];
      const order = round % 2 === 0 ? asks : [...asks].reverse();
      const answers = await Promise.all(order.map((ask) => ask()));
      const [range, single] = round % 2 === 0 ? answers : [...answers].reverse();
      // The answers' bodies ride along, so that a failure shows what was said.
      // The loser is refused as taken: by the daemon's own check, or by nginx's bind on the one
      // master when the two went to different masters; never a 5xx for a change that did not happen.
      const rangeWon = range!.status === 201;
      const loser = rangeWon ? single! : range!;
      expect([range!.status, single!.status].sort()).toEqual([201, 409]);
      expect((loser.json as { error: { code: string } }).error.code).toMatch(/^(STREAM_EXISTS|PORT_IN_USE)$/);
      const listed = ((await other.get('/v1/streams')).json as { streams: StreamView[] }).streams;
      expect(listed.map((stream) => [stream.port, stream.portEnd])).toEqual(
        rangeWon ? [[T, T + 4]] : [[T + 2, undefined]],
      );
      expect(await held()).toEqual(rangeWon ? span(T, T + 4) : [T + 2]);
      expect((await other.request('DELETE', `/v1/streams/${rangeWon ? T : T + 2}`)).status).toBe(200);
      expect(await held()).toEqual([]);
    }
  });
});
