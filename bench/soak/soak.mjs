// @ts-check
/**
 * stream-conductor soak test: one real daemon (managed mode, its own nginx masters), a full port
 * range, and many concurrent clients hammering the legacy API for several phases. After every
 * phase, with all clients idle, every view of the state must agree with what the acknowledged
 * answers imply, bytes must flow through live ports, no answer may be a 5xx, and the daemon's
 * memory and open file descriptors must stay flat from phase 2 on.
 *
 * Not part of `npm test`: run `npm run build`, then `npm run soak -- --help`.
 *
 * Why clients mutate disjoint slices of ports: each of the daemon's nginx masters applies the
 * requests that reach it during a reload together in one batch and answers them all when the
 * batch is done, so two acknowledged
 * mutations of the same port from two clients can complete in either order on the wire; their
 * completion times say nothing about the order the daemon applied them in. Each client therefore
 * owns the ports p with (p - start) % clients == its index, issues one request at a time, and is
 * the only one to mutate them, which makes the expected state of every port exact, and the answer
 * to every create and remove predictable. Same-port races are still exercised, deterministically:
 * a "race" operation sends 4 identical creates (or removes) of one owned port at once, of which
 * exactly one must win. Reads (getstreams, getfreeport, hasstream) are global, and are checked
 * against every port whose state could not change while the read was in flight.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdtemp, open, readFile, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import { connect, createServer } from 'node:net';
import { cpus, release, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

const ROOT = resolve(import.meta.dirname, '../..');
const DAEMON = join(ROOT, 'packages/daemon/bin/conductor-daemon.js');
const PREFIX = '_conductor_';
const FREE = -1;
const UNKNOWN = -2;
const RACE = 4;
const MAX_DETAILS = 200;

// ---------------------------------------------------------------------------------------------
// Flags

const USAGE = `usage: node bench/soak/soak.mjs [options]   (or: npm run soak -- [options])

  --phases N            phases (default 5)
  --ops N               HTTP requests per phase (default 6000)
  --ports N             size of PORT_RANGE (default 1000; the range is a free block below 32768)
  --clients N           concurrent clients (default 64)
  --deadline MIN        global deadline in minutes (default 15); reaching it fails the run
  --sample N            live ports whose bytes are checked after each phase (default 50)
  --seed N              seed of the operation mix (default: random, printed in the report)
  --base PORT           first port of the range (default: a free block found at random)
  --request-timeout S   per-request timeout in seconds (default 60)
  --rss-tolerance PCT   allowed daemon RSS growth from phase 2 to the last phase (default 20)
  --fd-tolerance N      allowed daemon fd growth from phase 2 to the last phase (default 10)
  --raw-rss             measure the daemon's RSS as it is, without forcing a full GC first
                        (by default the daemon runs with --inspect on a loopback port of the
                        checked block, and the soak asks V8 for a full GC before each measurement)
  --keep-home           keep the temporary home (daemon.log, stream files) when the run fails
  --help                this text

The Markdown report goes to stdout, progress to stderr. Exit status: 0 all checks passed,
1 a check failed (invariant, 5xx, growth, deadline), 2 the soak could not run.`;

/** @typedef {{ phases: number, ops: number, ports: number, clients: number, deadlineMin: number, sample: number, seed: number, base: number | undefined, requestTimeoutMs: number, rssTolerancePct: number, fdTolerance: number, keepHome: boolean, rawRss: boolean }} Options */

/** @returns {Options} */
function readOptions() {
  const { values } = parseArgs({
    options: {
      phases: { type: 'string' },
      ops: { type: 'string' },
      ports: { type: 'string' },
      clients: { type: 'string' },
      deadline: { type: 'string' },
      sample: { type: 'string' },
      seed: { type: 'string' },
      base: { type: 'string' },
      'request-timeout': { type: 'string' },
      'rss-tolerance': { type: 'string' },
      'fd-tolerance': { type: 'string' },
      'keep-home': { type: 'boolean' },
      'raw-rss': { type: 'boolean' },
      help: { type: 'boolean' },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  /**
   * @param {string} name
   * @param {string | undefined} text
   * @param {number} fallback
   * @param {number} min
   * @param {number} max
   */
  const num = (name, text, fallback, min, max) => {
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || value < min || value > max) throw new UsageError(`--${name} must be a number from ${min} to ${max}, got ${JSON.stringify(text)}`);
    return value;
  };
  const ports = Math.floor(num('ports', values.ports, 1000, 1, 22000));
  const base = values.base === undefined ? undefined : Math.floor(num('base', values.base, 0, 1024, 32767));
  if (base !== undefined && base + ports + 1 > 32767) throw new UsageError(`--base ${base} with --ports ${ports} reaches ${base + ports + 1} (the API and inspector ports follow the range): everything must stay below 32768`);
  return {
    phases: Math.floor(num('phases', values.phases, 5, 1, 1000)),
    ops: Math.floor(num('ops', values.ops, 6000, 1, 10_000_000)),
    ports,
    clients: Math.floor(num('clients', values.clients, 64, 1, 1024)),
    deadlineMin: num('deadline', values.deadline, 15, 0.1, 24 * 60),
    sample: Math.floor(num('sample', values.sample, 50, 0, 100_000)),
    seed: Math.floor(num('seed', values.seed, Math.floor(Math.random() * 2 ** 31), 0, 2 ** 32 - 1)),
    base,
    requestTimeoutMs: num('request-timeout', values['request-timeout'], 60, 1, 3600) * 1000,
    rssTolerancePct: num('rss-tolerance', values['rss-tolerance'], 20, 0, 10_000),
    fdTolerance: Math.floor(num('fd-tolerance', values['fd-tolerance'], 10, 0, 100_000)),
    keepHome: values['keep-home'] === true,
    rawRss: values['raw-rss'] === true,
  };
}

class UsageError extends Error {}

// ---------------------------------------------------------------------------------------------
// Small helpers

/** @param {number} ms */
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** @param {string} text */
const progress = (text) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${text}\n`);

/** Seeded PRNG (mulberry32): the operation mix is reproducible with --seed, timing is not. */
/** @param {number} seed */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * @template T
 * @param {() => number} random
 * @param {T[]} items
 * @returns {T}
 */
function pick(random, items) {
  return /** @type {T} */ (items[Math.floor(random() * items.length)]);
}

/**
 * Nearest-rank percentile of an ascending array.
 * @param {number[]} sorted
 * @param {number} p
 */
function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return /** @type {number} */ (sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]);
}

/** @param {number} ms */
const wall = (ms) => new Date(performance.timeOrigin + ms).toISOString();

/** @param {number[]} ports */
function portList(ports, max = 20) {
  const sorted = [...ports].sort((a, b) => a - b);
  return sorted.length <= max ? sorted.join(', ') : `${sorted.slice(0, max).join(', ')} ... (${sorted.length} in all)`;
}

/** @param {number} n */
const fmt = (n, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

// ---------------------------------------------------------------------------------------------
// Ports, backends, traffic

/**
 * @param {number} port
 * @param {string} host
 * @returns {Promise<boolean>}
 */
function bindable(port, host) {
  return new Promise((done) => {
    const server = createServer();
    server.once('error', () => done(false));
    server.listen({ port, host, exclusive: true }, () => server.close(() => done(true)));
  });
}

/**
 * A block of `size` consecutive free ports below 32768 (the kernel's outgoing range starts there
 * on this host), checked on the IPv4 wildcard and on loopback.
 * @param {number} size
 * @param {number | undefined} base
 */
async function freePortBlock(size, base) {
  const low = size <= 12_000 ? 20_000 : 1024;
  for (let attempt = 0; attempt < (base === undefined ? 50 : 1); attempt += 1) {
    const start = base ?? low + Math.floor(Math.random() * (32_767 - size - low));
    let free = true;
    for (let port = start; port < start + size && free; port += 1) free = (await bindable(port, '0.0.0.0')) && (await bindable(port, '127.0.0.1'));
    if (free) return start;
  }
  throw new Error(base === undefined ? `no free block of ${size} ports below 32768 found` : `ports ${base}-${base + size - 1} are not all free`);
}

/** A TCP backend that answers every chunk with `<name>:<chunk>`. */
class EchoBackend {
  /** @param {string} name */
  constructor(name) {
    this.name = name;
    /** @type {Set<import('node:net').Socket>} */
    this.sockets = new Set();
    this.server = createServer((socket) => {
      this.sockets.add(socket);
      socket.on('data', (chunk) => socket.write(`${name}:${chunk.toString('utf8')}`));
      socket.on('error', () => socket.destroy());
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  /** @param {string} name */
  static async start(name) {
    const backend = new EchoBackend(name);
    await new Promise((done, fail) => {
      backend.server.once('error', fail);
      backend.server.listen({ port: 0, host: '127.0.0.1' }, () => done(undefined));
    });
    return backend;
  }

  get port() {
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('backend not listening');
    return address.port;
  }

  get address() {
    return `127.0.0.1:${this.port}`;
  }

  /** @returns {Promise<void>} */
  close() {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((done) => this.server.close(() => done()));
  }
}

/**
 * Sends `payload` to `port` and resolves with the whole answer (`expectLength` characters).
 * @param {number} port
 * @param {string} payload
 * @param {number} expectLength
 * @returns {Promise<string>}
 */
function roundTrip(port, payload, expectLength, timeoutMs = 3000) {
  return new Promise((done, fail) => {
    const socket = connect({ port, host: '127.0.0.1' });
    let answer = '';
    const timer = setTimeout(() => {
      socket.destroy();
      fail(new Error(`no full answer within ${timeoutMs} ms (got ${JSON.stringify(answer)})`));
    }, timeoutMs);
    socket.on('connect', () => socket.write(payload));
    socket.on('data', (chunk) => {
      answer += chunk.toString('utf8');
      if (answer.length >= expectLength) {
        clearTimeout(timer);
        socket.destroy();
        done(answer);
      }
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      fail(error);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      if (answer.length < expectLength) fail(new Error(`connection closed after ${JSON.stringify(answer)}`));
    });
  });
}

/**
 * 'refused' when nothing listens on the port, 'open' when a connection is accepted.
 * @param {number} port
 * @returns {Promise<string>}
 */
function connectOutcome(port, timeoutMs = 3000) {
  return new Promise((done) => {
    const socket = connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => {
      socket.destroy();
      done('timeout');
    }, timeoutMs);
    socket.on('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      done('open');
    });
    socket.on('error', (/** @type {NodeJS.ErrnoException} */ error) => {
      clearTimeout(timer);
      done(error.code === 'ECONNREFUSED' ? 'refused' : `error ${error.code ?? error.message}`);
    });
  });
}

/** The TCP ports in LISTEN state, any address, from /proc/net/tcp and /proc/net/tcp6. */
async function listeningPorts() {
  /** @type {Set<number>} */
  const ports = new Set();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[3] === '0A') ports.add(Number.parseInt((fields[1] ?? '').split(':')[1] ?? '0', 16));
    }
  }
  return ports;
}

// ---------------------------------------------------------------------------------------------
// Processes

/** @param {number} pid */
async function rssKiB(pid) {
  try {
    const match = /VmRSS:\s+([0-9]+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}

/** @param {number} pid */
async function fdCount(pid) {
  try {
    return (await readdir(`/proc/${pid}/fd`)).length;
  } catch {
    return NaN;
  }
}

/** @param {string} text */
const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The nginx processes of this soak's home: the masters whose command line names one of its
 * `nginx/<n>/nginx.conf` (managed mode runs one master per slice of the port range), and their
 * children (the workers, old generations still shutting down included).
 * @param {string} home
 */
async function nginxProcesses(home) {
  const conf = new RegExp(` -c ${escapeRegExp(join(home, 'nginx'))}/[0-9]+/nginx\\.conf( |$)`);
  /** @type {Array<{ pid: number, ppid: number, cmd: string }>} */
  const all = [];
  for (const entry of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const cmd = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).replace(/\0+$/, '').replace(/\0/g, ' ');
      all.push({ pid: Number(entry), ppid, cmd });
    } catch {
      // gone meanwhile
    }
  }
  const masters = all.filter((p) => p.cmd.startsWith('nginx: master process') && conf.test(p.cmd)).map((p) => p.pid);
  const workers = all.filter((p) => masters.includes(p.ppid)).map((p) => p.pid);
  return { masters, workers };
}

// ---------------------------------------------------------------------------------------------
// The daemon's home

/**
 * A folder holding one numbered folder per nginx master (`stream.d/` and `nginx/` in managed
 * mode): the numbers, sorted, and the names of everything else in it.
 * @param {string} dir
 */
async function perMasterFolders(dir) {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => /** @type {import('node:fs').Dirent[]} */ ([]));
  /** @type {number[]} */
  const ids = [];
  /** @type {string[]} */
  const others = [];
  for (const entry of entries) {
    if (entry.isDirectory() && /^[0-9]+$/.test(entry.name)) ids.push(Number(entry.name));
    else others.push(entry.name);
  }
  return { ids: ids.sort((a, b) => a - b), others };
}

/**
 * What one stream's text tells nginx, read whatever its layout (comments, an
 * upstream block, buffer and access_log lines): how many `server {}` blocks it has, the listen
 * directives of the first one, where it proxies to (the address of `proxy_pass`, or the `server`
 * addresses of the upstream block it names, joined with ", "), and its access log.
 * @param {string} text
 * @returns {{ servers: number, listens: string[], backend: string | undefined, accessLog: string | undefined }}
 */
function parseStreamFile(text) {
  const body = text
    .split('\n')
    .filter((line) => !/^\s*#/.test(line))
    .join('\n');
  /** @type {Map<string, string[]>} */
  const upstreams = new Map();
  for (const match of body.matchAll(/(?:^|[;}\s])upstream\s+([^\s{]+)\s*\{([^{}]*)\}/g)) {
    upstreams.set(match[1] ?? '', [...(match[2] ?? '').matchAll(/(?:^|[;\s])server\s+([^\s;]+)[^;]*;/g)].map((server) => server[1] ?? ''));
  }
  const servers = [...body.matchAll(/(?:^|[;}\s])server\s*\{([^{}]*)\}/g)].map((match) => match[1] ?? '');
  const server = servers[0] ?? '';
  /** @param {string} name */
  const directive = (name) => [...server.matchAll(new RegExp(`(?:^|[;\\s])${name}\\s+([^;]*);`, 'g'))].map((match) => (match[1] ?? '').trim());
  const target = directive('proxy_pass')[0];
  return {
    servers: servers.length,
    listens: directive('listen'),
    backend: target === undefined ? undefined : (upstreams.get(target)?.join(', ') ?? target),
    accessLog: directive('access_log')[0]?.split(/\s+/)[0],
  };
}

/**
 * The files the daemon keeps in its home in managed mode, besides the temporary `.tmp-*` ones
 * of an atomic write (checked on their own) and the soak's daemon.log.
 * @param {string} where `home`, `nginx/<n>` or `stream.d/<n>`
 * @param {string} name
 */
function expectedInHome(where, name) {
  if (where === 'home') return ['daemon.log', 'daemon.pid', 'streams.json', 'audit.log', 'audit.log.1', 'nginx', 'stream.d'].includes(name);
  if (where === 'nginx/<n>') return ['nginx.conf', 'nginx.pid', 'error.log', 'access.log'].includes(name) || /^access\.log\.[0-9]+$/.test(name);
  return name === `${PREFIX}streams.conf`;
}

// ---------------------------------------------------------------------------------------------
// The daemon's V8, through its inspector: a full GC before measuring memory

/**
 * Just enough of a WebSocket client (RFC 6455: masked text frames out, unmasked frames in) to
 * speak the inspector protocol; Node 20 has no WebSocket client of its own.
 */
class Inspector {
  /** @param {import('node:net').Socket} socket */
  constructor(socket) {
    this.socket = socket;
    this.nextId = 1;
    /** @type {Map<number, { done: (value: Record<string, unknown>) => void, fail: (error: Error) => void }>} */
    this.pending = new Map();
    this.buffer = Buffer.alloc(0);
    /** @type {Buffer[]} */
    this.fragments = [];
    socket.on('data', (chunk) => this.onData(chunk));
    const failAll = (/** @type {Error} */ error) => {
      for (const { fail } of this.pending.values()) fail(error);
      this.pending.clear();
    };
    socket.on('error', failAll);
    socket.on('close', () => failAll(new Error('inspector connection closed')));
  }

  /** @param {number} port */
  static async connect(port) {
    const list = await get(undefined, port, '/json/list', 5000);
    const target = Array.isArray(list.json) ? /** @type {{ webSocketDebuggerUrl?: string }} */ (list.json[0] ?? {}) : {};
    if (!target.webSocketDebuggerUrl) throw new Error(`no inspector target on port ${port}: ${list.error ?? list.text.slice(0, 200)}`);
    const path = new URL(target.webSocketDebuggerUrl).pathname;
    const socket = connect({ port, host: '127.0.0.1' });
    const key = randomBytes(16).toString('base64');
    const rest = await new Promise(
      /** @param {(rest: Buffer) => void} done @param {(error: Error) => void} fail */
      (done, fail) => {
        let head = Buffer.alloc(0);
        const timer = setTimeout(() => fail(new Error('inspector handshake timed out')), 5000);
        /** @param {Buffer} chunk */
        const onData = (chunk) => {
          head = Buffer.concat([head, chunk]);
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) return;
          clearTimeout(timer);
          socket.off('data', onData);
          const status = head.subarray(0, end).toString('latin1').split('\r\n')[0] ?? '';
          if (!/^HTTP\/1\.1 101/.test(status)) fail(new Error(`inspector refused the upgrade: ${status}`));
          else done(head.subarray(end + 4));
        };
        socket.on('data', onData);
        socket.once('error', (error) => {
          clearTimeout(timer);
          fail(error);
        });
        socket.once('connect', () =>
          socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`),
        );
      },
    );
    const inspector = new Inspector(socket);
    if (rest.length > 0) inspector.onData(rest);
    return inspector;
  }

  /** @param {Buffer} chunk */
  onData(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (this.buffer.length < 2) return;
      const first = /** @type {number} */ (this.buffer[0]);
      const second = /** @type {number} */ (this.buffer[1]);
      let length = second & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (this.buffer.length < 4) return;
        length = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (this.buffer.length < 10) return;
        length = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (second & 0x80) offset += 4; // a server never masks; skip the key if one did
      if (this.buffer.length < offset + length) return;
      const payload = this.buffer.subarray(offset, offset + length);
      this.buffer = this.buffer.subarray(offset + length);
      const opcode = first & 0x0f;
      if (opcode === 0x8) {
        this.socket.destroy();
        return;
      }
      if (opcode !== 0x0 && opcode !== 0x1) continue; // ping/pong/binary: not used by the inspector
      this.fragments.push(Buffer.from(payload));
      if ((first & 0x80) === 0) continue;
      const text = Buffer.concat(this.fragments).toString('utf8');
      this.fragments = [];
      /** @type {{ id?: number, result?: Record<string, unknown>, error?: { message?: string } }} */
      let message;
      try {
        message = JSON.parse(text);
      } catch {
        continue;
      }
      const waiting = message.id === undefined ? undefined : this.pending.get(message.id);
      if (!waiting || message.id === undefined) continue;
      this.pending.delete(message.id);
      if (message.error) waiting.fail(new Error(`inspector: ${message.error.message ?? JSON.stringify(message.error)}`));
      else waiting.done(message.result ?? {});
    }
  }

  /**
   * @param {string} method
   * @param {Record<string, unknown>} [params]
   * @returns {Promise<Record<string, unknown>>}
   */
  call(method, params = {}) {
    const id = this.nextId++;
    const payload = Buffer.from(JSON.stringify({ id, method, params }), 'utf8');
    const mask = randomBytes(4);
    const header =
      payload.length < 126
        ? Buffer.from([0x81, 0x80 | payload.length])
        : payload.length < 65_536
          ? Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff])
          : (() => {
              const big = Buffer.alloc(10);
              big[0] = 0x81;
              big[1] = 0x80 | 127;
              big.writeBigUInt64BE(BigInt(payload.length), 2);
              return big;
            })();
    for (let i = 0; i < payload.length; i += 1) payload[i] = /** @type {number} */ (payload[i]) ^ /** @type {number} */ (mask[i % 4]);
    return new Promise((done, fail) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        fail(new Error(`inspector: ${method} timed out`));
      }, 30_000);
      this.pending.set(id, {
        done: (value) => {
          clearTimeout(timer);
          done(value);
        },
        fail: (error) => {
          clearTimeout(timer);
          fail(error);
        },
      });
      this.socket.write(Buffer.concat([header, mask, payload]));
    });
  }

  close() {
    this.socket.destroy();
  }
}

/**
 * The daemon's memory. With an inspector port, V8 first runs a full, memory-reducing GC
 * (HeapProfiler.collectGarbage, i.e. a low-memory notification), so that RSS reflects what the
 * daemon holds rather than when V8 last collected; JS heap used is read after it.
 * @param {Daemon} daemon
 * @returns {Promise<{ rssKiB: number, heapUsedKiB: number }>}
 */
async function daemonMemory(daemon) {
  let heapUsedKiB = NaN;
  if (daemon.inspectPort !== undefined) {
    const inspector = await Inspector.connect(daemon.inspectPort);
    try {
      await inspector.call('HeapProfiler.collectGarbage');
      const usage = await inspector.call('Runtime.getHeapUsage');
      heapUsedKiB = Number(usage.usedSize) / 1024;
    } finally {
      inspector.close();
    }
    await sleep(300);
  }
  return { rssKiB: await rssKiB(daemon.pid), heapUsedKiB };
}

// ---------------------------------------------------------------------------------------------
// The daemon

class Daemon {
  /**
   * @param {import('node:child_process').ChildProcess} child
   * @param {string} home
   * @param {number} start
   * @param {number} end
   * @param {number} apiPort
   * @param {string} logPath
   * @param {number | undefined} inspectPort
   */
  constructor(child, home, start, end, apiPort, logPath, inspectPort) {
    this.child = child;
    this.inspectPort = inspectPort;
    this.home = home;
    this.start = start;
    this.end = end;
    this.apiPort = apiPort;
    this.logPath = logPath;
    /** @type {number | null | undefined} exit code once exited (null: killed by a signal) */
    this.exitCode = undefined;
    /** @type {string | null} */
    this.exitSignal = null;
    /** @type {Promise<void>} */
    this.exited = new Promise((done) =>
      child.once('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        done();
      }),
    );
  }

  get pid() {
    return /** @type {number} */ (this.child.pid);
  }

  get alive() {
    return this.exitCode === undefined;
  }
}

/**
 * @param {string} home
 * @param {number} start
 * @param {number} size
 * @param {boolean} inspect run the daemon under --inspect on the port after the API's
 */
async function startDaemon(home, start, size, inspect) {
  const apiPort = start + size;
  const inspectPort = inspect ? start + size + 1 : undefined;
  const logPath = join(home, 'daemon.log');
  const log = await open(logPath, 'a');
  const env = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CONDUCTOR_HOME: home,
    PORT_RANGE: `${start}-${start + size - 1}`,
    BIND_ADDRESS: '127.0.0.1',
    BIND_PORT: String(apiPort),
    CONDUCTOR_LISTEN_ADDRESS: '127.0.0.1',
  };
  const nodeArgs = inspectPort === undefined ? [] : [`--inspect=127.0.0.1:${inspectPort}`];
  const child = spawn(process.execPath, [...nodeArgs, DAEMON], { env, stdio: ['ignore', log.fd, log.fd] });
  await log.close(); // the child has its own copy of the descriptor
  const daemon = new Daemon(child, home, start, start + size - 1, apiPort, logPath, inspectPort);
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (!daemon.alive) throw new Error(`the daemon exited during start-up (code ${daemon.exitCode}):\n${await readFile(logPath, 'utf8').catch(() => '')}`);
    const answer = await get(undefined, daemon.apiPort, '/status', 2000);
    if (answer.status === 200) return daemon;
    await sleep(100);
  }
  throw new Error(`the daemon did not answer /status within 60 s:\n${await readFile(logPath, 'utf8').catch(() => '')}`);
}

/**
 * SIGTERM, then (after 30 s) SIGKILL; nginx processes of this home that survive are killed too.
 * Returns what happened, for the report.
 * @param {Daemon} daemon
 */
async function stopDaemon(daemon) {
  const notes = [];
  let clean = true;
  if (daemon.alive) {
    daemon.child.kill('SIGTERM');
    const started = Date.now();
    await Promise.race([daemon.exited, sleep(30_000)]);
    if (daemon.alive) {
      clean = false;
      notes.push('the daemon did not exit within 30 s of SIGTERM; sent SIGKILL');
      daemon.child.kill('SIGKILL');
      await Promise.race([daemon.exited, sleep(5000)]);
    } else {
      notes.push(`the daemon exited ${Date.now() - started} ms after SIGTERM with code ${daemon.exitCode}${daemon.exitSignal ? ` (signal ${daemon.exitSignal})` : ''}`);
      if (daemon.exitCode !== 0) clean = false;
    }
  } else {
    clean = false;
    notes.push(`the daemon had already exited (code ${daemon.exitCode}, signal ${daemon.exitSignal})`);
  }
  // nginx must be gone with it (managed mode stops its nginx on SIGTERM).
  let left = await nginxProcesses(daemon.home);
  for (let waited = 0; waited < 5000 && left.masters.length + left.workers.length > 0; waited += 100) {
    await sleep(100);
    left = await nginxProcesses(daemon.home);
  }
  const pids = [...left.masters, ...left.workers];
  if (pids.length > 0) {
    clean = false;
    notes.push(`nginx processes of this home were still running after the daemon stopped (pids ${pids.join(', ')}); killed them`);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  return { clean, notes };
}

// ---------------------------------------------------------------------------------------------
// HTTP

/**
 * @typedef {object} Answer
 * @property {number} status 0 when no HTTP answer came (transport error)
 * @property {string} text
 * @property {unknown} json undefined when the body is not JSON
 * @property {string | undefined} error transport error code
 * @property {number} send performance.now() before the request was sent
 * @property {number} ack performance.now() once the whole answer was read
 * @property {number} retries
 */

/**
 * One GET. A request that fails on a kept-alive socket the server had just closed (it never
 * reached the daemon) is sent again once on a fresh socket.
 * @param {http.Agent | undefined} agent undefined: a fresh connection, closed after the answer
 * @param {number} apiPort
 * @param {string} path
 * @param {number} timeoutMs
 * @returns {Promise<Answer>}
 */
async function get(agent, apiPort, path, timeoutMs) {
  const send = performance.now();
  let retries = 0;
  for (;;) {
    const attempt = await new Promise(
      /** @param {(value: { status: number, text: string, error: string | undefined, reused: boolean }) => void} done */
      (done) => {
        const req = http.get({ host: '127.0.0.1', port: apiPort, path, agent: agent ?? false }, (res) => {
          /** @type {Buffer[]} */
          const chunks = [];
          res.on('data', (chunk) => chunks.push(chunk));
          res.on('end', () => done({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), error: undefined, reused: req.reusedSocket }));
          res.on('error', (/** @type {NodeJS.ErrnoException} */ error) => done({ status: 0, text: '', error: error.code ?? error.message, reused: req.reusedSocket }));
        });
        req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
        req.on('error', (/** @type {NodeJS.ErrnoException} */ error) => done({ status: 0, text: '', error: error.code ?? error.message, reused: req.reusedSocket }));
      },
    );
    if (attempt.error !== undefined && attempt.reused && retries === 0 && ['ECONNRESET', 'EPIPE'].includes(attempt.error)) {
      retries += 1;
      continue;
    }
    /** @type {unknown} */
    let json;
    try {
      json = attempt.text === '' ? undefined : JSON.parse(attempt.text);
    } catch {
      json = undefined;
    }
    return { status: attempt.status, text: attempt.text, json, error: attempt.error, send, ack: performance.now(), retries };
  }
}

/**
 * What an answer was, in a few words, for the tables.
 * @param {Answer} answer
 */
function outcomeOf(answer) {
  if (answer.error !== undefined) return `transport ${answer.error}`;
  if (answer.status >= 500) return `HTTP ${answer.status}`;
  const body = /** @type {Record<string, unknown> | undefined} */ (typeof answer.json === 'object' && answer.json !== null && !Array.isArray(answer.json) ? answer.json : undefined);
  if (answer.status !== 200) return `HTTP ${answer.status}`;
  if (Array.isArray(answer.json)) return 'ok';
  if (!body) return 'not JSON';
  if (body.result === 'ok' || body.result === 'true' || body.result === 'false') return 'ok';
  if (body.result === 'none available') return 'none available';
  if (body.result !== 'error') return `result ${String(body.result)}`;
  if (body.error === 'not found') return 'not found';
  const message = String(body.errors ?? body.error ?? '');
  if (/already has a stream/.test(message)) return 'exists';
  if (/outside the daemon's port range/.test(message)) return 'out of range';
  if (/held by another process|Address already in use|cannot be bound/.test(message)) return 'port in use';
  if (/^backend |must be a whole number/.test(message)) return 'invalid input';
  if (/nginx/.test(message)) return 'nginx refused';
  if (/shutting down/.test(message)) return 'shutting down';
  return 'other error';
}

// ---------------------------------------------------------------------------------------------
// The run's state

/**
 * @typedef {object} StatusReport what the soak reads of /v1/status
 * @property {{ failed?: number }} [streams]
 * @property {{ state?: string, restarts?: number }} [nginx] every master together
 * @property {Array<{ id: number, state: string, restarts: number, workers?: number, drainingWorkers?: number }>} [nginxInstances] each master
 */

/**
 * @typedef {object} Violation
 * @property {number} phase
 * @property {string} check
 * @property {string} message
 * @property {number} [port]
 * @property {number} [send]
 * @property {number} [ack]
 */

/**
 * @typedef {object} Mutation one request (or race group) that may change a port
 * @property {number} send
 * @property {number} ack
 * @property {number} after the model state once answered (backend index, FREE or UNKNOWN)
 */

/**
 * @typedef {object} Read
 * @property {'getstreams' | 'hasstream' | 'getfreeport'} kind
 * @property {number} send
 * @property {number} ack
 * @property {Int32Array} [ports] getstreams: listed ports
 * @property {Int8Array} [backends] getstreams: backend index per listed port
 * @property {number} [port] hasstream: asked port; getfreeport: answered port (NaN: none)
 * @property {boolean} [value] hasstream: the answer
 */

/**
 * @typedef {object} KindStats
 * @property {number[]} latencies ms
 * @property {Map<string, number>} outcomes
 */

/**
 * @typedef {object} PhaseMetrics
 * @property {number} daemonRssKiB after a full GC (unless --raw-rss)
 * @property {number} heapUsedKiB JS heap used after the full GC (NaN with --raw-rss)
 * @property {number} peakRssKiB highest RSS seen while the phase ran (sampled every second)
 * @property {number} daemonFds
 * @property {number} nginxProcesses
 * @property {number} nginxRssKiB
 * @property {number} live
 * @property {number} nginxRestarts
 */

/**
 * @typedef {object} Phase
 * @property {number} n
 * @property {number} target
 * @property {number} issued
 * @property {number} done
 * @property {number} started
 * @property {number} ended
 * @property {Int8Array} initial
 * @property {Map<number, Mutation[]>} timeline by port offset
 * @property {Read[]} reads
 * @property {Map<string, KindStats>} stats
 * @property {number} fiveHundreds
 * @property {number} transportErrors
 * @property {number} retries
 * @property {number} unexpected
 * @property {PhaseMetrics | undefined} metrics
 * @property {{ applies: number, requests: number, applied: number, refused: number, attempts: number, applyMs: number[], requestLines: number, warn: number, error: number }} log
 * @property {number} nginxErrorLogLines
 * @property {string[]} checks passed/failed check names
 * @property {number} violations
 * @property {number} readChecks (read, port) pairs whose port could not change during the read, checked
 * @property {number} peakRssKiB
 */

class Soak {
  /**
   * @param {Options} options
   * @param {Daemon} daemon
   * @param {EchoBackend[]} backends
   */
  constructor(options, daemon, backends) {
    this.options = options;
    this.daemon = daemon;
    this.backends = backends;
    this.size = daemon.end - daemon.start + 1;
    /** Expected state per port offset: backend index, FREE or UNKNOWN. */
    this.model = new Int8Array(this.size).fill(FREE);
    /** @type {Violation[]} */
    this.violations = [];
    this.violationCount = 0;
    /** @type {Phase[]} */
    this.phases = [];
    this.deadlineAt = Date.now() + options.deadlineMin * 60_000;
    this.aborted = false;
    this.deadlineHit = false;
    this.checkerRandom = rng(options.seed ^ 0x5eed);
    this.logOffset = 0;
    /** @type {Map<string, number>} bytes read so far of each master's error.log */
    this.nginxLogOffsets = new Map();
    /** @type {string[]} warn and error lines of the daemon log */
    this.logProblems = [];
    /** @type {string[]} lines of the masters' error.log files, each prefixed with its master */
    this.nginxProblems = [];
    /** @type {string[] | undefined} daemon log lines around the first violations */
    this.relatedLog = undefined;
  }

  running() {
    if (this.aborted) return false;
    if (Date.now() >= this.deadlineAt) {
      this.deadlineHit = true;
      return false;
    }
    return true;
  }

  /**
   * @param {Phase | undefined} phase
   * @param {string} check
   * @param {string} message
   * @param {Partial<Violation>} [extra]
   */
  fail(phase, check, message, extra = {}) {
    this.violationCount += 1;
    if (phase) phase.violations += 1;
    if (this.violations.length < MAX_DETAILS) this.violations.push({ phase: phase?.n ?? 0, check, message, ...extra });
  }

  /** @param {number} offset */
  owner(offset) {
    return offset % this.options.clients;
  }

  /** @param {number} index */
  backendAddress(index) {
    return /** @type {EchoBackend} */ (this.backends[index]).address;
  }

  /** @param {string} address */
  backendIndex(address) {
    return this.backends.findIndex((backend) => backend.address === address);
  }

  // -------------------------------------------------------------------------------------------
  // One phase of load

  /** @param {number} n */
  async runPhase(n) {
    /** @type {Phase} */
    const phase = {
      n,
      target: this.options.ops,
      issued: 0,
      done: 0,
      started: performance.now(),
      ended: 0,
      initial: Int8Array.from(this.model),
      timeline: new Map(),
      reads: [],
      stats: new Map(),
      fiveHundreds: 0,
      transportErrors: 0,
      retries: 0,
      unexpected: 0,
      metrics: undefined,
      log: { applies: 0, requests: 0, applied: 0, refused: 0, attempts: 0, applyMs: [], requestLines: 0, warn: 0, error: 0 },
      nginxErrorLogLines: 0,
      checks: [],
      violations: 0,
      readChecks: 0,
      peakRssKiB: 0,
    };
    this.phases.push(phase);
    const agent = new http.Agent({ keepAlive: true, maxSockets: this.options.clients, timeout: 2000 });
    const ticker = setInterval(() => progress(`phase ${n}: ${phase.done}/${phase.target} requests`), 10_000);
    const sampler = setInterval(() => {
      void rssKiB(this.daemon.pid).then((rss) => {
        phase.peakRssKiB = Math.max(phase.peakRssKiB, rss);
      });
    }, 1000);
    try {
      await Promise.all(Array.from({ length: this.options.clients }, (_, index) => this.client(phase, agent, index)));
    } finally {
      clearInterval(ticker);
      clearInterval(sampler);
      agent.destroy();
    }
    phase.ended = performance.now();
    return phase;
  }

  /**
   * @param {Phase} phase
   * @param {string} kind
   * @param {Answer} answer
   */
  record(phase, kind, answer) {
    let stats = phase.stats.get(kind);
    if (!stats) {
      stats = { latencies: [], outcomes: new Map() };
      phase.stats.set(kind, stats);
    }
    stats.latencies.push(answer.ack - answer.send);
    const outcome = outcomeOf(answer);
    stats.outcomes.set(outcome, (stats.outcomes.get(outcome) ?? 0) + 1);
    phase.done += 1;
    phase.retries += answer.retries;
    if (answer.error !== undefined) {
      phase.transportErrors += 1;
      this.fail(phase, 'transport', `${kind}: no HTTP answer (${answer.error})`, { send: answer.send, ack: answer.ack });
    } else if (answer.status >= 500) {
      phase.fiveHundreds += 1;
      this.fail(phase, '5xx', `${kind}: HTTP ${answer.status} ${answer.text.slice(0, 300)}`, { send: answer.send, ack: answer.ack });
    }
    return outcome;
  }

  /**
   * @param {Phase} phase
   * @param {number} offset
   * @param {Mutation} mutation
   */
  addMutation(phase, offset, mutation) {
    const list = phase.timeline.get(offset);
    if (list) list.push(mutation);
    else phase.timeline.set(offset, [mutation]);
  }

  /**
   * One client: one request at a time until the phase has issued its requests or time is up.
   * @param {Phase} phase
   * @param {http.Agent} agent
   * @param {number} index
   */
  async client(phase, agent, index) {
    const random = rng(this.options.seed + 7919 * (index + 1) + 104_729 * phase.n);
    /** @type {number[]} */
    const owned = [];
    for (let offset = index; offset < this.size; offset += this.options.clients) owned.push(offset);
    const kinds = /** @type {const} */ ([
      ['create', 0.33],
      ['create-bad', 0.02],
      ['race-create', 0.02],
      ['remove', 0.28],
      ['race-remove', 0.02],
      ['getstreams', 0.13],
      ['getfreeport', 0.13],
      ['hasstream', 0.07],
    ]);
    // Bounded: every turn issues at least one request of a finite budget, or ends the loop.
    while (this.running() && phase.issued < phase.target) {
      const roll = random();
      let sum = 0;
      /** @type {string} */
      let kind = 'hasstream';
      for (const [name, share] of kinds) {
        sum += share;
        if (roll < sum) {
          kind = name;
          break;
        }
      }
      if (owned.length === 0 && ['create', 'remove', 'race-create', 'race-remove'].includes(kind)) kind = 'getstreams';
      if (kind.startsWith('race-')) {
        const wantLive = kind === 'race-remove';
        const candidates = owned.filter((offset) => (this.model[offset] ?? FREE) >= 0 === wantLive && this.model[offset] !== UNKNOWN);
        if (candidates.length === 0 || phase.issued + RACE > phase.target) kind = wantLive ? 'remove' : 'create';
        else {
          phase.issued += RACE;
          await this.race(phase, agent, wantLive ? 'remove' : 'create', pick(random, candidates), random);
          continue;
        }
      }
      phase.issued += 1;
      switch (kind) {
        case 'create':
          await this.create(phase, agent, pick(random, owned), random() < 0.5 ? 0 : 1);
          break;
        case 'create-bad':
          await this.createBad(phase, agent, owned.length > 0 && random() < 0.75 ? pick(random, owned) : undefined, random);
          break;
        case 'remove':
          await this.remove(phase, agent, pick(random, owned));
          break;
        case 'getstreams':
          await this.getstreams(phase, agent);
          break;
        case 'getfreeport':
          await this.getfreeport(phase, agent);
          break;
        default:
          await this.hasstream(phase, agent, Math.floor(random() * this.size));
      }
    }
  }

  /**
   * @param {string} path
   * @param {http.Agent} agent
   */
  call(path, agent) {
    const timeout = this.options.requestTimeoutMs;
    return get(agent, this.daemon.apiPort, path, timeout);
  }

  /**
   * Reports an answer that is not the one the model predicts.
   * @param {Phase} phase
   * @param {string} kind
   * @param {number} port
   * @param {string} path
   * @param {string} expected
   * @param {Answer} answer
   */
  unexpected(phase, kind, port, path, expected, answer) {
    phase.unexpected += 1;
    this.fail(phase, 'answer', `${kind} ${path}: expected ${expected}, got HTTP ${answer.status} ${answer.error ?? answer.text.slice(0, 300)}`, {
      port,
      send: answer.send,
      ack: answer.ack,
    });
  }

  /**
   * @param {Answer} answer
   * @returns {Record<string, unknown>}
   */
  body(answer) {
    return typeof answer.json === 'object' && answer.json !== null && !Array.isArray(answer.json) ? /** @type {Record<string, unknown>} */ (answer.json) : {};
  }

  /**
   * @param {Phase} phase
   * @param {http.Agent} agent
   * @param {number} offset
   * @param {number} backend
   */
  async create(phase, agent, offset, backend) {
    const port = this.daemon.start + offset;
    const before = this.model[offset] ?? UNKNOWN;
    const path = `/createstream/${port}/${this.backendAddress(backend)}`;
    const answer = await this.call(path, agent);
    const outcome = this.record(phase, 'create', answer);
    const body = this.body(answer);
    let after = before;
    if (answer.error !== undefined || answer.status >= 500) after = UNKNOWN;
    else if (outcome === 'ok') after = backend;
    if (before === FREE && !(outcome === 'ok' && body.errors === '')) this.unexpected(phase, 'create', port, path, '{"result": "ok", "errors": ""} (the port had no stream)', answer);
    if (before >= 0 && !(outcome === 'exists' && String(body.errors).startsWith(`port ${port} already has a stream (to ${this.backendAddress(before)})`))) {
      this.unexpected(phase, 'create', port, path, `"port ${port} already has a stream (to ${this.backendAddress(before)})"`, answer);
    }
    this.model[offset] = after;
    this.addMutation(phase, offset, { send: answer.send, ack: answer.ack, after });
  }

  /**
   * A create the daemon must refuse without changing anything: a backend that is not host:port
   * (nginx syntax in it), or a port outside the range.
   * @param {Phase} phase
   * @param {http.Agent} agent
   * @param {number | undefined} offset undefined: a port outside the range
   * @param {() => number} random
   */
  async createBad(phase, agent, offset, random) {
    const bad = ['a:1;proxy_timeout%201s', 'x:0', 'x:70000', 'x%7Binclude%7D:1', 'unix:%2Ftmp%2Fs', '127.0.0.1', '[zz]:1', 'a$b:1'];
    const port = offset === undefined ? this.daemon.start - 1 : this.daemon.start + offset;
    const path = offset === undefined ? `/createstream/${port}/${this.backendAddress(0)}` : `/createstream/${port}/${pick(random, bad)}`;
    const before = offset === undefined ? FREE : (this.model[offset] ?? UNKNOWN);
    const answer = await this.call(path, agent);
    const outcome = this.record(phase, 'create-bad', answer);
    const expected = offset === undefined ? 'out of range' : 'invalid input';
    if (outcome !== expected) this.unexpected(phase, 'create-bad', port, path, `a refusal (${expected}) that changes nothing`, answer);
    if (offset !== undefined) {
      const after = answer.error !== undefined || answer.status >= 500 ? UNKNOWN : before;
      this.model[offset] = after;
      this.addMutation(phase, offset, { send: answer.send, ack: answer.ack, after });
    }
  }

  /**
   * @param {Phase} phase
   * @param {http.Agent} agent
   * @param {number} offset
   */
  async remove(phase, agent, offset) {
    const port = this.daemon.start + offset;
    const before = this.model[offset] ?? UNKNOWN;
    const path = `/removestream/${port}`;
    const answer = await this.call(path, agent);
    const outcome = this.record(phase, 'remove', answer);
    const body = this.body(answer);
    let after = before;
    if (answer.error !== undefined || answer.status >= 500) after = UNKNOWN;
    else if (outcome === 'ok') after = FREE;
    if (before >= 0 && !(outcome === 'ok' && body.errors === '')) this.unexpected(phase, 'remove', port, path, '{"result": "ok", "errors": ""} (the port had a stream)', answer);
    if (before === FREE && answer.text !== '{"result": "error", "error": "not found"}') this.unexpected(phase, 'remove', port, path, '{"result": "error", "error": "not found"}', answer);
    this.model[offset] = after;
    this.addMutation(phase, offset, { send: answer.send, ack: answer.ack, after });
  }

  /**
   * RACE identical creates (or removes) of one owned port at once: exactly one wins, the others
   * are told the port already has a stream (is not found).
   * @param {Phase} phase
   * @param {http.Agent} agent
   * @param {'create' | 'remove'} what
   * @param {number} offset
   * @param {() => number} random
   */
  async race(phase, agent, what, offset, random) {
    const port = this.daemon.start + offset;
    const backend = random() < 0.5 ? 0 : 1;
    const path = what === 'create' ? `/createstream/${port}/${this.backendAddress(backend)}` : `/removestream/${port}`;
    const answers = await Promise.all(Array.from({ length: RACE }, () => this.call(path, agent)));
    const outcomes = answers.map((answer) => this.record(phase, `race-${what}`, answer));
    const wins = outcomes.filter((outcome) => outcome === 'ok').length;
    const loserOutcome = what === 'create' ? 'exists' : 'not found';
    const losers = outcomes.filter((outcome) => outcome === loserOutcome).length;
    const broken = answers.some((answer) => answer.error !== undefined || answer.status >= 500);
    let after = broken ? UNKNOWN : this.model[offset] ?? UNKNOWN;
    if (!broken && wins === 1) after = what === 'create' ? backend : FREE;
    if (wins !== 1 || losers !== RACE - 1) {
      phase.unexpected += 1;
      this.fail(phase, 'race', `${RACE} x ${path} at once: expected exactly 1 ok and ${RACE - 1} "${loserOutcome}", got ${outcomes.join(' / ')}`, {
        port,
        send: Math.min(...answers.map((answer) => answer.send)),
        ack: Math.max(...answers.map((answer) => answer.ack)),
      });
      if (!broken && wins !== 1) after = UNKNOWN;
    }
    this.model[offset] = after;
    this.addMutation(phase, offset, { send: Math.min(...answers.map((a) => a.send)), ack: Math.max(...answers.map((a) => a.ack)), after });
  }

  /**
   * @param {Phase} phase
   * @param {http.Agent} agent
   */
  async getstreams(phase, agent) {
    const answer = await this.call('/getstreams', agent);
    this.record(phase, 'getstreams', answer);
    if (answer.error !== undefined || answer.status !== 200) return;
    if (!Array.isArray(answer.json)) {
      this.unexpected(phase, 'getstreams', 0, '/getstreams', 'a JSON array', answer);
      return;
    }
    const ports = new Int32Array(answer.json.length);
    const backends = new Int8Array(answer.json.length);
    const seen = new Set();
    answer.json.forEach((item, i) => {
      const { listen, proxy_pass: proxyPass } = /** @type {{ listen?: unknown, proxy_pass?: unknown }} */ (item ?? {});
      const port = typeof listen === 'number' ? listen : NaN;
      const backend = typeof proxyPass === 'string' ? this.backendIndex(proxyPass) : -1;
      if (!Number.isInteger(port) || port < this.daemon.start || port > this.daemon.end || backend < 0 || seen.has(port)) {
        this.fail(phase, 'getstreams', `entry ${JSON.stringify(item)} is outside the range, duplicated, or names no backend of this soak`, { send: answer.send, ack: answer.ack });
      }
      seen.add(port);
      ports[i] = port;
      backends[i] = backend;
    });
    phase.reads.push({ kind: 'getstreams', send: answer.send, ack: answer.ack, ports, backends });
  }

  /**
   * @param {Phase} phase
   * @param {http.Agent} agent
   */
  async getfreeport(phase, agent) {
    const answer = await this.call('/getfreeport', agent);
    const outcome = this.record(phase, 'getfreeport', answer);
    if (answer.error !== undefined || answer.status !== 200) return;
    const body = this.body(answer);
    if (outcome === 'none available') {
      phase.reads.push({ kind: 'getfreeport', send: answer.send, ack: answer.ack, port: NaN });
      return;
    }
    const port = body.port;
    if (outcome !== 'ok' || typeof port !== 'number' || port < this.daemon.start || port > this.daemon.end) {
      this.unexpected(phase, 'getfreeport', 0, '/getfreeport', '{"result": "ok", "port": <a port of the range>}', answer);
      return;
    }
    phase.reads.push({ kind: 'getfreeport', send: answer.send, ack: answer.ack, port });
  }

  /**
   * @param {Phase} phase
   * @param {http.Agent} agent
   * @param {number} offset
   */
  async hasstream(phase, agent, offset) {
    const port = this.daemon.start + offset;
    const answer = await this.call(`/hasstream/${port}`, agent);
    this.record(phase, 'hasstream', answer);
    if (answer.error !== undefined || answer.status !== 200) return;
    const result = this.body(answer).result;
    if (result !== 'true' && result !== 'false') {
      this.unexpected(phase, 'hasstream', port, `/hasstream/${port}`, '{"result": "true"} or {"result": "false"}', answer);
      return;
    }
    phase.reads.push({ kind: 'hasstream', send: answer.send, ack: answer.ack, port, value: result === 'true' });
  }

  // -------------------------------------------------------------------------------------------
  // Checks once the phase is idle

  /**
   * The state of a port throughout [send, ack], or undefined when a mutation of it overlapped
   * that interval (or its state is unknown).
   * @param {Phase} phase
   * @param {number} offset
   * @param {number} send
   * @param {number} ack
   */
  stableState(phase, offset, send, ack) {
    let state = phase.initial[offset] ?? UNKNOWN;
    for (const mutation of phase.timeline.get(offset) ?? []) {
      if (mutation.ack <= send) state = mutation.after;
      else if (mutation.send < ack) return undefined;
      else break;
    }
    return state === UNKNOWN ? undefined : state;
  }

  /**
   * Every read answered during the phase must match the ports that could not change meanwhile.
   * @param {Phase} phase
   */
  checkReads(phase) {
    let failures = 0;
    const start = this.daemon.start;
    for (const read of phase.reads) {
      if (read.kind === 'getstreams' && read.ports && read.backends) {
        /** @type {Map<number, number>} */
        const listed = new Map();
        for (let i = 0; i < read.ports.length; i += 1) listed.set(/** @type {number} */ (read.ports[i]), /** @type {number} */ (read.backends[i]));
        /** @type {string[]} */
        const wrong = [];
        for (let offset = 0; offset < this.size; offset += 1) {
          const state = this.stableState(phase, offset, read.send, read.ack);
          if (state === undefined) continue;
          phase.readChecks += 1;
          const got = listed.get(start + offset);
          if (state === FREE && got !== undefined) wrong.push(`${start + offset} listed but had no stream`);
          else if (state >= 0 && got === undefined) wrong.push(`${start + offset} missing (stream to ${this.backendAddress(state)})`);
          else if (state >= 0 && got !== state) wrong.push(`${start + offset} listed to the wrong backend`);
        }
        if (wrong.length > 0) {
          failures += 1;
          this.fail(phase, 'read', `/getstreams answered between ${wall(read.send)} and ${wall(read.ack)} disagrees on ports whose state could not change meanwhile: ${wrong.slice(0, 10).join('; ')}${wrong.length > 10 ? ` ... (${wrong.length})` : ''}`, { send: read.send, ack: read.ack });
        }
      } else if (read.kind === 'hasstream' && read.port !== undefined) {
        const state = this.stableState(phase, read.port - start, read.send, read.ack);
        if (state !== undefined) phase.readChecks += 1;
        if (state !== undefined && (state >= 0) !== read.value) {
          failures += 1;
          this.fail(phase, 'read', `/hasstream/${read.port} answered ${read.value} but the port ${state >= 0 ? 'had' : 'had no'} stream throughout the request`, { port: read.port, send: read.send, ack: read.ack });
        }
      } else if (read.kind === 'getfreeport' && read.port !== undefined) {
        if (Number.isNaN(read.port)) {
          let freeThroughout = 0;
          for (let offset = 0; offset < this.size; offset += 1) if (this.stableState(phase, offset, read.send, read.ack) === FREE) freeThroughout += 1;
          if (freeThroughout > 0) {
            failures += 1;
            this.fail(phase, 'read', `/getfreeport answered "none available" while ${freeThroughout} ports had no stream throughout the request`, { send: read.send, ack: read.ack });
          }
        } else {
          const state = this.stableState(phase, read.port - start, read.send, read.ack);
          if (state !== undefined) phase.readChecks += 1;
          if (state !== undefined && state >= 0) {
            failures += 1;
            this.fail(phase, 'read', `/getfreeport answered port ${read.port}, which had a stream throughout the request`, { port: read.port, send: read.send, ack: read.ack });
          }
        }
      }
    }
    return failures;
  }

  /**
   * Compares one view of the live streams with the model.
   * @param {Phase} phase
   * @param {string} check
   * @param {Map<number, string | undefined>} actual port -> backend (undefined: not known by this view)
   * @param {Map<number, string>} expected
   */
  compare(phase, check, actual, expected) {
    const missing = [...expected.keys()].filter((port) => !actual.has(port));
    const extra = [...actual.keys()].filter((port) => !expected.has(port));
    const wrong = [...expected.entries()].filter(([port, backend]) => actual.has(port) && actual.get(port) !== undefined && actual.get(port) !== backend).map(([port]) => port);
    if (missing.length + extra.length + wrong.length === 0) return true;
    const parts = [];
    if (missing.length) parts.push(`missing ${portList(missing)}`);
    if (extra.length) parts.push(`unexpected ${portList(extra)}`);
    if (wrong.length) parts.push(`wrong backend on ${portList(wrong)}`);
    this.fail(phase, check, `${check} disagrees with the acknowledged answers: ${parts.join('; ')}`);
    return false;
  }

  /** @param {Phase} phase */
  async checkPhase(phase) {
    const { daemon } = this;
    const checks = phase.checks;
    /** @param {string} name @param {boolean} ok */
    const note = (name, ok) => checks.push(`${ok ? 'ok' : 'FAILED'} ${name}`);
    const t0 = performance.now();

    note('daemon alive', daemon.alive);
    if (!daemon.alive) this.fail(phase, 'daemon', `the daemon exited (code ${daemon.exitCode}, signal ${daemon.exitSignal})`);

    note('answers as predicted', phase.unexpected === 0);
    note('no 5xx', phase.fiveHundreds === 0);
    note('no transport errors', phase.transportErrors === 0);
    const readFailures = this.checkReads(phase);
    note(`${phase.reads.length} reads consistent (${phase.readChecks} port states checked)`, readFailures === 0);

    const listing = daemon.alive ? await get(undefined, daemon.apiPort, '/getstreams', 30_000) : undefined;
    /** @type {Map<number, string | undefined>} */
    const listed = new Map();
    if (listing && Array.isArray(listing.json)) {
      for (const item of listing.json) {
        const entry = /** @type {{ listen: number, proxy_pass: string }} */ (item);
        listed.set(entry.listen, entry.proxy_pass);
      }
    } else {
      this.fail(phase, 'getstreams', `final /getstreams did not answer a list: ${listing?.error ?? listing?.text.slice(0, 200) ?? 'daemon down'}`);
    }

    // Ports whose state is unknown (a request without an answer) take the daemon's word for it;
    // the failed request is already a violation.
    for (let offset = 0; offset < this.size; offset += 1) {
      if (this.model[offset] !== UNKNOWN) continue;
      const backend = listed.get(daemon.start + offset);
      this.model[offset] = backend === undefined ? FREE : Math.max(0, this.backendIndex(backend));
    }
    /** @type {Map<number, string>} */
    const expected = new Map();
    for (let offset = 0; offset < this.size; offset += 1) {
      const state = this.model[offset] ?? FREE;
      if (state >= 0) expected.set(daemon.start + offset, this.backendAddress(state));
    }
    note('/getstreams == expected', this.compare(phase, '/getstreams', listed, expected));

    // The stream files: each master n includes its own folder stream.d/<n>/, whose one file holds
    // its streams. A port's text must be in exactly one of them, listen on 127.0.0.1:<port> only,
    // proxy to the right backend and log to the access log of its own master.
    const streamRoot = join(daemon.home, 'stream.d');
    const nginxRoot = join(daemon.home, 'nginx');
    const streamFolders = await perMasterFolders(streamRoot);
    const nginxFolders = await perMasterFolders(nginxRoot);
    /** @type {Map<number, string | undefined>} */
    const files = new Map();
    /** @type {Map<number, number>} port -> the master folder its file is in */
    const folderOf = new Map();
    /** @type {string[]} */
    const fileProblems = [];
    // Each master's streams are in one file, each stream's text starting with its marker line.
    const bundleName = `${PREFIX}streams.conf`;
    for (const id of streamFolders.ids) {
      const folder = join(streamRoot, String(id));
      const bundle = await readFile(join(folder, bundleName), 'utf8').catch(() => '');
      for (const text of bundle.split(/^(?=# stream-conductor: port )/m).slice(1)) {
        const port = Number(/^# stream-conductor: port ([0-9]+) /.exec(text)?.[1]);
        const where = `stream.d/${id}/${bundleName}, port ${port}`;
        const parsed = parseStreamFile(text);
        if (parsed.servers !== 1 || parsed.listens.length !== 1 || parsed.listens[0] !== `127.0.0.1:${port}`) {
          fileProblems.push(`${where} does not listen on 127.0.0.1:${port} alone (${parsed.servers} server blocks, listen ${parsed.listens.join(' / ') || 'none'}): ${JSON.stringify(text.slice(0, 400))}`);
        }
        const accessLog = join(nginxRoot, String(id), 'access.log');
        if (parsed.accessLog !== undefined && parsed.accessLog !== accessLog) fileProblems.push(`${where} logs to ${parsed.accessLog}, not to its master's ${accessLog}`);
        const other = folderOf.get(port);
        if (other !== undefined) fileProblems.push(`port ${port} is in the file of stream.d/${other}/ and of stream.d/${id}/`);
        folderOf.set(port, id);
        files.set(port, parsed.backend ?? '(no proxy_pass)');
      }
    }
    for (const problem of fileProblems.slice(0, 20)) this.fail(phase, 'stream.d', problem);
    if (fileProblems.length > 20) this.fail(phase, 'stream.d', `... and ${fileProblems.length - 20} more problems with the stream files`);
    note('stream.d/<n>/ files == expected', this.compare(phase, 'stream.d', files, expected) && fileProblems.length === 0);

    const storeText = await readFile(join(daemon.home, 'streams.json'), 'utf8').catch(() => '');
    /** @type {Map<number, string | undefined>} */
    const stored = new Map();
    let storeOk = true;
    try {
      const data = /** @type {{ format?: unknown, streams?: Array<{ port?: unknown, backends?: Array<{ address?: unknown }>, backend?: unknown }> }} */ (JSON.parse(storeText || '{"format": 1, "streams": []}'));
      if (data.format !== 1 || !Array.isArray(data.streams)) {
        storeOk = false;
        this.fail(phase, 'streams.json', `streams.json is not a store of format 1: ${storeText.slice(0, 200)}`);
      }
      for (const stream of data.streams ?? []) {
        const port = Number(stream.port);
        // Records hold a list of backends (objects with an address); one written before streams
        // had options holds a single `backend` string.
        const addresses = Array.isArray(stream.backends) ? stream.backends.map((backend) => String(backend?.address)) : typeof stream.backend === 'string' ? [stream.backend] : [];
        if (stored.has(port)) {
          storeOk = false;
          this.fail(phase, 'streams.json', `port ${port} appears twice in streams.json`);
        }
        stored.set(port, addresses.join(', ') || '(no backend)');
      }
    } catch (error) {
      storeOk = false;
      this.fail(phase, 'streams.json', `streams.json is not JSON: ${/** @type {Error} */ (error).message}`);
    }
    note('streams.json == expected', this.compare(phase, 'streams.json', stored, expected) && storeOk);

    const listening = await listeningPorts();
    /** @type {Map<number, string | undefined>} */
    const sockets = new Map();
    for (let port = daemon.start; port <= daemon.end; port += 1) if (listening.has(port)) sockets.set(port, undefined);
    note('LISTEN sockets == expected', this.compare(phase, 'LISTEN sockets', sockets, expected));

    // Nothing half-written, nothing unexpected: the home holds the store, the audit log, the lock,
    // stream.d/<n>/ with each master's stream file and nginx/<n>/ with each master's own files.
    const temporaries = [];
    const strays = [];
    /** @type {Array<[string, string]>} folder, and what it may hold */
    const folders = [
      [daemon.home, 'home'],
      [streamRoot, 'numbered'],
      [nginxRoot, 'numbered'],
      ...streamFolders.ids.map((id) => /** @type {[string, string]} */ ([join(streamRoot, String(id)), 'stream.d/<n>'])),
      ...nginxFolders.ids.map((id) => /** @type {[string, string]} */ ([join(nginxRoot, String(id)), 'nginx/<n>'])),
    ];
    for (const [dir, kind] of folders) {
      for (const name of await readdir(dir).catch(() => /** @type {string[]} */ ([]))) {
        if (name.startsWith('.tmp-')) temporaries.push(join(dir, name));
        else if (kind === 'numbered' ? !/^[0-9]+$/.test(name) : !expectedInHome(kind, name)) strays.push(join(dir, name));
      }
    }
    if (temporaries.length > 0) this.fail(phase, 'temporaries', `temporary files left behind: ${temporaries.join(', ')}`);
    note('no .tmp- files', temporaries.length === 0);
    if (streamFolders.ids.join() !== nginxFolders.ids.join()) strays.push(`(stream.d/ has folders ${streamFolders.ids.join(', ')} but nginx/ has ${nginxFolders.ids.join(', ')})`);
    if (strays.length > 0) this.fail(phase, 'strays', `unexpected files in the home: ${strays.slice(0, 20).join(', ')}${strays.length > 20 ? ` ... (${strays.length})` : ''}`);
    note('no stray files', strays.length === 0);

    // Bytes through a sample of live ports, and a sample of free ports refusing.
    const live = [...expected.keys()];
    const free = [];
    for (let port = daemon.start; port <= daemon.end; port += 1) if (!expected.has(port)) free.push(port);
    const shuffle = (/** @type {number[]} */ list) => {
      for (let i = list.length - 1; i > 0; i -= 1) {
        const j = Math.floor(this.checkerRandom() * (i + 1));
        [list[i], list[j]] = [/** @type {number} */ (list[j]), /** @type {number} */ (list[i])];
      }
      return list;
    };
    const sampleLive = shuffle(live).slice(0, this.options.sample);
    const sampleFree = shuffle(free).slice(0, Math.min(20, this.options.sample));
    let trafficOk = true;
    for (let i = 0; i < sampleLive.length; i += 10) {
      await Promise.all(
        sampleLive.slice(i, i + 10).map(async (port) => {
          const name = /** @type {EchoBackend} */ (this.backends[this.backendIndex(/** @type {string} */ (expected.get(port)))]).name;
          const payload = `soak-${phase.n}-${port}`;
          try {
            const answer = await roundTrip(port, payload, name.length + 1 + payload.length);
            if (answer !== `${name}:${payload}`) throw new Error(`answered ${JSON.stringify(answer)}, expected ${JSON.stringify(`${name}:${payload}`)}`);
          } catch (error) {
            trafficOk = false;
            this.fail(phase, 'traffic', `port ${port} (live, to ${expected.get(port)}): ${/** @type {Error} */ (error).message}`, { port });
          }
        }),
      );
    }
    for (const port of sampleFree) {
      const outcome = await connectOutcome(port);
      if (outcome !== 'refused') {
        trafficOk = false;
        this.fail(phase, 'traffic', `port ${port} has no stream but a connection to it was ${outcome}`, { port });
      }
    }
    note(`bytes flow on ${sampleLive.length} live ports, ${sampleFree.length} free ports refuse`, trafficOk);

    // Every master runs (one per folder), none was ever restarted, nothing is set aside.
    const status = daemon.alive ? await get(undefined, daemon.apiPort, '/v1/status', 30_000) : undefined;
    const st = /** @type {StatusReport | undefined} */ (status?.json);
    const restarts = st?.nginx?.restarts ?? NaN;
    const instances = st?.nginxInstances ?? [];
    const down = instances.filter((instance) => instance.state !== 'running' || instance.restarts !== 0).map((instance) => instance.id);
    const running = await nginxProcesses(daemon.home);
    const healthy =
      st?.nginx?.state === 'running' &&
      restarts === 0 &&
      (st?.streams?.failed ?? 0) === 0 &&
      instances.length > 0 &&
      down.length === 0 &&
      running.masters.length === instances.length &&
      streamFolders.ids.length === instances.length;
    if (!healthy) {
      this.fail(
        phase,
        'status',
        `/v1/status: nginx ${st?.nginx?.state}, ${restarts} restarts, ${st?.streams?.failed} failed streams, ${instances.length} masters (not running or restarted: ${down.join(', ') || 'none'}); ${running.masters.length} master processes of this home, ${streamFolders.ids.length} stream.d folders`,
      );
    }
    note(`${instances.length} nginx masters running, never restarted, no failed stream`, healthy);

    await this.readLogs(phase);
    note('no error lines in the daemon log', phase.log.error === 0);
    if (phase.log.error > 0) this.fail(phase, 'daemon log', `${phase.log.error} error lines in the daemon log`);

    // Resources, once the clients' connections are closed: memory after a full GC, then the fd
    // count once it settles (the inspector connection is closed by then).
    /** @type {{ rssKiB: number, heapUsedKiB: number }} */
    let memory = { rssKiB: NaN, heapUsedKiB: NaN };
    try {
      memory = await daemonMemory(daemon);
    } catch (error) {
      this.fail(phase, 'memory', `could not measure the daemon's memory: ${/** @type {Error} */ (error).message}`);
    }
    let fds = await fdCount(daemon.pid);
    for (let waited = 0; waited < 3000; waited += 200) {
      await sleep(200);
      const again = await fdCount(daemon.pid);
      if (again === fds) break;
      fds = again;
    }
    const nginx = await nginxProcesses(daemon.home);
    let nginxRss = 0;
    for (const pid of [...nginx.masters, ...nginx.workers]) nginxRss += await rssKiB(pid);
    phase.metrics = {
      daemonRssKiB: memory.rssKiB,
      heapUsedKiB: memory.heapUsedKiB,
      peakRssKiB: phase.peakRssKiB,
      daemonFds: fds,
      nginxProcesses: nginx.masters.length + nginx.workers.length,
      nginxRssKiB: nginxRss,
      live: expected.size,
      nginxRestarts: restarts,
    };
    progress(`phase ${phase.n} checked in ${fmt((performance.now() - t0) / 1000)} s: ${phase.violations === 0 ? 'all checks passed' : `${phase.violations} violations`}`);
  }

  /**
   * Reads what the daemon and nginx logged since the last call.
   * @param {Phase | undefined} phase
   */
  async readLogs(phase) {
    const text = await readSince(this.daemon.logPath, this.logOffset);
    this.logOffset += Buffer.byteLength(text.slice(0, text.lastIndexOf('\n') + 1));
    for (const line of text.slice(0, text.lastIndexOf('\n') + 1).split('\n')) {
      if (line === '') continue;
      // What node prints about the inspector (--inspect) is not the daemon's.
      if (/^(Debugger (listening|attached|ending)|For help, see: https:\/\/nodejs\.org\/)/.test(line)) continue;
      /** @type {Record<string, unknown>} */
      let record;
      try {
        record = JSON.parse(line);
      } catch {
        this.logProblems.push(line);
        if (phase) phase.log.error += 1;
        continue;
      }
      if (!phase) continue;
      if (record.msg === 'apply') {
        phase.log.applies += 1;
        phase.log.requests += Number(record.requests ?? 0);
        phase.log.applied += Number(record.applied ?? 0);
        phase.log.refused += Number(record.refused ?? 0);
        phase.log.attempts += Number(record.attempts ?? 0);
        // A batch whose requests were all refused before reaching nginx does not reload.
        if (Number(record.attempts ?? 0) > 0) phase.log.applyMs.push(Number(record.ms ?? 0));
      } else if (record.msg === 'request') phase.log.requestLines += 1;
      if (record.level === 'warn' || record.level === 'error') {
        if (record.level === 'warn') phase.log.warn += 1;
        else phase.log.error += 1;
        if (this.logProblems.length < 100) this.logProblems.push(line);
      }
    }
    // Each master writes its own nginx/<n>/error.log.
    const nginxRoot = join(this.daemon.home, 'nginx');
    for (const id of (await perMasterFolders(nginxRoot)).ids) {
      const nginxLog = join(nginxRoot, String(id), 'error.log');
      const nginxText = await readSince(nginxLog, this.nginxLogOffsets.get(nginxLog) ?? 0);
      this.nginxLogOffsets.set(nginxLog, (this.nginxLogOffsets.get(nginxLog) ?? 0) + Buffer.byteLength(nginxText));
      for (const line of nginxText.split('\n')) {
        if (line === '') continue;
        if (phase) phase.nginxErrorLogLines += 1;
        if (this.nginxProblems.length < 50) this.nginxProblems.push(`${id}: ${line}`);
      }
    }
  }
}

/**
 * @param {string} path
 * @param {number} offset
 */
async function readSince(path, offset) {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await handle.stat();
    if (size <= offset) return '';
    const buffer = Buffer.alloc(size - offset);
    await handle.read(buffer, 0, buffer.length, offset);
    return buffer.toString('utf8');
  } finally {
    await handle.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The report

/**
 * @param {Soak} soak
 * @param {{ options: Options, startedAt: Date, startupMs: number, baseline: PhaseMetrics | undefined, stop: { clean: boolean, notes: string[] } | undefined, growth: string[], failed: boolean, nginxVersion: string, nginxLayout: string, fatal: string | undefined, home: string, kept: boolean }} run
 */
function report(soak, run) {
  const { options } = run;
  const out = [];
  const totalOps = soak.phases.reduce((sum, phase) => sum + phase.done, 0);
  out.push(`# stream-conductor soak report`);
  out.push('');
  out.push(`**Result: ${run.failed ? 'FAIL' : 'PASS'}** (${soak.violationCount} violations${soak.deadlineHit ? ', deadline reached' : ''}${soak.aborted ? ', interrupted' : ''})`);
  out.push('');
  out.push(`- date: ${run.startedAt.toISOString()}`);
  out.push(`- machine: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown cpu'}), Linux ${release()}, Node ${process.version}, ${run.nginxVersion}`);
  out.push(`- flags: --phases ${options.phases} --ops ${options.ops} --ports ${options.ports} --clients ${options.clients} --deadline ${options.deadlineMin} --sample ${options.sample} --seed ${options.seed}${options.rawRss ? ' --raw-rss' : ''}`);
  out.push(`- range: ${soak.daemon.start}-${soak.daemon.end} (API on 127.0.0.1:${soak.daemon.apiPort}), daemon start-up ${fmt(run.startupMs, 0)} ms`);
  out.push(`- nginx: ${run.nginxLayout}`);
  out.push(`- requests: ${totalOps} in ${soak.phases.length} phases`);
  if (run.fatal) out.push(`- aborted by an error: ${run.fatal}`);
  out.push('');

  out.push('## Phases');
  out.push('');
  out.push('| phase | requests | seconds | req/s | batches | reloads | requests/batch | apply p50/max ms | live at end | daemon RSS MiB | daemon heap MiB | daemon peak RSS MiB | daemon fds | nginx procs | nginx RSS MiB | violations |');
  out.push('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  if (run.baseline) {
    const m = run.baseline;
    out.push(`| start | | | | | | | | ${m.live} | ${fmt(m.daemonRssKiB / 1024)} | ${fmt(m.heapUsedKiB / 1024)} | | ${m.daemonFds} | ${m.nginxProcesses} | ${fmt(m.nginxRssKiB / 1024)} | |`);
  }
  for (const phase of soak.phases) {
    const seconds = (phase.ended - phase.started) / 1000;
    const m = phase.metrics;
    const applyMs = [...phase.log.applyMs].sort((a, b) => a - b);
    out.push(
      `| ${phase.n} | ${phase.done} | ${fmt(seconds)} | ${fmt(phase.done / seconds, 0)} | ${phase.log.applies} | ${phase.log.attempts} | ${fmt(phase.log.requests / Math.max(1, phase.log.applies))} | ${fmt(percentile(applyMs, 50), 0)} / ${fmt(applyMs[applyMs.length - 1] ?? NaN, 0)} | ${m?.live ?? '-'} | ${m ? fmt(m.daemonRssKiB / 1024) : '-'} | ${m ? fmt(m.heapUsedKiB / 1024) : '-'} | ${m ? fmt(m.peakRssKiB / 1024) : '-'} | ${m?.daemonFds ?? '-'} | ${m?.nginxProcesses ?? '-'} | ${m ? fmt(m.nginxRssKiB / 1024) : '-'} | ${phase.violations} |`,
    );
  }
  out.push('');
  out.push(
    `Batches, reloads and requests/batch come from the daemon's \`apply\` log lines: one per batch of one nginx master, whose \`attempts\` are its reloads (0 when every request of the batch was refused before reaching nginx); apply p50/max is over the batches that reloaded. Daemon RSS (VmRSS), heap and fds are read after the phase's checks, with the clients' connections closed${run.options.rawRss ? ' (--raw-rss: no GC forced, heap not read)' : ", right after a full GC forced through the daemon's inspector"}; peak RSS is the highest VmRSS sampled each second during the phase. nginx procs and RSS cover every master of the home and its workers (RSS summed, shared pages counted once per process).`,
  );
  out.push('');

  out.push('## Latency (ms) and answers per operation');
  out.push('');
  out.push('| phase | operation | count | p50 | p99 | max | answers |');
  out.push('| ---: | --- | ---: | ---: | ---: | ---: | --- |');
  const order = ['create', 'create-bad', 'race-create', 'remove', 'race-remove', 'getstreams', 'getfreeport', 'hasstream'];
  for (const phase of soak.phases) {
    for (const kind of order) {
      const stats = phase.stats.get(kind);
      if (!stats) continue;
      const sorted = [...stats.latencies].sort((a, b) => a - b);
      const answers = [...stats.outcomes.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([outcome, count]) => `${outcome} ${count}`)
        .join(', ');
      out.push(`| ${phase.n} | ${kind} | ${sorted.length} | ${fmt(percentile(sorted, 50))} | ${fmt(percentile(sorted, 99))} | ${fmt(sorted[sorted.length - 1] ?? NaN)} | ${answers} |`);
    }
  }
  out.push('');
  out.push('Every answer is predicted before it arrives: `exists` on create and `not found` on remove are the expected refusals of a port that had (had no) stream; `invalid input` / `out of range` are the bad creates. Any other answer is a violation.');
  out.push('');

  out.push('## Checks per phase');
  out.push('');
  for (const phase of soak.phases) out.push(`- phase ${phase.n}: ${phase.checks.join(', ') || 'not checked'}${phase.retries ? `; ${phase.retries} requests re-sent after a kept-alive socket closed` : ''}; daemon log: ${phase.log.requestLines} request lines, ${phase.log.warn} warn, ${phase.log.error} error; nginx error.log (all masters): ${phase.nginxErrorLogLines} lines`);
  out.push('');

  out.push('## Memory and descriptors');
  out.push('');
  for (const line of run.growth) out.push(`- ${line}`);
  out.push('');

  out.push('## Shutdown');
  out.push('');
  if (run.stop) for (const line of run.stop.notes) out.push(`- ${line}`);
  else out.push('- the daemon was not started');
  out.push(`- temporary home ${run.home} ${run.kept ? 'kept (--keep-home)' : 'removed'}`);
  out.push('');

  if (soak.violations.length > 0) {
    out.push('## Violations');
    out.push('');
    for (const v of soak.violations) {
      const when = v.send !== undefined ? ` [${wall(v.send)} .. ${wall(v.ack ?? v.send)}]` : '';
      out.push(`- ${v.phase === 0 ? 'run' : `phase ${v.phase}`}, ${v.check}${when}: ${v.message}`);
    }
    if (soak.violationCount > soak.violations.length) out.push(`- ... and ${soak.violationCount - soak.violations.length} more`);
    out.push('');
  }
  if (soak.logProblems.length > 0 || soak.nginxProblems.length > 0) {
    out.push('## Log lines worth a look');
    out.push('');
    out.push('```');
    for (const line of soak.logProblems.slice(0, 60)) out.push(line);
    for (const line of soak.nginxProblems.slice(0, 30)) out.push(`nginx ${line}`);
    out.push('```');
    out.push('');
  }
  if (run.failed && soak.relatedLog && soak.relatedLog.length > 0) {
    out.push('## Daemon log around the first violations');
    out.push('');
    out.push('```');
    for (const line of soak.relatedLog) out.push(line);
    out.push('```');
    out.push('');
  }
  return out.join('\n');
}

/**
 * Daemon log lines about the ports of the first violations, within a second of them.
 * @param {Soak} soak
 */
async function relatedLogLines(soak) {
  const text = await readFile(soak.daemon.logPath, 'utf8').catch(() => '');
  const lines = text.split('\n');
  /** @type {string[]} */
  const out = [];
  for (const v of soak.violations.filter((one) => one.send !== undefined).slice(0, 5)) {
    const send = performance.timeOrigin + /** @type {number} */ (v.send);
    const ack = performance.timeOrigin + (v.ack ?? /** @type {number} */ (v.send));
    out.push(`--- phase ${v.phase}, ${v.check}${v.port ? `, port ${v.port}` : ''}: ${v.message.slice(0, 160)}`);
    let shown = 0;
    for (const line of lines) {
      const time = Date.parse(/"time":"([^"]+)"/.exec(line)?.[1] ?? '');
      // Requests on the port and problems within a second; the batches applied during the request.
      const near = time >= send - 1000 && time <= ack + 1000;
      const during = time >= send && time <= ack + 5;
      const aboutPort = v.port !== undefined && (line.includes(`/${v.port}/`) || line.includes(`/${v.port}"`));
      if (!((near && (aboutPort || /"level":"(warn|error)"|"status":5/.test(line))) || (during && /"msg":"apply"/.test(line)))) continue;
      out.push(line);
      shown += 1;
      if (shown >= 25) break;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Main

async function main() {
  /** @type {Options} */
  let options;
  try {
    options = readOptions();
  } catch (error) {
    process.stderr.write(`soak: ${/** @type {Error} */ (error).message}\n\n${USAGE}\n`);
    return 2;
  }
  const startedAt = new Date();
  const home = await mkdtemp(join(tmpdir(), 'sc-soak-'));
  /** @type {EchoBackend[]} */
  const backends = [];
  /** @type {Daemon | undefined} */
  let daemon;
  /** @type {Soak | undefined} */
  let soak;
  /** @type {{ clean: boolean, notes: string[] } | undefined} */
  let stop;
  /** @type {string | undefined} */
  let fatal;
  let failed = false;
  let kept = false;
  /** @type {PhaseMetrics | undefined} */
  let baseline;
  /** @type {string[]} */
  const growth = [];
  let startupMs = 0;
  let nginxVersion = 'nginx';
  let nginxLayout = 'unknown';

  const onSignal = (/** @type {string} */ signal) => {
    progress(`${signal}: stopping after the current requests (send it again to stop at once)`);
    if (soak) soak.aborted = true;
    process.once(signal, () => {
      daemon?.child.kill('SIGTERM');
      rmSync(home, { recursive: true, force: true });
      process.exit(130);
    });
  };
  process.once('SIGINT', () => onSignal('SIGINT'));
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  // Last resort if something throws past the finally below.
  process.once('exit', () => {
    if (daemon?.alive) daemon.child.kill('SIGTERM');
  });

  try {
    nginxVersion = await new Promise((done) => {
      const child = spawn('/usr/sbin/nginx', ['-v'], { stdio: ['ignore', 'ignore', 'pipe'] });
      let text = '';
      child.stderr.on('data', (chunk) => (text += chunk.toString('utf8')));
      child.on('error', () => done('nginx (version unknown)'));
      child.on('close', () => done(text.trim().replace(/^nginx version: /, '') || 'nginx (version unknown)'));
    });
    backends.push(await EchoBackend.start('a'), await EchoBackend.start('b'));
    const start = await freePortBlock(options.ports + 2, options.base);
    progress(`home ${home}, range ${start}-${start + options.ports - 1}, API 127.0.0.1:${start + options.ports}, seed ${options.seed}`);
    const t0 = performance.now();
    daemon = await startDaemon(home, start, options.ports, !options.rawRss);
    startupMs = performance.now() - t0;
    soak = new Soak(options, daemon, backends);
    const initial = /** @type {StatusReport | undefined} */ ((await get(undefined, daemon.apiPort, '/v1/status', 30_000)).json);
    const masters = initial?.nginxInstances ?? [];
    const workers = masters.map((master) => master.workers ?? NaN);
    nginxLayout = `${masters.length} masters (stream.d/<n>/ and nginx/<n>/ for n = 0..${masters.length - 1}), ${Math.min(...workers)}${Math.max(...workers) === Math.min(...workers) ? '' : `-${Math.max(...workers)}`} worker(s) each`;
    await soak.readLogs(undefined);
    const nginx = await nginxProcesses(home);
    let nginxRss = 0;
    for (const pid of [...nginx.masters, ...nginx.workers]) nginxRss += await rssKiB(pid);
    const memory = await daemonMemory(daemon);
    baseline = {
      daemonRssKiB: memory.rssKiB,
      heapUsedKiB: memory.heapUsedKiB,
      peakRssKiB: NaN,
      daemonFds: await fdCount(daemon.pid),
      nginxProcesses: nginx.masters.length + nginx.workers.length,
      nginxRssKiB: nginxRss,
      live: 0,
      nginxRestarts: 0,
    };

    for (let n = 1; n <= options.phases && soak.running(); n += 1) {
      progress(`phase ${n}/${options.phases}: ${options.ops} requests from ${options.clients} clients`);
      const phase = await soak.runPhase(n);
      progress(`phase ${n}: ${phase.done} requests in ${fmt((phase.ended - phase.started) / 1000)} s`);
      await soak.checkPhase(phase);
    }
    if (soak.deadlineHit) soak.fail(undefined, 'deadline', `the global deadline (${options.deadlineMin} min) was reached before the ${options.phases} phases were done`);
    if (soak.aborted) soak.fail(undefined, 'interrupted', 'the run was interrupted by a signal');

    // Memory and descriptors must stay flat from phase 2 on (phase 1 fills the range from empty).
    const second = soak.phases[1]?.metrics;
    const last = soak.phases[soak.phases.length - 1]?.metrics;
    if (second && last && soak.phases.length >= 2) {
      const rssGrowth = ((last.daemonRssKiB - second.daemonRssKiB) / second.daemonRssKiB) * 100;
      const fdGrowth = last.daemonFds - second.daemonFds;
      growth.push(`daemon RSS${options.rawRss ? ' (raw, no GC forced)' : ' after a full GC'} phase 2 -> phase ${soak.phases.length}: ${fmt(second.daemonRssKiB / 1024)} -> ${fmt(last.daemonRssKiB / 1024)} MiB (${rssGrowth >= 0 ? '+' : ''}${fmt(rssGrowth)}%, tolerance ${options.rssTolerancePct}%)`);
      growth.push(`daemon fds phase 2 -> phase ${soak.phases.length}: ${second.daemonFds} -> ${last.daemonFds} (${fdGrowth >= 0 ? '+' : ''}${fdGrowth}, tolerance ${options.fdTolerance})`);
      if (!options.rawRss) growth.push(`daemon JS heap used after GC phase 2 -> phase ${soak.phases.length}: ${fmt(second.heapUsedKiB / 1024)} -> ${fmt(last.heapUsedKiB / 1024)} MiB (recorded, not judged)`);
      growth.push(`nginx RSS phase 2 -> phase ${soak.phases.length}: ${fmt(second.nginxRssKiB / 1024)} -> ${fmt(last.nginxRssKiB / 1024)} MiB (recorded, not judged: it follows the number of live ports)`);
      if (soak.phases.length < 3) growth.push('only 2 phases: the growth check compares phase 2 with itself');
      if (!(rssGrowth <= options.rssTolerancePct)) soak.fail(undefined, 'growth', `daemon RSS grew ${fmt(rssGrowth)}% from phase 2 to phase ${soak.phases.length} (tolerance ${options.rssTolerancePct}%)`);
      if (!(fdGrowth <= options.fdTolerance)) soak.fail(undefined, 'growth', `daemon fds grew by ${fdGrowth} from phase 2 to phase ${soak.phases.length} (tolerance ${options.fdTolerance})`);
    } else {
      growth.push('fewer than 2 phases ran: no growth check');
    }
  } catch (error) {
    fatal = error instanceof Error ? (error.stack ?? error.message) : String(error);
    progress(`error: ${fatal}`);
  } finally {
    if (daemon) {
      progress('stopping the daemon (SIGTERM)');
      stop = await stopDaemon(daemon);
      if (soak) {
        await soak.readLogs(soak.phases[soak.phases.length - 1]);
        if (!stop.clean) soak.fail(undefined, 'shutdown', stop.notes.join('; '));
      }
    }
    for (const backend of backends) await backend.close();
    failed = fatal !== undefined || !soak || soak.violationCount > 0;
    if (soak && failed) soak.relatedLog = await relatedLogLines(soak);
    kept = failed && options.keepHome;
    if (!kept) await rm(home, { recursive: true, force: true });
  }
  if (soak) {
    process.stdout.write(`${report(soak, { options, startedAt, startupMs, baseline, stop, growth, failed, nginxVersion, nginxLayout, fatal, home, kept })}\n`);
  } else {
    process.stderr.write(`soak: could not run: ${fatal}\n`);
    return 2;
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`soak: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(2);
  },
);
