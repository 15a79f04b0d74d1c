/**
 * CLI contexts with the real daemon and CLI: two daemons on loopback, each with its own token, a
 * context for each in the config file. `--context` and CONDUCTOR_CONTEXT send a command to the
 * daemon they name, `context use` switches, flags and variables still win, `context add` writes no
 * token unless asked, and a bad file or an unknown context stops the command before anything is sent.
 * Every test runs the CLI with HOME and XDG_CONFIG_HOME of its own.
 */

import { execFile } from 'node:child_process';
import { mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type Certs, makeCerts } from '../helpers/certs.js';
import { type CliRun, runCli } from '../helpers/cli.js';
import { CLI, type Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { EchoBackend } from '../helpers/net.js';

const TOKEN_A = 'token-of-daemon-a-0123456789';
const TOKEN_B = 'token-of-daemon-b-0123456789';

let a: Daemon;
let b: Daemon;
let echo: EchoBackend;
/** A loopback HTTP server that only counts what reaches it: proof that nothing was sent. */
let witness: Server;
let witnessed = 0;
let witnessUrl: string;

const daemons = daemonFixture();

beforeAll(async () => {
  echo = await EchoBackend.start('echo');
  [a, b] = await Promise.all([
    daemons.start({ rangeSize: 10, env: { CONDUCTOR_TOKEN: TOKEN_A } }),
    daemons.start({ rangeSize: 10, env: { CONDUCTOR_TOKEN: TOKEN_B } }),
  ]);
  witness = createServer((_request, response) => {
    witnessed += 1;
    response.writeHead(500, { 'content-type': 'application/json' }).end('{}');
  });
  await new Promise<void>((done) => witness.listen(0, '127.0.0.1', done));
  witnessUrl = `http://127.0.0.1:${(witness.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await echo?.close();
  await new Promise((done) => witness?.close(done));
});

interface Home {
  /** HOME and XDG_CONFIG_HOME of this test, for every CLI run. */
  env: Record<string, string>;
  home: string;
  config: string;
  tokenA: string;
  tokenB: string;
}

/** A new home and config folder, with a token file for each daemon (mode 0600). */
async function freshHome(): Promise<Home> {
  const home = await daemons.dir();
  const xdg = join(home, 'xdg');
  const tokenA = join(home, 'a.token');
  const tokenB = join(home, 'b.token');
  await writeFile(tokenA, `${TOKEN_A}\n`, { mode: 0o600 });
  await writeFile(tokenB, `${TOKEN_B}\n`, { mode: 0o600 });
  return {
    env: { HOME: home, XDG_CONFIG_HOME: xdg },
    home,
    config: join(xdg, 'conductor', 'config.yaml'),
    tokenA,
    tokenB,
  };
}

/** Contexts a and b for the two daemons (token files), a current. */
async function withContexts(h: Home): Promise<void> {
  for (const args of [
    ['context', 'add', 'a', '--url', a.url, '--token-file', h.tokenA, '--use'],
    ['context', 'add', 'b', '--url', b.url, '--token-file', h.tokenB],
  ]) {
    const run = await runCli(args, h.env);
    expect([run.code, run.stderr]).toEqual([0, '']);
  }
}

const portsOf = async (daemon: Daemon, token: string): Promise<number[]> => {
  const answer = await daemon.get('/v1/streams', { authorization: `Bearer ${token}` });
  expect(answer.status).toBe(200);
  return (answer.json as { streams: Array<{ port: number }> }).streams.map((stream) => stream.port).sort();
};

const listed = (run: CliRun): number[] => {
  expect([run.code, run.stderr]).toEqual([0, '']);
  return (JSON.parse(run.stdout) as Array<{ port: number }>).map((stream) => stream.port).sort();
};

describe('choosing the daemon by context', () => {
  it('--context and CONDUCTOR_CONTEXT send a change to the daemon they name, and only there', async () => {
    const h = await freshHome();
    await withContexts(h);
    const backend = `127.0.0.1:${echo.port}`;
    const [pa, pb] = [a.rangeStart, b.rangeStart + 1];
    expect((await runCli(['--context', 'a', 'create', String(pa), backend], h.env)).code).toBe(0);
    expect((await runCli(['create', String(pb), backend], { ...h.env, CONDUCTOR_CONTEXT: 'b' })).code).toBe(0);
    expect(await portsOf(a, TOKEN_A)).toEqual([pa]);
    expect(await portsOf(b, TOKEN_B)).toEqual([pb]);
    expect(listed(await runCli(['--context', 'b', 'ls', '--json'], h.env))).toEqual([pb]);
    expect(listed(await runCli(['ls', '--json'], { ...h.env, CONDUCTOR_CONTEXT: 'a' }))).toEqual([pa]);
    // --context over CONDUCTOR_CONTEXT, a flag over a variable.
    expect(listed(await runCli(['--context', 'b', 'ls', '--json'], { ...h.env, CONDUCTOR_CONTEXT: 'a' }))).toEqual([
      pb,
    ]);
    expect((await runCli(['--context', 'a', 'rm', String(pa)], h.env)).code).toBe(0);
    expect((await runCli(['--context', 'b', 'rm', String(pb)], h.env)).code).toBe(0);
    expect([await portsOf(a, TOKEN_A), await portsOf(b, TOKEN_B)]).toEqual([[], []]);
  });

  it('context use switches the daemon of every later command; ls marks it', async () => {
    const h = await freshHome();
    await withContexts(h);
    const backend = `127.0.0.1:${echo.port}`;
    const pb = b.rangeStart + 2;
    expect((await runCli(['create', String(pb), backend], { ...h.env, CONDUCTOR_CONTEXT: 'b' })).code).toBe(0);
    expect(listed(await runCli(['ls', '--json'], h.env))).toEqual([]);
    expect(await runCli(['context', 'use', 'b'], h.env)).toEqual({
      code: 0,
      stdout: 'current context: b\n',
      stderr: '',
    });
    expect(listed(await runCli(['ls', '--json'], h.env))).toEqual([pb]);
    const table = await runCli(['context', 'ls'], h.env);
    expect(table.stdout.split('\n')).toEqual([
      expect.stringMatching(/^CURRENT +NAME +URL +TOKEN +TLS$/),
      expect.stringMatching(new RegExp(`^ +a +${a.url} +${h.tokenA} +-$`)),
      expect.stringMatching(new RegExp(`^\\* +b +${b.url} +${h.tokenB} +-$`)),
      '',
    ]);
    const json = JSON.parse((await runCli(['context', 'ls', '--json'], h.env)).stdout) as Array<
      Record<string, unknown>
    >;
    expect(json.map((row) => [row.name, row.current, row.url, row.tokenFile])).toEqual([
      ['a', false, a.url, h.tokenA],
      ['b', true, b.url, h.tokenB],
    ]);
    expect((await runCli(['context', 'ls', '-q'], h.env)).stdout).toBe('a\nb\n');
    expect((await runCli(['context', 'ls', '-o', 'name'], h.env)).stdout).toBe('a\nb\n');
    const asYaml = await runCli(['context', 'ls', '-o', 'yaml'], h.env);
    expect(asYaml.code).toBe(0);
    expect(asYaml.stdout).toContain(`- name: a\n  current: false\n  url: ${a.url}\n`);
    const wide = await runCli(['context', 'ls', '-o', 'wide'], h.env);
    expect([wide.code, wide.stdout]).toEqual([2, '']);
    expect(wide.stderr).toContain('context ls does not print -o wide');
    expect((await runCli(['context', 'use', 'a'], h.env)).code).toBe(0);
    expect(listed(await runCli(['ls', '--json'], h.env))).toEqual([]);
    // rm of the current context: no context is current, commands go to the default again.
    expect(await runCli(['context', 'rm', 'a'], h.env)).toEqual({
      code: 0,
      stdout: 'context a removed; no context is current now\n',
      stderr: '',
    });
    expect(await readFile(h.config, 'utf8')).not.toMatch(/current|\ba:/);
    expect((await runCli(['--context', 'b', 'rm', String(pb)], h.env)).code).toBe(0);
  });
});

describe('flags and variables win over the context', () => {
  it('--url, CONDUCTOR_URL, --token, --token-file and CONDUCTOR_TOKEN each win', async () => {
    const h = await freshHome();
    await withContexts(h); // a is current
    const pb = b.rangeStart + 3;
    await b.request(
      'POST',
      '/v1/streams',
      { port: pb, backend: `127.0.0.1:${echo.port}` },
      {
        authorization: `Bearer ${TOKEN_B}`,
      },
    );
    // A URL from the command line or the environment: no context value is used (not a's token).
    expect(listed(await runCli(['--url', b.url, '--token-file', h.tokenB, 'ls', '--json'], h.env))).toEqual([pb]);
    expect(
      listed(await runCli(['ls', '--json'], { ...h.env, CONDUCTOR_URL: b.url, CONDUCTOR_TOKEN: TOKEN_B })),
    ).toEqual([pb]);
    const noToken = await runCli(['ls'], { ...h.env, CONDUCTOR_URL: b.url });
    expect([noToken.code, noToken.stderr]).toEqual([1, expect.stringContaining('missing or wrong API token')]);
    // --context over CONDUCTOR_URL.
    expect(listed(await runCli(['--context', 'b', 'ls', '--json'], { ...h.env, CONDUCTOR_URL: a.url }))).toEqual([pb]);
    // The token of the command line or the environment over the context's token file.
    for (const [args, env] of [
      [['--token', TOKEN_B, 'ls'], {}],
      [['--token-file', h.tokenB, 'ls'], {}],
      [['ls'], { CONDUCTOR_TOKEN: TOKEN_B }],
    ] as const) {
      const run = await runCli([...args], { ...h.env, ...env });
      expect([run.code, run.stderr]).toEqual([1, expect.stringContaining('missing or wrong API token')]);
    }
    expect(listed(await runCli(['--context', 'b', '--token', TOKEN_B, 'ls', '--json'], h.env))).toEqual([pb]);
    // A context named by --context brings its own token file: the token exported for a is not sent to b.
    expect(listed(await runCli(['--context', 'b', 'ls', '--json'], { ...h.env, CONDUCTOR_TOKEN: TOKEN_A }))).toEqual([
      pb,
    ]);
    const both = await runCli(['--url', b.url, '--context', 'b', 'ls'], h.env);
    expect([both.code, both.stderr]).toEqual([2, 'conductor: --url and --context both name a daemon: give one\n']);
    expect(
      (await b.request('DELETE', `/v1/streams/${pb}`, undefined, { authorization: `Bearer ${TOKEN_B}` })).status,
    ).toBe(200);
  });
});

describe('context add', () => {
  it('writes no token unless asked; with --token-inline, the token and a warning; never prints it', async () => {
    const h = await freshHome();
    const withToken = { ...h.env, CONDUCTOR_TOKEN: TOKEN_A };
    expect((await runCli(['context', 'add', 'plain', '--url', a.url], withToken)).code).toBe(0);
    expect((await runCli(['context', 'add', 'filed', '--url', a.url, '--token-file', h.tokenA], withToken)).code).toBe(
      0,
    );
    let text = await readFile(h.config, 'utf8');
    expect(text).not.toContain(TOKEN_A);
    expect(text).toContain(`tokenFile: ${h.tokenA}`);
    const refused = await runCli(['--token', TOKEN_A, 'context', 'add', 'flagged', '--url', a.url], h.env);
    expect([refused.code, refused.stdout]).toEqual([2, '']);
    expect(refused.stderr).toMatch(/^conductor: context add does not store --token unless asked\n/);
    expect(await readFile(h.config, 'utf8')).toBe(text);

    const inline = await runCli(['context', 'add', 'inline', '--url', a.url, '--token-inline'], withToken);
    expect(inline).toEqual({
      code: 0,
      stdout: 'context inline added\n',
      stderr: `warning: the token of context inline is written in ${h.config}; a --token-file keeps it out of it\n`,
    });
    text = await readFile(h.config, 'utf8');
    expect(text).toContain(`token: ${TOKEN_A}`);
    expect((await stat(h.config)).mode & 0o777).toBe(0o600);
    expect((await stat(join(h.env.XDG_CONFIG_HOME ?? '', 'conductor'))).mode & 0o777).toBe(0o700);
    expect(listed(await runCli(['--context', 'inline', 'ls', '--json'], h.env))).toEqual([]);
    for (const args of [
      ['context', 'ls'],
      ['context', 'ls', '--json'],
      ['context', 'show', 'inline'],
      ['context', 'show', 'inline', '--json'],
    ]) {
      const run = await runCli(args, h.env);
      expect(run.code).toBe(0);
      expect(`${run.stdout}${run.stderr}`).not.toContain(TOKEN_A);
    }
    expect((await runCli(['context', 'show', 'inline'], h.env)).stdout).toContain(
      'token:    in the config file (not shown)',
    );
  });
});

describe('refusals: nothing is sent', () => {
  it.each([
    ['not YAML', 'current: w\ncontexts:\n  w: { url: "URL"\n', 4],
    ['an unknown key', 'current: w\ncontexts:\n  w:\n    url: URL\n    tokenfile: /x\n', 5],
    ['an unknown top-level key', 'current: w\ncontext:\n  w:\n    url: URL\n', 2],
    ['a url that is not http', 'current: w\ncontexts:\n  w:\n    url: ftp://127.0.0.1/\n', 3],
  ])('a file with %s: exit 2 naming the file and line', async (_what, text, line) => {
    const h = await freshHome();
    await mkdir(join(h.env.XDG_CONFIG_HOME ?? '', 'conductor'), { recursive: true });
    await writeFile(h.config, text.replace('URL', witnessUrl), { mode: 0o600 });
    const before = witnessed;
    for (const args of [['ls'], ['create', String(a.rangeStart), `127.0.0.1:${echo.port}`], ['context', 'ls']]) {
      const run = await runCli(args, h.env);
      expect([run.code, run.stdout]).toEqual([2, '']);
      expect(run.stderr.startsWith(`conductor: ${h.config}:${line}: `)).toBe(true);
    }
    expect(witnessed).toBe(before);
    // --url bypasses the file: it is not even read.
    expect(listed(await runCli(['--url', a.url, '--token', TOKEN_A, 'ls', '--json'], h.env))).toEqual([]);
  });

  it('an unknown context: exit 2 listing the known ones', async () => {
    const h = await freshHome();
    const run = await runCli(['--context', 'nope', 'ls'], h.env);
    expect(run).toEqual({
      code: 2,
      stdout: '',
      stderr: `conductor: --context: no context named nope in ${h.config} (no such file)\nhint: list them with \`conductor context ls\`, add one with \`conductor context add NAME --url URL\`\n`,
    });
    expect((await runCli(['context', 'add', 'w', '--url', witnessUrl, '--use'], h.env)).code).toBe(0);
    expect((await runCli(['context', 'add', 'v', '--url', witnessUrl], h.env)).code).toBe(0);
    const before = witnessed;
    for (const [args, env] of [
      [['--context', 'nope', 'create', String(a.rangeStart), `127.0.0.1:${echo.port}`], {}],
      [['ls'], { CONDUCTOR_CONTEXT: 'nope' }],
      [['context', 'use', 'nope'], {}],
      [['context', 'rm', 'nope'], {}],
    ] as const) {
      const unknown = await runCli([...args], { ...h.env, ...env });
      expect([unknown.code, unknown.stdout]).toEqual([2, '']);
      expect(unknown.stderr).toContain(`no context named nope in ${h.config} (known: w, v)`);
    }
    expect(witnessed).toBe(before);
    // The witness does answer when it is asked: the count above could have moved.
    expect((await runCli(['ls'], h.env)).code).toBe(1);
    expect(witnessed).toBe(before + 1);
  });
});

describe('completion', () => {
  it('completes context names after --context and context use, and ports from the chosen daemon', async () => {
    const h = await freshHome();
    await withContexts(h);
    const bin = join(h.home, 'bin');
    await mkdir(bin);
    await symlink(CLI, join(bin, 'conductor'));
    const complete = async (words: string[]): Promise<string[]> => {
      const script = `source <(conductor completion bash); COMP_WORDS=(${words.map((word) => `'${word}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _conductor; printf '%s\\n' "\${COMPREPLY[@]}"`;
      const { stdout } = await promisify(execFile)('bash', ['-c', script], {
        env: { ...h.env, PATH: `${bin}:${process.env.PATH ?? ''}` },
      });
      return stdout.split('\n').filter((line) => line !== '');
    };
    expect(await complete(['conductor', '--context', ''])).toEqual(['a', 'b']);
    expect(await complete(['conductor', 'context', 'use', ''])).toEqual(['a', 'b']);
    expect(await complete(['conductor', 'context', ''])).toEqual(['ls', 'show', 'use', 'add', 'rm']);
    const pb = b.rangeStart + 4;
    await b.request(
      'POST',
      '/v1/streams',
      { port: pb, backend: `127.0.0.1:${echo.port}` },
      {
        authorization: `Bearer ${TOKEN_B}`,
      },
    );
    expect(await complete(['conductor', '--context', 'b', 'rm', ''])).toEqual([String(pb)]);
    expect(await complete(['conductor', 'rm', ''])).toEqual([]);
    await b.request('DELETE', `/v1/streams/${pb}`, undefined, { authorization: `Bearer ${TOKEN_B}` });
  });
});

describe('a context for a daemon over HTTPS with client certificates', () => {
  let secure: Daemon;
  let certs: Certs;
  const TOKEN_S = 'token-of-the-https-daemon-0123';

  beforeAll(async () => {
    certs = await makeCerts(await daemons.dir());
    secure = await daemons.start({
      rangeSize: 4,
      env: {
        CONDUCTOR_NGINX_INSTANCES: '1',
        CONDUCTOR_TOKEN: TOKEN_S,
        CONDUCTOR_TLS_CERT: certs.serverCert,
        CONDUCTOR_TLS_KEY: certs.serverKey,
        CONDUCTOR_TLS_CLIENT_CA: certs.ca,
      },
    });
  }, 60_000);

  it("uses the context's ca, cert, key and token file; each one missing fails; flags and variables win", async () => {
    const h = await freshHome();
    const tokenS = join(h.home, 's.token');
    await writeFile(tokenS, `${TOKEN_S}\n`, { mode: 0o600 });
    const tls = ['--ca', certs.ca, '--cert', certs.clientCert, '--key', certs.clientKey];
    const add = async (name: string, args: string[], env: Record<string, string> = {}): Promise<void> => {
      const run = await runCli(['context', 'add', name, '--url', secure.url, ...args], { ...h.env, ...env });
      expect([run.code, run.stderr]).toEqual([0, '']);
    };
    // A CA given by the variable is not stored: only what the command line says is.
    await add('s', ['--token-file', tokenS, ...tls], { CONDUCTOR_CA: certs.wrongCa });
    await add('no-ca', ['--token-file', tokenS, '--cert', certs.clientCert, '--key', certs.clientKey]);
    await add('no-cert', ['--token-file', tokenS, '--ca', certs.ca]);
    await add('no-token', tls);
    await add('wrong-ca', [
      '--token-file',
      tokenS,
      '--ca',
      certs.wrongCa,
      '--cert',
      certs.clientCert,
      '--key',
      certs.clientKey,
    ]);
    const text = await readFile(h.config, 'utf8');
    expect(text).not.toContain(TOKEN_S);
    expect(text.split(`ca: ${certs.wrongCa}`).length).toBe(2); // only in wrong-ca

    const port = secure.rangeStart;
    const created = await runCli(['--context', 's', 'create', String(port), `127.0.0.1:${echo.port}`], h.env);
    expect([created.code, created.stderr]).toEqual([0, '']);
    expect(listed(await runCli(['ls', '--json'], { ...h.env, CONDUCTOR_CONTEXT: 's' }))).toEqual([port]);

    const noCa = await runCli(['--context', 'no-ca', 'ls'], h.env);
    expect([noCa.code, noCa.stdout]).toEqual([3, '']);
    expect(noCa.stderr).toMatch(/^conductor: cannot verify the certificate of the daemon at https:\/\/127\.0\.0\.1:/);
    const wrongCa = await runCli(['--context', 'wrong-ca', 'ls'], h.env);
    expect([wrongCa.code, wrongCa.stderr]).toEqual([3, expect.stringContaining('cannot verify the certificate')]);
    const noCert = await runCli(['--context', 'no-cert', 'ls'], h.env);
    expect([noCert.code, noCert.stderr]).toEqual([3, expect.stringContaining('requires a client certificate')]);
    const noToken = await runCli(['--context', 'no-token', 'ls'], h.env);
    expect([noToken.code, noToken.stderr]).toEqual([1, expect.stringContaining('missing or wrong API token')]);

    // --ca and CONDUCTOR_CA win over the context's CA; the variable CONDUCTOR_CA over none.
    expect(listed(await runCli(['--context', 'wrong-ca', '--ca', certs.ca, 'ls', '--json'], h.env))).toEqual([port]);
    expect(listed(await runCli(['--context', 'no-ca', 'ls', '--json'], { ...h.env, CONDUCTOR_CA: certs.ca }))).toEqual([
      port,
    ]);
    const wrongFlag = await runCli(['--context', 's', '--ca', certs.wrongCa, 'ls'], h.env);
    expect(wrongFlag.code).toBe(3);
    expect((await runCli(['--context', 's', 'rm', String(port)], h.env)).code).toBe(0);
  });
});
