/**
 * The CLI's output formats and `ls --watch` against a real daemon, with the real binaries:
 * -o json|yaml|wide|name on the commands a script uses, names that work as arguments again, a
 * format a command does not take refused before anything is sent, and the watch printing a new
 * listing when the daemon's streams change, ending cleanly on a signal.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parse as parseYaml } from 'yaml';
import { type CliRun, runCli, runProgram } from '../helpers/cli.js';
import { CLI, type Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { EchoBackend } from '../helpers/net.js';
import { freePortBlock } from '../helpers/ports.js';
import { snapshot } from '../helpers/state.js';

const token = 'cli-output-token-0123456789';
let daemon: Daemon;
let echo: EchoBackend;
let env: Record<string, string>;
let backend: string;

const daemons = daemonFixture();

beforeAll(async () => {
  echo = await EchoBackend.start('echo');
  backend = `127.0.0.1:${echo.port}`;
  daemon = await daemons.start({ rangeSize: 10, env: { CONDUCTOR_TOKEN: token } });
  env = { CONDUCTOR_URL: daemon.url, CONDUCTOR_TOKEN: token };
});

afterAll(async () => {
  await echo?.close();
});

async function removeAll(): Promise<void> {
  const listed = await runCli(['ls', '-o', 'name'], env);
  for (const port of listed.stdout.split('\n').filter((line) => line !== ''))
    expect((await runCli(['rm', port], env)).code).toBe(0);
}

/** A CLI that keeps running (ls --watch): its output so far, and a wait for what it prints next. */
class Running {
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private listeners: Array<() => void> = [];

  constructor(readonly child: ChildProcess) {
    const changed = (): void => {
      for (const listener of this.listeners) listener();
    };
    child.stdout?.on('data', (chunk: Buffer) => {
      this.stdout += chunk.toString('utf8');
      changed();
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString('utf8');
      changed();
    });
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  static start(args: string[], environment: Record<string, string>): Running {
    return new Running(
      spawn(process.execPath, [CLI, ...args], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...environment },
        stdio: ['pipe', 'pipe', 'pipe'],
      }),
    );
  }

  /** Resolves once `accept` holds for what it printed; fails when it exits first or after `timeoutMs`. */
  until(accept: (run: Running) => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (error?: Error): void => {
        clearTimeout(timer);
        this.listeners = this.listeners.filter((listener) => listener !== check);
        if (error) reject(error);
        else resolve();
      };
      const check = (): void => {
        if (accept(this)) done();
      };
      const timer = setTimeout(
        () => done(new Error(`no ${what} within ${timeoutMs} ms:\n${this.stdout}\n${this.stderr}`)),
        timeoutMs,
      );
      this.listeners.push(check);
      void this.exited.then(({ code, signal }) =>
        done(new Error(`exited (${signal ?? code}) before ${what}:\n${this.stdout}\n${this.stderr}`)),
      );
      check();
    });
  }

  kill(signal: NodeJS.Signals): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }
}

/** The complete JSON lines of `ls --watch -o json`, each a listing, as the lists of their ports. */
const jsonListings = (stdout: string): number[][] =>
  stdout
    .split('\n')
    .slice(0, -1)
    .map((line) => (JSON.parse(line) as Array<{ port: number }>).map((stream) => stream.port));

/** The complete tables of `ls --watch` (each followed by an empty line), as the lists of their ports. */
const tableListings = (stdout: string): number[][] =>
  stdout
    .split('\n\n')
    .slice(0, -1)
    .map((table) => [...table.matchAll(/^│ ([0-9]+) /gm)].map((match) => Number(match[1])));

describe('-o on the commands', () => {
  it('prints json, yaml, name and wide for create, get, ls, rm and status', async () => {
    const [a, b, c] = [daemon.rangeStart, daemon.rangeStart + 1, daemon.rangeStart + 2];
    const yamlCreate = await runCli(
      ['create', String(a), backend, '--label', 'team=yes', '--max-connections', '10', '-o', 'yaml'],
      env,
    );
    expect([yamlCreate.code, yamlCreate.stderr]).toEqual([0, '']);
    const created = parseYaml(yamlCreate.stdout) as { stream: { port: number; labels: unknown }; change: string };
    expect(created).toMatchObject({
      stream: { port: a, labels: { team: 'yes' }, maxConnections: 10 },
      change: 'created',
    });
    expect(await runCli(['create', String(b), backend, '-o', 'name'], env)).toEqual({
      code: 0,
      stdout: `${b}\n`,
      stderr: '',
    });
    const jsonCreate = await runCli(['create', String(c), backend, '--listen-address', '127.0.0.1', '-o', 'json'], env);
    expect(JSON.parse(jsonCreate.stdout)).toMatchObject({ stream: { port: c, listenAddress: '127.0.0.1' } });

    // get: the stream create answered, in each format.
    const getJson = await runCli(['get', String(a), '-o', 'json'], env);
    expect(getJson.code).toBe(0);
    expect(JSON.parse(getJson.stdout)).toEqual(created.stream);
    expect(parseYaml((await runCli(['get', String(a), '-o', 'yaml'], env)).stdout)).toEqual(JSON.parse(getJson.stdout));
    expect(await runCli(['get', String(a), '-o', 'name'], env)).toEqual({ code: 0, stdout: `${a}\n`, stderr: '' });

    // ls: the same listing in each format.
    const lsJson = await runCli(['ls', '-o', 'json'], env);
    const listing = JSON.parse(lsJson.stdout) as Array<{ port: number }>;
    expect(listing.map((stream) => stream.port)).toEqual([a, b, c]);
    const lsYaml = await runCli(['ls', '-o', 'yaml'], env);
    expect([lsYaml.code, lsYaml.stderr]).toEqual([0, '']);
    expect(parseYaml(lsYaml.stdout)).toEqual(listing);
    expect(parseYaml(lsYaml.stdout, { version: '1.1' })).toEqual(listing);
    expect(await runCli(['ls', '-o', 'name'], env)).toEqual({ code: 0, stdout: `${a}\n${b}\n${c}\n`, stderr: '' });
    const wide = await runCli(['ls', '-o', 'wide'], env);
    expect([wide.code, wide.stderr]).toEqual([0, '']);
    expect(wide.stdout).toMatch(
      /│ PORT +│ PROTO │ LISTEN +│ BACKENDS +│ BALANCE +│ STATE │ ALLOW +│ LIMITS +│ TLS │ LABELS +│ CREATED +│ EXPIRES │/,
    );
    const createdAt = (listing[0] as unknown as { createdAt: string }).createdAt.replace(/\.[0-9]+Z$/, 'Z');
    expect(wide.stdout).toMatch(
      new RegExp(
        `│ ${a} +│ tcp +│ - +│ 127\\.0\\.0\\.1:${echo.port} +│ round-robin │ live +│ everyone │ max 10 +│ - +│ team=yes │ ${createdAt} │ - +│`,
      ),
    );
    expect(wide.stdout).toMatch(new RegExp(`│ ${c} +│ tcp +│ 127\\.0\\.0\\.1 │`));

    // status: the same answer in json and yaml (the audit's time moves between two calls).
    const status = JSON.parse((await runCli(['status', '-o', 'json'], env)).stdout) as Record<string, unknown>;
    const statusYaml = parseYaml((await runCli(['status', '-o', 'yaml'], env)).stdout) as Record<string, unknown>;
    expect(Object.keys(statusYaml).sort()).toEqual(Object.keys(status).sort());
    for (const key of ['version', 'mode', 'portRange', 'streams', 'startedAt', 'failed', 'problems'])
      expect(statusYaml[key]).toEqual(status[key]);
    expect(status.streams).toMatchObject({ total: 3, live: 3 });

    // rm: each format, then nothing is left.
    expect(parseYaml((await runCli(['rm', String(a), '-o', 'yaml'], env)).stdout)).toEqual({ port: a, warnings: [] });
    expect(JSON.parse((await runCli(['rm', String(b), '-o', 'json'], env)).stdout)).toEqual({ port: b, warnings: [] });
    expect(await runCli(['rm', String(c), '-o', 'name'], env)).toEqual({ code: 0, stdout: `${c}\n`, stderr: '' });
    expect(await runCli(['ls', '-o', 'name'], env)).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('prints names that work as arguments again: ls -o name | xargs get, then rm', async () => {
    const ports = [daemon.rangeStart + 3, daemon.rangeStart + 5, daemon.rangeStart + 8];
    for (const port of ports) expect((await runCli(['create', String(port), backend], env)).code).toBe(0);
    const pipe = (script: string): Promise<CliRun> =>
      runProgram('sh', ['-c', script], { ...env, C: `${process.execPath} ${CLI}` });
    const got = await pipe('$C ls -o name | xargs -n1 $C get -o json');
    expect([got.code, got.stderr]).toEqual([0, '']);
    const streams = got.stdout
      .split(/\n(?=\{)/)
      .map((text) => (JSON.parse(text) as { port: number; state: string }).port);
    expect(streams).toEqual(ports);
    const removed = await pipe('$C ls -o name | xargs -n1 $C rm -o name');
    expect(removed).toEqual({ code: 0, stdout: ports.map((port) => `${port}\n`).join(''), stderr: '' });
    expect(await runCli(['ls', '-o', 'name'], env)).toEqual({ code: 0, stdout: '', stderr: '' });
  });

  it('refuses a format a command does not take with exit 2, naming the ones it takes, and changes nothing', async () => {
    const kept = daemon.rangeStart;
    expect((await runCli(['create', String(kept), backend], env)).code).toBe(0);
    const before = await snapshot(daemon);
    const cases: Array<[string[], RegExp]> = [
      [['ls', '-o', 'xml'], /^conductor: -o: one of json, yaml, wide or name, got "xml"\n$/],
      [
        ['create', String(kept + 1), backend, '-o', 'wide'],
        /^conductor: create does not print -o wide: it takes -o json, yaml or name\n$/,
      ],
      [['create', String(kept + 1), backend, '-o', 'table'], /got "table"/],
      [['rm', String(kept), '-o', 'wide'], /rm does not print -o wide: it takes -o json, yaml or name/],
      [['--json', '-o', 'yaml', 'rm', String(kept)], /--json is -o json: give one of --json and -o yaml/],
      [['status', '-o', 'name'], /status does not print -o name: it takes -o json or yaml/],
      [['top', '-o', 'yaml', '-n', '1'], /top does not print -o yaml: it takes -o json/],
      [['drain', String(kept), '-o', 'wide'], /drain does not print -o wide/],
      [['renew', String(kept), '--ttl', '1h', '-o', 'wide'], /renew does not print -o wide/],
      [['ls', '-o'], /argument missing/],
    ];
    for (const [args, message] of cases) {
      const run = await runCli(args, env);
      expect([args, run.code, run.stdout]).toEqual([args, 2, '']);
      expect(run.stderr).toMatch(message);
    }
    expect(await snapshot(daemon)).toEqual(before);
    expect(JSON.parse((await runCli(['get', String(kept), '--json'], env)).stdout)).toMatchObject({
      port: kept,
      state: 'live',
    });
    await removeAll();
  });

  it('prints the same with --json and with -o json', async () => {
    const port = daemon.rangeStart + 4;
    expect((await runCli(['create', String(port), backend, '--label', 'env=prod'], env)).code).toBe(0);
    for (const args of [
      ['ls'],
      ['ls', '--label', 'env=prod'],
      ['get', String(port)],
      ['wait', String(port), '--for', 'live'],
      ['free-port'],
      ['events', '--limit', '3'],
    ]) {
      const flag = await runCli([...args, '--json'], env);
      const option = await runCli([...args, '-o', 'json'], env);
      expect(flag.code).toBe(0);
      expect(flag.stdout).not.toBe('');
      expect(option).toEqual(flag);
      expect(await runCli(['-o', 'json', ...args], env)).toEqual(flag);
    }
    await removeAll();
  });
});

describe('ls --watch', () => {
  it('prints a new listing when a stream comes and goes (not a terminal), and exits 0 on SIGTERM', async () => {
    const [a, b] = [daemon.rangeStart + 6, daemon.rangeStart + 7];
    expect((await runCli(['create', String(a), backend], env)).code).toBe(0);
    const table = Running.start(['ls', '--watch', '--interval', '500ms'], env);
    const json = Running.start(['ls', '-w', '--interval', '500ms', '-o', 'json'], env);
    try {
      await table.until((run) => tableListings(run.stdout).length === 1, 'first table');
      await json.until((run) => jsonListings(run.stdout).length === 1, 'first JSON listing');
      expect(tableListings(table.stdout)).toEqual([[a]]);
      expect(jsonListings(json.stdout)).toEqual([[a]]);

      expect((await runCli(['create', String(b), backend], env)).code).toBe(0);
      await table.until((run) => tableListings(run.stdout).length === 2, 'a table with the new stream');
      await json.until((run) => jsonListings(run.stdout).length === 2, 'a JSON listing with the new stream');
      expect((await runCli(['rm', String(a)], env)).code).toBe(0);
      await table.until((run) => tableListings(run.stdout).length === 3, 'a table without the removed stream');
      await json.until((run) => jsonListings(run.stdout).length === 3, 'a JSON listing without the removed stream');

      table.kill('SIGTERM');
      json.kill('SIGTERM');
      expect(await table.exited).toEqual({ code: 0, signal: null });
      expect(await json.exited).toEqual({ code: 0, signal: null });
      // One listing per change, not per look (the looks were twice a second all along).
      expect(tableListings(table.stdout)).toEqual([[a], [a, b], [b]]);
      expect(jsonListings(json.stdout)).toEqual([[a], [a, b], [b]]);
      expect(table.stdout).not.toMatch(/\u001b/); // no terminal: no screen control, no colour
      expect([table.stderr, json.stderr]).toEqual(['', '']);
    } finally {
      table.kill('SIGKILL');
      json.kill('SIGKILL');
    }
    await removeAll();
  });

  it('exits 3 when the daemon is unreachable at the first look, 1 when it refuses, 2 for a bad interval', async () => {
    const nobody = { CONDUCTOR_URL: `http://127.0.0.1:${await freePortBlock(1)}` };
    const unreachable = await runCli(['ls', '--watch'], nobody);
    expect([unreachable.code, unreachable.stdout]).toEqual([3, '']);
    expect(unreachable.stderr).toMatch(
      /^conductor: daemon not reachable at http:\/\/127\.0\.0\.1:[0-9]+ \(ECONNREFUSED\)/,
    );
    const refused = await runCli(['ls', '--watch'], { ...env, CONDUCTOR_TOKEN: 'wrong-token-0123456789' });
    expect([refused.code, refused.stdout]).toEqual([1, '']);
    expect(refused.stderr).toMatch(/token/i);
    for (const interval of ['100ms', '2h', 'soon', '0'])
      expect(await runCli(['ls', '--watch', '--interval', interval], env)).toMatchObject({ code: 2, stdout: '' });
    expect(await runCli(['ls', '--interval', '1s'], env)).toMatchObject({
      code: 2,
      stdout: '',
      stderr: expect.stringMatching(/--interval goes with --watch/),
    });
  });

  it('says on stderr when the daemon stops answering, keeps trying, and goes on when it is back', async () => {
    const own = await daemons.start({ rangeSize: 2 });
    const port = own.rangeStart;
    const ownEnv = { CONDUCTOR_URL: own.url };
    expect((await runCli(['create', String(port), backend], ownEnv)).code).toBe(0);
    const watch = Running.start(['ls', '--watch', '--interval', '500ms', '-o', 'name'], ownEnv);
    try {
      await watch.until((run) => run.stdout === `${port}\n\n`, 'the first listing');
      await own.stop();
      await watch.until((run) => /still trying/.test(run.stderr), 'the daemon reported gone');
      expect(watch.stderr).toMatch(
        new RegExp(
          `^conductor: daemon not reachable at http://127\\.0\\.0\\.1:${own.apiPort} \\(ECONNREFUSED\\); still trying\\n$`,
        ),
      );
      expect(watch.child.exitCode).toBeNull();
      const again = await daemons.start({
        home: own.home,
        rangeStart: own.rangeStart,
        rangeSize: 2,
        apiPort: own.apiPort,
      });
      await watch.until((run) => /the daemon answers again/.test(run.stderr), 'the daemon reported back');
      expect((await runCli(['rm', String(port)], ownEnv)).code).toBe(0);
      await watch.until((run) => run.stdout === `${port}\n\n\n`, 'the listing without the stream');
      watch.kill('SIGTERM');
      expect(await watch.exited).toEqual({ code: 0, signal: null });
      await again.stop();
    } finally {
      watch.kill('SIGKILL');
    }
  });

  it('draws on the alternate screen of a terminal and gives it back on q', async () => {
    const port = daemon.rangeStart + 9;
    expect((await runCli(['create', String(port), backend], env)).code).toBe(0);
    // script(1) gives the CLI a terminal; what is written to its stdin arrives as keys.
    const tty = new Running(
      spawn('script', ['-qfec', `${process.execPath} ${CLI} ls --watch --interval 500ms`, '/dev/null'], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env, TERM: 'xterm' },
        stdio: ['pipe', 'pipe', 'pipe'],
      }),
    );
    try {
      await tty.until((run) => new RegExp(`\\s${port}\\s`).test(run.stdout), 'the table on the terminal');
      expect(tty.stdout.startsWith('\u001b[?1049h')).toBe(true);
      expect(tty.stdout).toMatch(/conductor ls --watch.*every 500ms; q quits/);
      tty.child.stdin?.write('q');
      expect(await tty.exited).toEqual({ code: 0, signal: null });
      expect(tty.stdout.trimEnd().endsWith('\u001b[?1049l')).toBe(true);
    } finally {
      tty.kill('SIGKILL');
    }
    await removeAll();
  });
});

describe('shell completion of -o', () => {
  it('completes the formats of the command at hand, and finds the command after -o FORMAT', async () => {
    // `conductor` on the PATH, as an installed one would be: the script asks it for the ports.
    const bin = join(await daemons.dir(), 'bin');
    await mkdir(bin);
    await symlink(CLI, join(bin, 'conductor'));
    const complete = async (words: string[]): Promise<string[]> => {
      const script = `source <(conductor completion bash); COMP_WORDS=(${words.map((word) => `'${word}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _conductor; printf '%s\\n' "\${COMPREPLY[@]}"`;
      const { stdout } = await promisify(execFile)('bash', ['-c', script], {
        env: { ...env, PATH: `${bin}:${process.env.PATH ?? ''}` },
      });
      return stdout.split('\n').filter((line) => line !== '');
    };
    expect(await complete(['conductor', 'ls', '-o', ''])).toEqual(['json', 'yaml', 'wide', 'name']);
    expect(await complete(['conductor', 'get', '-o', ''])).toEqual(['json', 'yaml', 'name']);
    expect(await complete(['conductor', 'status', '--output', ''])).toEqual(['json', 'yaml']);
    expect(await complete(['conductor', 'top', '-o', ''])).toEqual(['json']);
    expect(await complete(['conductor', '-o', 'y'])).toEqual(['yaml']);
    expect(await complete(['conductor', '-o', 'json', 'st'])).toEqual(['status']);
    const port = daemon.rangeStart + 2;
    expect((await runCli(['create', String(port), backend], env)).code).toBe(0);
    expect(await complete(['conductor', '-o', 'yaml', 'rm', ''])).toEqual([String(port)]);
    expect(await complete(['conductor', '--output', 'name', 'ls', '--wa'])).toEqual(['--watch']);
    await removeAll();
  });
});
