#!/usr/bin/env node
/**
 * How nginx takes a wide port range: one `server` block per port (what the daemon renders) against
 * one `listen FIRST-LAST` with a `map $server_port` for the backend port (nginx has no arithmetic).
 * For each form: `nginx -t` time, start until every port listens, a reload until the old workers
 * are gone, and the resident memory of the master and its workers afterwards. Medians of ROUNDS.
 * A scratch nginx on 127.0.0.77; nothing of the daemon runs. Usage:
 *   node bench/port-range.mjs [PORTS=1000] [ROUNDS=5] [FIRST=21000]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const size = Number(process.argv[2] ?? 1000);
const rounds = Number(process.argv[3] ?? 5);
const first = Number(process.argv[4] ?? 21000);
const last = first + size - 1;
const offset = 10000;
const module = '/usr/lib/nginx/modules/ngx_stream_module.so';

const perPort = () =>
  Array.from(
    { length: size },
    (_, i) =>
      `server {\n    listen 127.0.0.77:${first + i};\n    proxy_buffer_size 256k;\n    proxy_half_close on;\n    proxy_pass 127.0.0.77:${first + i + offset};\n}\n`,
  ).join('');
const mapped = () =>
  [
    'map $server_port $conductor_backend_port {',
    ...Array.from({ length: size }, (_, i) => `    ${first + i} ${first + i + offset};`),
    '}',
    `server {\n    listen 127.0.0.77:${first}-${last};\n    proxy_buffer_size 256k;\n    proxy_half_close on;\n    proxy_pass 127.0.0.77:$conductor_backend_port;\n}\n`,
  ].join('\n');

function conf(dir, streams) {
  writeFileSync(join(dir, 'streams.conf'), streams);
  writeFileSync(
    join(dir, 'nginx.conf'),
    [
      `load_module ${module};`,
      'worker_processes 2;',
      `pid ${dir}/nginx.pid;`,
      `error_log ${dir}/error.log warn;`,
      'worker_rlimit_nofile 8192;',
      'events { worker_connections 6000; }',
      `stream { include ${dir}/streams.conf; }`,
      '',
    ].join('\n'),
  );
  return join(dir, 'nginx.conf');
}

function listeningCount() {
  const seen = new Set();
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[3] !== '0A') continue;
    const port = Number.parseInt(f[1].split(':')[1], 16);
    if (port >= first && port <= last) seen.add(port);
  }
  return seen.size;
}

const children = (pid) =>
  readdirSync('/proc')
    .filter((name) => /^[0-9]+$/.test(name))
    .filter((name) => {
      try {
        return readFileSync(`/proc/${name}/stat`, 'utf8').split(') ')[1].split(' ')[1] === String(pid);
      } catch {
        return false;
      }
    })
    .map(Number);
const rssKiB = (pid) => Number(/VmRSS:\s+([0-9]+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

async function until(check, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await sleep(2);
  }
}

async function measure(name, render) {
  const results = { test: [], start: [], reload: [], rss: [], workerRss: [] };
  for (let round = 0; round < rounds; round += 1) {
    const dir = mkdtempSync(join(tmpdir(), 'port-range-bench-'));
    const file = conf(dir, render());
    let t = performance.now();
    const test = spawnSync('nginx', ['-t', '-q', '-c', file, '-p', dir]);
    if (test.status !== 0) throw new Error(`${name}: nginx -t failed: ${test.stderr}`);
    results.test.push(performance.now() - t);
    t = performance.now();
    execFileSync('nginx', ['-c', file, '-p', dir]);
    await until(() => listeningCount() === size);
    results.start.push(performance.now() - t);
    const master = Number(readFileSync(join(dir, 'nginx.pid'), 'utf8'));
    await until(() => children(master).length === 2);
    const old = children(master);
    t = performance.now();
    process.kill(master, 'SIGHUP');
    await until(() => {
      const now = children(master);
      return now.length === 2 && now.every((pid) => !old.includes(pid));
    });
    results.reload.push(performance.now() - t);
    const workers = children(master);
    results.rss.push(rssKiB(master) + workers.reduce((sum, pid) => sum + rssKiB(pid), 0));
    results.workerRss.push(rssKiB(workers[0]));
    process.kill(master, 'SIGQUIT');
    await until(() => listeningCount() === 0);
    rmSync(dir, { recursive: true, force: true });
  }
  return {
    name,
    test: median(results.test).toFixed(0),
    start: median(results.start).toFixed(0),
    reload: median(results.reload).toFixed(0),
    rss: (median(results.rss) / 1024).toFixed(1),
    workerRss: (median(results.workerRss) / 1024).toFixed(1),
  };
}

const version = spawnSync('nginx', ['-v']).stderr.toString().trim();
console.log(`${version}, ${size} ports ${first}-${last} on 127.0.0.77, 2 workers, medians of ${rounds} rounds\n`);
console.log(
  '| form | nginx -t (ms) | start until all listen (ms) | reload until old workers gone (ms) | RSS master + 2 workers (MiB) | RSS one worker (MiB) |',
);
console.log('| --- | --- | --- | --- | --- | --- |');
// Interleaved, so that a noisy neighbour weighs on both forms alike.
const rows = [];
for (const [name, render] of [
  ['one server per port', perPort],
  ['listen range + map', mapped],
])
  rows.push(await measure(name, render));
for (const row of rows)
  console.log(`| ${row.name} | ${row.test} | ${row.start} | ${row.reload} | ${row.rss} | ${row.workerRss} |`);
