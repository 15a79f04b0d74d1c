/**
 * A full or read-only configuration folder, and a full state folder: changes are refused with a
 * clear error, what is live stays live, nothing is half-written, and service resumes once there
 * is room again. Uses small tmpfs mounts, so it needs root (as CI runs); elsewhere it is skipped.
 */

import { execFile } from 'node:child_process';
import { mkdir, open, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';
import { snapshot } from '../helpers/state.js';

const run = promisify(execFile);
const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

let backend: EchoBackend;
let dir: string;
const mounts: string[] = [];

async function mountTmpfs(path: string, size: string): Promise<void> {
  await mkdir(path, { recursive: true });
  await run('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0755`, 'tmpfs', path]);
  mounts.push(path);
}

/** Writes into `folder` until the file system says it is full; returns the filler's path. */
async function fill(folder: string): Promise<string> {
  const path = join(folder, 'filler');
  const handle = await open(path, 'w');
  const chunk = Buffer.alloc(1024, 1);
  try {
    for (let i = 0; i < 1_000_000; i += 1) await handle.write(chunk);
    throw new Error('the file system never filled up');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
  } finally {
    await handle.close();
  }
  return path;
}

async function temporaries(...folders: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const folder of folders)
    for (const name of await readdir(folder)) if (name.startsWith('.tmp-')) found.push(name);
  return found;
}

const daemons = daemonFixture();
// The mounts go once the daemons using them have stopped, before their folders are removed.
daemons.beforeRemoving(async () => {
  for (const path of mounts.reverse()) await run('umount', ['-l', path]).catch(() => undefined);
});

beforeAll(async () => {
  backend = await EchoBackend.start('b');
  dir = await daemons.dir();
});

afterAll(async () => {
  await backend?.close();
});

asRoot('a full or read-only configuration folder', () => {
  const own = daemonFixture();
  let daemon: Daemon;
  let streams: string;

  beforeAll(async () => {
    streams = join(dir, 'streams-fs');
    await mountTmpfs(streams, '64k');
    daemon = await own.start({ home: join(dir, 'home-a'), env: { STREAM_CONFIG_PATH: streams } });
    expect((await daemon.get(`/createstream/${daemon.rangeStart}/127.0.0.1:${backend.port}`)).json).toEqual({
      result: 'ok',
      errors: '',
    });
  });

  it('refuses changes while the folder is full, touches nothing live, and works again once there is room', async () => {
    const filler = await fill(streams);
    const before = await snapshot(daemon, streams);
    const created = (await daemon.get(`/createstream/${daemon.rangeStart + 1}/127.0.0.1:${backend.port}`)).json;
    expect(created).toEqual({
      result: 'error',
      errors: 'the change could not be written: no space left on the device',
    });
    const v1 = await daemon.request('POST', '/v1/streams', {
      port: daemon.rangeStart + 2,
      backend: `127.0.0.1:${backend.port}`,
    });
    expect(v1.status).toBe(507);
    expect(v1.json).toEqual({
      error: {
        code: 'STORAGE_FAILED',
        message: 'the change could not be written: no space left on the device',
        hint: 'nothing was changed; free space or fix the folder permissions and try again',
      },
    });
    expect(await snapshot(daemon, streams)).toEqual(before);
    expect(await temporaries(streams, daemon.home)).toEqual([]);
    expect(await roundTrip(daemon.rangeStart, 'full')).toBe('b:full');
    expect(await connectOutcome(daemon.rangeStart + 1)).toBe('refused');

    await rm(filler);
    expect((await daemon.get(`/createstream/${daemon.rangeStart + 1}/127.0.0.1:${backend.port}`)).json).toEqual({
      result: 'ok',
      errors: '',
    });
    expect(await roundTrip(daemon.rangeStart + 1, 'room')).toBe('b:room');
    await daemon.get(`/removestream/${daemon.rangeStart + 1}`);
  });

  it('refuses creates and removes while the folder is read-only, and works again once writable', async () => {
    await run('mount', ['-o', 'remount,ro', streams]);
    try {
      const before = await snapshot(daemon, streams);
      expect((await daemon.get(`/createstream/${daemon.rangeStart + 3}/127.0.0.1:${backend.port}`)).json).toEqual({
        result: 'error',
        errors: 'the change could not be written: the file system is read-only',
      });
      expect((await daemon.get(`/removestream/${daemon.rangeStart}`)).json).toEqual({
        result: 'error',
        errors: 'the change could not be written: the file system is read-only',
      });
      expect(await snapshot(daemon, streams)).toEqual(before);
      expect(await roundTrip(daemon.rangeStart, 'ro')).toBe('b:ro');
    } finally {
      await run('mount', ['-o', 'remount,rw', streams]);
    }
    expect((await daemon.get(`/createstream/${daemon.rangeStart + 3}/127.0.0.1:${backend.port}`)).json).toEqual({
      result: 'ok',
      errors: '',
    });
    expect(await roundTrip(daemon.rangeStart + 3, 'rw')).toBe('b:rw');
  });
});

asRoot('a full state folder', () => {
  it('refuses a change whose record cannot be stored, and takes it back out of nginx', async () => {
    const home = join(dir, 'home-fs');
    await mountTmpfs(home, '256k');
    const streams = join(dir, 'streams-b');
    await daemons.run({ home, env: { STREAM_CONFIG_PATH: streams } }, async (daemon) => {
      await daemon.get(`/createstream/${daemon.rangeStart}/127.0.0.1:${backend.port}`);
      const filler = await fill(home);
      const before = await snapshot(daemon, streams);
      const answer = (await daemon.get(`/createstream/${daemon.rangeStart + 1}/127.0.0.1:${backend.port}`)).json;
      expect(answer).toEqual({
        result: 'error',
        errors: 'the change could not be written: no space left on the device',
      });
      expect(await connectOutcome(daemon.rangeStart + 1)).toBe('refused');
      expect(await snapshot(daemon, streams)).toEqual(before);
      expect(await temporaries(streams, home)).toEqual([]);
      expect(await roundTrip(daemon.rangeStart, 'kept')).toBe('b:kept');
      await rm(filler);
      expect((await daemon.get(`/createstream/${daemon.rangeStart + 1}/127.0.0.1:${backend.port}`)).json).toEqual({
        result: 'ok',
        errors: '',
      });
    });
  });
});
