#!/usr/bin/env node
/**
 * The cost of routing by server name on connection setup: a scratch nginx (nothing of the daemon
 * runs) with two ports on 127.0.0.78 to the same node TLS backend, one a plain stream
 * (`proxy_pass host:port`), one as the daemon renders routes (`ssl_preread on`, a hostnames map of
 * ROUTES names plus a wildcard and a default, a map on $ssl_preread_protocol, `proxy_pass $var` to
 * an upstream per route). The client does CONNECTIONS sequential TLS handshakes with a server name
 * (TLS 1.3, no session reuse) through each port, the ports taken in turn (A B A B...) for ROUNDS;
 * it prints the median time per handshake of each. Usage:
 *   node bench/sni.mjs [CONNECTIONS=300] [ROUNDS=6] [ROUTES=50] [FIRST=22000]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, createServer } from 'node:tls';

const connections = Number(process.argv[2] ?? 300);
const rounds = Number(process.argv[3] ?? 6);
const routes = Number(process.argv[4] ?? 50);
const first = Number(process.argv[5] ?? 22000);
const host = '127.0.0.78';
const module = '/usr/lib/nginx/modules/ngx_stream_module.so';

const dir = mkdtempSync(join(tmpdir(), 'sc-bench-sni-'));
execFileSync(
  'openssl',
  [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    join(dir, 'k.pem'),
    '-out',
    join(dir, 'c.pem'),
    '-subj',
    '/CN=bench',
    '-days',
    '1',
  ],
  { stdio: 'ignore' },
);
const backend = createServer({ key: readFileSync(join(dir, 'k.pem')), cert: readFileSync(join(dir, 'c.pem')) }, (s) => {
  s.on('error', () => s.destroy());
  s.end();
});
await new Promise((resolve) => backend.listen(0, host, resolve));
const target = `${host}:${backend.address().port}`;

const names = Array.from({ length: routes }, (_, i) => `    h${i}.example.com conductor_${first + 1}_r${i};`);
const upstreams = Array.from(
  { length: routes },
  (_, i) => `upstream conductor_${first + 1}_r${i} { server ${target}; }`,
);
const streams = [
  `server {\n    listen ${host}:${first};\n    proxy_buffer_size 256k;\n    proxy_half_close on;\n    proxy_pass ${target};\n}`,
  ...upstreams,
  `upstream conductor_${first + 1}_wild { server ${target}; }`,
  `upstream conductor_${first + 1}_none { server 127.0.0.1:1 down; }`,
  `map $ssl_preread_server_name $conductor_${first + 1}_sni {\n    hostnames;\n${names.join('\n')}\n    *.db.example.com conductor_${first + 1}_wild;\n    default conductor_${first + 1}_none;\n}`,
  `map $ssl_preread_protocol $conductor_${first + 1}_route {\n    "" conductor_${first + 1}_none;\n    default $conductor_${first + 1}_sni;\n}`,
  `server {\n    listen ${host}:${first + 1};\n    proxy_buffer_size 256k;\n    proxy_half_close on;\n    ssl_preread on;\n    proxy_pass $conductor_${first + 1}_route;\n}`,
].join('\n');
writeFileSync(join(dir, 'streams.conf'), `${streams}\n`);
writeFileSync(
  join(dir, 'nginx.conf'),
  [
    `load_module ${module};`,
    'worker_processes 2;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log warn;`,
    'events { worker_connections 1024; }',
    `stream { include ${dir}/streams.conf; }`,
    '',
  ].join('\n'),
);
const started = spawnSync('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')], { encoding: 'utf8' });
if (started.status !== 0) throw new Error(started.stderr);

function handshake(port, servername) {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, servername, rejectUnauthorized: false, minVersion: 'TLSv1.3' }, () => {
      socket.destroy();
      resolve();
    });
    socket.once('error', reject);
  });
}

async function timed(port, servername) {
  const start = process.hrtime.bigint();
  for (let i = 0; i < connections; i += 1) await handshake(port, servername);
  return Number(process.hrtime.bigint() - start) / 1e6 / connections;
}

try {
  await sleep(300);
  await timed(first, 'h7.example.com');
  await timed(first + 1, 'h7.example.com');
  const plain = [];
  const exact = [];
  const wildcard = [];
  for (let round = 0; round < rounds; round += 1) {
    plain.push(await timed(first, 'h7.example.com'));
    exact.push(await timed(first + 1, `h${routes - 1}.example.com`));
    wildcard.push(await timed(first + 1, 'a.db.example.com'));
  }
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const show = (values) => values.map((v) => v.toFixed(3)).join(' ');
  console.log(`connections=${connections} rounds=${rounds} routes=${routes}`);
  console.log(`plain stream      ms/handshake median ${median(plain).toFixed(3)}  (${show(plain)})`);
  console.log(`sni, exact name   ms/handshake median ${median(exact).toFixed(3)}  (${show(exact)})`);
  console.log(`sni, wildcard     ms/handshake median ${median(wildcard).toFixed(3)}  (${show(wildcard)})`);
} finally {
  const pid = Number(readFileSync(join(dir, 'nginx.pid'), 'utf8'));
  process.kill(pid, 'SIGQUIT');
  await sleep(300);
  backend.close();
  rmSync(dir, { recursive: true, force: true });
}
