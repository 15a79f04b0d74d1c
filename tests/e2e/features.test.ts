/**
 * The stream features, each created once through the v1 API and once through the CLI, and each
 * proved with real traffic on loopback: UDP datagrams, several backends with weights, backups and
 * balancing, a client outside the allow-list refused, timeouts, the PROXY protocol header seen by
 * the backend, another listen address, labels, expiry and renewal, cutting sessions on remove.
 */

import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { StreamView } from '@stream-conductor/shared';
import { runCli } from '../helpers/cli.js';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import {
  connectOutcome,
  EchoBackend,
  HeaderRecordingBackend,
  roundTrip,
  startTcpUdpPair,
  UdpEchoBackend,
  udpRoundTrip,
} from '../helpers/net.js';
import { snapshot } from '../helpers/state.js';
import { eventually, sleep } from '../helpers/wait.js';

let daemon: Daemon;
let one: EchoBackend;
let two: EchoBackend;
let env: Record<string, string>;
let next = 0;

const daemons = daemonFixture();

beforeAll(async () => {
  one = await EchoBackend.start('one');
  two = await EchoBackend.start('two');
  daemon = await daemons.start({ rangeSize: 40 });
  env = { CONDUCTOR_URL: daemon.url };
});

afterAll(async () => {
  await one?.close();
  await two?.close();
});

/** A fresh port of the range for each stream. */
const port = (): number => daemon.rangeStart + next++;

type Via = 'api' | 'cli';

/** Creates a stream through the API (a v1 body) or the CLI (arguments after `create <port>`). */
async function create(
  via: Via,
  at: number,
  body: Record<string, unknown>,
  args: string[],
  warning?: RegExp,
): Promise<Record<string, unknown>> {
  if (via === 'api') {
    const answer = await daemon.request('POST', '/v1/streams', { port: at, ...body });
    expect(answer.status).toBe(201);
    const { warnings } = answer.json as { warnings: string[] };
    if (warning) expect(warnings.join('\n')).toMatch(warning);
    else expect(warnings).toEqual([]);
    return (answer.json as { stream: Record<string, unknown> }).stream;
  }
  const run = await runCli(['--json', 'create', String(at), ...args], env);
  if (warning) expect(run.stderr).toMatch(warning);
  else expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  return (JSON.parse(run.stdout) as { stream: Record<string, unknown> }).stream;
}

const remove = async (at: number): Promise<void> => {
  expect((await daemon.request('DELETE', `/v1/streams/${at}`)).status).toBe(200);
};

describe.each<Via>(['api', 'cli'])('through the %s', (via) => {
  it('forwards UDP datagrams', async () => {
    const udp = await UdpEchoBackend.start('udp');
    try {
      const at = port();
      const stream = await create(via, at, { protocol: 'udp', backend: `127.0.0.1:${udp.port}` }, [
        `127.0.0.1:${udp.port}`,
        '--udp',
      ]);
      expect(stream).toMatchObject({ protocol: 'udp', state: 'live' });
      expect(await udpRoundTrip(at, 'datagram')).toBe('udp:datagram');
      expect(await connectOutcome(at)).toBe('refused'); // no TCP on a UDP stream
      await remove(at);
      await expect(udpRoundTrip(at, 'gone', '127.0.0.1', 500)).rejects.toThrow(/no UDP answer/);
    } finally {
      await udp.close();
    }
  });

  it('forwards TCP and UDP on the same port', async () => {
    // One backend port for both protocols: a TCP echo and a UDP echo side by side.
    const { tcp, udp } = await startTcpUdpPair();
    try {
      const at = port();
      await create(via, at, { protocol: 'tcp+udp', backend: `127.0.0.1:${udp.port}` }, [
        `127.0.0.1:${udp.port}`,
        '--tcp-udp',
      ]);
      expect(await roundTrip(at, 'stream')).toBe('tcp:stream');
      expect(await udpRoundTrip(at, 'datagram')).toBe('udp:datagram');
      await remove(at);
    } finally {
      await tcp.close();
      await udp.close();
    }
  });

  it('spreads connections over several backends by weight', async () => {
    const at = port();
    const stream = await create(
      via,
      at,
      { backends: [`127.0.0.1:${one.port}`, { address: `127.0.0.1:${two.port}`, weight: 3 }] },
      [`127.0.0.1:${one.port}`, `127.0.0.1:${two.port},weight=3`],
    );
    expect(stream.backends).toEqual([
      { address: `127.0.0.1:${one.port}` },
      { address: `127.0.0.1:${two.port}`, weight: 3 },
    ]);
    const answers: string[] = [];
    for (let i = 0; i < 40; i += 1) answers.push(await roundTrip(at, 'w'));
    const heavy = answers.filter((answer) => answer === 'two:w').length;
    const light = answers.filter((answer) => answer === 'one:w').length;
    expect(heavy + light).toBe(40);
    expect(light).toBeGreaterThan(0);
    expect(heavy).toBeGreaterThanOrEqual(2 * light);
    await remove(at);
  });

  it('keeps a client on one backend with hash-ip, and uses a backup only when the others are down', async () => {
    const hashed = port();
    await create(via, hashed, { backends: [`127.0.0.1:${one.port}`, `127.0.0.1:${two.port}`], balance: 'hash-ip' }, [
      `127.0.0.1:${one.port}`,
      `127.0.0.1:${two.port}`,
      '--balance',
      'hash-ip',
    ]);
    const first = await roundTrip(hashed, 'h');
    for (let i = 0; i < 10; i += 1) expect(await roundTrip(hashed, 'h')).toBe(first);
    await remove(hashed);

    const spare = await EchoBackend.start('spare');
    const primary = await EchoBackend.start('primary');
    try {
      const backed = port();
      await create(
        via,
        backed,
        {
          backends: [`127.0.0.1:${primary.port}`, { address: `127.0.0.1:${spare.port}`, backup: true }],
          balance: 'least-conn',
        },
        [`127.0.0.1:${primary.port}`, `127.0.0.1:${spare.port},backup`, '--balance', 'least-conn'],
      );
      for (let i = 0; i < 5; i += 1) expect(await roundTrip(backed, 'b')).toBe('primary:b');
      await primary.close();
      expect(await roundTrip(backed, 'b')).toBe('spare:b');
      await remove(backed);
    } finally {
      await spare.close();
    }
  });

  it('refuses a client outside the allow-list and serves one inside', async () => {
    const at = port();
    await create(via, at, { backend: `127.0.0.1:${one.port}`, allow: ['127.0.0.1/32'] }, [
      `127.0.0.1:${one.port}`,
      '--allow',
      '127.0.0.1/32',
    ]);
    expect(await roundTrip(at, 'in', { localAddress: '127.0.0.1' })).toBe('one:in');
    await expect(roundTrip(at, 'out', { localAddress: '127.0.0.2', timeoutMs: 2000 })).rejects.toThrow();
    await remove(at);
  });

  it('sends the PROXY protocol header, so the backend sees the real client', async () => {
    const recorder = await HeaderRecordingBackend.start('pp');
    try {
      const at = port();
      await create(via, at, { backend: `127.0.0.1:${recorder.port}`, proxyProtocol: true }, [
        `127.0.0.1:${recorder.port}`,
        '--proxy-protocol',
      ]);
      expect(await roundTrip(at, 'hello', { localAddress: '127.0.0.3' })).toBe('pp:hello');
      expect(recorder.firstLines).toHaveLength(1);
      expect(recorder.firstLines[0]).toMatch(new RegExp(`^PROXY TCP4 127\\.0\\.0\\.3 127\\.0\\.0\\.1 [0-9]+ ${at}$`));
      await remove(at);
    } finally {
      await recorder.close();
    }
  });

  it('closes an idle session after the idle timeout', async () => {
    const at = port();
    const stream = await create(via, at, { backend: `127.0.0.1:${one.port}`, idleTimeout: '1s' }, [
      `127.0.0.1:${one.port}`,
      '--idle-timeout',
      '1s',
    ]);
    expect(stream.idleTimeoutMs).toBe(1000);
    const socket = connect({ port: at, host: '127.0.0.1' });
    const started = Date.now();
    await new Promise((done) => socket.once('connect', done));
    await new Promise((done) => socket.once('close', done));
    const lasted = Date.now() - started;
    expect(lasted).toBeGreaterThanOrEqual(900);
    expect(lasted).toBeLessThan(5000);
    await remove(at);
  });

  it('gives up on a backend that does not answer after the connect timeout', async () => {
    // A listener that never accepts, its queue filled: the kernel drops further SYNs, so a
    // connect to it hangs until the proxy gives up.
    const stuck = spawn('python3', [
      '-c',
      'import socket,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)',
    ]);
    const fillers: Socket[] = [];
    try {
      const stuckPort = Number(
        await new Promise<string>((done) =>
          stuck.stdout.once('data', (chunk: Buffer) => done(chunk.toString().trim())),
        ),
      );
      for (let i = 0; i < 3; i += 1) {
        const filler = connect({ port: stuckPort, host: '127.0.0.1' });
        filler.on('error', () => undefined);
        fillers.push(filler);
      }
      await sleep(200);
      const at = port();
      // The create says the backend does not answer now, and goes through.
      const silent = new RegExp(
        `backend 127\\.0\\.0\\.1:${stuckPort} does not accept connections now \\(no answer within 1000 ms\\)`,
      );
      await create(
        via,
        at,
        { backend: `127.0.0.1:${stuckPort}`, connectTimeout: '500ms' },
        [`127.0.0.1:${stuckPort}`, '--connect-timeout', '500ms'],
        silent,
      );
      const client = connect({ port: at, host: '127.0.0.1' });
      client.on('error', () => undefined);
      const started = Date.now();
      await new Promise((done) => client.once('close', done));
      const lasted = Date.now() - started;
      expect(lasted).toBeGreaterThanOrEqual(400);
      expect(lasted).toBeLessThan(3000);
      await remove(at);
    } finally {
      for (const filler of fillers) filler.destroy();
      stuck.kill();
    }
  });

  it('listens on another address only', async () => {
    const at = port();
    const stream = await create(via, at, { backend: `127.0.0.1:${one.port}`, listenAddress: '127.0.0.2' }, [
      `127.0.0.1:${one.port}`,
      '--listen-address',
      '127.0.0.2',
    ]);
    expect(stream.listenAddress).toBe('127.0.0.2');
    expect(await roundTrip(at, 'two', { host: '127.0.0.2' })).toBe('one:two');
    expect(await connectOutcome(at, '127.0.0.1')).toBe('refused');
    await remove(at);
  });

  it('forwards with the throughput profile (larger buffers)', async () => {
    const at = port();
    const stream = await create(via, at, { backend: `127.0.0.1:${one.port}`, profile: 'throughput' }, [
      `127.0.0.1:${one.port}`,
      '--throughput',
    ]);
    expect(stream.profile).toBe('throughput');
    // 2 MB through the stream and back (the echo backend prefixes each chunk with "one:").
    const size = 2_000_000;
    const echoed = await new Promise<number>((resolve, reject) => {
      const socket = connect({ port: at, host: '127.0.0.1' });
      let count = 0;
      socket.on('connect', () => socket.write(Buffer.alloc(size, 'x')));
      socket.on('data', (chunk: Buffer) => {
        for (const byte of chunk) if (byte === 0x78) count += 1; // the payload's "x"s, prefixes aside
        if (count >= size) {
          socket.destroy();
          resolve(count);
        }
      });
      socket.on('error', reject);
    });
    expect(echoed).toBe(size);
    await remove(at);
  });

  it('listens on IPv6', async () => {
    const at = port();
    await create(via, at, { backend: `127.0.0.1:${one.port}`, listenAddress: '::1' }, [
      `127.0.0.1:${one.port}`,
      '--listen-address',
      '::1',
    ]);
    expect(await roundTrip(at, 'six', { host: '::1' })).toBe('one:six');
    await remove(at);
  });

  it('keeps labels and a description, and filters the list by label', async () => {
    const [a, b] = [port(), port()];
    await create(
      via,
      a,
      { backend: `127.0.0.1:${one.port}`, labels: { env: 'prod', team: 'db' }, description: 'replica for reports' },
      [`127.0.0.1:${one.port}`, '--label', 'env=prod', '--label', 'team=db', '--description', 'replica for reports'],
    );
    await create(via, b, { backend: `127.0.0.1:${one.port}`, labels: { env: 'dev' } }, [
      `127.0.0.1:${one.port}`,
      '--label',
      'env=dev',
    ]);
    const api = (await daemon.get('/v1/streams?label=env=prod')).json as {
      streams: Array<{ port: number; description?: string; labels: Record<string, string> }>;
    };
    expect(api.streams.map((stream) => stream.port)).toEqual([a]);
    expect(api.streams[0]).toMatchObject({ description: 'replica for reports', labels: { env: 'prod', team: 'db' } });
    const both = (await daemon.get('/v1/streams?label=env=prod&label=team=db')).json as { streams: unknown[] };
    expect(both.streams).toHaveLength(1);
    const cli = await runCli(['ls', '--label', 'env=dev', '--json'], env);
    expect((JSON.parse(cli.stdout) as Array<{ port: number }>).map((stream) => stream.port)).toEqual([b]);
    const table = await runCli(['ls', '--label', 'env=prod'], env);
    expect(table.stdout).toMatch(new RegExp(`│ ${a} │ tcp .*│ env=prod,team=db │`));
    expect(table.stdout).not.toContain(String(b));
    await remove(a);
    await remove(b);
  });

  it('removes an expiring stream when its time is up, and a renewal extends it', async () => {
    const [short, renewed] = [port(), port()];
    await create(via, short, { backend: `127.0.0.1:${one.port}`, ttl: '2s' }, [`127.0.0.1:${one.port}`, '--ttl', '2s']);
    await create(via, renewed, { backend: `127.0.0.1:${one.port}`, ttl: '2s' }, [
      `127.0.0.1:${one.port}`,
      '--ttl',
      '2s',
    ]);
    if (via === 'api') {
      const answer = await daemon.request('POST', `/v1/streams/${renewed}/renew`, { ttl: '1h' });
      expect(answer.status).toBe(200);
    } else {
      const run = await runCli(['renew', String(renewed), '--ttl', '1h'], env);
      expect(run.code).toBe(0);
      expect(run.stdout).toMatch(
        new RegExp(`^${renewed} -> 127\\.0\\.0\\.1:${one.port} live \\(expires [0-9T:.-]+Z\\) \\(replaced\\)\\n$`),
      );
    }
    expect(await roundTrip(short, 'soon')).toBe('one:soon');
    await eventually(
      async () => (await daemon.get(`/v1/streams/${short}`)).status,
      (status) => status === 404,
      6000,
    );
    expect(await connectOutcome(short)).toBe('refused');
    expect(await roundTrip(renewed, 'still')).toBe('one:still');
    expect(daemon.logs).toContain(`"msg":"stream expired and was removed","port":${short}`);
    await remove(renewed);
  });

  it('cuts established sessions on remove when asked to', async () => {
    const at = port();
    await create(via, at, { backend: `127.0.0.1:${one.port}` }, [`127.0.0.1:${one.port}`]);
    const session = connect({ port: at, host: '127.0.0.1' });
    await new Promise((done) => session.once('connect', done));
    const closed = new Promise((done) => session.once('close', done));
    session.on('error', () => undefined);
    if (via === 'api') {
      expect((await daemon.request('DELETE', `/v1/streams/${at}?kill_sessions=1`)).json).toEqual({
        port: at,
        warnings: [],
      });
    } else {
      expect(await runCli(['rm', String(at), '--kill-sessions'], env)).toEqual({
        code: 0,
        stdout: `${at} removed\n`,
        stderr: '',
      });
    }
    await closed;
    expect(await connectOutcome(at)).toBe('refused');
  });
});

describe('create auto and PUT', () => {
  it('picks free ports without collisions, also under concurrency', async () => {
    const answers = await Promise.all(
      Array.from({ length: 6 }, () => daemon.request('POST', '/v1/streams', { backend: `127.0.0.1:${one.port}` })),
    );
    const ports = answers.map((answer) => {
      expect(answer.status).toBe(201);
      return (answer.json as { stream: { port: number } }).stream.port;
    });
    expect(new Set(ports).size).toBe(6);
    for (const at of ports) expect(await roundTrip(at, 'auto')).toBe('one:auto');
    const cli = await runCli(['create', 'auto', `127.0.0.1:${two.port}`], env);
    expect(cli.code).toBe(0);
    const picked = Number(cli.stdout.trim());
    expect(cli.stdout).toBe(`${picked}\n`);
    expect(ports).not.toContain(picked);
    expect(await roundTrip(picked, 'x')).toBe('two:x');
    for (const at of [...ports, picked]) await remove(at);
  });

  it('creates, replaces and leaves alone with PUT, reloading only when something changed', async () => {
    const at = port();
    const body = { backend: `127.0.0.1:${one.port}` };
    expect((await daemon.request('PUT', `/v1/streams/${at}`, body)).status).toBe(201);
    const lastReload = async (): Promise<string> =>
      ((await daemon.get('/v1/status')).json as { nginx: { lastReload: { at: string } } }).nginx.lastReload.at;
    const reloadedAt = await lastReload();
    const again = await daemon.request('PUT', `/v1/streams/${at}`, body);
    expect(again.status).toBe(200);
    expect((again.json as { change: string }).change).toBe('unchanged');
    expect(await lastReload()).toBe(reloadedAt);
    const replaced = await daemon.request('PUT', `/v1/streams/${at}`, { backend: `127.0.0.1:${two.port}` });
    expect((replaced.json as { change: string }).change).toBe('replaced');
    expect(await roundTrip(at, 'r')).toBe('two:r');
    const cli = await runCli(['create', String(at), `127.0.0.1:${one.port}`, '--replace'], env);
    expect(cli.stdout).toBe(`${at} -> 127.0.0.1:${one.port} live (replaced)\n`);
    expect(await roundTrip(at, 'r')).toBe('one:r');
    await remove(at);
  });

  it('refuses bad feature values with a clear message and changes nothing', async () => {
    const at = daemon.rangeEnd;
    const before = await snapshot(daemon);
    for (const [body, message] of [
      [{ backend: 'a:1', protocol: 'sctp' }, 'protocol: must be one of tcp, udp, tcp+udp, got "sctp"'],
      [{ backends: [] }, 'backends: must be a non-empty list'],
      [{ backends: ['a:1', 'a:1'] }, 'backends: a:1 appears twice'],
      [{ backends: [{ address: 'a:1', backup: true }] }, 'backends: at least one backend must not be a backup'],
      [
        { backends: ['a:1', { address: 'b:1', backup: true }], balance: 'hash-ip' },
        'balance: hash-ip cannot be combined with backup backends (nginx refuses it)',
      ],
      [{ backends: [{ address: 'a:1', weight: 0 }] }, 'backends[0].weight: must be a whole number from 1 to 1000'],
      [{ backend: 'a:1', allow: ['10.0.0.0/33'] }, 'allow[0]: "10.0.0.0/33": an IPv4 prefix is at most 32'],
      [
        { backend: 'a:1', allow: ['all; deny'] },
        'allow[0]: must be an IPv4 or IPv6 network such as 10.0.0.0/8, got "all; deny"',
      ],
      [
        { backend: 'a:1', idleTimeout: '5 minutes' },
        'idleTimeout: must be a duration such as 30s, 5m, 2h or 7d, got "5 minutes"',
      ],
      [
        { backend: 'a:1', proxyProtocol: true, protocol: 'udp' },
        'proxyProtocol: the PROXY protocol is for TCP streams only',
      ],
      [{ backend: 'a:1', listenAddress: 'eth0' }, 'listenAddress: must be an IPv4 or IPv6 address, got "eth0"'],
      [
        { backend: 'a:1', labels: { Env: 'x' } },
        'labels.Env: a label key is 1-63 lowercase letters, digits, and . _ / - inside',
      ],
      [
        { backend: 'a:1', labels: { env: 'a b' } },
        'labels.env: a label value is up to 63 letters, digits and . _ : / @ + -',
      ],
      [
        { backend: 'a:1', description: 'line\nbreak' },
        'description: must be text of at most 256 characters without control characters',
      ],
      [{ backend: 'a:1', ttl: '0s' }, 'ttl: must be at least 1 ms'],
      [{ backend: 'a:1', expiresAt: '2001-01-01T00:00:00Z' }, 'expiresAt: lies in the past'],
      [
        { backend: 'a:1', color: 'red' },
        'color: unknown field (known: port, portEnd, protocol, backend, backends, balance, allow, connectTimeout, idleTimeout, proxyProtocol, profile, listenAddress, labels, description, ttl, expiresAt, maxConnections, maxConnectionsPerClient, uploadRate, downloadRate, tlsCert, tlsKey, backendTls, backendCa, backendName, backendVerify, routes)',
      ],
    ] as const) {
      const answer = await daemon.request('PUT', `/v1/streams/${at}`, body);
      expect(answer.status).toBe(400);
      expect((answer.json as { error: { code: string; message: string } }).error).toMatchObject({
        code: 'INVALID_INPUT',
        message,
      });
    }
    expect(await snapshot(daemon)).toEqual(before);
  });
});

describe('a backend that does not accept connections', () => {
  it('is no reason to refuse the stream, and every answer says so (v1, legacy, CLI)', async () => {
    const gone = await EchoBackend.start('gone');
    const deadPort = gone.port;
    await gone.close();
    const backend = `127.0.0.1:${deadPort}`;
    const said = `backend ${backend} does not accept connections now (ECONNREFUSED): the stream forwards to it once it does`;

    const v1 = port();
    const answer = await daemon.request('POST', '/v1/streams', { port: v1, backend });
    expect(answer.status).toBe(201);
    expect((answer.json as { warnings: string[] }).warnings).toEqual([said]);
    // Live all the same: nginx listens, and the backend shows down at once.
    expect(await connectOutcome(v1)).toBe('open');
    const listed = await daemon.get(`/v1/streams/${v1}?stats=1`);
    expect((listed.json as { stream: StreamView }).stream.stats?.backends).toEqual([
      expect.objectContaining({ backend, state: 'down', error: 'ECONNREFUSED' }),
    ]);

    const legacy = port();
    expect((await daemon.get(`/createstream/${legacy}/${backend}`)).json).toEqual({ result: 'ok', errors: said });

    const cli = port();
    const run = await runCli(['create', String(cli), backend], env);
    expect([run.code, run.stdout.trim()]).toEqual([0, `${cli} -> ${backend} live`]);
    expect(run.stderr).toBe(`warning: ${said}\n`);

    // A backend that answers: no word of it.
    const fine = port();
    const ok = await daemon.request('POST', '/v1/streams', { port: fine, backend: `127.0.0.1:${one.port}` });
    expect((ok.json as { warnings: string[] }).warnings).toEqual([]);
    for (const at of [v1, legacy, cli, fine]) await remove(at);
  });
});
