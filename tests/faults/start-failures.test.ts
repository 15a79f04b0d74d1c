/**
 * nginx that cannot start, or cannot take every stream: the daemon starts anyway, serves every
 * stream that can be served, reports each one it set aside and why, and takes them back by itself
 * once they can be served again.
 */

import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runCli } from '../helpers/cli.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';
import { freePortBlock, holdPort } from '../helpers/ports.js';
import { eventually } from '../helpers/wait.js';

let backend: EchoBackend;
let dir: string;
const daemons = daemonFixture();

beforeAll(async () => {
  backend = await EchoBackend.start('b');
  dir = await daemons.dir();
});

afterAll(async () => {
  await backend?.close();
});

interface Status {
  nginx: { state: string; message?: string };
  streams: { live: number; failed: number };
  failed: Array<{ port: number; backends: string; reason: string }>;
}

describe('an nginx that cannot run at all', () => {
  it.each([
    [
      'a binary path that does not exist',
      async () => '/nonexistent/nginx',
      'cannot run nginx: ENOENT',
      'cannot run nginx: ENOENT',
    ],
    [
      'an nginx without the stream module',
      async () => {
        const fake = join(dir, 'fake-nginx');
        await writeFile(
          fake,
          '#!/bin/sh\necho "nginx version: nginx/1.22.1" >&2\necho "configure arguments: --prefix=/usr/share/nginx" >&2\n',
        );
        await chmod(fake, 0o755);
        return fake;
      },
      'has no stream module; on Debian/Ubuntu: apt-get install nginx-light libnginx-mod-stream',
      'has no stream module; on Debian/Ubuntu: apt-get install nginx-light libnginx-mod-stream',
    ],
  ])(
    '%s: the daemon starts, says why nginx is down, and refuses changes',
    async (_what, binary, statusText, answerText) => {
      await daemons.run({ env: { NGINX_BIN: await binary() } }, async (daemon) => {
        const status = (await daemon.get('/v1/status')).json as Status;
        expect(status.nginx.state).toBe('down');
        expect(status.nginx.message).toContain(statusText);
        const legacy = (await daemon.get(`/createstream/${daemon.rangeStart}/127.0.0.1:${backend.port}`)).json as {
          result: string;
          errors: string;
        };
        expect(legacy.result).toBe('error');
        expect(legacy.errors).toContain(`nginx is not running: `);
        expect(legacy.errors).toContain(answerText);
        const v1 = await daemon.request('POST', '/v1/streams', {
          port: daemon.rangeStart,
          backend: `127.0.0.1:${backend.port}`,
        });
        expect(v1.status).toBe(503);
        expect((v1.json as { error: { code: string } }).error.code).toBe('NGINX_UNAVAILABLE');
        expect((await daemon.get('/getstreams')).text).toBe('[]');
        const cli = await runCli(['status'], { CONDUCTOR_URL: daemon.url });
        expect(cli.code).toBe(0);
        expect(cli.stdout).toMatch(/nginx:\s+down/);
        expect(cli.stdout).toContain(statusText);
      });
    },
  );
});

describe('definitions nginx cannot take at start-up', () => {
  it('sets aside a port another process took while the daemon was down, serves the rest, and takes it back once free', async () => {
    const base = await freePortBlock(11);
    const home = join(dir, 'held');
    const options = {
      home,
      rangeStart: base,
      rangeSize: 10,
      apiPort: base + 10,
      env: { CONDUCTOR_RETRY_INTERVAL: '0.5' },
    };
    const first = await daemons.start(options);
    const [kept, taken] = [base, base + 1];
    await first.get(`/createstream/${kept}/127.0.0.1:${backend.port}`);
    await first.get(`/createstream/${taken}/127.0.0.1:${backend.port}`);
    await first.stop();

    const squatter = await holdPort(taken);
    await daemons.run(options, async (second) => {
      expect(await roundTrip(kept, 'kept')).toBe('b:kept');
      const status = (await second.get('/v1/status')).json as Status;
      expect(status.streams).toEqual({ total: 2, live: 1, failed: 1 });
      expect(status.failed).toEqual([
        { port: taken, backends: `127.0.0.1:${backend.port}`, reason: 'the port is held by another process' },
      ]);
      const ls = await runCli(['ls'], { CONDUCTOR_URL: second.url });
      expect(ls.stdout).toMatch(
        new RegExp(
          `${taken}\\s+│ tcp\\s+│ 127\\.0\\.0\\.1:${backend.port}\\s+│ failed\\s+│.*│ the port is held by another process`,
        ),
      );
      const cliStatus = await runCli(['status'], { CONDUCTOR_URL: second.url });
      expect(cliStatus.stdout).toContain(
        `failed ${taken} -> 127.0.0.1:${backend.port}: the port is held by another process`,
      );

      await squatter.close();
      await eventually(
        async () => ((await second.get('/v1/status')).json as Status).streams.live,
        (live) => live === 2,
      );
      expect(await roundTrip(taken, 'back')).toBe('b:back');
    });
  });

  it('sets aside a backend name that no longer resolves, and serves the rest', async () => {
    const base = await freePortBlock(11);
    const home = join(dir, 'dns');
    const options = { home, rangeStart: base, rangeSize: 10, apiPort: base + 10 };
    const first = await daemons.start(options);
    await first.get(`/createstream/${base}/127.0.0.1:${backend.port}`);
    await first.get(`/createstream/${base + 1}/localhost:${backend.port}`);
    await first.stop();
    // While the daemon was down the name stopped resolving: the stored definition says so.
    const storePath = join(home, 'streams.json');
    const store = JSON.parse(await readFile(storePath, 'utf8')) as {
      streams: Array<{ port: number; backends: Array<{ address: string }> }>;
    };
    for (const stream of store.streams)
      if (stream.port === base + 1) stream.backends = [{ address: 'vanished.invalid:22' }];
    await writeFile(storePath, JSON.stringify(store));

    await daemons.run(options, async (second) => {
      expect(await roundTrip(base, 'alive')).toBe('b:alive');
      expect(await connectOutcome(base + 1)).toBe('refused');
      const status = (await second.get('/v1/status')).json as Status;
      expect(status.failed).toEqual([
        {
          port: base + 1,
          backends: 'vanished.invalid:22',
          reason: 'nginx: host not found in upstream "vanished.invalid"',
        },
      ]);
      // The port stays claimed: a create on it is refused, a remove clears it.
      const again = (await second.get(`/createstream/${base + 1}/127.0.0.1:${backend.port}`)).json as {
        errors: string;
      };
      expect(again.errors).toBe(
        `port ${base + 1} already has a stream (to vanished.invalid:22, set aside: nginx: host not found in upstream "vanished.invalid")`,
      );
      expect((await second.get(`/removestream/${base + 1}`)).json).toEqual({ result: 'ok', errors: '' });
      expect(((await second.get('/v1/status')).json as Status).failed).toEqual([]);
    });
  });
});
