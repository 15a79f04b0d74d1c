/**
 * External mode, through the container's entrypoint run on the host: nginx is started by the
 * entrypoint, not by the daemon; the daemon writes into STREAM_CONFIG_PATH and reloads it. Also
 * what the daemon does when that nginx is broken or gone.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { appendFile, chmod, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { StreamView } from '@stream-conductor/shared';
import { fingerprintOf, makeCerts, tlsBackendWith, tlsRoundTrip } from '../helpers/certs.js';
import { ROOT, untilOutput, withLocalResolver } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';
import { freePortBlock } from '../helpers/ports.js';
import { killProcessesUsing } from '../helpers/processes.js';
import { eventually } from '../helpers/wait.js';

const ENTRYPOINT = join(ROOT, 'docker/entrypoint.sh');

let backend: EchoBackend;
let dir: string;
// No daemon of its own here (the entrypoint starts one): the fixture holds the folder, and kills
// what a failed test leaves running in it.
const daemons = daemonFixture();

beforeAll(async () => {
  backend = await EchoBackend.start('ext');
  dir = await daemons.dir();
});

afterAll(async () => {
  await backend?.close();
});

interface Container {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
  api: string;
  base: number;
  paths: { streams: string; home: string; run: string };
}

async function startEntrypoint(name: string, base?: number, extra: Record<string, string> = {}): Promise<Container> {
  const rangeStart = base ?? (await freePortBlock(11));
  const paths = { streams: join(dir, name, 'stream.d'), home: join(dir, name, 'home'), run: join(dir, name, 'run') };
  const [command, args] = withLocalResolver('bash', [ENTRYPOINT]);
  const child = spawn(command, args, {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      STREAM_CONFIG_PATH: paths.streams,
      CONDUCTOR_HOME: paths.home,
      CONDUCTOR_RUN_DIR: paths.run,
      PORT_RANGE: `${rangeStart}-${rangeStart + 9}`,
      BIND_ADDRESS: '127.0.0.1',
      BIND_PORT: String(rangeStart + 10),
      CONDUCTOR_LISTEN_ADDRESS: '127.0.0.1',
      ...extra,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  const api = `http://127.0.0.1:${rangeStart + 10}`;
  try {
    await untilOutput(child, /"msg":"ready"/, 20_000);
    if (!(await fetch(`${api}/status`)).ok) throw new Error('/status did not answer 200');
  } catch (error) {
    child.kill('SIGKILL');
    throw new Error(`entrypoint not ready: ${(error as Error).message}\n${output}`);
  }
  return { child, output: () => output, exited, api, base: rangeStart, paths };
}

const get = async (api: string, path: string): Promise<Record<string, unknown>> =>
  (await (await fetch(`${api}${path}`)).json()) as Record<string, unknown>;

/** POST /v1/streams with `body`, as JSON. */
const createStream = (api: string, body: Record<string, unknown>): Promise<Response> =>
  fetch(`${api}/v1/streams`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

function nginxMaster(container: Container): Promise<number> {
  return readFile(join(container.paths.run, 'nginx.pid'), 'utf8').then((text) => Number(text.trim()));
}

describe('the container entrypoint (external mode)', () => {
  it('runs nginx and the daemon; streams flow; SIGTERM stops both', async () => {
    const container = await startEntrypoint('a');
    const port = container.base;
    expect(await get(container.api, `/createstream/${port}/127.0.0.1:${backend.port}`)).toEqual({
      result: 'ok',
      errors: '',
    });
    expect(await roundTrip(port, 'box')).toBe('ext:box');
    // Traffic is counted from the access log the daemon gives this nginx too.
    const stats = await eventually(
      async () =>
        ((await get(container.api, `/v1/streams/${port}?stats=1`)).stream as { stats?: Record<string, unknown> }).stats,
      (found) => found?.sessions === 1,
    );
    expect(stats).toMatchObject({ sessions: 1, bytesIn: 3, bytesOut: 7, failedSessions: 0 });
    const status = await get(container.api, '/v1/status');
    expect(status).toMatchObject({ mode: 'external', nginx: { state: 'running' } });
    expect((await readdir(container.paths.streams)).filter((name) => name.endsWith('.conf'))).toEqual([
      '_conductor_+log-format.conf',
      `_conductor_${port}.conf`,
    ]);
    expect(await get(container.api, `/removestream/${port}`)).toEqual({ result: 'ok', errors: '' });
    expect(await connectOutcome(port)).toBe('refused');
    await get(container.api, `/createstream/${port}/127.0.0.1:${backend.port}`);

    const master = await nginxMaster(container);
    container.child.kill('SIGTERM');
    expect(await container.exited).toBe(0);
    expect(await connectOutcome(port)).toBe('refused');
    expect(await connectOutcome(container.base + 10)).toBe('refused');
    expect(() => process.kill(master, 0)).toThrow();

    // A restart of the container brings the streams back from the daemon's store.
    const again = await startEntrypoint('a', container.base);
    try {
      expect(await roundTrip(port, 'again')).toBe('ext:again');
    } finally {
      again.child.kill('SIGTERM');
      await again.exited;
    }
  });

  it('starts even when a stored backend no longer resolves, and reports it', async () => {
    const container = await startEntrypoint('b');
    const [good, bad] = [container.base, container.base + 1];
    await get(container.api, `/createstream/${good}/127.0.0.1:${backend.port}`);
    await get(container.api, `/createstream/${bad}/localhost:${backend.port}`);
    container.child.kill('SIGTERM');
    await container.exited;
    // While it was down, the name stopped resolving: simulate by editing the stored definition.
    const storePath = join(container.paths.home, 'streams.json');
    const store = JSON.parse(await readFile(storePath, 'utf8')) as {
      streams: Array<{ port: number; backends: Array<{ address: string }> }>;
    };
    for (const stream of store.streams)
      if (stream.port === bad) stream.backends = [{ address: 'gone-away.invalid:22' }];
    await writeFile(storePath, JSON.stringify(store));
    await writeFile(
      join(container.paths.streams, `_conductor_${bad}.conf`),
      `server { listen 127.0.0.1:${bad}; proxy_pass gone-away.invalid:22; }\n`,
    );

    const again = await startEntrypoint('b', container.base);
    try {
      expect(await roundTrip(good, 'still')).toBe('ext:still');
      const streams = (await get(again.api, '/v1/streams')).streams as Array<{
        port: number;
        state: string;
        reason?: string;
      }>;
      expect(streams.find((stream) => stream.port === good)?.state).toBe('live');
      expect(streams.find((stream) => stream.port === bad)).toMatchObject({
        state: 'failed',
        reason: 'nginx: host not found in upstream "gone-away.invalid"',
      });
    } finally {
      again.child.kill('SIGTERM');
      await again.exited;
    }
  });

  it("keeps the API token away from every nginx it runs, its own and the daemon's", async () => {
    const token = 'container-token-0123456789';
    // nginx writes its process title over its environment: a wrapper records what each run got.
    const seen = join(dir, 'nginx-env');
    const wrapper = join(dir, 'nginx-wrapper');
    await writeFile(wrapper, `#!/bin/sh\necho "run: $*" >> '${seen}'\nenv >> '${seen}'\nexec /usr/sbin/nginx "$@"\n`);
    await chmod(wrapper, 0o755);
    const container = await startEntrypoint('d', undefined, { CONDUCTOR_TOKEN: token, NGINX_BIN: wrapper });
    try {
      const port = container.base;
      const answer = await fetch(`${container.api}/createstream/${port}/127.0.0.1:${backend.port}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      expect(await answer.json()).toEqual({ result: 'ok', errors: '' });
      expect(await roundTrip(port, 'tok')).toBe('ext:tok');
      const runs = await readFile(seen, 'utf8');
      // The entrypoint's look at the build, its start of nginx, and the daemon's reload.
      expect(runs).toMatch(/^run: -V$/m);
      expect(runs).toMatch(/^run: -c \S+ -e \S+$/m);
      expect(runs).toMatch(/^run: .*-s reload$/m);
      expect(runs).toContain('PORT_RANGE=');
      expect(runs).not.toContain(token);
    } finally {
      container.child.kill('SIGTERM');
      await container.exited;
    }
  });

  it('stops the daemon and exits non-zero when nginx dies, so the container restarts', async () => {
    const container = await startEntrypoint('c');
    process.kill(await nginxMaster(container), 'SIGKILL');
    const code = await container.exited;
    expect(code).not.toBe(0);
    expect(await connectOutcome(container.base + 10)).toBe('refused');
    expect(container.output()).toContain('nginx exited');
    // Outside a container nothing reaps the workers of the killed master; in one, they go with it.
    expect(killProcessesUsing(container.paths.run)).toBeGreaterThan(0);
  });
});

describe('TLS on a stream in external mode', () => {
  it("serves the operator's certificate from the daemon's checked copy, and again after a restart", async () => {
    const certs = await makeCerts(await mkdtemp(join(tmpdir(), 'sc-ext-tls-')));
    const container = await startEntrypoint('t');
    const port = container.base;
    try {
      const created = await createStream(container.api, {
        port,
        backend: `127.0.0.1:${backend.port}`,
        tlsCert: certs.serverCert,
        tlsKey: certs.serverKey,
      });
      expect(created.status).toBe(201);
      const served = await fingerprintOf(certs.serverCert);
      expect(await tlsRoundTrip(port, 'sealed', certs.ca)).toEqual({ answer: 'ext:sealed', fingerprint256: served });
      // The nginx the entrypoint runs reads the daemon's copy in its home, never the operator's file.
      const conf = await readFile(join(container.paths.streams, `_conductor_${port}.conf`), 'utf8');
      expect(conf).toContain(join(container.paths.home, 'stream-tls'));
      expect(conf).not.toContain(certs.serverCert);
    } finally {
      container.child.kill('SIGTERM');
      await container.exited;
    }
    // The entrypoint starts nginx without the per-stream files; the daemon puts the TLS stream back.
    const again = await startEntrypoint('t', container.base);
    try {
      expect((await tlsRoundTrip(port, 'back', certs.ca)).answer).toBe('ext:back');
    } finally {
      again.child.kill('SIGTERM');
      await again.exited;
    }
  });
});

describe('backend TLS in external mode', () => {
  it("reads the failed handshakes with a backend from the nginx's error log it is given", async () => {
    const certs = await makeCerts(await mkdtemp(join(tmpdir(), 'sc-ext-backend-tls-')));
    // A backend whose certificate the other CA signed.
    const { server, port: backendPort } = await tlsBackendWith(certs.wrongServerCert, certs.wrongServerKey);
    const container = await startEntrypoint('b');
    const port = container.base;
    try {
      const created = await createStream(container.api, {
        port,
        backend: `127.0.0.1:${backendPort}`,
        backendTls: true,
        backendCa: certs.ca,
        backendName: 'localhost',
      });
      expect(created.status).toBe(201);
      await expect(roundTrip(port, 'x', { timeoutMs: 5000 })).rejects.toThrow();
      const stream = await eventually(
        async () => (await get(container.api, `/v1/streams/${port}`)).stream as StreamView,
        (view) => view.backendTlsFailures?.last !== undefined,
      );
      expect(stream.backendTlsFailures).toMatchObject({
        count: 1,
        reasons: { untrusted: 1 },
        last: { reason: 'untrusted', backend: `127.0.0.1:${backendPort}`, client: '127.0.0.1' },
      });
    } finally {
      container.child.kill('SIGTERM');
      await container.exited;
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('external mode when nginx misbehaves', () => {
  it("refuses changes with nginx's message when someone broke the main configuration, keeping its files", async () => {
    const container = await startEntrypoint('d');
    try {
      const port = container.base;
      await get(container.api, `/createstream/${port}/127.0.0.1:${backend.port}`);
      const before = await readdir(container.paths.streams);
      const conf = join(container.paths.run, 'nginx.conf');
      const original = await readFile(conf, 'utf8');
      await appendFile(conf, '\nthis is not a directive;\n');
      const refused = await get(container.api, `/createstream/${port + 1}/127.0.0.1:${backend.port}`);
      expect(refused.result).toBe('error');
      expect(refused.errors).toMatch(/^nginx refused the change: unknown directive "this"/);
      expect(await readdir(container.paths.streams)).toEqual(before);
      expect(await roundTrip(port, 'unhurt')).toBe('ext:unhurt');
      await writeFile(conf, original);
      expect(await get(container.api, `/createstream/${port + 1}/127.0.0.1:${backend.port}`)).toEqual({
        result: 'ok',
        errors: '',
      });
    } finally {
      container.child.kill('SIGTERM');
      await container.exited;
    }
  });
});
