/**
 * Start-up: a bad setting stops the daemon with one clear line naming the variable; an API on a
 * non-loopback address needs a token or an explicit opt-in; a second daemon on the same home is
 * refused. Nothing is left running after a refused start. (An nginx that cannot run does not stop
 * the daemon: tests/faults/start-failures.test.ts.)
 */

import { once } from 'node:events';
import { chmod, chown, lchown, mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from '@jest/globals';
import { daemonEnv, runDaemonExpectingExit, spawnDaemon, untilOutput } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome } from '../helpers/net.js';
import { freePortBlock } from '../helpers/ports.js';

let dir: string;
let base: number;

const daemons = daemonFixture();

beforeAll(async () => {
  dir = await daemons.dir();
  base = await freePortBlock(11);
});

const env = (extra: Record<string, string> = {}): Record<string, string> =>
  daemonEnv(join(dir, 'home'), base, 10, base + 10, extra);

describe('bad settings', () => {
  it.each([
    [{ PORT_RANGE: '9000' }, /^conductor-daemon: PORT_RANGE \(--port-range\): port range must look like 9000-9009/],
    [{ PORT_RANGE: '9009-9000' }, /^conductor-daemon: PORT_RANGE \(--port-range\): port range 9009-9000 is empty/],
    [
      { PORT_RANGE: '0-10' },
      /^conductor-daemon: PORT_RANGE \(--port-range\): first port of the range must be a whole number from 1 to 65535, got 0/,
    ],
    [{ BIND_PORT: 'http' }, /^conductor-daemon: BIND_PORT \(--bind-port\): port must be a whole number/],
    [{ BIND_PORT: '70000' }, /^conductor-daemon: BIND_PORT \(--bind-port\): port must be a whole number/],
    [
      { BIND_ADDRESS: 'localhost:5000' },
      /^conductor-daemon: BIND_ADDRESS \(--bind-address\): expected an IPv4 or IPv6 address/,
    ],
    [
      { CONDUCTOR_NGINX_MODE: 'embedded' },
      /^conductor-daemon: CONDUCTOR_NGINX_MODE \(--nginx-mode\): expected managed or external/,
    ],
    [{ STREAM_PREFIX: '../x' }, /^conductor-daemon: STREAM_PREFIX \(--stream-prefix\): expected 1-64 letters/],
    [{ STREAM_PREFIX: 'a/b' }, /^conductor-daemon: STREAM_PREFIX \(--stream-prefix\)/],
    [
      { CONDUCTOR_TOKEN: 'short' },
      /^conductor-daemon: CONDUCTOR_TOKEN \(--token\): the token must be at least 16 characters/,
    ],
    [
      { CONDUCTOR_TOKEN: 'has spaces in the token' },
      /^conductor-daemon: CONDUCTOR_TOKEN \(--token\): the token may hold only printable ASCII/,
    ],
    [
      { CONDUCTOR_TOKEN_FILE: '/nonexistent/token' },
      /^conductor-daemon: CONDUCTOR_TOKEN_FILE \(--token-file\): cannot read \/nonexistent\/token: ENOENT/,
    ],
    [
      { CONDUCTOR_LISTEN_ADDRESS: 'eth0' },
      /^conductor-daemon: CONDUCTOR_LISTEN_ADDRESS \(--listen-address\): expected an IPv4 or IPv6 address/,
    ],
    [
      { CONDUCTOR_RELOAD_TIMEOUT: '0' },
      /^conductor-daemon: CONDUCTOR_RELOAD_TIMEOUT \(--reload-timeout\): expected a number of seconds/,
    ],
    [
      { CONDUCTOR_LOG_LEVEL: 'loud' },
      /^conductor-daemon: CONDUCTOR_LOG_LEVEL \(--log-level\): expected debug, info, warn or error/,
    ],
    [
      { CONDUCTOR_LOG_FORMAT: 'pretty' },
      /^conductor-daemon: CONDUCTOR_LOG_FORMAT \(--log-format\): expected auto, json or text, got "pretty"/,
    ],
    [
      { CONDUCTOR_ALLOW_NO_AUTH: 'maybe' },
      /^conductor-daemon: CONDUCTOR_ALLOW_NO_AUTH \(--allow-no-auth\): expected true or false/,
    ],
    [
      { CONDUCTOR_HOME: '/tmp/with space' },
      /^conductor-daemon: CONDUCTOR_HOME \(--home\): "\/tmp\/with space" holds characters nginx's configuration cannot carry safely/,
    ],
    [
      { CONDUCTOR_RETRY_INTERVAL: 'soon' },
      /^conductor-daemon: CONDUCTOR_RETRY_INTERVAL \(--retry-interval\): expected a number of seconds/,
    ],
  ])('refuses %p in one line, exit 1', async (extra, line) => {
    const run = await runDaemonExpectingExit(env(extra));
    expect(run.code).toBe(1);
    const lines = run.stderr.trim().split('\n');
    expect(lines[lines.length - 1]).toMatch(line);
    expect(run.stderr).not.toMatch(/\n\s+at /);
  });

  it('refuses an API port inside PORT_RANGE', async () => {
    const run = await runDaemonExpectingExit(env({ BIND_PORT: String(base + 3) }));
    expect(run.code).toBe(1);
    expect(run.stderr.trim()).toBe(
      `conductor-daemon: BIND_PORT (--bind-port): the API port ${base + 3} lies inside PORT_RANGE ${base}-${base + 9}`,
    );
  });

  it('takes every setting from a flag too, and a flag wins over its variable', async () => {
    const run = await runDaemonExpectingExit(env({ PORT_RANGE: '1-2' }), ['--port-range', 'nonsense']);
    expect(run.stderr.trim()).toMatch(/^conductor-daemon: PORT_RANGE \(--port-range\): port range must look like/);
    const unknown = await runDaemonExpectingExit(env(), ['--bogus']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.trim()).toMatch(/^conductor-daemon: Unknown option '--bogus'/);
  });

  it('prints its usage and version', async () => {
    const help = await runDaemonExpectingExit(env(), ['--help']);
    expect(help.code).toBe(0);
    for (const variable of [
      'STREAM_CONFIG_PATH',
      'NGINX_BIN',
      'STREAM_PREFIX',
      'PORT_RANGE',
      'BIND_ADDRESS',
      'BIND_PORT',
      'CONDUCTOR_HOME',
      'CONDUCTOR_TOKEN',
      'CONDUCTOR_NGINX_MODE',
    ]) {
      expect(help.stdout).toContain(variable);
    }
    const version = await runDaemonExpectingExit(env(), ['--version']);
    expect(version.stdout.trim()).toMatch(/^[0-9]+\.[0-9]+\.[0-9]+$/);
  });
});

describe('authentication at start-up', () => {
  it('refuses a non-loopback API address without a token, naming the way out', async () => {
    const run = await runDaemonExpectingExit(env({ BIND_ADDRESS: '0.0.0.0' }));
    expect(run.code).toBe(1);
    expect(run.stderr.trim()).toBe(
      'conductor-daemon: BIND_ADDRESS (--bind-address): refusing to serve the API on 0.0.0.0 without a token; set CONDUCTOR_TOKEN (--token) or CONDUCTOR_TOKEN_FILE (--token-file), bind to 127.0.0.1, or opt in with CONDUCTOR_ALLOW_NO_AUTH=1 (--allow-no-auth)',
    );
    expect(await connectOutcome(base + 10)).toBe('refused');
  });

  it('starts on a non-loopback address with the explicit opt-in, or with a token from a file', async () => {
    const optIn = await daemons.start({
      home: join(dir, 'opt-in'),
      rangeStart: base,
      rangeSize: 10,
      apiPort: base + 10,
      env: { BIND_ADDRESS: '0.0.0.0', CONDUCTOR_ALLOW_NO_AUTH: '1' },
    });
    expect((await optIn.get('/getstreams')).status).toBe(200);
    await optIn.stop();
    const tokenFile = join(dir, 'token');
    await writeFile(tokenFile, 'file-token-0123456789abcdef\n');
    const withFile = await daemons.start({
      home: join(dir, 'with-file'),
      rangeStart: base,
      rangeSize: 10,
      apiPort: base + 10,
      env: { BIND_ADDRESS: '0.0.0.0', CONDUCTOR_TOKEN_FILE: tokenFile },
    });
    expect((await withFile.get('/getstreams')).status).toBe(401);
    expect((await withFile.get('/getstreams', { authorization: 'Bearer file-token-0123456789abcdef' })).status).toBe(
      200,
    );
    await withFile.stop();
  });
});

describe("folders only the daemon's user can change", () => {
  // nginx, as root, writes its logs and reads its configuration in these folders: a user who
  // could plant a link there could make root write anywhere.
  const refusal = (variable: string, path: string, reason: string): string =>
    `conductor-daemon: ${variable} ${path}: ${reason}; the daemon's folders must be writable by its own user (and root) alone (CONDUCTOR_ALLOW_SHARED_FOLDERS=1 accepts them anyway)`;

  it('refuses a home that others can write, and makes nothing in it', async () => {
    const home = join(dir, 'open-home');
    await mkdir(home);
    await chmod(home, 0o777);
    const run = await runDaemonExpectingExit(daemonEnv(home, base, 10, base + 10));
    expect(run.code).toBe(1);
    expect(run.stderr.trim().split('\n').pop()).toBe(
      refusal('CONDUCTOR_HOME', home, `${home} can be written by other users (mode 0777)`),
    );
    expect(await readdir(home)).toEqual([]);
    expect(await connectOutcome(base + 10)).toBe('refused');
  });

  it('refuses a home to be made in a folder others can write (without the sticky bit), and makes nothing', async () => {
    const open = join(dir, 'open-parent');
    await mkdir(open);
    await chmod(open, 0o777);
    const home = join(open, 'home');
    const run = await runDaemonExpectingExit(daemonEnv(home, base, 10, base + 10));
    expect(run.code).toBe(1);
    expect(run.stderr.trim().split('\n').pop()).toBe(
      refusal('CONDUCTOR_HOME', home, `${open} can be written by other users (mode 0777)`),
    );
    expect(await readdir(open)).toEqual([]);
  });

  it('refuses a link on the way that another user could point elsewhere', async () => {
    const safe = join(dir, 'safe-target');
    await mkdir(safe, { mode: 0o700 });
    // A link in a folder open to all: anyone can replace it.
    const open = join(dir, 'open-links');
    await mkdir(open);
    await chmod(open, 0o777);
    await symlink(safe, join(open, 'home'));
    const viaOpen = await runDaemonExpectingExit(daemonEnv(join(open, 'home'), base, 10, base + 10));
    expect(viaOpen.code).toBe(1);
    expect(viaOpen.stderr.trim().split('\n').pop()).toBe(
      refusal('CONDUCTOR_HOME', join(open, 'home'), `${open} can be written by other users (mode 0777)`),
    );
    // A link in a sticky folder that another user owns: its owner can still replace it.
    const sticky = join(dir, 'sticky-links');
    await mkdir(sticky);
    await chmod(sticky, 0o1777);
    const theirs = join(sticky, 'home');
    await symlink(safe, theirs);
    if (process.getuid?.() === 0) {
      await lchown(theirs, 65534, 65534);
      const viaTheirs = await runDaemonExpectingExit(daemonEnv(theirs, base, 10, base + 10));
      expect(viaTheirs.stderr.trim().split('\n').pop()).toBe(
        refusal('CONDUCTOR_HOME', theirs, `${theirs} is a link that belongs to another user (uid 65534)`),
      );
    }
    expect(await readdir(safe)).toEqual([]);
  });

  it('starts anyway with the explicit opt-in, and says so', async () => {
    const home = join(dir, 'shared-by-choice');
    await mkdir(home);
    await chmod(home, 0o777);
    await daemons.run(
      { home, rangeStart: base, rangeSize: 10, apiPort: base + 10, env: { CONDUCTOR_ALLOW_SHARED_FOLDERS: '1' } },
      async (daemon) => {
        expect((await daemon.get('/status')).status).toBe(200);
        expect(daemon.logs).toContain('"msg":"a folder of the daemon can be changed by other users"');
      },
    );
  });

  it('refuses a home that is a file, in one line', async () => {
    const file = join(dir, 'plain-file');
    await writeFile(file, '');
    const atFile = await runDaemonExpectingExit(daemonEnv(file, base, 10, base + 10));
    expect(atFile.code).toBe(1);
    expect(atFile.stderr.trim().split('\n').pop()).toBe(refusal('CONDUCTOR_HOME', file, `${file} is not a folder`));
  });

  it('refuses a home under a file, in one line', async () => {
    const file = join(dir, 'a-file');
    await writeFile(file, '');
    const home = join(file, 'home');
    const run = await runDaemonExpectingExit(daemonEnv(home, base, 10, base + 10));
    expect(run.code).toBe(1);
    expect(run.stderr.trim().split('\n').pop()).toBe(
      `conductor-daemon: CONDUCTOR_HOME ${home}: cannot use it as a folder (ENOTDIR)`,
    );
  });

  it('refuses a stream folder others can write', async () => {
    const streams = join(dir, 'open-streams');
    await mkdir(streams);
    await chmod(streams, 0o757);
    const home = join(dir, 'home-with-open-streams');
    const run = await runDaemonExpectingExit(daemonEnv(home, base, 10, base + 10, { STREAM_CONFIG_PATH: streams }));
    expect(run.code).toBe(1);
    expect(run.stderr.trim().split('\n').pop()).toBe(
      refusal('STREAM_CONFIG_PATH', streams, `${streams} can be written by other users (mode 0757)`),
    );
    expect(await readdir(streams)).toEqual([]);
  });

  const asRoot = process.getuid?.() === 0 ? it : it.skip;
  asRoot("refuses a home that belongs to another user, and one in another user's folder", async () => {
    const theirs = join(dir, 'theirs');
    await mkdir(theirs, { mode: 0o755 });
    await chown(theirs, 65534, 65534);
    const run = await runDaemonExpectingExit(daemonEnv(theirs, base, 10, base + 10));
    expect(run.code).toBe(1);
    expect(run.stderr.trim().split('\n').pop()).toBe(
      refusal('CONDUCTOR_HOME', theirs, `${theirs} belongs to another user (uid 65534)`),
    );
    const inside = join(theirs, 'home');
    const nested = await runDaemonExpectingExit(daemonEnv(inside, base, 10, base + 10));
    expect(nested.stderr.trim().split('\n').pop()).toBe(
      refusal('CONDUCTOR_HOME', inside, `${theirs} belongs to another user (uid 65534)`),
    );
    expect(await readdir(theirs)).toEqual([]);
  });

  it('starts in a folder open to all with the sticky bit (such as /tmp), where nobody can swap its home', async () => {
    const sticky = join(dir, 'sticky');
    await mkdir(sticky);
    await chmod(sticky, 0o1777);
    await daemons.run(
      { home: join(sticky, 'home'), rangeStart: base, rangeSize: 10, apiPort: base + 10 },
      async (daemon) => {
        expect((await daemon.get('/status')).status).toBe(200);
      },
    );
  });
});

describe('the token', () => {
  it('is not handed down to the nginx the daemon starts', async () => {
    const token = 'env-token-0123456789abcdef';
    // nginx writes its process title over its environment, so a wrapper records what it gets.
    const seen = join(dir, 'nginx-env');
    const wrapper = join(dir, 'nginx-wrapper');
    await writeFile(wrapper, `#!/bin/sh\nenv >> '${seen}'\nexec /usr/sbin/nginx "$@"\n`);
    await chmod(wrapper, 0o755);
    await daemons.run(
      {
        home: join(dir, 'token-home'),
        rangeStart: base,
        rangeSize: 10,
        apiPort: base + 10,
        env: { CONDUCTOR_TOKEN: token, NGINX_BIN: wrapper },
      },
      async (daemon) => {
        expect((await daemon.get('/getstreams', { authorization: `Bearer ${token}` })).status).toBe(200);
        const environ = await readFile(seen, 'utf8');
        expect(environ).toContain('PORT_RANGE=');
        expect(environ).not.toContain(token);
      },
    );
  });
});

describe('one daemon per home', () => {
  it('refuses a second daemon on the same home', async () => {
    const home = join(dir, 'shared-home');
    await daemons.run({ home, rangeStart: base, rangeSize: 10, apiPort: base + 10 }, async (first) => {
      const second = await runDaemonExpectingExit(daemonEnv(home, base, 10, base + 10));
      expect(second.code).toBe(1);
      expect(second.stderr.trim().split('\n').pop()).toBe(
        `conductor-daemon: another daemon (pid ${first.child.pid}) already uses CONDUCTOR_HOME ${home}`,
      );
      expect((await first.get('/status')).status).toBe(200);
    });
    expect(await readdir(home)).not.toContain('daemon.pid');
  });
});

describe('the log format', () => {
  it('writes readable lines when told: time, level, message, then key=value', async () => {
    const child = spawnDaemon(daemonEnv(join(dir, 'readable'), base, 10, base + 10), ['--log-format', 'text']);
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    try {
      await untilOutput(child, / INFO {2}ready api=http:\/\/127\.0\.0\.1:[0-9]+\n/, 30_000);
    } finally {
      child.kill('SIGTERM');
      // 'close': the process has exited and its output has been read to the end.
      if (child.exitCode === null || child.stderr?.readable) await once(child, 'close');
    }
    const lines = stderr.trim().split('\n');
    expect(lines[0]).toMatch(
      /^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z INFO {2}starting version=\S+ mode=managed home=\S+ /,
    );
    expect(lines.filter((line) => !/^[0-9]{4}-\S+Z (DEBUG|INFO |WARN |ERROR) \S/.test(line))).toEqual([]);
    expect(lines.at(-1)).toMatch(/ INFO {2}stopped$/);
  });
});
