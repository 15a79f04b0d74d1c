/**
 * Starts the real daemon binary (packages/daemon/dist/main.js) against a real nginx, each in its
 * own temporary home and loopback ports, and stops it again.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DEFAULT_NGINX_INSTANCES } from '../../packages/daemon/src/config/settings.js';
import { requestJson } from './http.js';
import { freePortBlock } from './ports.js';

export const ROOT = resolve(import.meta.dirname, '../..');
export const DAEMON = join(ROOT, 'packages/daemon/bin/conductor-daemon.js');
export const CLI = join(ROOT, 'packages/cli/bin/conductor.cjs');

/** A folder for one test; its name marks it as this run's for the global teardown. */
export function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), `sc-test-${process.env.SC_TEST_RUN ?? 'adhoc'}-`));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export interface DaemonOptions {
  /** Home folder; a new temporary one by default. */
  home?: string;
  /** First port and size of PORT_RANGE. */
  rangeStart?: number;
  rangeSize?: number;
  apiPort?: number;
  env?: Record<string, string>;
  args?: string[];
  /** A hosts file of the test's that the daemon and its nginx see as /etc/hosts (edit it in place). */
  hostsFile?: string;
}

export interface ApiAnswer {
  status: number;
  contentType: string | null;
  text: string;
  json: unknown;
}

export class Daemon {
  private stderr = '';
  private exit: Promise<number | null>;

  constructor(
    readonly child: ChildProcess,
    readonly home: string,
    readonly rangeStart: number,
    readonly rangeEnd: number,
    readonly apiPort: number,
    readonly env: Record<string, string>,
  ) {
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString('utf8');
    });
    this.exit = new Promise((done) => child.once('exit', (code) => done(code)));
  }

  /** https:// when the daemon serves HTTPS (then request() and get() cannot verify it: see tests/helpers/certs.ts). */
  get url(): string {
    return `${this.env.CONDUCTOR_TLS_CERT === undefined ? 'http' : 'https'}://127.0.0.1:${this.apiPort}`;
  }

  get logs(): string {
    return this.stderr;
  }

  get exited(): Promise<number | null> {
    return this.exit;
  }

  async get(path: string, headers: Record<string, string> = {}): Promise<ApiAnswer> {
    return this.request('GET', path, undefined, headers);
  }

  async request(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<ApiAnswer> {
    const { status, headers: answered, text, json } = await requestJson(`${this.url}${path}`, method, body, headers);
    return { status, contentType: answered.get('content-type'), text, json };
  }

  /** Stops the daemon with `signal` and resolves with its exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exit;
  }
}

/**
 * Resolves once `child` has written text matching `pattern` (stdout and stderr together); rejects
 * when it exits first or `timeoutMs` passes. Waits on the output itself, not on a polling timer.
 */
export function untilOutput(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<void> {
  let output = '';
  return new Promise<void>((resolve, reject) => {
    const done = (error?: Error): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
      if (error) reject(error);
      else resolve();
    };
    const onData = (chunk: Buffer): void => {
      output += chunk.toString('utf8');
      if (pattern.test(output)) done();
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
      done(new Error(`exited (${signal ?? code}) before writing ${pattern}:\n${output}`));
    const timer = setTimeout(
      () => done(new Error(`did not write ${pattern} within ${timeoutMs} ms:\n${output}`)),
      timeoutMs,
    );
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
    if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode);
  });
}

/** Waits for the daemon's "ready" log line (written once its API listens), then checks /status. */
async function waitReady(daemon: Daemon, timeoutMs: number): Promise<void> {
  try {
    await untilOutput(daemon.child, /"msg":"ready"/, timeoutMs);
  } catch (error) {
    throw new Error(`daemon not ready: ${(error as Error).message}`);
  }
  // An HTTPS daemon's certificate is the test's to check (its CA is not the system's).
  if (daemon.env.CONDUCTOR_TLS_CERT !== undefined) return;
  const answer = await daemon.get('/status');
  if (answer.status !== 200) throw new Error(`daemon ready but /status answered ${answer.status}:\n${daemon.logs}`);
}

/** The environment a test daemon runs with: its own home and ports, loopback only. */
export function daemonEnv(
  home: string,
  rangeStart: number,
  rangeSize: number,
  apiPort: number,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    CONDUCTOR_HOME: home,
    PORT_RANGE: `${rangeStart}-${rangeStart + rangeSize - 1}`,
    BIND_ADDRESS: '127.0.0.1',
    BIND_PORT: String(apiPort),
    CONDUCTOR_LISTEN_ADDRESS: '127.0.0.1',
    ...extra,
  };
}

/**
 * The command line that runs `command` with a resolver of its own. Tests refuse backends whose
 * names do not resolve (`*.invalid`); nginx asks the system resolver for them, which would send
 * DNS queries off this machine. As root, the daemon and its nginx therefore run in a private
 * mount namespace whose /etc/resolv.conf names 127.0.0.1, where nothing answers: every lookup
 * that /etc/hosts cannot answer fails at once, on loopback. The rest of the host is unchanged.
 */
export function withLocalResolver(command: string, args: string[], hostsFile?: string): [string, string[]] {
  if (process.getuid?.() !== 0 || !existsSync('/usr/bin/unshare')) {
    if (hostsFile !== undefined) throw new Error('a hosts file of its own needs root and unshare');
    return [command, args];
  }
  const resolv = join(tmpdir(), `sc-test-resolv-${process.pid}.conf`);
  if (!existsSync(resolv)) writeFileSync(resolv, 'nameserver 127.0.0.1\noptions attempts:1 timeout:1\n');
  const hosts = hostsFile === undefined ? '' : ' && mount --bind "$1" /etc/hosts';
  return [
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      'sh',
      '-c',
      `mount --bind "$0" /etc/resolv.conf${hosts} && shift && exec "$@"`,
      resolv,
      hostsFile ?? '-',
      command,
      ...args,
    ],
  ];
}

export function spawnDaemon(env: Record<string, string>, args: string[] = [], hostsFile?: string): ChildProcess {
  const [command, argv] = withLocalResolver(process.execPath, [DAEMON, ...args], hostsFile);
  return spawn(command, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Starts a daemon and waits until its API answers. */
export async function startDaemon(options: DaemonOptions = {}): Promise<Daemon> {
  const rangeSize = options.rangeSize ?? 10;
  const base = options.rangeStart ?? (await freePortBlock(rangeSize + 1));
  const apiPort = options.apiPort ?? base + rangeSize;
  const home = options.home ?? join(await tempDir(), 'home');
  const env = daemonEnv(home, base, rangeSize, apiPort, options.env);
  const daemon = new Daemon(
    spawnDaemon(env, options.args, options.hostsFile),
    home,
    base,
    base + rangeSize - 1,
    apiPort,
    env,
  );
  await waitReady(daemon, 30_000);
  return daemon;
}

/** Runs the daemon binary expecting it to refuse to start; resolves with its exit code and stderr. */
export async function runDaemonExpectingExit(
  env: Record<string, string>,
  args: string[] = [],
  timeoutMs = 20_000,
): Promise<{ code: number | null; stderr: string; stdout: string }> {
  const child = spawnDaemon(env, args);
  let stderr = '';
  let stdout = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((done) => child.once('exit', (exitCode) => done(exitCode)));
  clearTimeout(timer);
  return { code, stderr, stdout };
}

/** How many nginx masters a managed daemon runs: CONDUCTOR_NGINX_INSTANCES (or its default), at most one per port. */
export function instanceCount(daemon: Daemon): number {
  const wanted = Number(daemon.env.CONDUCTOR_NGINX_INSTANCES ?? DEFAULT_NGINX_INSTANCES);
  return Math.min(wanted, daemon.rangeEnd - daemon.rangeStart + 1);
}

/**
 * The folder of the managed nginx master that serves `port`: the one whose stream file holds the
 * port (the daemon places a new stream on the master that can take it soonest).
 */
export async function nginxDirFor(daemon: Daemon, port: number): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  for (let id = 0; id < instanceCount(daemon); id += 1) {
    const bundle = await readFile(join(daemon.home, 'stream.d', String(id), '_conductor_streams.conf'), 'utf8').catch(
      () => '',
    );
    if (bundle.includes(`\n# stream-conductor: port ${port} `)) return join(daemon.home, 'nginx', String(id));
  }
  throw new Error(`no nginx master serves port ${port}`);
}

/** The pid of the managed nginx master that serves `port`. */
export async function masterPidFor(daemon: Daemon, port: number): Promise<number> {
  const { readFile } = await import('node:fs/promises');
  return Number((await readFile(join(await nginxDirFor(daemon, port), 'nginx.pid'), 'utf8')).trim());
}

/** The pids of every managed nginx master of the daemon. */
export async function masterPids(daemon: Daemon): Promise<number[]> {
  const { readFile } = await import('node:fs/promises');
  const pids: number[] = [];
  for (let id = 0; id < instanceCount(daemon); id += 1) {
    pids.push(Number((await readFile(join(daemon.home, 'nginx', String(id), 'nginx.pid'), 'utf8')).trim()));
  }
  return pids;
}
