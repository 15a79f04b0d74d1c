/**
 * The `conductor` binary against a real daemon: what each command prints on stdout (data only)
 * and stderr (everything else), and its exit code, including when the daemon is down.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runCli } from '../helpers/cli.js';
import { type Daemon, instanceCount } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';
import { freePortBlock } from '../helpers/ports.js';
import { snapshot } from '../helpers/state.js';

const ANSI = /\u001b\[/;
const token = 'cli-test-token-0123456789';
let daemon: Daemon;
let backend: EchoBackend;
let env: Record<string, string>;

const daemons = daemonFixture();

beforeAll(async () => {
  backend = await EchoBackend.start('b');
  daemon = await daemons.start({ rangeSize: 10, env: { CONDUCTOR_TOKEN: token } });
  env = { CONDUCTOR_URL: daemon.url, CONDUCTOR_TOKEN: token };
});

afterAll(async () => {
  await backend?.close();
});

describe('conductor create, ls, rm', () => {
  it('creates a stream that forwards at once, lists it, and removes it', async () => {
    const port = daemon.rangeStart;
    const created = await runCli(['create', String(port), `127.0.0.1:${backend.port}`], env);
    expect(created).toEqual({ code: 0, stdout: `${port} -> 127.0.0.1:${backend.port} live\n`, stderr: '' });
    expect(await roundTrip(port, 'cli')).toBe('b:cli');

    const listed = await runCli(['ls'], env);
    expect(listed.code).toBe(0);
    expect(listed.stderr).toBe('');
    expect(listed.stdout).toMatch(/PORT\s+│\s+PROTO\s+│\s+BACKENDS\s+│\s+STATE\s+│\s+EXPIRES\s+│\s+LABELS/);
    expect(listed.stdout).toMatch(
      new RegExp(`│ ${port} │ tcp\\s+│ 127\\.0\\.0\\.1:${backend.port}\\s+│ live\\s+│ -\\s+│ -\\s+│`),
    );
    expect(listed.stdout).toContain(`${port}`);
    expect(listed.stdout).toContain(`127.0.0.1:${backend.port}`);
    expect(listed.stdout).toMatch(/live/);
    expect(listed.stdout).not.toMatch(ANSI); // not a terminal: no colour

    const json = await runCli(['ls', '--json'], env);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual([
      expect.objectContaining({ port, backends: [{ address: `127.0.0.1:${backend.port}` }], state: 'live' }),
    ]);

    const removed = await runCli(['rm', String(port)], env);
    expect(removed).toEqual({ code: 0, stdout: `${port} removed\n`, stderr: '' });
    expect(await connectOutcome(port)).toBe('refused');

    const empty = await runCli(['ls'], env);
    expect(empty).toEqual({ code: 0, stdout: '', stderr: 'no streams\n' });
    expect(JSON.parse((await runCli(['ls', '--json'], env)).stdout)).toEqual([]);
  });

  it('prints machine-readable JSON for create and rm', async () => {
    const port = daemon.rangeStart + 1;
    const created = await runCli(['--json', 'create', String(port), `localhost:${backend.port}`], env);
    expect(created.code).toBe(0);
    expect(JSON.parse(created.stdout)).toEqual({
      stream: expect.objectContaining({
        port,
        protocol: 'tcp',
        backends: [{ address: `localhost:${backend.port}` }],
        state: 'live',
      }),
      warnings: [],
      change: 'created',
    });
    const removed = await runCli(['rm', String(port), '--json'], env);
    expect(JSON.parse(removed.stdout)).toEqual({ port, warnings: [] });
  });

  it('exits 1 with the reason when the daemon refuses, and changes nothing', async () => {
    const port = daemon.rangeStart + 2;
    await runCli(['create', String(port), `127.0.0.1:${backend.port}`], env);
    const before = await snapshot(daemon);
    const twice = await runCli(['create', String(port), `127.0.0.1:${backend.port}`], env);
    expect(twice.code).toBe(1);
    expect(twice.stdout).toBe('');
    expect(twice.stderr).toBe(
      `conductor: port ${port} already has a stream (to 127.0.0.1:${backend.port})\nhint: remove it first, pick another port, or replace it (PUT /v1/streams/{port})\n`,
    );
    const outside = await runCli(['create', String(daemon.rangeEnd + 1), `127.0.0.1:${backend.port}`], env);
    expect(outside.code).toBe(1);
    expect(outside.stderr).toContain(
      `port ${daemon.rangeEnd + 1} is outside the daemon's port range ${daemon.rangeStart}-${daemon.rangeEnd}`,
    );
    const missing = await runCli(['rm', String(daemon.rangeStart + 3)], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe(`conductor: no stream listens on port ${daemon.rangeStart + 3}\n`);
    const unresolvable = await runCli(['create', String(daemon.rangeStart + 4), 'nowhere.invalid:22'], env);
    expect(unresolvable.code).toBe(1);
    expect(unresolvable.stderr).toContain('host not found in upstream "nowhere.invalid"');
    expect(await snapshot(daemon)).toEqual(before);
    await runCli(['rm', String(port)], env);
  });

  it('exits 1 with a hint when the token is wrong or missing', async () => {
    const wrong = await runCli(['ls'], { CONDUCTOR_URL: daemon.url, CONDUCTOR_TOKEN: 'not-the-token-0123456789' });
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toBe(
      'conductor: missing or wrong API token\nhint: send Authorization: Bearer <token> (conductor --token or CONDUCTOR_TOKEN)\n',
    );
    const none = await runCli(['ls'], { CONDUCTOR_URL: daemon.url });
    expect(none.code).toBe(1);
    const flag = await runCli(['--url', daemon.url, '--token', token, 'ls', '--json']);
    expect(flag.code).toBe(0);
  });
});

describe('conductor free-port and status', () => {
  it('prints a bare free port, fit for $(...)', async () => {
    const free = await runCli(['free-port'], env);
    expect(free).toEqual({ code: 0, stdout: `${daemon.rangeStart}\n`, stderr: '' });
    expect(JSON.parse((await runCli(['free-port', '--json'], env)).stdout)).toEqual({ port: daemon.rangeStart });
  });

  it('prints the status, and JSON with --json', async () => {
    const status = await runCli(['status'], env);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(`daemon:     ${daemon.url}`);
    expect(status.stdout).toContain('managed mode');
    const masters = instanceCount(daemon);
    expect(status.stdout).toMatch(
      new RegExp(`nginx:\\s+running \\(${masters} masters, pids ([0-9]+, ){${masters - 1}}[0-9]+\\), 0 restarts`),
    );
    expect(status.stdout).toContain(`ports:      ${daemon.rangeStart}-${daemon.rangeEnd} (10 ports, 0 used, 10 free)`);
    const json = JSON.parse((await runCli(['status', '--json'], env)).stdout) as Record<string, unknown>;
    expect(json).toMatchObject({
      mode: 'managed',
      portRange: { start: daemon.rangeStart, end: daemon.rangeEnd },
      nginx: { state: 'running' },
    });
  });

  it('exits 1 when no port is free', async () => {
    const ports = Array.from({ length: 10 }, (_, i) => daemon.rangeStart + i);
    await Promise.all(
      ports.map((port) =>
        daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`, { authorization: `Bearer ${token}` }),
      ),
    );
    const none = await runCli(['free-port'], env);
    expect(none.code).toBe(1);
    expect(none.stdout).toBe('');
    expect(none.stderr).toBe(
      'conductor: no free port left in the port range\nhint: remove streams, or widen PORT_RANGE\n',
    );
    await Promise.all(ports.map((port) => daemon.get(`/removestream/${port}`, { authorization: `Bearer ${token}` })));
  });
});

describe('usage errors and colour', () => {
  it.each([
    [['create', 'abc', 'x:1'], 'conductor: port must be a whole number from 1 to 65535, got "abc"\n'],
    [
      ['create', '9000', 'x;y:1'],
      'conductor: backend "x;y:1": the host name label "x;y" may hold only letters, digits and inner hyphens\nhint: a backend is host:port, e.g. mybackend:22, 10.0.0.5:5432 or [2001:db8::1]:443\n',
    ],
    [['create', '9000'], undefined],
    [['rm'], undefined],
    [['rm', '0'], 'conductor: port must be a whole number from 1 to 65535, got 0\n'],
    [['bogus'], undefined],
    [['ls', '--bogus'], undefined],
    [['--url', 'ftp://x', 'ls'], 'conductor: --url must be an http:// or https:// URL, got "ftp://x"\n'],
    [[], undefined],
  ])('exits 2 for %p without touching the daemon', async (args, stderr) => {
    const before = await snapshot(daemon);
    const run = await runCli(args, env);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    if (stderr !== undefined) expect(run.stderr).toBe(stderr);
    else expect(run.stderr.length).toBeGreaterThan(0);
    expect(run.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(await snapshot(daemon)).toEqual(before);
  });

  it('prints help with examples for every command, exit 0', async () => {
    for (const command of ['create', 'rm', 'ls', 'free-port', 'status']) {
      const help = await runCli([command, '--help']);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain(`conductor ${command}`);
      expect(help.stdout).toContain('Examples:');
    }
    const top = await runCli(['--help']);
    expect(top.code).toBe(0);
    expect(top.stdout).toContain('Exit codes: 0 done, 1 refused by the daemon, 2 usage error, 3 daemon unreachable.');
  });

  it('colours only when asked: FORCE_COLOR colours, NO_COLOR and --no-color win', async () => {
    const port = daemon.rangeStart + 5;
    await daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`, { authorization: `Bearer ${token}` });
    expect((await runCli(['ls'], { ...env, FORCE_COLOR: '1' })).stdout).toMatch(ANSI);
    expect((await runCli(['ls'], { ...env, FORCE_COLOR: '1', NO_COLOR: '1' })).stdout).not.toMatch(ANSI);
    expect((await runCli(['ls', '--no-color'], { ...env, FORCE_COLOR: '1' })).stdout).not.toMatch(ANSI);
    await daemon.get(`/removestream/${port}`, { authorization: `Bearer ${token}` });
  });
});

describe('daemon down', () => {
  it('exits 3 naming the URL it tried, for every command, without a stack trace', async () => {
    const port = await freePortBlock(1);
    const url = `http://127.0.0.1:${port}`;
    for (const args of [['ls'], ['status'], ['free-port'], ['create', '9000', 'x:1'], ['rm', '9000']]) {
      const run = await runCli(args, { CONDUCTOR_URL: url });
      expect(run.code).toBe(3);
      expect(run.stdout).toBe('');
      expect(run.stderr).toBe(
        `conductor: daemon not reachable at ${url} (ECONNREFUSED)\nhint: is it running? start it with \`npm start\`, or point --url / CONDUCTOR_URL at it\n`,
      );
    }
  });
});
