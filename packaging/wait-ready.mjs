#!/usr/bin/env node
// The service's readiness check (ExecStartPost= of stream-conductor.service): the daemon cannot
// tell systemd it is ready (no sd_notify), so `systemctl start` waits on this instead. It asks the
// daemon's /status (open without a token) until it answers 200, which happens only once nginx is
// in line with the stored streams and the API listens. Exit 0 then; exit 1 when the daemon's
// process (--pid) is gone or --timeout passes first; exit 2 on bad arguments.
// The address is the daemon's, read from the same environment: BIND_ADDRESS (default 127.0.0.1 in
// managed mode, 0.0.0.0 in external mode; a wildcard is asked on loopback) and BIND_PORT (5000);
// HTTPS when CONDUCTOR_TLS_CERT is set. Only whether the daemon answers counts, so its certificate
// is not checked (nothing secret is sent), and a server that requires a client certificate
// (CONDUCTOR_TLS_CLIENT_CA) and says so in the handshake answers too: the API listens only once
// the daemon is ready.
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';

function fail(code, message) {
  process.stderr.write(`wait-ready: ${message}\n`);
  process.exit(code);
}

function parseArguments(argv) {
  const options = { pid: undefined, timeoutMs: 90_000 };
  for (let i = 0; i < argv.length; i += 1) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (name === '--pid' && /^[1-9][0-9]*$/.test(value ?? '')) options.pid = Number(value);
    else if (name === '--timeout' && /^[1-9][0-9]*$/.test(value ?? '')) options.timeoutMs = Number(value) * 1000;
    else fail(2, `usage: wait-ready.mjs [--pid PID] [--timeout SECONDS] (got ${JSON.stringify(argv.join(' '))})`);
    i += 1;
  }
  return options;
}

/** The URL of the daemon's /status, from the daemon's own settings. */
function statusUrl(env) {
  const external = (env.CONDUCTOR_NGINX_MODE ?? 'managed') === 'external';
  let host = env.BIND_ADDRESS || (external ? '0.0.0.0' : '127.0.0.1');
  if (host === '0.0.0.0') host = '127.0.0.1';
  if (host === '::' || host === '[::]') host = '::1';
  if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`;
  const port = env.BIND_PORT || '5000';
  return `${env.CONDUCTOR_TLS_CERT ? 'https' : 'http'}://${host}:${port}/status`;
}

/** TLS alerts that mean: a server is there, and wants a client certificate. */
const CERTIFICATE_WANTED = new Set([
  'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
  'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE',
]);

/**
 * 'ready', or what kept it from being ready. A refused handshake counts only when the daemon is
 * set to want client certificates (`clientCertificates`): from anything else it is not ours.
 */
function ask(url, clientCertificates) {
  return new Promise((resolve) => {
    const request = (url.startsWith('https:') ? httpsRequest : httpRequest)(
      url,
      { rejectUnauthorized: false, timeout: 2000 },
      (answer) => {
        answer.resume();
        resolve(answer.statusCode === 200 ? 'ready' : `HTTP ${answer.statusCode}`);
      },
    );
    request.on('timeout', () => request.destroy(new Error('no answer in 2 s')));
    request.on('error', (error) =>
      resolve(clientCertificates && CERTIFICATE_WANTED.has(error.code) ? 'ready' : (error.code ?? error.message)),
    );
    request.end();
  });
}

function running(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

const options = parseArguments(process.argv.slice(2));
const url = statusUrl(process.env);
const deadline = Date.now() + options.timeoutMs;
let last = 'no answer yet';
for (;;) {
  if (options.pid !== undefined && !running(options.pid))
    fail(1, `the daemon (pid ${options.pid}) exited before it was ready`);
  last = await ask(url, Boolean(process.env.CONDUCTOR_TLS_CLIENT_CA));
  // An answer from the port while our daemon is gone is another process's: not ready.
  if (last === 'ready' && options.pid !== undefined && !running(options.pid))
    fail(1, `the daemon (pid ${options.pid}) exited before it was ready`);
  if (last === 'ready') break;
  if (Date.now() >= deadline) fail(1, `${url} not ready after ${options.timeoutMs / 1000} s (${last})`);
  await sleep(200);
}
process.stderr.write(`wait-ready: ${url} answers\n`);
