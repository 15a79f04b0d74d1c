// @ts-check
/**
 * Benchmark 5: the data plane. iperf3 through a stream against a direct loopback connection, one
 * flow and four flows, with the default profile and the throughput profile, and HAProxy (Debian's
 * package) in TCP mode measured in the same run; a short-connection rate test; the memory each
 * profile costs per connection. Targets: default at least 0.6 of direct for one flow, throughput
 * at least 0.75, both no worse than HAProxy.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { call, freeBlock, median, now, pidsOf, ROOT, rssMiB, sleep, startDaemon } from './lib.mjs';

const SECONDS = 5;
const ROUNDS = 5;

/** @param {number} port @param {number} flows */
function iperf(port, flows) {
  for (let attempt = 0; ; attempt += 1) {
    let out;
    try {
      out = execFileSync(
        'iperf3',
        ['-c', '127.0.0.1', '-p', String(port), '-t', String(SECONDS), '-P', String(flows), '-J'],
        { encoding: 'utf8', maxBuffer: 64 << 20 },
      );
    } catch (error) {
      out = String(/** @type {{ stdout?: string }} */ (error).stdout ?? '{}');
    }
    const result = JSON.parse(out);
    if (result.end?.sum_received) return result.end.sum_received.bits_per_second / 1e9;
    // The iperf3 server takes one test at a time and may still be closing the last one.
    if (attempt >= 5) throw new Error(`iperf3 to port ${port}: ${result.error ?? 'no result'}`);
    execFileSync('sleep', ['1']);
  }
}

/** Connections a second: `total` short connections (connect, 1 byte there and back, close), 16 at a time. @param {number} port */
async function connectionRate(port, total = 3000, concurrency = 16) {
  let next = 0;
  const started = now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next += 1;
        await new Promise((done, fail) => {
          const socket = connect({ port, host: '127.0.0.1' });
          socket.on('connect', () => socket.write('x'));
          socket.on('data', () => socket.end());
          socket.on('close', done);
          socket.on('error', fail);
        });
      }
    }),
  );
  return total / ((now() - started) / 1000);
}

/**
 * Opens `count` connections through `port`, each moving `bytes` both ways (so that nginx's
 * buffers are filled, as in a bulk transfer), and keeps them open; returns a closer.
 * @param {number} port @param {number} count @param {number} bytes
 */
async function holdConnections(port, count, bytes) {
  const sockets = [];
  const payload = Buffer.alloc(bytes, 'x');
  for (let i = 0; i < count; i += 1) {
    const socket = connect({ port, host: '127.0.0.1' });
    await new Promise((done, fail) => {
      let back = 0;
      socket.on('connect', () => socket.write(payload));
      socket.on('data', (chunk) => {
        back += chunk.length;
        if (back >= bytes) done(undefined);
      });
      socket.on('error', fail);
    });
    sockets.push(socket);
  }
  return () => {
    for (const socket of sockets) socket.destroy();
  };
}

/** Resident memory of the processes, in MiB. @param {number[]} pids */
async function rss(pids) {
  let sum = 0;
  for (const pid of pids) sum += await rssMiB(pid);
  return sum;
}

export async function run() {
  execFileSync('bash', [join(ROOT, 'bench/deps.sh')], { stdio: 'inherit' });
  const ports = await freeBlock(4);
  const [iperfPort, echoPort, haproxyPort, haproxyEchoPort] =
    ports === undefined ? [] : [ports, ports + 1, ports + 2, ports + 3];
  const iperfServer = spawn('iperf3', ['-s', '-p', String(iperfPort), '-B', '127.0.0.1'], { stdio: 'ignore' });
  const echo = createServer((socket) => {
    socket.on('data', (chunk) => socket.write(chunk));
    socket.on('error', () => socket.destroy());
  });
  await new Promise((done) => echo.listen(echoPort, '127.0.0.1', () => done(undefined)));
  const dir = await mkdtemp(join(tmpdir(), 'sc-bench-haproxy-'));
  await writeFile(
    join(dir, 'haproxy.cfg'),
    [
      'global',
      '  maxconn 4000',
      'defaults',
      '  mode tcp',
      '  timeout connect 5s',
      '  timeout client 1m',
      '  timeout server 1m',
      'listen iperf',
      `  bind 127.0.0.1:${haproxyPort}`,
      `  server b 127.0.0.1:${iperfPort}`,
      'listen echo',
      `  bind 127.0.0.1:${haproxyEchoPort}`,
      `  server b 127.0.0.1:${echoPort}`,
      '',
    ].join('\n'),
  );
  const haproxy = spawn('haproxy', ['-f', join(dir, 'haproxy.cfg'), '-db'], { stdio: 'ignore' });
  const daemon = await startDaemon({ rangeSize: 8 });
  const streams = {
    default: daemon.base,
    throughput: daemon.base + 1,
    echoDefault: daemon.base + 2,
    echoThroughput: daemon.base + 3,
  };
  /** @type {Record<string, Record<number, number[]>>} */
  const gbits = {
    direct: { 1: [], 4: [] },
    default: { 1: [], 4: [] },
    throughput: { 1: [], 4: [] },
    haproxy: { 1: [], 4: [] },
  };
  const rates = { direct: 0, default: 0, haproxy: 0 };
  const memory = { default: 0, throughput: 0, haproxy: 0 };
  try {
    await sleep(500);
    for (const [port, backend, profile] of [
      [streams.default, iperfPort, 'default'],
      [streams.throughput, iperfPort, 'throughput'],
      [streams.echoDefault, echoPort, 'default'],
      [streams.echoThroughput, echoPort, 'throughput'],
    ]) {
      const answer = await call('POST', `${daemon.url}/v1/streams`, { port, backend: `127.0.0.1:${backend}`, profile });
      if (answer.status !== 201) throw new Error(JSON.stringify(answer.json));
    }
    const targets = {
      direct: iperfPort,
      default: streams.default,
      throughput: streams.throughput,
      haproxy: haproxyPort,
    };
    for (let round = 0; round < ROUNDS; round += 1) {
      for (const flows of [1, 4]) {
        for (const [name, port] of Object.entries(targets))
          gbits[name]?.[flows]?.push(iperf(/** @type {number} */ (port), flows));
      }
    }
    rates.direct = await connectionRate(echoPort);
    rates.default = await connectionRate(streams.echoDefault);
    rates.haproxy = await connectionRate(haproxyEchoPort);

    const held = 100;
    const bulk = 4 << 20;
    const nginxPids = await pidsOf(daemon.env.CONDUCTOR_HOME);
    for (const [profile, port] of [
      ['default', streams.echoDefault],
      ['throughput', streams.echoThroughput],
    ]) {
      const before = await rss(nginxPids);
      const close = await holdConnections(/** @type {number} */ (port), held, bulk);
      await sleep(300);
      const after = await rss(nginxPids);
      close();
      await sleep(500);
      memory[/** @type {'default' | 'throughput'} */ (profile)] = ((after - before) * 1024) / held;
    }
    const haproxyPids = [/** @type {number} */ (haproxy.pid)];
    const before = await rss(haproxyPids);
    const close = await holdConnections(haproxyEchoPort, held, bulk);
    await sleep(300);
    memory.haproxy = (((await rss(haproxyPids)) - before) * 1024) / held;
    close();
  } finally {
    await daemon.stop();
    haproxy.kill('SIGTERM');
    iperfServer.kill('SIGTERM');
    echo.close();
    await rm(dir, { recursive: true, force: true });
  }
  const m = (/** @type {string} */ name, /** @type {number} */ flows) => median(gbits[name]?.[flows] ?? []);
  const share = (/** @type {string} */ name, /** @type {number} */ flows) => m(name, flows) / m('direct', flows);
  const row = (/** @type {string} */ label, /** @type {string} */ name) => [
    label,
    `${m(name, 1).toFixed(2)} Gbit/s (${share(name, 1).toFixed(2)})`,
    `${m(name, 4).toFixed(2)} Gbit/s (${share(name, 4).toFixed(2)})`,
  ];
  const holds =
    share('default', 1) >= 0.6 &&
    share('throughput', 1) >= 0.75 &&
    m('default', 1) >= m('haproxy', 1) &&
    m('throughput', 1) >= m('haproxy', 1);
  return {
    title: '5. Data plane',
    target: 'one flow: default at least 0.6 of direct, throughput profile at least 0.75, both no worse than HAProxy',
    holds,
    columns: ['path', 'one flow (share of direct)', 'four flows (share of direct)'],
    rows: [
      row('direct loopback', 'direct'),
      row('stream, default profile (256 KiB buffers)', 'default'),
      row('stream, throughput profile (1 MiB buffers)', 'throughput'),
      row('HAProxy 2.6, TCP mode (Debian defaults)', 'haproxy'),
    ],
    summary: `iperf3, ${SECONDS} s per run, median of ${ROUNDS} interleaved runs`,
    notes: [
      `Short connections (connect, one byte there and back, close; 16 at a time): direct ${Math.round(rates.direct)}/s, through a stream ${Math.round(rates.default)}/s, through HAProxy ${Math.round(rates.haproxy)}/s.`,
      `Memory per open connection (resident, with 100 connections open that each moved 4 MiB both ways, so that every buffer was filled): default profile ${memory.default.toFixed(0)} KiB, throughput profile ${memory.throughput.toFixed(0)} KiB, HAProxy ${memory.haproxy.toFixed(0)} KiB. nginx allocates one proxy buffer each way per session when data first moves, so at most 2 × 256 KiB (default) and 2 × 1 MiB (throughput); a session that moves little touches only a few KiB of them.`,
    ],
  };
}
