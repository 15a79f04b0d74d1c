/**
 * A limit hit in the middle of a change: the nginx master runs out of file descriptors while it
 * loads a change (its RLIMIT_NOFILE lowered under it with prlimit, as a host-wide shortage would).
 * The change is refused with nginx's reason and everything else stays as it was: files, store,
 * listing, listening sockets, and the streams that flowed. Once the limit is back, changes work.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { type Daemon, masterPidFor, removeDir, startDaemon } from '../helpers/daemon.js';
import { EchoBackend, connectOutcome, roundTrip } from '../helpers/net.js';
import { snapshot } from '../helpers/state.js';

let backend: EchoBackend;
let daemon: Daemon;

beforeAll(async () => {
  backend = await EchoBackend.start('b');
  daemon = await startDaemon({ rangeSize: 6, env: { CONDUCTOR_NGINX_INSTANCES: '1' } });
});

afterAll(async () => {
  await daemon?.stop();
  await backend?.close();
  if (daemon) await removeDir(dirname(daemon.home));
});

const nofile = (pid: number): string => execFileSync('prlimit', ['--pid', String(pid), '--nofile', '--output=SOFT,HARD', '--noheadings'], { encoding: 'utf8' }).trim();

describe('nginx out of file descriptors during a change', () => {
  it('refuses the change with the reason and leaves everything else as it was', async () => {
    const [kept, added, removed] = [daemon.rangeStart, daemon.rangeStart + 1, daemon.rangeStart + 2];
    expect((await daemon.request('POST', '/v1/streams', { port: kept, backend: `127.0.0.1:${backend.port}` })).status).toBe(201);
    expect((await daemon.request('POST', '/v1/streams', { port: removed, backend: `127.0.0.1:${backend.port}` })).status).toBe(201);
    const master = await masterPidFor(daemon, kept);
    const before = await snapshot(daemon);
    const [soft, hard] = nofile(master).split(/\s+/);
    // No descriptor to spare: a new descriptor must be numbered below the limit, and 0-2 are taken,
    // so the master cannot open its configuration or a new socket. (The soft limit only: raising a
    // hard limit again needs CAP_SYS_RESOURCE, which a sandbox may lack.)
    expect(readdirSync(`/proc/${master}/fd`)).toEqual(expect.arrayContaining(['0', '1', '2']));
    execFileSync('prlimit', ['--pid', String(master), `--nofile=3:${hard}`]);
    try {
      const refused = await daemon.request('POST', '/v1/streams', { port: added, backend: `127.0.0.1:${backend.port}` });
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
    expect((await daemon.request('POST', '/v1/streams', { port: added, backend: `127.0.0.1:${backend.port}` })).status).toBe(201);
    expect(await roundTrip(added, 'added')).toBe('b:added');
    expect((await daemon.request('DELETE', `/v1/streams/${removed}`)).status).toBe(200);
    expect(await connectOutcome(removed)).toBe('refused');
    expect(await roundTrip(kept, 'kept')).toBe('b:kept');
  });
});
