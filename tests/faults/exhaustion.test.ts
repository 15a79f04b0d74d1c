/**
 * A limit hit in the middle of a change: the nginx master, or the daemon itself, runs out of file
 * descriptors while it takes a change (the RLIMIT_NOFILE of the running process lowered with
 * prlimit, as a host-wide shortage would), cannot fork (a cgroup pids limit), or runs out of memory
 * (a cgroup memory limit: the kernel's OOM killer ends nginx's processes). The change is refused
 * with the reason and everything else stays as it was, or (memory) is answered live and what the
 * kernel then kills is reported and brought back by the daemon itself. Once the limit is back,
 * changes work.
 */

import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type Daemon, masterPidFor } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';
import { snapshot } from '../helpers/state.js';
import { eventually } from '../helpers/wait.js';

let backend: EchoBackend;
let daemon: Daemon;

const daemons = daemonFixture();

beforeAll(async () => {
  backend = await EchoBackend.start('b');
  daemon = await daemons.start({
    rangeSize: 10,
    env: { CONDUCTOR_NGINX_INSTANCES: '1', CONDUCTOR_AUDIT_INTERVAL: '0.5' },
  });
});

afterAll(async () => {
  await backend?.close();
});

const nofile = (pid: number): string =>
  execFileSync('prlimit', ['--pid', String(pid), '--nofile', '--output=SOFT,HARD', '--noheadings'], {
    encoding: 'utf8',
  }).trim();

describe('nginx out of file descriptors during a change', () => {
  it('refuses the change with the reason and leaves everything else as it was', async () => {
    const [kept, added, removed] = [daemon.rangeStart, daemon.rangeStart + 1, daemon.rangeStart + 2];
    expect(
      (await daemon.request('POST', '/v1/streams', { port: kept, backend: `127.0.0.1:${backend.port}` })).status,
    ).toBe(201);
    expect(
      (await daemon.request('POST', '/v1/streams', { port: removed, backend: `127.0.0.1:${backend.port}` })).status,
    ).toBe(201);
    const master = await masterPidFor(daemon, kept);
    const before = await snapshot(daemon);
    const [soft, hard] = nofile(master).split(/\s+/);
    // No descriptor to spare: a new descriptor must be numbered below the limit, and 0-2 are taken,
    // so the master cannot open its configuration or a new socket. (The soft limit only: raising a
    // hard limit again needs CAP_SYS_RESOURCE, which a sandbox may lack.)
    expect(readdirSync(`/proc/${master}/fd`)).toEqual(expect.arrayContaining(['0', '1', '2']));
    execFileSync('prlimit', ['--pid', String(master), `--nofile=3:${hard}`]);
    try {
      const refused = await daemon.request('POST', '/v1/streams', {
        port: added,
        backend: `127.0.0.1:${backend.port}`,
      });
      expect(refused.status).toBeGreaterThanOrEqual(400);
      expect(JSON.stringify(refused.json)).toMatch(/Too many open files/);
      expect(await snapshot(daemon)).toEqual(before);
      expect(await connectOutcome(added)).toBe('refused');
      expect(await roundTrip(kept, 'kept')).toBe('b:kept');
      expect(await roundTrip(removed, 'still')).toBe('b:still');
    } finally {
      execFileSync('prlimit', ['--pid', String(master), `--nofile=${soft}:${hard}`]);
    }
    // The limit is back: the same changes go through, and are true at once.
    expect(
      (await daemon.request('POST', '/v1/streams', { port: added, backend: `127.0.0.1:${backend.port}` })).status,
    ).toBe(201);
    expect(await roundTrip(added, 'added')).toBe('b:added');
    expect((await daemon.request('DELETE', `/v1/streams/${removed}`)).status).toBe(200);
    expect(await connectOutcome(removed)).toBe('refused');
    expect(await roundTrip(kept, 'kept')).toBe('b:kept');
  });
});

/** One HTTP/1.1 connection kept open, so that requests on it need no new descriptor in the daemon. */
async function keptConnection(port: number): Promise<{
  send(method: string, path: string, body?: unknown): Promise<{ status: number; body: string }>;
  close(): void;
}> {
  const socket = connect({ port, host: '127.0.0.1' });
  await new Promise<void>((done, fail) => {
    socket.once('connect', () => done());
    socket.once('error', fail);
  });
  let buffer = '';
  let waiting: ((text: string) => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    const head = buffer.indexOf('\r\n\r\n');
    if (head < 0) return;
    const length = Number(/content-length: *([0-9]+)/i.exec(buffer.slice(0, head))?.[1] ?? 0);
    if (buffer.length < head + 4 + length) return;
    const answer = buffer.slice(0, head + 4 + length);
    buffer = buffer.slice(head + 4 + length);
    waiting?.(answer);
  });
  return {
    send: (method, path, body) =>
      new Promise((resolve) => {
        waiting = (text) =>
          resolve({ status: Number(text.split(' ')[1]), body: text.slice(text.indexOf('\r\n\r\n') + 4) });
        const payload = body === undefined ? '' : JSON.stringify(body);
        socket.write(
          `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`,
        );
      }),
    close: () => socket.destroy(),
  };
}

describe('the daemon out of file descriptors during a change', () => {
  it('refuses each change with the reason, keeps serving, and changes work once the limit is back', async () => {
    const [kept, removed, added] = [daemon.rangeStart + 3, daemon.rangeStart + 4, daemon.rangeStart + 5];
    expect(
      (await daemon.request('POST', '/v1/streams', { port: kept, backend: `127.0.0.1:${backend.port}` })).status,
    ).toBe(201);
    expect(
      (await daemon.request('POST', '/v1/streams', { port: removed, backend: `127.0.0.1:${backend.port}` })).status,
    ).toBe(201);
    const pid = daemon.child.pid as number;
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('conductor-daemon');
    const connection = await keptConnection(daemon.apiPort);
    expect((await connection.send('GET', '/v1/status')).status).toBe(200);
    const before = await snapshot(daemon);
    const [soft, hard] = nofile(pid).split(/\s+/);
    execFileSync('prlimit', ['--pid', String(pid), `--nofile=3:${hard}`]);
    let answers: Array<{ status: number; body: string }> = [];
    try {
      answers = [
        await connection.send('DELETE', `/v1/streams/${removed}`),
        await connection.send('POST', '/v1/streams', { port: added, backend: `127.0.0.1:${backend.port}` }),
      ];
    } finally {
      execFileSync('prlimit', ['--pid', String(pid), `--nofile=${soft}:${hard}`]);
      connection.close();
    }
    for (const answer of answers) {
      expect(answer.status).toBeGreaterThanOrEqual(500);
      expect(answer.body).toMatch(/too many open files/i);
    }
    expect(await snapshot(daemon)).toEqual(before);
    expect(await roundTrip(removed, 'still')).toBe('b:still');
    expect(await connectOutcome(added)).toBe('refused');
    // The limit is back: the same changes go through.
    expect((await daemon.request('DELETE', `/v1/streams/${removed}`)).status).toBe(200);
    expect(await connectOutcome(removed)).toBe('refused');
    expect(
      (await daemon.request('POST', '/v1/streams', { port: added, backend: `127.0.0.1:${backend.port}` })).status,
    ).toBe(201);
    expect(await roundTrip(added, 'added')).toBe('b:added');
    expect(await roundTrip(kept, 'kept')).toBe('b:kept');
  });
});

describe('nginx unable to fork its workers during a change (a process limit)', () => {
  it('refuses the change, says nothing accepts while the limit holds, and serves again by itself once it lifts', async () => {
    const [kept, added] = [daemon.rangeStart + 6, daemon.rangeStart + 7];
    expect(
      (await daemon.request('POST', '/v1/streams', { port: kept, backend: `127.0.0.1:${backend.port}` })).status,
    ).toBe(201);
    const master = await masterPidFor(daemon, kept);
    // The cgroup (v1) pids controller: at most one task, the master itself, so it cannot fork.
    const group = `/sys/fs/cgroup/pids/sc-test-${process.pid}`;
    mkdirSync(group);
    const lift = (): void => {
      writeFileSync(`${group}/pids.max`, 'max');
      writeFileSync('/sys/fs/cgroup/pids/cgroup.procs', String(master));
    };
    try {
      writeFileSync(`${group}/cgroup.procs`, String(master));
      writeFileSync(`${group}/pids.max`, '1');
      const refused = await daemon.request('POST', '/v1/streams', {
        port: added,
        backend: `127.0.0.1:${backend.port}`,
      });
      expect(refused.status).toBeGreaterThanOrEqual(400);
      expect(JSON.stringify(refused.json)).toMatch(/fork\(\) failed/);
      expect(await connectOutcome(added)).toBe('refused');
      // nginx told the old workers to quit and has no new ones: status says so, never healthy.
      type Audit = { inLine: boolean; workers: number };
      const audit = await eventually(
        async () => ((await daemon.request('GET', '/v1/status')).json as { nginx: { audit?: Audit } }).nginx.audit,
        (found) => found?.inLine === false && found.workers === 0,
      );
      expect(audit).toMatchObject({ inLine: false, workers: 0 });
      lift();
      // No change sent: the daemon gets workers started again by itself, and the stream flows.
      expect(
        await eventually(
          () => roundTrip(kept, 'back').catch((error: Error) => error.message),
          (answer) => answer === 'b:back',
          30_000,
        ),
      ).toBe('b:back');
    } finally {
      lift();
      rmdirSync(group);
    }
    expect(
      (await daemon.request('POST', '/v1/streams', { port: added, backend: `127.0.0.1:${backend.port}` })).status,
    ).toBe(201);
    expect(await roundTrip(added, 'added')).toBe('b:added');
  });
});

describe('nginx out of memory during a change (a cgroup memory limit)', () => {
  it('answers the change truthfully, reports the kill, and serves every listed stream again by itself', async () => {
    const [kept, added] = [daemon.rangeStart + 8, daemon.rangeStart + 9];
    expect(
      (await daemon.request('POST', '/v1/streams', { port: kept, backend: `127.0.0.1:${backend.port}` })).status,
    ).toBe(201);
    const master = await masterPidFor(daemon, kept);
    const restartsBefore = ((await daemon.request('GET', '/v1/status')).json as { nginx: { restarts: number } }).nginx
      .restarts;
    // The cgroup (v1) memory controller: the master and its workers, with no memory to spare, so
    // the reload's new cycle and workers push it over and the kernel's OOM killer ends processes.
    const group = `/sys/fs/cgroup/memory/sc-test-${process.pid}`;
    mkdirSync(group);
    const members = (): number[] =>
      readFileSync(`${group}/cgroup.procs`, 'utf8').split('\n').filter(Boolean).map(Number);
    try {
      writeFileSync(`${group}/cgroup.procs`, String(master));
      const workers = readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').split(' ').filter(Boolean);
      for (const pid of workers) writeFileSync(`${group}/cgroup.procs`, pid);
      writeFileSync(`${group}/memory.limit_in_bytes`, readFileSync(`${group}/memory.usage_in_bytes`, 'utf8').trim());
      const answer = await daemon.request('POST', '/v1/streams', { port: added, backend: `127.0.0.1:${backend.port}` });
      const oomKills = (): number =>
        Number(/oom_kill (\d+)/.exec(readFileSync(`${group}/memory.oom_control`, 'utf8'))?.[1] ?? 0);
      if (answer.status === 201) {
        // Live when answered; whatever the OOM killer ends afterwards, the daemon brings back.
        expect(answer.json).toMatchObject({ stream: { port: added, state: 'live' } });
      } else {
        expect(answer.status).toBeGreaterThanOrEqual(400);
        expect(JSON.stringify(answer.json)).toMatch(/memory|nginx/i);
      }
      // The kernel ended processes of ours: status says nginx died and restarted, never silence.
      expect(
        await eventually(
          async () => oomKills(),
          (kills) => kills > 0,
          10_000,
        ),
      ).toBeGreaterThan(0);
      const status = await eventually(
        async () =>
          (await daemon.request('GET', '/v1/status')).json as {
            nginx: { restarts: number; state: string; incidents?: Array<{ message: string }> };
          },
        (found) => found.nginx.restarts > restartsBefore && found.nginx.state === 'running',
        30_000,
      );
      expect(status.nginx.restarts).toBeGreaterThan(restartsBefore);
      expect(JSON.stringify(status.nginx.incidents)).toMatch(/exited unexpectedly/);
      // Every stream the API lists forwards again, with no command sent; nothing is listed that is not live.
      const listed = (
        (await daemon.request('GET', '/v1/streams')).json as { streams: Array<{ port: number; state: string }> }
      ).streams;
      expect(listed.find((stream) => stream.port === kept)?.state).toBe('live');
      expect(listed.some((stream) => stream.port === added)).toBe(answer.status === 201);
      for (const { port } of listed) {
        expect(
          await eventually(
            () => roundTrip(port, 'back').catch((error: Error) => error.message),
            (reply) => reply === 'b:back',
            30_000,
          ),
        ).toBe('b:back');
      }
      if (answer.status !== 201) expect(await connectOutcome(added)).toBe('refused');
      // No process left in the starved group holds a socket: the restarted master runs outside it, and the
      // processes of the killed one are ended.
      expect(
        await eventually(
          async () => members(),
          (left) => left.length === 0,
          30_000,
        ),
      ).toEqual([]);
    } finally {
      writeFileSync(`${group}/memory.limit_in_bytes`, '-1');
      for (const pid of members()) writeFileSync('/sys/fs/cgroup/memory/cgroup.procs', String(pid));
      rmdirSync(group);
    }
    expect(await roundTrip(kept, 'after')).toBe('b:after');
  });
});
