/**
 * The declarative apply (API and `conductor apply -f`), expiry across restarts, the OpenAPI
 * document checked against real answers, and shell completion.
 */

import { execFile } from 'node:child_process';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runCli } from '../helpers/cli.js';
import { CLI, type Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';
import { snapshot } from '../helpers/state.js';
import { eventually, sleep } from '../helpers/wait.js';

let daemon: Daemon;
let backend: EchoBackend;
let dir: string;
let env: Record<string, string>;

const daemons = daemonFixture();

beforeAll(async () => {
  backend = await EchoBackend.start('b');
  dir = await daemons.dir();
  daemon = await daemons.start({ rangeSize: 20 });
  env = { CONDUCTOR_URL: daemon.url };
});

afterAll(async () => {
  await backend?.close();
});

const ports = async (): Promise<number[]> =>
  ((await daemon.get('/v1/streams')).json as { streams: Array<{ port: number }> }).streams.map((s) => s.port);

describe('declarative apply through the API', () => {
  it('refuses in the dry run what the real apply refuses: a live stream moved to another listen address', async () => {
    const port = daemon.rangeStart + 15;
    expect((await daemon.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${backend.port}` })).status).toBe(
      201,
    );
    const moved = { streams: [{ port, backend: `127.0.0.1:${backend.port}`, listenAddress: '127.0.0.2' }] };
    const before = await snapshot(daemon);
    const dry = await daemon.request('POST', '/v1/apply', { ...moved, dryRun: true });
    const real = await daemon.request('POST', '/v1/apply', moved);
    for (const answer of [dry, real]) {
      expect(answer.status).toBe(409);
      expect(JSON.stringify(answer.json)).toContain(
        `port ${port}: a live stream cannot move to another listen address in place`,
      );
    }
    expect(await snapshot(daemon)).toEqual(before);
    // The address the daemon listens on by default, written out, is no move.
    const same = await daemon.request('POST', '/v1/apply', {
      streams: [{ port, backend: `127.0.0.1:${backend.port}`, listenAddress: '127.0.0.1' }],
      dryRun: true,
    });
    expect(same.status).toBe(200);
    expect((await daemon.request('DELETE', `/v1/streams/${port}`)).status).toBe(200);
  });

  it('plans with dryRun, applies in one go, finds nothing to do the second time, and prunes', async () => {
    const [a, b, c] = [daemon.rangeStart, daemon.rangeStart + 1, daemon.rangeStart + 2];
    await daemon.request('POST', '/v1/streams', { port: c, backend: `127.0.0.1:${backend.port}` });
    const set = {
      streams: [
        { port: a, backend: `127.0.0.1:${backend.port}` },
        { port: b, backend: `localhost:${backend.port}`, labels: { env: 'prod' } },
      ],
    };

    const before = await snapshot(daemon);
    const dry = await daemon.request('POST', '/v1/apply', { ...set, dryRun: true, prune: true });
    expect(dry.status).toBe(200);
    expect(dry.json).toEqual({
      dryRun: true,
      applied: false,
      plan: { create: [a, b], update: [], delete: [c], unchanged: [] },
      warnings: [],
    });
    expect(await snapshot(daemon)).toEqual(before);

    const applied = await daemon.request('POST', '/v1/apply', set);
    expect(applied.json).toEqual({
      dryRun: false,
      applied: true,
      plan: { create: [a, b], update: [], delete: [], unchanged: [] },
      warnings: [],
    });
    expect(await roundTrip(a, 'a')).toBe('b:a');
    expect(await roundTrip(b, 'b')).toBe('b:b');
    expect(await ports()).toEqual([a, b, c]);

    const again = await daemon.request('POST', '/v1/apply', set);
    expect((again.json as { plan: unknown }).plan).toEqual({ create: [], update: [], delete: [], unchanged: [a, b] });

    const changed = { streams: [set.streams[0], { ...set.streams[1], labels: { env: 'staging' } }] };
    const pruned = await daemon.request('POST', '/v1/apply', { ...changed, prune: true });
    expect((pruned.json as { plan: unknown }).plan).toEqual({ create: [], update: [b], delete: [c], unchanged: [a] });
    expect(await ports()).toEqual([a, b]);
    expect(await connectOutcome(c)).toBe('refused');
    await daemon.request('POST', '/v1/apply', { streams: [], prune: true });
    expect(await ports()).toEqual([]);
  });

  it('is all or nothing: one entry nginx refuses leaves every stream as it was', async () => {
    const [a, b] = [daemon.rangeStart + 3, daemon.rangeStart + 4];
    await daemon.request('POST', '/v1/streams', { port: a, backend: `127.0.0.1:${backend.port}` });
    const before = await snapshot(daemon);
    const answer = await daemon.request('POST', '/v1/apply', {
      streams: [
        { port: a, backend: `localhost:${backend.port}` },
        { port: b, backend: 'no-such-name.invalid:22' },
      ],
      prune: true,
    });
    expect(answer.status).toBe(422);
    expect((answer.json as { error: { message: string } }).error.message).toBe(
      `nginx refused the stream on port ${b}: host not found in upstream "no-such-name.invalid"`,
    );
    expect(await snapshot(daemon)).toEqual(before);
    expect(await roundTrip(a, 'same')).toBe('b:same');
    expect(await connectOutcome(b)).toBe('refused');
    await daemon.request('DELETE', `/v1/streams/${a}`);
  });

  it('refuses an invalid set with the index of the bad entry, changing nothing', async () => {
    const before = await snapshot(daemon);
    for (const [body, message] of [
      [
        {
          streams: [
            { port: daemon.rangeStart, backend: 'a:1' },
            { port: daemon.rangeStart, backend: 'b:1' },
          ],
        },
        `port ${daemon.rangeStart} appears twice in the set`,
      ],
      [
        {
          streams: [
            { port: daemon.rangeStart, backend: 'a:1' },
            { port: daemon.rangeStart + 1, backend: 'x;y:1' },
          ],
        },
        'streams[1]: backend "x;y:1": the host name label "x;y" may hold only letters, digits and inner hyphens',
      ],
      [{ streams: [{ backend: 'a:1' }] }, 'streams[0].port: is required: a whole number from 1 to 65535'],
      [
        { streams: [{ port: daemon.rangeEnd + 1, backend: 'a:1' }] },
        `port ${daemon.rangeEnd + 1} is outside the daemon's port range ${daemon.rangeStart}-${daemon.rangeEnd}`,
      ],
      [{ streams: 'all' }, 'streams: must be a list of streams'],
      [{ streams: [], purge: true }, 'purge: unknown field (streams, prune, dryRun)'],
    ] as const) {
      const answer = await daemon.request('POST', '/v1/apply', body);
      expect(answer.status).toBe(400);
      expect((answer.json as { error: { message: string } }).error.message).toBe(message);
    }
    expect(await snapshot(daemon)).toEqual(before);
  });
});

describe('conductor apply -f', () => {
  it('applies a YAML file, shows the plan, and supports --dry-run and --prune', async () => {
    const [a, b] = [daemon.rangeStart + 5, daemon.rangeStart + 6];
    const file = join(dir, 'streams.yaml');
    await writeFile(
      file,
      [
        '# kept in git by the ops team',
        'streams:',
        `  - port: ${a}`,
        `    backend: 127.0.0.1:${backend.port}`,
        '    labels: { env: prod }',
        `  - port: ${b}`,
        '    backends:',
        `      - 127.0.0.1:${backend.port}`,
        `      - address: localhost:${backend.port}`,
        '        weight: 2',
        '    balance: least-conn',
        '',
      ].join('\n'),
    );
    const dry = await runCli(['apply', '-f', file, '--dry-run'], env);
    expect(dry).toEqual({
      code: 0,
      stdout: `create    ${a}\ncreate    ${b}\n`,
      stderr: 'dry run: 2 change(s) planned, nothing applied\n',
    });
    expect(await connectOutcome(a)).toBe('refused');
    const applied = await runCli(['apply', '-f', file], env);
    expect(applied).toEqual({ code: 0, stdout: `create    ${a}\ncreate    ${b}\n`, stderr: 'applied 2 change(s)\n' });
    expect(await roundTrip(a, 'y')).toBe('b:y');
    expect(await roundTrip(b, 'y')).toBe('b:y');
    const again = await runCli(['apply', '-f', file, '--json'], env);
    expect(JSON.parse(again.stdout)).toMatchObject({ applied: true, plan: { unchanged: [a, b] } });

    const json = join(dir, 'one.json');
    await writeFile(json, JSON.stringify([{ port: a, backend: `127.0.0.1:${backend.port}`, labels: { env: 'prod' } }]));
    const pruned = await runCli(['apply', '-f', json, '--prune'], env);
    expect(pruned).toEqual({ code: 0, stdout: `delete    ${b}\nunchanged ${a}\n`, stderr: 'applied 1 change(s)\n' });
    expect(await connectOutcome(b)).toBe('refused');
    await runCli(['rm', String(a)], env);
  });

  it('refuses unreadable and malformed files with exit 2, and refused applies with exit 1', async () => {
    const before = await snapshot(daemon);
    expect(await runCli(['apply', '-f', join(dir, 'missing.yaml')], env)).toEqual({
      code: 2,
      stdout: '',
      stderr: `conductor: cannot read ${join(dir, 'missing.yaml')}: ENOENT\n`,
    });
    const broken = join(dir, 'broken.yaml');
    await writeFile(broken, 'streams: [\n');
    const bad = await runCli(['apply', '-f', broken], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(new RegExp(`^conductor: ${broken.replace(/[.]/g, '\\.')} is not valid YAML: `));
    const shape = join(dir, 'shape.yaml');
    await writeFile(shape, 'hello: world\n');
    expect((await runCli(['apply', '-f', shape], env)).stderr).toBe(
      `conductor: ${shape} must hold a list of streams, or streams: followed by one\n`,
    );
    const refused = join(dir, 'refused.yaml');
    await writeFile(refused, `- port: ${daemon.rangeStart + 7}\n  backend: nowhere.invalid:1\n`);
    const run = await runCli(['apply', '-f', refused], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(
      `conductor: nginx refused the stream on port ${daemon.rangeStart + 7}: host not found in upstream "nowhere.invalid"\n`,
    );
    expect(await runCli(['apply'], env)).toMatchObject({ code: 2 });
    expect(await snapshot(daemon)).toEqual(before);
  });

  it('takes a port only as decimal digits, as the CLI does elsewhere: 0o43330, 018150, 1.8151e4 are refused naming the value', async () => {
    const before = await snapshot(daemon);
    const port = daemon.rangeStart + 3;
    const file = join(dir, 'ports.yaml');
    for (const written of ['0o43330', '018150', '1.8151e4', `+${port}`, `${port}.0`, '0x46E6']) {
      await writeFile(file, `streams:\n  - port: ${written}\n    backend: 127.0.0.1:${backend.port}\n`);
      const run = await runCli(['apply', '-f', file], env);
      expect(run).toEqual({
        code: 2,
        stdout: '',
        stderr: `conductor: ${file}: streams[0].port: port must be a whole number from 1 to 65535, got ${JSON.stringify(written)}\n`,
      });
    }
    // Through an alias, and in a JSON file (JSON is read as YAML).
    await writeFile(file, `- &p {port: 0o43330, backend: 127.0.0.1:${backend.port}}\n- *p\n`);
    expect((await runCli(['apply', '-f', file], env)).stderr).toBe(
      `conductor: ${file}: streams[0].port: port must be a whole number from 1 to 65535, got "0o43330"\n`,
    );
    const json = join(dir, 'ports.json');
    await writeFile(json, `{"streams": [{"port": 1.8151e4, "backend": "127.0.0.1:${backend.port}"}]}`);
    expect(await runCli(['apply', '-f', json], env)).toEqual({
      code: 2,
      stdout: '',
      stderr: `conductor: ${json}: streams[0].port: port must be a whole number from 1 to 65535, got "1.8151e4"\n`,
    });
    expect(await snapshot(daemon)).toEqual(before);
    // The same port in decimal digits is taken.
    await writeFile(file, `streams:\n  - port: ${port}\n    backend: 127.0.0.1:${backend.port}\n`);
    expect(await runCli(['apply', '-f', file, '--dry-run'], env)).toMatchObject({
      code: 0,
      stdout: `create    ${port}\n`,
    });
  });

  it('refuses a billion-laughs file with one line and exit 2, no stack trace', async () => {
    const before = await snapshot(daemon);
    const file = join(dir, 'laughs.yaml');
    const levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (const [index, name] of [...'bcdefghi'].entries()) {
      const previous = 'abcdefghi'[index] ?? 'a';
      levels.push(`${name}: &${name} [${Array.from({ length: 9 }, () => `*${previous}`).join(',')}]`);
    }
    await writeFile(file, `${levels.join('\n')}\nstreams: *i\n`);
    const run = await runCli(['apply', '-f', file], env);
    expect(run).toEqual({
      code: 2,
      stdout: '',
      stderr: `conductor: ${file} is not valid YAML: its aliases expand to too much (more than 100 expansions)\n`,
    });
    // Deep nesting is one line too.
    await writeFile(file, `streams: ${'['.repeat(20_000)}${']'.repeat(20_000)}\n`);
    const deep = await runCli(['apply', '-f', file], env);
    expect(deep.code).toBe(2);
    expect(deep.stderr).toMatch(/^conductor: [^\n]* is not valid YAML: [^\n]*\n$/);
    expect(await snapshot(daemon)).toEqual(before);
  });
});

describe('expiry across restarts', () => {
  it('removes a stream that expired while the daemon was down, and keeps the timer for one that did not', async () => {
    const own = await daemons.start({ rangeSize: 10 });
    const [soon, later] = [own.rangeStart, own.rangeStart + 1];
    await own.request('POST', '/v1/streams', { port: soon, backend: `127.0.0.1:${backend.port}`, ttl: '2s' });
    // Room for a slow restart (a loaded machine): `later` must still be there when it answers.
    await own.request('POST', '/v1/streams', { port: later, backend: `127.0.0.1:${backend.port}`, ttl: '15s' });
    await own.stop();
    await sleep(2500);
    await daemons.run(
      { home: own.home, rangeStart: own.rangeStart, rangeSize: 10, apiPort: own.apiPort },
      async (again) => {
        expect(
          ((await again.get('/v1/streams')).json as { streams: Array<{ port: number }> }).streams.map((s) => s.port),
        ).toEqual([later]);
        expect(await connectOutcome(soon)).toBe('refused');
        expect(again.logs).toContain(`"msg":"stream expired while the daemon was down","port":${soon}`);
        expect(await roundTrip(later, 'alive')).toBe('b:alive');
        await eventually(
          async () => (await again.get(`/v1/streams/${later}`)).status,
          (status) => status === 404,
          20_000,
        );
        expect(await connectOutcome(later)).toBe('refused');
      },
    );
  });
});

describe('the OpenAPI document', () => {
  it('is served, and real answers of every v1 call match it', async () => {
    const { document, check } = await openApiChecker(daemon);
    expect(document.openapi).toBe('3.1.0');
    const at = daemon.rangeStart + 10;
    const call = async (method: string, url: string, path: string, body?: unknown): Promise<void> => {
      const answer = await daemon.request(method, url, body);
      check(path, method.toLowerCase(), answer.status, answer.json);
    };
    await call('GET', '/v1/status', '/v1/status');
    await call('POST', '/v1/streams', '/v1/streams', {
      port: at,
      backends: [`127.0.0.1:${backend.port}`, { address: 'localhost:1', backup: true }],
      labels: { a: 'b' },
      ttl: '1h',
      idleTimeout: 30,
    });
    await call('POST', '/v1/streams', '/v1/streams', { port: at, backend: 'a:1' });
    await call('POST', '/v1/streams', '/v1/streams', { port: at + 1, backend: 'nowhere.invalid:1' });
    await call('POST', '/v1/streams', '/v1/streams', { port: at + 1, backend: 'bad host:1' });
    await call('GET', '/v1/streams', '/v1/streams');
    await call('GET', '/v1/streams?stats=1', '/v1/streams');
    await call('GET', `/v1/streams/${at}?stats=true`, '/v1/streams/{port}');
    await call('POST', `/v1/streams/${at}/health`, '/v1/streams/{port}/health');
    await call('POST', `/v1/streams/${at + 5}/health`, '/v1/streams/{port}/health');
    await call('GET', '/v1/events?limit=5', '/v1/events');
    await call('GET', '/v1/events?limit=0', '/v1/events');
    await call('GET', `/v1/streams/${at}`, '/v1/streams/{port}');
    await call('GET', `/v1/streams/${at + 5}`, '/v1/streams/{port}');
    await call('PUT', `/v1/streams/${at}`, '/v1/streams/{port}', {
      backend: `127.0.0.1:${backend.port}`,
      protocol: 'tcp+udp',
      allow: ['127.0.0.0/8'],
    });
    await call('PUT', `/v1/streams/${at}`, '/v1/streams/{port}', {
      backend: `127.0.0.1:${backend.port}`,
      protocol: 'tcp+udp',
      allow: ['127.0.0.0/8'],
    });
    await call('PUT', `/v1/streams/${at + 2}`, '/v1/streams/{port}', { backend: `127.0.0.1:${backend.port}` });
    await call('POST', `/v1/streams/${at}/renew`, '/v1/streams/{port}/renew', { ttl: '2h' });
    await call('POST', `/v1/streams/${at + 5}/renew`, '/v1/streams/{port}/renew', { ttl: '2h' });
    await call('GET', '/v1/free-port', '/v1/free-port');
    await call('POST', '/v1/apply', '/v1/apply', { streams: [{ port: at, backend: 'a:1' }], dryRun: true });
    await call('POST', '/v1/apply', '/v1/apply', { streams: 'x' });
    await call('DELETE', `/v1/streams/${at}`, '/v1/streams/{port}');
    await call('DELETE', `/v1/streams/${at + 2}`, '/v1/streams/{port}');
    await call('DELETE', `/v1/streams/${at}`, '/v1/streams/{port}');
  });
});

describe('shell completion', () => {
  const complete = async (words: string[]): Promise<string[]> => {
    // `conductor` on the PATH, as an installed one would be: the script asks it for the ports.
    const bin = join(dir, 'bin');
    await mkdir(bin, { recursive: true });
    await symlink(CLI, join(bin, 'conductor')).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
    });
    const script = `source <(conductor completion bash); COMP_WORDS=(${words.map((word) => `'${word}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _conductor; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const { stdout } = await promisify(execFile)('bash', ['-c', script], {
      env: { PATH: `${bin}:${process.env.PATH ?? ''}`, CONDUCTOR_URL: daemon.url },
    });
    return stdout.split('\n').filter((line) => line !== '');
  };

  it('completes commands, options, option values and the ports of existing streams in bash', async () => {
    expect(await complete(['conductor', 'cr'])).toEqual(['create']);
    expect(await complete(['conductor', 'create', '9000', 'x:1', '--ud'])).toEqual(['--udp']);
    expect(await complete(['conductor', 'create', '9000', 'x:1', '--balance', 'l'])).toEqual(['least-conn']);
    expect(await complete(['conductor', 'rm', '--k'])).toEqual(['--kill-sessions']);
    expect(await complete(['conductor', '--url', daemon.url, 'ls', '--la'])).toEqual(['--label']);
    const at = daemon.rangeStart + 15;
    await daemon.request('POST', '/v1/streams', { port: at, backend: `127.0.0.1:${backend.port}` });
    expect(await complete(['conductor', 'rm', ''])).toEqual([String(at)]);
    await daemon.request('DELETE', `/v1/streams/${at}`);
  });

  it('prints a zsh script that zsh parses, naming every command', async () => {
    const zsh = await runCli(['completion', 'zsh']);
    expect(zsh.code).toBe(0);
    expect(zsh.stdout.startsWith('#compdef conductor\n')).toBe(true);
    for (const command of ['create', 'rm', 'ls', 'get', 'apply', 'renew', 'free-port', 'status', 'completion'])
      expect(zsh.stdout).toContain(command);
    const file = join(dir, '_conductor');
    await writeFile(file, zsh.stdout);
    await promisify(execFile)('zsh', ['-n', file]);
    expect(await runCli(['completion', 'fish'])).toEqual({
      code: 2,
      stdout: '',
      stderr: 'conductor: no completion for "fish": bash or zsh\n',
    });
  });
});
