/**
 * The managed nginx misbehaving while the daemon runs: its master stopped with SIGSTOP (once, and
 * again and again). The daemon notices, restores service with every stream, and says what
 * happened in its status. (A master killed outright: tests/e2e/lifecycle.test.ts.)
 */

import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type Daemon, masterPidFor } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { EchoBackend, roundTrip } from '../helpers/net.js';
import { eventually, sleep } from '../helpers/wait.js';

let backend: EchoBackend;
let daemon: Daemon;

const daemons = daemonFixture();

beforeAll(async () => {
  backend = await EchoBackend.start('b');
  daemon = await daemons.start();
});

afterAll(async () => {
  await backend?.close();
});

interface Status {
  nginx: { state: string; pid: number; restarts: number; incidents?: Array<{ message: string }> };
}

const status = async (): Promise<Status> => (await daemon.get('/v1/status')).json as Status;
/** The master that serves the first port of the range, where these tests keep a stream. */
const masterPid = (): Promise<number> => masterPidFor(daemon, daemon.rangeStart);
const state = async (pid: number): Promise<string> => {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2)[0] ?? '';
};

describe('a stopped nginx master', () => {
  it('is resumed within seconds, reported, and takes changes again', async () => {
    const port = daemon.rangeStart;
    await daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`);
    const master = await masterPid();
    const restarts = (await status()).nginx.restarts;
    process.kill(master, 'SIGSTOP');
    await eventually(
      () => state(master),
      (value) => value === 'T',
      2000,
    );
    await eventually(
      () => state(master),
      (value) => value !== 'T',
      5000,
    );
    const incidents = (await status()).nginx.incidents?.map((incident) => incident.message) ?? [];
    expect(incidents).toContain(`nginx 0: nginx master ${master} was found stopped (SIGSTOP); sent SIGCONT`);
    expect(await roundTrip(port, 'resumed')).toBe('b:resumed');
    // Every master takes changes again, the resumed one too.
    for (let i = 1; i <= 4; i += 1) {
      expect((await daemon.get(`/createstream/${port + i}/127.0.0.1:${backend.port}`)).json).toEqual({
        result: 'ok',
        errors: '',
      });
      expect(await roundTrip(port + i, 'new')).toBe('b:new');
    }
    // Resumed, not replaced: no restart (a change may have handed it over to a new master).
    expect((await status()).nginx.restarts).toBe(restarts);
  });

  it('is replaced when it stays stopped, and every stream comes back', async () => {
    const ports = Array.from({ length: 5 }, (_, i) => daemon.rangeStart + i);
    const master = await masterPid();
    const restarts = (await status()).nginx.restarts;
    // Someone keeps stopping it: SIGCONT alone does not help.
    const deadline = Date.now() + 6000;
    const stopper = (async () => {
      while (Date.now() < deadline) {
        try {
          process.kill(master, 'SIGSTOP');
        } catch {
          return; // it is gone
        }
        await sleep(20);
      }
    })();
    try {
      await eventually(masterPid, (pid) => pid !== master, 15_000);
      await stopper;
      const after = await eventually(status, (value) => value.nginx.state === 'running', 15_000);
      expect(after.nginx.restarts).toBe(restarts + 1);
      expect(after.nginx.incidents?.map((incident) => incident.message)).toContain(
        `nginx 0: nginx master ${master} stayed stopped; killed it to start a new one`,
      );
      for (const port of ports)
        expect(
          await eventually(
            () => roundTrip(port, 'back'),
            (answer) => answer === 'b:back',
            15_000,
          ),
        ).toBe('b:back');
    } catch (error) {
      throw new Error(`${String(error)}\ndaemon log:\n${daemon.logs.split('\n').slice(-30).join('\n')}`);
    }
  });
});
