// @ts-check
/**
 * Shared pieces of the benchmarks: a daemon or a scratch nginx on loopback, an echo backend,
 * HTTP calls, timings and the Markdown they are reported in. Every benchmark runs on 127.0.0.1
 * only, with bounded loops, and cleans up what it started.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { connect, createServer } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { DEFAULT_NGINX_INSTANCES } from '../packages/daemon/dist/config/settings.js';

export const ROOT = resolve(import.meta.dirname, '..');
export const DAEMON = join(ROOT, 'packages/daemon/bin/conductor-daemon.js');
export const CLI = join(ROOT, 'packages/cli/bin/conductor.cjs');
export const sleep = (/** @type {number} */ ms) => new Promise((done) => setTimeout(done, ms));

/** @param {number[]} values */
export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? /** @type {number} */ (sorted[mid]) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** @param {number[]} values @param {number} p */
export function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? 0;
}

export const ms = (/** @type {number} */ value) => `${value.toFixed(1)} ms`;
export const now = () => Number(process.hrtime.bigint()) / 1e6;

/** @param {number} port @param {string} host */
function bindable(port, host) {
  return new Promise((done) => {
    const server = createServer();
    server.once('error', () => done(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => done(true)));
  });
}

/** A block of free ports below the kernel's range for outgoing connections. @param {number} size */
export async function freeBlock(size) {
  for (let attempt = 0; attempt < 200; attempt += 1) {
    const base = 10000 + Math.floor(Math.random() * (22000 - size));
    let free = true;
    for (let port = base; port < base + size && free; port += 1)
      free = (await bindable(port, '0.0.0.0')) && (await bindable(port, '127.0.0.1'));
    if (free) return base;
  }
  throw new Error(`no free block of ${size} ports`);
}

/** A TCP echo backend on 127.0.0.1. */
export async function echoBackend() {
  const server = createServer((socket) => {
    socket.on('data', (chunk) => socket.write(chunk));
    socket.on('error', () => socket.destroy());
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', () => done(undefined)));
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());
  return { port: address.port, close: () => new Promise((done) => server.close(() => done(undefined))) };
}

/** Sends one byte through `port` and waits for it to come back; rejects on refusal. @param {number} port */
export function firstByte(port) {
  return new Promise((done, fail) => {
    const socket = connect({ port, host: '127.0.0.1' });
    socket.on('connect', () => socket.write('x'));
    socket.on('data', () => {
      socket.destroy();
      done(undefined);
    });
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('closed')));
  });
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

/** @param {string} method @param {string} url @param {unknown} [body] @returns {Promise<{status: number, json: any}>} */
export function call(method, url, body) {
  return new Promise((done, fail) => {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const request = http.request(
      url,
      {
        method,
        agent,
        headers: text ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } : {},
      },
      (response) => {
        const chunks = /** @type {Buffer[]} */ ([]);
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('end', () => {
          const raw = Buffer.concat(chunks).toString();
          let json;
          try {
            json = JSON.parse(raw);
          } catch {
            json = raw;
          }
          done({ status: response.statusCode ?? 0, json });
        });
      },
    );
    request.on('error', fail);
    request.end(text);
  });
}

/**
 * Starts the daemon binary, on a free block of ports, or on `base` (the range) and `apiPort`.
 * @param {{ rangeSize: number, env?: Record<string, string>, mode?: 'managed' | 'external', base?: number, apiPort?: number }} options
 */
export async function startDaemon(options) {
  const dir = await mkdtemp(join(tmpdir(), 'sc-bench-'));
  const base = options.base ?? (await freeBlock(options.rangeSize + 1));
  const apiPort = options.apiPort ?? base + options.rangeSize;
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    CONDUCTOR_HOME: join(dir, 'home'),
    PORT_RANGE: `${base}-${base + options.rangeSize - 1}`,
    BIND_ADDRESS: '127.0.0.1',
    BIND_PORT: String(apiPort),
    CONDUCTOR_LISTEN_ADDRESS: '127.0.0.1',
    CONDUCTOR_LOG_LEVEL: 'warn',
    ...options.env,
  };
  // Run as installed (its shebang sets the daemon's V8 flags), or under node with extra flags.
  const extra = process.env.BENCH_NODE_ARGS ? process.env.BENCH_NODE_ARGS.split(' ') : [];
  const child =
    extra.length > 0
      ? spawn(process.execPath, [...extra, DAEMON], { env, stdio: ['ignore', 'ignore', 'pipe'] })
      : spawn(DAEMON, [], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (chunk) => {
    log += chunk.toString();
    if (process.env.BENCH_DAEMON_LOG) process.stderr.write(chunk); // the daemon's log lines, to look into a run
  });
  const url = `http://127.0.0.1:${apiPort}`;
  for (let i = 0; ; i += 1) {
    if (child.exitCode !== null) throw new Error(`daemon exited: ${log}`);
    try {
      if ((await call('GET', `${url}/status`)).status === 200) break;
    } catch {
      // not yet
    }
    if (i > 600) throw new Error(`daemon not ready: ${log}`);
    await sleep(50);
  }
  return {
    url,
    base,
    dir,
    env,
    child,
    log: () => log,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((done) => child.once('exit', done));
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** How many nginx masters a managed daemon runs by default. */
export function defaultMasters() {
  return DEFAULT_NGINX_INSTANCES;
}

/** Resident memory of a process and its descendants, in MiB. @param {number} pid */
export async function rssMiB(pid) {
  const one = async (/** @type {number} */ p) => {
    const status = await readFile(`/proc/${p}/status`, 'utf8').catch(() => '');
    return Number(/VmRSS:\s+([0-9]+)/.exec(status)?.[1] ?? 0) / 1024;
  };
  return one(pid);
}

/** The pids of every process whose command line mentions `marker` (nginx masters and workers of a home). @param {string} marker */
export async function pidsOf(marker) {
  const { readdir, readlink } = await import('node:fs/promises');
  const found = [];
  for (const entry of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    const command = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (command.includes(marker)) {
      found.push(Number(entry));
      continue;
    }
    if (!command.startsWith('nginx: worker')) continue;
    for (const fd of await readdir(`/proc/${entry}/fd`).catch(() => /** @type {string[]} */ ([]))) {
      if ((await readlink(`/proc/${entry}/fd/${fd}`).catch(() => '')).includes(marker)) {
        found.push(Number(entry));
        break;
      }
    }
  }
  return found;
}

/**
 * A scratch nginx for measuring nginx's own floor: one master, its own folder, a stream include.
 * @param {number} workerConnections
 */
export async function scratchNginx(workerConnections = 4096) {
  const dir = await mkdtemp(join(tmpdir(), 'sc-bench-nginx-'));
  await mkdir(join(dir, 'stream.d'));
  const dynamic = /--with-stream=dynamic/.test(execFileSync('sh', ['-c', 'nginx -V 2>&1'], { encoding: 'utf8' }));
  const conf = [
    'daemon off;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log warn;`,
    `worker_rlimit_nofile ${workerConnections * 2};`,
    dynamic ? 'load_module /usr/lib/nginx/modules/ngx_stream_module.so;' : '',
    `events { worker_connections ${workerConnections}; }`,
    `stream { include ${dir}/stream.d/*.conf; }`,
    '',
  ].join('\n');
  await writeFile(join(dir, 'nginx.conf'), conf);
  const child = spawn('nginx', ['-c', join(dir, 'nginx.conf'), '-p', `${dir}/`, '-e', join(dir, 'error.log')], {
    stdio: 'ignore',
  });
  for (let i = 0; i < 100; i += 1) {
    const pid = await readFile(join(dir, 'nginx.pid'), 'utf8').catch(() => '');
    if (pid.trim() !== '') break;
    await sleep(20);
  }
  return {
    dir,
    pid: /** @type {number} */ (child.pid),
    reload: () => child.kill('SIGHUP'),
    async stop() {
      child.kill('SIGTERM');
      await new Promise((done) => child.once('exit', done));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export function machine() {
  const version = (/** @type {string} */ command, /** @type {string[]} */ args) => {
    try {
      return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
        .trim()
        .split('\n')[0];
    } catch (error) {
      const text = String(/** @type {{stderr?: string}} */ (error).stderr ?? '')
        .trim()
        .split('\n')[0];
      return text || 'not found';
    }
  };
  return {
    cpus: `${cpus().length} × ${cpus()[0]?.model ?? 'unknown'}`,
    memory: `${Math.round(totalmem() / 2 ** 30)} GiB`,
    node: process.version,
    nginx: execFileSync('sh', ['-c', 'nginx -v 2>&1'], { encoding: 'utf8' }).trim(),
    kernel: version('uname', ['-r']),
  };
}

/**
 * One etcd member (Debian's etcd-server) on free loopback ports, its data in a temporary folder.
 * @returns {Promise<{ endpoint: string, stop(): Promise<void> }>}
 */
export async function startEtcd() {
  const dir = await mkdtemp(join(tmpdir(), 'sc-bench-etcd-'));
  const base = await freeBlock(2);
  const child = spawn(
    'etcd',
    [
      '--name',
      'm0',
      '--data-dir',
      join(dir, 'data'),
      '--listen-client-urls',
      `http://127.0.0.1:${base}`,
      '--advertise-client-urls',
      `http://127.0.0.1:${base}`,
      '--listen-peer-urls',
      `http://127.0.0.1:${base + 1}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${base + 1}`,
      '--initial-cluster',
      `m0=http://127.0.0.1:${base + 1}`,
      '--logger',
      'zap',
      '--log-level',
      'error',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr.on('data', (chunk) => (log += chunk.toString()));
  for (let i = 0; ; i += 1) {
    if (child.exitCode !== null) throw new Error(`etcd exited: ${log}`);
    try {
      if ((await call('GET', `http://127.0.0.1:${base}/health`)).json?.health === 'true') break;
    } catch {
      // not yet
    }
    if (i > 400) throw new Error(`etcd not ready: ${log}`);
    await sleep(50);
  }
  return {
    endpoint: `127.0.0.1:${base}`,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((done) => child.once('exit', done));
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
