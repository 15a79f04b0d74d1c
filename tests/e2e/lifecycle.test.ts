/**
 * The daemon and its nginx over time: restarts, crashes, a stop, and a folder of old-format files
 * from the service this one replaces.
 */

import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { instanceCount, masterPids, nginxDirFor } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';
import { freePortBlock } from '../helpers/ports.js';
import { renderedPorts, renderedStreams } from '../helpers/state.js';
import { alive, eventually, sleep } from '../helpers/wait.js';

let backend: EchoBackend;
const daemons = daemonFixture();

beforeAll(async () => {
  backend = await EchoBackend.start('b');
});

afterAll(async () => {
  await backend?.close();
});

/** The id of the nginx instance whose folder `dir` is. */
const instanceIdOf = (dir: string): number => Number(dir.split('/').pop());

describe('restarts', () => {
  it('serves its streams again after a restart', async () => {
    const first = await daemons.start();
    const port = first.rangeStart;
    await first.get(`/createstream/${port}/127.0.0.1:${backend.port}`);
    expect(await first.stop()).toBe(0);
    expect(await connectOutcome(port)).toBe('refused'); // a stop takes its nginx down
    await daemons.run({ home: first.home, rangeStart: first.rangeStart, apiPort: first.apiPort }, async (second) => {
      expect(await roundTrip(port, 'back')).toBe('b:back');
      expect((await second.get('/getstreams')).json).toEqual([
        { listen: port, proxy_pass: `127.0.0.1:${backend.port}` },
      ]);
    });
  });

  it('keeps streams flowing through a daemon killed with SIGKILL, and adopts its nginx', async () => {
    const first = await daemons.start();
    const port = first.rangeStart + 1;
    await first.get(`/createstream/${port}/127.0.0.1:${backend.port}`);
    const mastersBefore = await masterPids(first);
    await first.stop('SIGKILL');
    expect(await roundTrip(port, 'orphan')).toBe('b:orphan'); // nginx outlives the daemon
    await daemons.run({ home: first.home, rangeStart: first.rangeStart, apiPort: first.apiPort }, async (second) => {
      expect(await masterPids(second)).toEqual(mastersBefore);
      expect(second.logs).toContain('adopting the nginx master');
      expect(await roundTrip(port, 'adopted')).toBe('b:adopted');
      expect((await second.get(`/removestream/${port}`)).json).toEqual({ result: 'ok', errors: '' });
      expect(await connectOutcome(port)).toBe('refused');
    });
    for (const master of mastersBefore) expect(await alive(master)).toBe(false);
  });

  it('takes over a home in the per-stream layout of earlier versions, its nginx still running', async () => {
    const first = await daemons.start();
    const ports = [first.rangeStart + 2, first.rangeStart + 3];
    for (const port of ports)
      expect((await first.get(`/createstream/${port}/127.0.0.1:${backend.port}`)).json).toEqual({
        result: 'ok',
        errors: '',
      });
    await first.stop('SIGKILL');
    // What an earlier version left: a file per stream in each master's folder, no bundle.
    const streams = join(first.home, 'stream.d');
    for (let id = 0; id < instanceCount(first); id += 1) {
      const bundle = join(streams, String(id), '_conductor_streams.conf');
      for (const [port, { text }] of renderedStreams({ [bundle]: await readFile(bundle, 'utf8') }))
        await writeFile(join(streams, String(id), `_conductor_${port}.conf`), text);
      await rm(bundle);
    }
    expect(await renderedPorts(streams)).toEqual(ports);
    await daemons.run({ home: first.home, rangeStart: first.rangeStart, apiPort: first.apiPort }, async (second) => {
      for (const port of ports) expect(await roundTrip(port, 'kept')).toBe('b:kept');
      // A change has every master read its configuration again: each stream is there once.
      const added = first.rangeStart + 4;
      expect((await second.get(`/createstream/${added}/127.0.0.1:${backend.port}`)).json).toEqual({
        result: 'ok',
        errors: '',
      });
      for (const port of [...ports, added]) expect(await roundTrip(port, 'after')).toBe('b:after');
      for (let id = 0; id < instanceCount(second); id += 1)
        expect(await readdir(join(streams, String(id)))).toEqual(['_conductor_streams.conf']);
      expect(await renderedPorts(streams)).toEqual([...ports, added]);
    });
  });

  it('stops its nginx on SIGTERM and on SIGINT', async () => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const daemon = await daemons.start();
      const port = daemon.rangeStart;
      await daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`);
      const masters = await masterPids(daemon);
      expect(new Set(masters).size).toBe(instanceCount(daemon));
      expect(await daemon.stop(signal)).toBe(0);
      for (const master of masters) expect(await alive(master)).toBe(false);
      expect(await connectOutcome(port)).toBe('refused');
      expect(await connectOutcome(daemon.apiPort)).toBe('refused');
    }
  });
});

describe('a managed nginx that dies', () => {
  it.each(['master', 'master and workers'])(
    'is restarted when its %s are killed, and every stream flows again',
    async (what) => {
      await daemons.run({}, async (daemon) => {
        // Streams spread over the masters (each new one goes to the master free soonest).
        const ports = Array.from({ length: 6 }, (_, i) => daemon.rangeStart + i);
        for (const port of ports) {
          await daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`);
          await sleep(120);
        }
        const dir = await nginxDirFor(daemon, ports[0] as number);
        const id = instanceIdOf(dir);
        const others = (await masterPids(daemon)).filter((_, i) => i !== id);
        const masterPid = async (): Promise<number> => Number((await readFile(join(dir, 'nginx.pid'), 'utf8')).trim());
        const master = await masterPid();
        if (what === 'master') {
          process.kill(master, 'SIGKILL');
        } else {
          const { execFileSync } = await import('node:child_process');
          execFileSync('pkill', ['-KILL', '-P', String(master)]);
          process.kill(master, 'SIGKILL');
        }
        try {
          await eventually(masterPid, (pid) => pid !== master);
          for (const port of ports)
            expect(
              await eventually(
                () => roundTrip(port, 'again'),
                (answer) => answer === 'b:again',
              ),
            ).toBe('b:again');
        } catch (error) {
          throw new Error(`${String(error)}\ndaemon log:\n${daemon.logs}`);
        }
        type Status = {
          nginx: { restarts: number; state: string; incidents: Array<{ message: string }> };
          streams: { live: number };
        };
        // The streams flow as soon as the new workers run, a moment before the daemon marks it running.
        const status = await eventually(
          async () => (await daemon.get('/v1/status')).json as Status,
          (value) => value.nginx.state === 'running',
          5000,
        );
        expect(status.nginx.state).toBe('running');
        expect(status.nginx.restarts).toBe(1);
        // By default the master is the daemon's own child: its exit names the signal.
        expect(status.nginx.incidents.map((incident) => incident.message)).toEqual([
          `nginx ${id}: nginx exited unexpectedly (signal SIGKILL)`,
        ]);
        expect(status.streams.live).toBe(ports.length);
        // The other masters did not notice.
        expect((await masterPids(daemon)).filter((_, i) => i !== id)).toEqual(others);
      });
    },
  );
});

describe('old-format files', () => {
  it('adopts the streams of the old service and sets aside what it cannot take', async () => {
    const dir = await daemons.dir();
    const home = join(dir, 'home');
    const streams = join(home, 'stream.d');
    await mkdir(streams, { recursive: true });
    const base = await freePortBlock(11);
    const old = (port: number, backendText: string): string =>
      `# created 2017-06-05 09:27:22\nserver { listen ${port}; proxy_pass ${backendText}; }\n`;
    await writeFile(
      join(streams, `_conductor_${base}-127.0.0.1:${backend.port}.conf`),
      old(base, `127.0.0.1:${backend.port}`),
    );
    await writeFile(
      join(streams, `_conductor_${base + 1}-a:1;proxy_timeout 1s.conf`),
      old(base + 1, 'a:1;proxy_timeout 1s'),
    );
    await writeFile(join(streams, `_conductor_${base + 20}-localhost:22.conf`), old(base + 20, 'localhost:22'));
    await writeFile(join(streams, 'operator-own.conf'), '# not ours\n');
    await daemons.run({ home, rangeStart: base, rangeSize: 10, apiPort: base + 10 }, async (daemon) => {
      expect((await daemon.get('/getstreams')).json).toEqual([
        { listen: base, proxy_pass: `127.0.0.1:${backend.port}` },
      ]);
      expect(await roundTrip(base, 'legacy')).toBe('b:legacy');
      // Each master has its stream file in its own folder; the adopted stream is in one of them.
      const rendered = await Promise.all(
        Array.from({ length: instanceCount(daemon) }, (_, id) => readdir(join(streams, String(id)))),
      );
      expect(rendered).toEqual(Array.from({ length: instanceCount(daemon) }, () => ['_conductor_streams.conf']));
      expect(await renderedPorts(streams)).toEqual([base]);
      expect((await readdir(streams)).sort()).toEqual(
        [
          `_conductor_${base}-127.0.0.1:${backend.port}.conf.adopted`,
          ...Array.from({ length: instanceCount(daemon) }, (_, id) => String(id)),
          `_conductor_${base + 1}-a:1;proxy_timeout 1s.conf.rejected`,
          `_conductor_${base + 20}-localhost:22.conf.rejected`,
          'operator-own.conf',
        ].sort(),
      );
      const status = (await daemon.get('/v1/status')).json as { problems: string[] };
      expect(status.problems).toHaveLength(2);
      expect(status.problems.join('\n')).toContain(
        'its content is not a plain `server { listen <port>; proxy_pass <backend>; }`',
      );
      expect(status.problems.join('\n')).toContain(`port ${base + 20} is outside PORT_RANGE`);
    });
  });
});
