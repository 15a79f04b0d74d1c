/**
 * Fleet mode against a real etcd: three daemons on one machine, each with its own managed nginx
 * listening on its own loopback address (127.0.0.2, .3, .4) and the same port range, all sharing
 * one desired set of streams. Bytes prove each claim: a change through one host's API flows on
 * every host; ports allocated on two hosts at once never collide; a change a host refuses leaves
 * the fleet as it was; a lease removes an expiring stream with its creator gone; a host that was
 * down catches up; a host without etcd keeps serving; a lost etcd leader loses no acknowledged
 * change.
 */

import { execFileSync } from 'node:child_process';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { DaemonStatus, StreamView } from '@stream-conductor/shared';
import { runCli } from '../helpers/cli.js';
import type { Daemon } from '../helpers/daemon.js';
import { type DaemonFixture, daemonFixture } from '../helpers/daemon-fixture.js';
import { EtcdCluster } from '../helpers/etcd.js';
import { connectOutcome, EchoBackend, openSession, roundTrip } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';
import { freePortBlock } from '../helpers/ports.js';
import { eventually, sleep } from '../helpers/wait.js';

const RANGE = 40;

interface Fleet {
  /** The fixture the hosts start through: it stops them, then etcd, and removes the folders. */
  daemons: DaemonFixture;
  range: number;
  etcd: EtcdCluster;
  hosts: Daemon[];
  addresses: string[];
  base: number;
  prefix: string;
  dir: string;
}

let echoA: EchoBackend;
let echoB: EchoBackend;

beforeAll(async () => {
  echoA = await EchoBackend.start('a');
  echoB = await EchoBackend.start('b');
});

afterAll(async () => {
  await echoA?.close();
  await echoB?.close();
});

/** Starts host `i` of a fleet (again, on its home, when `home` is given). */
function startHost(
  fleet: Pick<Fleet, 'daemons' | 'etcd' | 'base' | 'prefix' | 'range'>,
  i: number,
  home?: string,
): Promise<Daemon> {
  return fleet.daemons.start({
    rangeStart: fleet.base,
    rangeSize: fleet.range,
    apiPort: fleet.base + fleet.range + i,
    ...(home ? { home } : {}),
    env: {
      CONDUCTOR_STORE: `etcd://${fleet.etcd.endpoints}`,
      CONDUCTOR_ETCD_PREFIX: fleet.prefix,
      CONDUCTOR_HOST_ID: `host-${i}`,
      CONDUCTOR_LISTEN_ADDRESS: `127.0.0.${i + 2}`,
      CONDUCTOR_NGINX_INSTANCES: '2',
      CONDUCTOR_RETRY_INTERVAL: '1',
      // Test hook: while this file exists, the host drops the stream events of its watch.
      CONDUCTOR_TEST_FLEET_DEAF: deafFile(fleet, i),
    },
  });
}

const deafFile = (fleet: Pick<Fleet, 'prefix'>, i: number): string =>
  join(tmpdir(), `sc-deaf-${fleet.prefix.replace(/\//g, '')}-host-${i}`);

/** Starts etcd and `hostCount` hosts on it; `daemons` stops them all when its block ends. */
async function startFleet(daemons: DaemonFixture, members: number, hostCount: number, range = RANGE): Promise<Fleet> {
  const dir = await daemons.dir();
  const etcd = await EtcdCluster.start(dir, members);
  const base = await freePortBlock(range + hostCount);
  const partial = { daemons, etcd, base, range, prefix: `/sc-${base}/` };
  daemons.beforeRemoving(async () => {
    for (let i = 0; i < hostCount; i += 1) await rm(deafFile(partial, i), { force: true });
    await etcd.stop();
  });
  const hosts: Daemon[] = [];
  for (let i = 0; i < hostCount; i += 1) hosts.push(await startHost(partial, i));
  return { ...partial, hosts, addresses: hosts.map((_, i) => `127.0.0.${i + 2}`), dir };
}

const streamOf = async (host: Daemon, port: number): Promise<StreamView | undefined> => {
  const answer = await host.get(`/v1/streams/${port}`);
  return answer.status === 200 ? (answer.json as { stream: StreamView }).stream : undefined;
};

/** What each host's address answers on `port`: a backend's name, or 'refused'. */
async function reach(fleet: Fleet, port: number, hosts = fleet.hosts.map((_, i) => i)): Promise<string[]> {
  return Promise.all(
    hosts.map(async (i) => {
      const address = fleet.addresses[i] as string;
      if ((await connectOutcome(port, address)) === 'refused') return 'refused';
      try {
        return (await roundTrip(port, 'x', { host: address })).split(':')[0] ?? '?';
      } catch {
        return 'broken';
      }
    }),
  );
}

/** The processes that listen on `ports` (`ss`, then `ps`): the pipeline's nginx, or a process left over. */
function listeners(ports: number[]): string {
  const lines = execFileSync('ss', ['-Hltnp'])
    .toString()
    .split('\n')
    .filter((line) => ports.some((port) => line.includes(`:${port} `)));
  const pids = [
    ...new Set(lines.flatMap((line) => [...line.matchAll(/pid=([0-9]+)/g)].map((match) => match[1] as string))),
  ];
  let processes = '';
  try {
    // The processes and their parents (a worker's master, or the reaper when its master is gone).
    const parents =
      pids.length > 0
        ? execFileSync('ps', ['-o', 'ppid=', '-p', pids.join(',')])
            .toString()
            .split(/\s+/)
            .filter(Boolean)
        : [];
    if (pids.length > 0)
      processes = execFileSync('ps', ['-o', 'pid,ppid,lstart,args', '-p', [...pids, ...parents].join(',')]).toString();
  } catch {
    processes = '(gone)'; // ps answers 1 when none of them runs any more
  }
  return `${lines.join('\n')}\n${processes}`;
}

const everywhere = (fleet: Fleet, what: string, hosts = fleet.hosts.length): string[] =>
  Array.from({ length: hosts }, () => what);

describe('a fleet of three hosts on one etcd', () => {
  const daemons = daemonFixture();
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet(daemons, 1, 3);
  }, 120_000);

  it('makes a change through any host live on every host, and shows where it runs', async () => {
    const [a, b, c] = fleet.hosts as [Daemon, Daemon, Daemon];
    const port = fleet.base;
    const created = await a.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${echoA.port}` });
    expect(created.status).toBe(201);
    // Live on the host that answered, at once.
    expect(await reach(fleet, port, [0])).toEqual(['a']);
    expect(
      await eventually(
        () => reach(fleet, port),
        (seen) => seen.every((name) => name === 'a'),
      ),
    ).toEqual(everywhere(fleet, 'a'));

    // Replaced through another host: every host forwards to the new backend.
    expect((await b.request('PUT', `/v1/streams/${port}`, { backend: `127.0.0.1:${echoB.port}` })).status).toBe(200);
    expect(
      await eventually(
        () => reach(fleet, port),
        (seen) => seen.every((name) => name === 'b'),
      ),
    ).toEqual(everywhere(fleet, 'b'));

    // Every host lists it with the state of each host.
    const listed = await eventually(
      () => streamOf(c, port),
      (stream) => (stream?.hosts ?? []).filter((host) => host.state === 'live').length === 3,
    );
    expect(listed?.hosts?.map((host) => host.host)).toEqual(['host-0', 'host-1', 'host-2']);
    const ls = await runCli(['ls'], { CONDUCTOR_URL: c.url });
    expect(ls.stdout).toMatch(
      new RegExp(`│ ${port}\\s+│ tcp\\s+│ 127\\.0\\.0\\.1:${echoB.port}\\s+│ live\\s+│ 3/3\\s+│`),
    );
    const get = await runCli(['get', String(port)], { CONDUCTOR_URL: a.url });
    expect(get.stdout).toMatch(/^host host-0: {5}live\nhost host-1: {5}live\nhost host-2: {5}live$/m);
    const status = await runCli(['status'], { CONDUCTOR_URL: b.url });
    expect(status.stdout).toMatch(
      new RegExp(
        `^store: {6}etcd http://${fleet.etcd.endpoints} connected since .*prefix ${fleet.prefix}, this host host-1$`,
        'm',
      ),
    );
    for (const i of [0, 1, 2])
      expect(status.stdout).toMatch(
        new RegExp(
          `^host: {7}host-${i} http://127\\.0\\.0\\.1:${fleet.base + RANGE + i} .*: [0-9]+ live, 0 failed, 0 pending$`,
          'm',
        ),
      );

    // The fleet's fields are part of the API's description.
    const { check } = await openApiChecker(a);
    check('/v1/status', 'get', 200, (await a.get('/v1/status')).json);
    check('/v1/streams', 'get', 200, (await a.get('/v1/streams')).json);
    check('/v1/streams/{port}', 'get', 200, (await a.get(`/v1/streams/${port}`)).json);

    // Removed through the third: refused everywhere.
    expect((await c.request('DELETE', `/v1/streams/${port}`)).status).toBe(200);
    expect(await reach(fleet, port, [2])).toEqual(['refused']);
    expect(
      await eventually(
        () => reach(fleet, port),
        (seen) => seen.every((name) => name === 'refused'),
      ),
    ).toEqual(everywhere(fleet, 'refused'));
    // The legacy API goes through the fleet as well.
    expect((await b.get(`/createstream/${port}/127.0.0.1:${echoA.port}`)).json).toEqual({ result: 'ok', errors: '' });
    expect(
      await eventually(
        () => reach(fleet, port),
        (seen) => seen.every((name) => name === 'a'),
      ),
    ).toEqual(everywhere(fleet, 'a'));
    expect((await a.get(`/removestream/${port}`)).json).toEqual({ result: 'ok', errors: '' });
    await eventually(
      () => reach(fleet, port),
      (seen) => seen.every((name) => name === 'refused'),
    );
  });

  it('never gives one port twice when two hosts allocate free ports at once', async () => {
    const [a, b] = fleet.hosts as [Daemon, Daemon];
    const body = { backend: `127.0.0.1:${echoA.port}` };
    const answers = await Promise.all([
      ...Array.from({ length: 8 }, () => a.request('POST', '/v1/streams', body)),
      ...Array.from({ length: 8 }, () => b.request('POST', '/v1/streams', body)),
    ]);
    expect(answers.map((answer) => answer.status)).toEqual(Array.from({ length: 16 }, () => 201));
    const ports = answers.map((answer) => (answer.json as { stream: StreamView }).stream.port);
    expect(new Set(ports).size).toBe(16);
    for (const port of ports) {
      expect(
        await eventually(
          () => reach(fleet, port),
          (seen) => seen.every((name) => name === 'a'),
        ),
      ).toEqual(everywhere(fleet, 'a'));
    }
    // The same port asked of two hosts at once: one wins, on every host.
    const port = fleet.base + RANGE - 1;
    const race = await Promise.all([
      a.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${echoA.port}` }),
      b.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${echoB.port}` }),
    ]);
    expect(race.map((answer) => answer.status).sort()).toEqual([201, 409]);
    const winner = race[0]?.status === 201 ? 'a' : 'b';
    expect(
      await eventually(
        () => reach(fleet, port),
        (seen) => seen.every((name) => name === winner),
      ),
    ).toEqual(everywhere(fleet, winner));
    for (const one of [...ports, port]) expect((await a.request('DELETE', `/v1/streams/${one}`)).status).toBe(200);
  });

  it('leaves the fleet as it was when the host that takes a change refuses it', async () => {
    const [a, b, c] = fleet.hosts as [Daemon, Daemon, Daemon];
    const port = fleet.base + 1;
    const refused = await a.request('POST', '/v1/streams', { port, backend: 'no-such-host.invalid:80' });
    expect(refused.status).toBe(422);
    const outside = await b.request('POST', '/v1/streams', {
      port: fleet.base + RANGE + 5,
      backend: `127.0.0.1:${echoA.port}`,
    });
    expect(outside.status).toBe(400);
    await sleep(500);
    for (const host of [a, b, c]) expect(await streamOf(host, port)).toBeUndefined();
    expect(await reach(fleet, port)).toEqual(everywhere(fleet, 'refused'));
    // A stream already there stays as it was when its replacement is refused.
    expect((await a.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${echoA.port}` })).status).toBe(201);
    await eventually(
      () => reach(fleet, port),
      (seen) => seen.every((name) => name === 'a'),
    );
    expect((await c.request('PUT', `/v1/streams/${port}`, { backend: 'no-such-host.invalid:80' })).status).toBe(422);
    await sleep(500);
    expect(await reach(fleet, port)).toEqual(everywhere(fleet, 'a'));
    for (const host of [a, b, c])
      expect((await streamOf(host, port))?.backends).toEqual([{ address: `127.0.0.1:${echoA.port}` }]);
    expect((await b.request('DELETE', `/v1/streams/${port}`)).status).toBe(200);
  });

  it('never shows the other hosts a change the host that takes it refuses, not even for a moment', async () => {
    const [a, b] = fleet.hosts as [Daemon, Daemon];
    const port = fleet.base + 7;
    // Another process holds the port on the first host's address only.
    const { holdPort } = await import('../helpers/ports.js');
    const held = await holdPort(port, fleet.addresses[0]);
    let openedElsewhere = 0;
    let watching = true;
    const watch = (async () => {
      while (watching) {
        for (const address of [fleet.addresses[1], fleet.addresses[2]]) {
          if ((await connectOutcome(port, address as string)) === 'open') openedElsewhere += 1;
        }
      }
    })();
    try {
      for (let i = 0; i < 5; i += 1) {
        const refused = await a.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${echoA.port}` });
        expect(refused.status).toBe(409);
        expect((refused.json as { error: { code: string } }).error.code).toBe('PORT_IN_USE');
      }
      await sleep(300);
    } finally {
      watching = false;
      await watch;
      await held.close();
    }
    expect(openedElsewhere).toBe(0);
    expect(await streamOf(b, port)).toBeUndefined();
  });

  it('converges every host to one answer when two hosts replace a stream at once', async () => {
    const [a, b, c] = fleet.hosts as [Daemon, Daemon, Daemon];
    const port = fleet.base + 8;
    expect((await a.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${echoA.port}` })).status).toBe(201);
    for (let round = 0; round < 6; round += 1) {
      const answers = await Promise.all([
        a.request('PUT', `/v1/streams/${port}`, { backend: `127.0.0.1:${echoA.port}`, idleTimeout: `${round + 10}s` }),
        b.request('PUT', `/v1/streams/${port}`, { backend: `127.0.0.1:${echoB.port}`, idleTimeout: `${round + 10}s` }),
      ]);
      for (const answer of answers) expect([200, 201, 409]).toContain(answer.status);
      // Whatever won, every host ends up forwarding to the same backend, the one the fleet holds.
      const settled = await eventually(
        () => reach(fleet, port),
        (seen) => new Set(seen).size === 1 && seen[0] !== 'refused',
      );
      const held = (await streamOf(c, port))?.backends[0]?.address;
      expect(held).toBe(`127.0.0.1:${settled[0] === 'a' ? echoA.port : echoB.port}`);
    }
    expect((await c.request('DELETE', `/v1/streams/${port}`)).status).toBe(200);
  });

  it('leaves no lease behind when an expiring stream is renewed, and survives keys it cannot read', async () => {
    const [a, b] = fleet.hosts as [Daemon, Daemon];
    const port = fleet.base + 9;
    const leases = await fleet.etcd.leaseCount();
    expect(
      (await a.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${echoA.port}`, ttl: '1h' })).status,
    ).toBe(201);
    for (let i = 0; i < 3; i += 1)
      expect((await b.request('POST', `/v1/streams/${port}/renew`, { ttl: `${2 + i}h` })).status).toBe(200);
    expect(
      await eventually(
        () => fleet.etcd.leaseCount(),
        (count) => count === leases + 1,
      ),
    ).toBe(leases + 1);
    expect((await a.request('DELETE', `/v1/streams/${port}`)).status).toBe(200);
    expect(
      await eventually(
        () => fleet.etcd.leaseCount(),
        (count) => count === leases,
      ),
    ).toBe(leases);

    // Keys another program wrote wrong are skipped, not fatal.
    await fleet.etcd.put(`${fleet.prefix}applied/ghost/${port}`, '{"state":"live"}');
    await fleet.etcd.put(`${fleet.prefix}streams/${port + 1}`, '{"record":{"port":1}}');
    await fleet.etcd.put(`${fleet.prefix}streams/0x10`, '{}');
    await fleet.etcd.put(`${fleet.prefix}hosts/ghost`, 'not json');
    await sleep(300);
    for (const path of ['/v1/streams', '/v1/status', `/v1/streams/${port + 1}`])
      expect([path, (await b.get(path)).status]).toEqual([path, path.endsWith(String(port + 1)) ? 404 : 200]);
    await fleet.etcd.call('/v3/kv/deleterange', {
      key: Buffer.from(`${fleet.prefix}streams/${port + 1}`).toString('base64'),
    });
  });

  it('takes every renewal of one stream asked at once through every host, keeps a replace asked with them, and leaves it one lease', async () => {
    const port = fleet.base + 30;
    const leases = await fleet.etcd.leaseCount();
    const body = { port, backend: `127.0.0.1:${echoA.port}`, ttl: '1h' };
    expect((await fleet.hosts[0]?.request('POST', '/v1/streams', body))?.status).toBe(201);
    const from = Math.floor(Date.now() / 1000) * 1000 + 2 * 3_600_000;
    const asked = Array.from({ length: 9 }, (_, i) => new Date(from + i * 60_000).toISOString());
    const answers = await Promise.all(
      asked.map((expiresAt, i) =>
        (fleet.hosts[i % fleet.hosts.length] as Daemon).request('POST', `/v1/streams/${port}/renew`, { expiresAt }),
      ),
    );
    // The bodies ride along, so that a failure shows what was said.
    expect(answers.map((answer) => [answer.status, answer.json])).toEqual(
      asked.map((expiresAt) => [200, expect.objectContaining({ stream: expect.objectContaining({ expiresAt }) })]),
    );
    // Every host ends up with the lifetime the fleet holds, one of those asked.
    const held = await eventually(
      () => Promise.all(fleet.hosts.map((host) => streamOf(host, port))),
      (views) => views.every((view) => view?.expiresAt === views[0]?.expiresAt),
    );
    expect(asked).toContain(held[0]?.expiresAt);
    // A replace among renewals through every host: its backend stays, on every host.
    const [replaced, ...renewed] = await Promise.all([
      (fleet.hosts[2] as Daemon).request('PUT', `/v1/streams/${port}`, {
        backend: `127.0.0.1:${echoB.port}`,
        ttl: '1h',
      }),
      ...asked
        .slice(0, 4)
        .map((expiresAt, i) =>
          (fleet.hosts[i % fleet.hosts.length] as Daemon).request('POST', `/v1/streams/${port}/renew`, { expiresAt }),
        ),
    ]);
    expect(renewed.map((answer) => [answer.status, answer.json])).toEqual(
      Array.from({ length: 4 }, () => [200, expect.anything()]),
    );
    // A replace is not renewed and tried again: one that lost the key to a renewal is told 409,
    // as any two changes of one stream at once (the renewals that lose to it are tried again).
    expect([200, 409]).toContain(replaced?.status);
    const backend = replaced?.status === 200 ? 'b' : 'a';
    expect(
      await eventually(
        () => reach(fleet, port),
        (seen) => seen.every((name) => name === backend),
      ),
    ).toEqual(everywhere(fleet, backend));
    expect(
      await eventually(
        () => fleet.etcd.leaseCount(),
        (count) => count === leases + 1,
      ),
    ).toBe(leases + 1);
    expect((await fleet.hosts[1]?.request('DELETE', `/v1/streams/${port}`))?.status).toBe(200);
  });

  it("never lets one port's key change another port's stream, and shows other hosts' text escaped", async () => {
    const [a, b] = fleet.hosts as [Daemon, Daemon];
    const port = fleet.base + 20;
    expect((await a.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${echoA.port}` })).status).toBe(201);
    await eventually(
      () => reach(fleet, port),
      (seen) => seen.every((name) => name === 'a'),
    );
    const range = await fleet.etcd.call('/v3/kv/range', {
      key: Buffer.from(`${fleet.prefix}streams/${port}`).toString('base64'),
    });
    const stored = JSON.parse(
      Buffer.from((range.kvs as Array<{ value: string }>)[0]?.value ?? '', 'base64').toString('utf8'),
    ) as { record: Record<string, unknown> };
    // Another port's key whose pending change says that, before it, port `port` went to b.
    const elsewhere = { ...stored.record, port: port + 1 };
    const before = { ...stored.record, backends: [{ address: `127.0.0.1:${echoB.port}` }] };
    await fleet.etcd.put(
      `${fleet.prefix}streams/${port + 1}`,
      JSON.stringify({
        record: elsewhere,
        pending: { previous: before, remove: false, at: new Date().toISOString() },
        by: 'x',
        op: 'y',
      }),
    );
    // A host record with terminal escapes in it.
    await fleet.etcd.put(
      `${fleet.prefix}hosts/evil`,
      JSON.stringify({
        id: 'evil',
        api: 'http://x\u001b]0;owned\u0007\u001b[2J',
        version: '1\u009b31m',
        startedAt: new Date().toISOString(),
      }),
    );
    // Every host has read the key, and refused it.
    await eventually(
      async () => fleet.hosts.every((host) => host.logs.includes(`"key":"streams/${port + 1}"`)),
      (all) => all,
    );
    expect(await reach(fleet, port)).toEqual(everywhere(fleet, 'a'));
    expect((await b.get(`/v1/streams/${port + 1}`)).status).toBe(404);
    const status = await eventually(
      () => runCli(['status'], { CONDUCTOR_URL: b.url }),
      (run) => run.stdout.includes('host:       evil'),
    );
    expect(status.stdout).toContain('host:       evil http://x\\u001b]0;owned\\u0007\\u001b[2J (version 1\\u009b31m');
    expect(status.stdout).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/);
    for (const key of [`streams/${port + 1}`, 'hosts/evil'])
      await fleet.etcd.call('/v3/kv/deleterange', { key: Buffer.from(`${fleet.prefix}${key}`).toString('base64') });
    expect((await a.request('DELETE', `/v1/streams/${port}`)).status).toBe(200);
  });

  it("carries a stream's session limits to every host, each enforcing them on its own nginx", async () => {
    const [a, b, c] = fleet.hosts as [Daemon, Daemon, Daemon];
    const port = fleet.base + 12;
    const created = await a.request('POST', '/v1/streams', {
      port,
      backend: `127.0.0.1:${echoA.port}`,
      maxConnections: 2,
      downloadRate: '1m',
    });
    expect(created.status).toBe(201);
    // One session at a time (reach's extra connect would count against the limit).
    for (const address of fleet.addresses)
      await eventually(
        () => roundTrip(port, 'x', { host: address }),
        (answer) => answer === 'a:x',
      );
    expect(await streamOf(b, port)).toMatchObject({ maxConnections: 2, downloadRate: 1024 * 1024 });
    const { check } = await openApiChecker(b);
    check('/v1/streams/{port}', 'get', 200, (await b.get(`/v1/streams/${port}?stats=1`)).json);
    // Host c serves two sessions at once; host b, a separate nginx, has its own count.
    const onC = fleet.addresses[2] as string;
    const held = [await openSession(port, { host: onC }), await openSession(port, { host: onC })];
    try {
      await expect(roundTrip(port, 'x', { host: onC })).rejects.toThrow(/closed the connection|ECONNRESET/);
      expect(await roundTrip(port, 'x', { host: fleet.addresses[1] as string })).toBe('a:x');
    } finally {
      for (const socket of held) socket.destroy();
    }
    await eventually(
      () => roundTrip(port, 'x', { host: onC }),
      (answer) => answer === 'a:x',
    );
    const get = await runCli(['get', String(port)], { CONDUCTOR_URL: c.url });
    expect(get.stdout).toMatch(/^max connections: +2$/m);
    expect((await c.request('DELETE', `/v1/streams/${port}`)).status).toBe(200);
  });

  it('has etcd remove an expiring stream on time, with the host that created it gone', async () => {
    const c = fleet.hosts[2] as Daemon;
    const port = fleet.base + 2;
    expect(
      (await c.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${echoA.port}`, ttl: '3s' })).status,
    ).toBe(201);
    await eventually(
      () => reach(fleet, port),
      (seen) => seen.every((name) => name === 'a'),
    );
    await c.stop('SIGKILL');
    // Its nginx keeps running without it; the two others drop the stream when the lease ends.
    expect(
      await eventually(
        () => reach(fleet, port, [0, 1]),
        (seen) => seen.every((name) => name === 'refused'),
        10_000,
      ),
    ).toEqual(['refused', 'refused']);
    // Started again, the third host adopts its nginx and catches up.
    fleet.hosts[2] = await startHost(fleet, 2, c.home);
    expect(
      await eventually(
        () => reach(fleet, port),
        (seen) => seen.every((name) => name === 'refused'),
      ),
    ).toEqual(everywhere(fleet, 'refused'));
  });

  it('brings a host that was down in line with what changed meanwhile', async () => {
    const [a, b] = fleet.hosts as [Daemon, Daemon];
    const kept = fleet.base + 3;
    const dropped = fleet.base + 4;
    const added = fleet.base + 5;
    for (const port of [kept, dropped])
      expect((await a.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${echoA.port}` })).status).toBe(201);
    await eventually(
      () => reach(fleet, dropped),
      (seen) => seen.every((name) => name === 'a'),
    );
    await b.stop();
    // Whatever another program left under its key, a host that starts takes its place.
    await fleet.etcd.put(`${fleet.prefix}hosts/host-1`, 'not json');
    expect((await a.request('DELETE', `/v1/streams/${dropped}`)).status).toBe(200);
    expect((await a.request('POST', '/v1/streams', { port: added, backend: `127.0.0.1:${echoB.port}` })).status).toBe(
      201,
    );
    fleet.hosts[1] = await startHost(fleet, 1, b.home);
    expect(
      await eventually(
        () => reach(fleet, dropped),
        (seen) => seen.every((name) => name === 'refused'),
      ),
    ).toEqual(everywhere(fleet, 'refused'));
    expect(
      await eventually(
        () => reach(fleet, added),
        (seen) => seen.every((name) => name === 'b'),
      ),
    ).toEqual(everywhere(fleet, 'b'));
    expect(await reach(fleet, kept)).toEqual(everywhere(fleet, 'a'));
  });

  it('keeps serving without etcd, refuses changes meanwhile, and catches up when etcd is back', async () => {
    const [a, b] = fleet.hosts as [Daemon, Daemon];
    const serving = fleet.base + 3; // from the test before
    const member = fleet.etcd.members[0];
    if (!member) throw new Error('no member');
    await fleet.etcd.kill(member);
    const status = await eventually(
      async () => (await a.get('/v1/status')).json as DaemonStatus,
      (s) => s.store?.state === 'unreachable',
      15_000,
    );
    expect(status.store).toMatchObject({ kind: 'etcd', state: 'unreachable' });
    expect(await reach(fleet, serving)).toEqual(everywhere(fleet, 'a'));
    const refused = await b.request('POST', '/v1/streams', {
      port: fleet.base + 6,
      backend: `127.0.0.1:${echoA.port}`,
    });
    expect(refused.status).toBe(503);
    expect((refused.json as { error: { code: string } }).error.code).toBe('STORE_UNAVAILABLE');
    const cli = await runCli(['create', String(fleet.base + 6), `127.0.0.1:${echoA.port}`], { CONDUCTOR_URL: b.url });
    expect(cli.code).toBe(1);
    // Refused by the host's own supervision, or by etcd's client on the way: either way, said so.
    expect(cli.stderr).toMatch(/^conductor: the fleet's store \(etcd\) (is not reachable|did not take the change): /);
    expect((await runCli(['status'], { CONDUCTOR_URL: a.url })).stdout).toMatch(
      /^store: {6}etcd .* unreachable since /m,
    );

    const withTtl = await a.request('POST', '/v1/streams', {
      port: fleet.base + 6,
      backend: `127.0.0.1:${echoA.port}`,
      ttl: '1h',
    });
    expect(withTtl.status).toBe(503);

    await fleet.etcd.restart(member);
    await eventually(
      async () => (await b.get('/v1/status')).json as DaemonStatus,
      (s) => s.store?.state === 'connected',
      15_000,
    );
    expect(
      (await b.request('POST', '/v1/streams', { port: fleet.base + 6, backend: `127.0.0.1:${echoA.port}` })).status,
    ).toBe(201);
    expect(
      await eventually(
        () => reach(fleet, fleet.base + 6),
        (seen) => seen.every((name) => name === 'a'),
      ),
    ).toEqual(everywhere(fleet, 'a'));
  });
});

describe('a fleet host whose etcd stops answering', () => {
  const daemons = daemonFixture();

  it('still stops at once on SIGTERM', async () => {
    const fleet = await startFleet(daemons, 1, 1);
    const member = fleet.etcd.members[0];
    try {
      if (!member) throw new Error('no member');
      fleet.etcd.pause(member);
      const host = fleet.hosts[0] as Daemon;
      const started = Date.now();
      expect(await host.stop('SIGTERM')).toBe(0);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      if (member) fleet.etcd.resume(member);
    }
  }, 60_000);
});

describe('a fleet on a three-member etcd cluster', () => {
  const daemons = daemonFixture();
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet(daemons, 3, 2);
  }, 120_000);

  it('loses no acknowledged change when the etcd leader is killed', async () => {
    const [a] = fleet.hosts as [Daemon];
    const acknowledged: number[] = [];
    const refused: number[] = [];
    // Creates one after another for about three seconds; the leader is killed after the sixth.
    for (let i = 0; i < 16; i += 1) {
      const port = fleet.base + i;
      if (i === 6) await fleet.etcd.kill(await fleet.etcd.leader());
      await sleep(150);
      const answer = await a.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${echoA.port}` });
      if (answer.status === 201) acknowledged.push(port);
      else {
        expect([503, 409]).toContain(answer.status);
        refused.push(port);
      }
    }
    // A new leader takes over within a second or two: creates after the kill are acknowledged too.
    expect(acknowledged.filter((port) => port >= fleet.base + 10).length).toBeGreaterThan(0);
    expect(acknowledged.length).toBeGreaterThanOrEqual(8);
    for (const port of acknowledged) {
      expect(
        await eventually(
          () => reach(fleet, port),
          (seen) => seen.every((name) => name === 'a'),
        ),
      ).toEqual(everywhere(fleet, 'a'));
    }
    // What was refused is on no host, or, where etcd took it after all, on every host.
    for (const port of refused) {
      const seen = await eventually(
        () => reach(fleet, port),
        (found) => new Set(found).size === 1,
        10_000,
      );
      expect(new Set(seen).size).toBe(1);
    }
    // The cluster keeps taking changes with one member down.
    expect(
      (
        await fleet.hosts[1]?.request('POST', '/v1/streams', {
          port: fleet.base + 30,
          backend: `127.0.0.1:${echoB.port}`,
        })
      )?.status,
    ).toBe(201);
    expect(
      await eventually(
        () => reach(fleet, fleet.base + 30),
        (seen) => seen.every((name) => name === 'b'),
      ),
    ).toEqual(everywhere(fleet, 'b'));
  });
});

describe('a fleet of three hosts on a three-member etcd, under concurrent churn', () => {
  const daemons = daemonFixture();
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet(daemons, 3, 3, 48);
  }, 120_000);

  it('stops a stream removed through any host on every host within about a second', async () => {
    const [a, b, c] = fleet.hosts as [Daemon, Daemon, Daemon];
    const body = { backend: `127.0.0.1:${echoA.port}` };
    const slowest: number[] = [];
    for (let round = 0; round < 3; round += 1) {
      // 40 streams, allocated by two hosts at once.
      const created = await Promise.all(
        Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).request('POST', '/v1/streams', body)),
      );
      expect(created.map((answer) => answer.status)).toEqual(Array.from({ length: 40 }, () => 201));
      const ports = created.map((answer) => (answer.json as { stream: StreamView }).stream.port);
      expect(new Set(ports).size).toBe(40);
      // Removed through the third host, 8 at a time; each batch refuses on every host soon after.
      for (let at = 0; at < ports.length; at += 8) {
        const batch = ports.slice(at, at + 8);
        const removed = await Promise.all(batch.map((port) => c.request('DELETE', `/v1/streams/${port}`)));
        expect(removed.map((answer) => answer.status)).toEqual(batch.map(() => 200));
        const answered = Date.now();
        const seen = await eventually(
          () => Promise.all(batch.map((port) => reach(fleet, port))),
          (all) => all.every((hosts) => hosts.every((name) => name === 'refused')),
          2000,
        ).catch((error: unknown) => {
          throw new Error(
            `round ${round}, ports ${batch.join(',')}: ${String(error)}\nstill listening:\n${listeners(batch)}`,
          );
        });
        expect(seen.flat().every((name) => name === 'refused')).toBe(true);
        slowest.push(Date.now() - answered);
      }
    }
    process.stderr.write(
      `removal convergence (ms after the DELETEs answered): max ${Math.max(...slowest)}, ${JSON.stringify(slowest)}\n`,
    );
  }, 240_000);

  it('answers what a change did when another change to the same port comes right after it, never 5xx', async () => {
    const [a, b, c] = fleet.hosts as [Daemon, Daemon, Daemon];
    const port = fleet.base + 47;
    const statuses: number[] = [];
    for (let round = 0; round < 12; round += 1) {
      const create = await a.request('PUT', `/v1/streams/${port}`, { backend: `127.0.0.1:${echoA.port}` });
      expect([200, 201]).toContain(create.status);
      // A replace through one host while another, again and again until the replace answers,
      // removes the port and at the same time puts it as it is: some removal lands right after
      // the replace is stored, or right after the unchanged put took the stream as it stood.
      const spec = { backend: `127.0.0.1:${echoB.port}`, idleTimeout: `${round + 10}s` };
      let replacing = true;
      const removals = (async () => {
        const seen = [];
        while (replacing)
          seen.push(
            ...(await Promise.all([
              c.request('DELETE', `/v1/streams/${port}`),
              c.request('PUT', `/v1/streams/${port}`, spec),
            ])),
          );
        return seen;
      })();
      const replace = await b.request('PUT', `/v1/streams/${port}`, spec);
      replacing = false;
      const answers = [replace, ...(await removals)];
      for (const answer of answers) {
        statuses.push(answer.status);
        if (answer.status >= 500) throw new Error(`round ${round}: ${answer.status} ${answer.text}`);
        expect([200, 201, 404, 409]).toContain(answer.status);
      }
      // Whatever won, every host ends up with the same answer.
      await eventually(
        () => reach(fleet, port),
        (seen) => new Set(seen).size === 1 && seen[0] !== 'broken',
        5000,
      ).catch((error: unknown) => {
        throw new Error(`round ${round}: ${String(error)}\nlistening:\n${listeners([port])}`);
      });
    }
    process.stderr.write(`answers to concurrent changes of one port: ${JSON.stringify(statuses)}\n`);
    await c.request('DELETE', `/v1/streams/${port}`);
  }, 120_000);
});

describe('a fleet host that misses events of its watch', () => {
  const daemons = daemonFixture();
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet(daemons, 1, 3);
  }, 120_000);

  it('finds out by itself, converges to etcd and reports what it serves', async () => {
    const [a, b, c] = fleet.hosts as [Daemon, Daemon, Daemon];
    const [removed, replaced, kept] = [fleet.base, fleet.base + 1, fleet.base + 2];
    for (const port of [removed, replaced, kept])
      expect((await b.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${echoA.port}` })).status).toBe(201);
    for (const port of [removed, replaced, kept])
      await eventually(
        () => reach(fleet, port),
        (seen) => seen.every((name) => name === 'a'),
      );
    // The first host stops hearing of changes to streams; the others go on.
    await writeFile(deafFile(fleet, 0), '');
    try {
      const started = Date.now();
      expect((await c.request('DELETE', `/v1/streams/${removed}`)).status).toBe(200);
      expect((await b.request('PUT', `/v1/streams/${replaced}`, { backend: `127.0.0.1:${echoB.port}` })).status).toBe(
        200,
      );
      // Its self-check (every second) finds etcd ahead of it and reads it again.
      expect(
        await eventually(
          () => reach(fleet, removed, [0]),
          (seen) => seen[0] === 'refused',
          5000,
        ),
      ).toEqual(['refused']);
      expect(
        await eventually(
          () => reach(fleet, replaced, [0]),
          (seen) => seen[0] === 'b',
          5000,
        ),
      ).toEqual(['b']);
      process.stderr.write(`a host deaf to its watch converged ${Date.now() - started} ms after the changes\n`);
      expect(a.logs).toContain('the watch of the fleet store missed changes');
      expect(await reach(fleet, kept)).toEqual(everywhere(fleet, 'a'));
      // What it reports to the others is what it serves.
      const seenByC = await eventually(
        () => streamOf(c, replaced),
        (stream) => stream?.hosts?.find((host) => host.host === 'host-0')?.state === 'live',
        5000,
      );
      expect(seenByC?.backends).toEqual([{ address: `127.0.0.1:${echoB.port}` }]);
      const report = await fleet.etcd.call('/v3/kv/range', {
        key: Buffer.from(`${fleet.prefix}applied/host-0/${removed}`).toString('base64'),
      });
      expect(report.kvs).toBeUndefined();
    } finally {
      await rm(deafFile(fleet, 0), { force: true });
    }
  });
});
