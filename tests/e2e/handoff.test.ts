/**
 * Handoffs: a busy managed nginx master hands each change to a new master (SIGUSR2) instead of
 * reloading, so that no change waits out nginx's post-reload pause. What an operator relies on:
 * streams that are kept never refuse a connection and keep their open sessions, a refused change
 * leaves the running master as it was, a daemon killed halfway through a handoff is followed by
 * one that finishes it, and nothing is left running or unreaped.
 */

import { execFileSync } from 'node:child_process';
import { appendFile, readdir, readFile, symlink } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';
import { alive, eventually, sleep } from '../helpers/wait.js';

let backend: EchoBackend;
const daemons = daemonFixture();

beforeAll(async () => {
  backend = await EchoBackend.start('b');
});

afterAll(async () => {
  await backend?.close();
});

/** A daemon with one master that hands changes off. */
function fresh(env: Record<string, string> = {}, rangeSize = 40): Promise<Daemon> {
  return daemons.start({ rangeSize, env: { CONDUCTOR_NGINX_INSTANCES: '1', CONDUCTOR_NGINX_HANDOFF: 'true', ...env } });
}

async function stat(pid: number): Promise<{ parent: number; state: string } | undefined> {
  try {
    const text = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0] ?? '', parent: Number(fields[1]) };
  } catch {
    return undefined;
  }
}

async function commandOf(pid: number): Promise<string> {
  return (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).replace(/\0+$/, '').replace(/\0/g, ' ');
}

/** The new master `old` started on SIGUSR2, once its workers run. */
function runningNewMaster(old: number): Promise<number> {
  return eventually(
    async () => {
      for (const child of await childrenOf(old)) {
        if ((await commandOf(child)).startsWith('nginx: master process') && (await childrenOf(child)).length > 0)
          return child;
      }
      return 0;
    },
    (pid) => pid > 0,
  );
}

async function childrenOf(pid: number): Promise<number[]> {
  const text = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')).trim();
  return text === '' ? [] : text.split(/\s+/).map(Number);
}

/** The nginx masters that run this daemon's configuration (found in /proc, not in pid files). */
/**
 * Waits until the masters of the daemon's nginx are `expected` (a worker its master has just
 * forked carries the master's title for a moment); fails when they do not settle so.
 */
async function mastersAre(daemon: Daemon, expected: number[]): Promise<void> {
  const want = JSON.stringify([...expected].sort((a, b) => a - b));
  await eventually(
    async () => (await masters(daemon)).sort((a, b) => a - b),
    (found) => JSON.stringify(found) === want,
  );
}

/** The processes titled as a master of the daemon's nginx. */
async function masters(daemon: Daemon): Promise<number[]> {
  const conf = join(daemon.home, 'nginx', '0', 'nginx.conf');
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    const command = await commandOf(Number(entry));
    if (
      command.startsWith('nginx: master process') &&
      command.split(' ').includes(conf) &&
      (await alive(Number(entry)))
    )
      found.push(Number(entry));
  }
  return found;
}

const pidFile = (daemon: Daemon): string => join(daemon.home, 'nginx', '0', 'nginx.pid');
const masterPid = async (daemon: Daemon): Promise<number> => Number((await readFile(pidFile(daemon), 'utf8')).trim());

/** A session that stays open: each `say` is answered by the echo backend. */
async function openSession(port: number): Promise<{ say(text: string): Promise<string>; close(): void }> {
  const socket: Socket = await new Promise((resolve, reject) => {
    const s = connect({ port, host: '127.0.0.1' }, () => resolve(s));
    s.once('error', reject);
  });
  return {
    say: (text) =>
      new Promise((resolve, reject) => {
        let answer = '';
        const timer = setTimeout(
          () => reject(new Error(`no answer on the open session (got ${JSON.stringify(answer)})`)),
          3000,
        );
        const onData = (chunk: Buffer): void => {
          answer += chunk.toString('utf8');
          if (answer.length >= text.length + 2) {
            clearTimeout(timer);
            socket.off('data', onData);
            resolve(answer);
          }
        };
        socket.on('data', onData);
        socket.once('error', reject);
        socket.write(text);
      }),
    close: () => socket.destroy(),
  };
}

describe('handoffs between nginx masters', () => {
  it('keep every kept stream accepting and its open session flowing, and leave nothing behind', async () => {
    const daemon = await fresh();
    const kept = daemon.rangeStart;
    await daemon.get(`/createstream/${kept}/127.0.0.1:${backend.port}`);
    const session = await openSession(kept);
    expect(await session.say('one')).toBe('b:one');
    const firstMaster = await masterPid(daemon);
    const reaper = (await stat(firstMaster))?.parent ?? 0;
    const startedAt = ((await daemon.get('/v1/status')).json as { nginx: { startedAt: string } }).nginx.startedAt;
    expect(await commandOf(reaper)).toBe('conductor: nginx reaper');

    // While the changes run, a client keeps connecting to the kept stream.
    let stop = false;
    let accepted = 0;
    const refusals: string[] = [];
    const hammer = (async () => {
      while (!stop) {
        const outcome = await connectOutcome(kept);
        if (outcome === 'open') accepted += 1;
        else refusals.push(outcome);
      }
    })();
    const seen = new Set<number>([firstMaster]);
    const watcher = (async () => {
      while (!stop) {
        seen.add(await masterPid(daemon).catch(() => firstMaster));
        await sleep(2);
      }
    })();
    // New streams are loaded by reloads; removes, one after another, find the master busy and
    // are handed off.
    const added = Array.from({ length: 30 }, (_, i) => kept + 1 + i);
    const answers = await Promise.all(
      added.map((port) => daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`)),
    );
    expect(await masterPid(daemon)).toBe(firstMaster);
    const removed = added.slice(0, 15);
    const removals = [];
    for (const port of removed) removals.push(await daemon.get(`/removestream/${port}`));
    stop = true;
    await Promise.all([hammer, watcher]);

    for (const answer of [...answers, ...removals]) expect(answer.json).toEqual({ result: 'ok', errors: '' });
    // The changes were handed to new masters, several times.
    expect(seen.size).toBeGreaterThan(2);
    expect(await alive(firstMaster)).toBe(false);
    expect(refusals).toEqual([]);
    expect(accepted).toBeGreaterThan(20);
    // The session opened before the first handoff still flows, through its old worker.
    expect(await session.say('two')).toBe('b:two');
    for (const port of removed) expect(await connectOutcome(port)).toBe('refused');
    for (const port of added.slice(15)) expect(await roundTrip(port, 'new')).toBe('b:new');

    // One master runs, below the same reaper; the old workers that remain are draining sessions.
    const master = await masterPid(daemon);
    await mastersAre(daemon, [master]);
    expect((await stat(master))?.parent).toBe(reaper);
    const status = (await daemon.get('/v1/status')).json as {
      nginx: { workers: number; drainingWorkers: number; restarts: number; startedAt: string };
    };
    // nginx has run since it started: a handoff is no restart.
    expect(status.nginx).toMatchObject({ workers: 1, restarts: 0, startedAt });
    expect(status.nginx.drainingWorkers).toBeGreaterThanOrEqual(1);
    // Every process a handoff left behind was reaped: none is a zombie.
    const below = await childrenOf(reaper);
    for (const pid of below) expect((await stat(pid))?.state).not.toBe('Z');
    session.close();
    await eventually(
      async () => ((await daemon.get('/v1/status')).json as typeof status).nginx.drainingWorkers,
      (n) => n === 0,
    );

    const everything = [reaper, master, ...(await childrenOf(master)), ...(await childrenOf(reaper))];
    expect(await daemon.stop()).toBe(0);
    for (const pid of everything)
      await eventually(
        () => alive(pid),
        (running) => !running,
        5000,
      );
    expect(await connectOutcome(kept)).toBe('refused');
  });

  it('close a removed port before its remove is answered, handoff after handoff', async () => {
    const daemon = await fresh();
    try {
      const port = daemon.rangeStart;
      const seen = new Set<number>();
      for (let round = 0; round < 25; round += 1) {
        expect((await daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`)).json).toEqual({
          result: 'ok',
          errors: '',
        });
        expect(await roundTrip(port, 'up')).toBe('b:up');
        expect((await daemon.get(`/removestream/${port}`)).json).toEqual({ result: 'ok', errors: '' });
        // Not one connection is taken after the answer: not by an old worker, nor queued on a
        // socket the old master still held (which would also leave the next create's
        // connections to be reset).
        expect(await connectOutcome(port)).toBe('refused');
        seen.add(await masterPid(daemon));
      }
      // The changes were handoffs: masters came and went.
      expect(seen.size).toBeGreaterThan(10);
    } finally {
      await daemon.stop();
    }
  });

  it('leave the running master untouched when the new one refuses the change', async () => {
    const daemon = await fresh();
    const port = daemon.rangeStart;
    await daemon.get(`/createstream/${port + 1}/127.0.0.1:${backend.port}`);
    // Two changes in a row: the second, which changes a stream in place, finds the master busy
    // and is handed off.
    await daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`);
    const before = await masterPid(daemon);
    const log = join(daemon.home, 'nginx', '0', 'error.log');
    const offset = (await readFile(log)).length;
    const refused = await daemon.request('PUT', `/v1/streams/${port + 1}`, { backend: 'no-such-host.invalid:22' });
    // A new master was started (it logs the sockets it inherits) and gave up.
    expect((await readFile(log)).subarray(offset).toString('utf8')).toMatch(/using inherited sockets from/);
    expect(refused.status).toBe(422);
    expect(JSON.stringify(refused.json)).toContain('host not found');
    expect(await masterPid(daemon)).toBe(before);
    await mastersAre(daemon, [before]);
    expect(await roundTrip(port, 'kept')).toBe('b:kept');
    expect(await roundTrip(port + 1, 'unchanged')).toBe('b:unchanged');
    // The next change goes through.
    expect((await daemon.get(`/createstream/${port + 2}/127.0.0.1:${backend.port}`)).json).toEqual({
      result: 'ok',
      errors: '',
    });
    expect(await roundTrip(port + 2, 'next')).toBe('b:next');
    await daemon.stop();
  });

  it('left half done by a killed daemon are finished by the next one', async () => {
    const first = await fresh();
    const port = first.rangeStart;
    await first.get(`/createstream/${port}/127.0.0.1:${backend.port}`);
    await first.stop('SIGKILL');
    // The daemon died just after it sent SIGUSR2: two masters run, the new one the old one's child.
    const old = await masterPid(first);
    const oldWorkers = await childrenOf(old);
    process.kill(old, 'SIGUSR2');
    const fresher = await runningNewMaster(old);
    await mastersAre(first, [old, fresher]);

    await daemons.run(
      { home: first.home, rangeStart: first.rangeStart, rangeSize: 40, apiPort: first.apiPort, env: first.env },
      async (second) => {
        expect(second.logs).toContain(
          'finishing a handoff between nginx masters that an earlier daemon left half done',
        );
        expect(await alive(old)).toBe(false);
        for (const worker of oldWorkers)
          await eventually(
            () => alive(worker),
            (running) => !running,
            5000,
          );
        const [only] = await eventually(
          () => masters(second),
          (found) => found.length === 1,
        );
        expect(await roundTrip(port, 'adopted')).toBe('b:adopted');
        expect((await second.get(`/createstream/${port + 1}/127.0.0.1:${backend.port}`)).json).toEqual({
          result: 'ok',
          errors: '',
        });
        expect((await second.get(`/removestream/${port}`)).json).toEqual({ result: 'ok', errors: '' });
        expect(await connectOutcome(port)).toBe('refused');
        expect(await roundTrip(port + 1, 'after')).toBe('b:after');
        expect(only).toBeGreaterThan(0);
      },
    );
  });
});

describe('workers a killed daemon left without a master', () => {
  it('are told to quit by the next daemon, so that a removed port closes', async () => {
    const first = await fresh();
    const port = first.rangeStart;
    await first.get(`/createstream/${port}/127.0.0.1:${backend.port}`);
    await first.get(`/createstream/${port + 1}/127.0.0.1:${backend.port}`);
    await first.stop('SIGKILL');
    // The daemon died after it killed the old master of a handoff, before it told that master's
    // workers to quit: they run on below the reaper, still accepting.
    const old = await masterPid(first);
    // Its one worker that takes connections, once the worker of the reload before has left.
    const oldWorkers = await eventually(
      async () => {
        const children = await childrenOf(old);
        const accepting = [];
        for (const child of children)
          if ((await commandOf(child)).trim() === 'nginx: worker process') accepting.push(child);
        return accepting.length === children.length ? accepting : [];
      },
      (accepting) => accepting.length === 1,
    );
    process.kill(old, 'SIGUSR2');
    const fresher = await runningNewMaster(old);
    process.kill(old, 'SIGKILL');
    await eventually(
      () => alive(old),
      (running) => !running,
      5000,
    );
    for (const worker of oldWorkers) expect((await commandOf(worker)).trim()).toBe('nginx: worker process');

    await daemons.run(
      { home: first.home, rangeStart: first.rangeStart, rangeSize: 40, apiPort: first.apiPort, env: first.env },
      async (second) => {
        await mastersAre(second, [fresher]);
        for (const worker of oldWorkers)
          await eventually(
            async () => (await commandOf(worker)).trim() === 'nginx: worker process',
            (accepting) => !accepting,
            5000,
          );
        expect((await second.get(`/removestream/${port}`)).json).toEqual({ result: 'ok', errors: '' });
        expect(await connectOutcome(port)).toBe('refused');
        expect(await roundTrip(port + 1, 'kept')).toBe('b:kept');
      },
    );
  });
});

describe("nginx's error log", () => {
  it('stays under CONDUCTOR_LOG_MAX_BYTES through handoffs, and still tells why a change is refused', async () => {
    const daemon = await fresh({ CONDUCTOR_LOG_MAX_BYTES: '2048' });
    try {
      const log = join(daemon.home, 'nginx', '0', 'error.log');
      const kept = Array.from({ length: 20 }, (_, i) => daemon.rangeStart + i);
      for (const answer of await Promise.all(
        kept.map((port) => daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`)),
      )) {
        expect(answer.json).toEqual({ result: 'ok', errors: '' });
      }
      // Every new master logs the sockets it inherits: churn hands off again and again.
      const churn = Array.from({ length: 5 }, (_, i) => daemon.rangeStart + 20 + i);
      let sizes: number[] = [];
      for (
        let round = 0;
        round < 40 &&
        !(await readFile(`${log}.1`).then(
          () => true,
          () => false,
        ));
        round += 1
      ) {
        for (const answer of await Promise.all(
          churn.map((port) => daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`)),
        )) {
          expect(answer.json).toEqual({ result: 'ok', errors: '' });
        }
        for (const answer of await Promise.all(churn.map((port) => daemon.get(`/removestream/${port}`))))
          expect(answer.json).toEqual({ result: 'ok', errors: '' });
        sizes.push((await readFile(log)).length);
      }
      expect((await readFile(`${log}.1`, 'utf8')).length).toBeGreaterThan(2048);
      // Emptied when it passed the limit, before the next change: never far past it.
      sizes = [...sizes, (await readFile(log)).length];
      expect(Math.max(...sizes)).toBeLessThan(2048 + 2048);
      // A log past the limit is emptied before the next change, whose refusal nginx then explains
      // in the emptied log: the daemon still reads it.
      const filler = `${'# filler line\n'.repeat(200)}`;
      await appendFile(log, filler);
      const refused = await daemon.get(`/createstream/${daemon.rangeStart + 35}/no-such-host.invalid:22`);
      expect((refused.json as { errors: string }).errors).toContain('host not found');
      expect(await readFile(`${log}.1`, 'utf8')).toContain(filler);
      expect(await readFile(log, 'utf8')).not.toContain('# filler line');
      for (const port of kept) expect(await roundTrip(port, 'still')).toBe('b:still');
    } finally {
      await daemon.stop();
    }
  });
});

describe('reloads instead of handoffs', () => {
  it('with CONDUCTOR_NGINX_HANDOFF=false: the daemon is the master’s parent and reloads it', async () => {
    const daemon = await fresh({ CONDUCTOR_NGINX_HANDOFF: 'false' });
    const master = await masterPid(daemon);
    expect((await stat(master))?.parent).toBe(daemon.child.pid);
    const ports = Array.from({ length: 6 }, (_, i) => daemon.rangeStart + i);
    const answers = await Promise.all(
      ports.map((port) => daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`)),
    );
    for (const answer of answers) expect(answer.json).toEqual({ result: 'ok', errors: '' });
    for (const port of ports) expect(await roundTrip(port, 'r')).toBe('b:r');
    expect(await masterPid(daemon)).toBe(master);
    await daemon.stop();
    expect(await alive(master)).toBe(false);
  });

  it('without perl: the daemon says why and reloads', async () => {
    // A PATH with what the daemon runs (unshare, sh and mount for the tests' resolver; ss) but no perl.
    const bin = await daemons.dir();
    for (const tool of ['unshare', 'sh', 'mount', 'ss']) {
      await symlink(execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim(), join(bin, tool));
    }
    const daemon = await fresh({ PATH: bin });
    const master = await masterPid(daemon);
    expect((await stat(master))?.parent).toBe(daemon.child.pid);
    expect(daemon.logs).toContain('nginx is reloaded with SIGHUP, which pauses each master about 100 ms');
    expect(daemon.logs).toContain('cannot run perl: ENOENT');
    await daemon.get(`/createstream/${daemon.rangeStart}/127.0.0.1:${backend.port}`);
    await daemon.get(`/createstream/${daemon.rangeStart + 1}/127.0.0.1:${backend.port}`);
    expect(await roundTrip(daemon.rangeStart + 1, 'p')).toBe('b:p');
    expect(await masterPid(daemon)).toBe(master);
    await daemon.stop();
  });
});
