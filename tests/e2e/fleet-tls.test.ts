/**
 * TLS on a stream in fleet mode: two daemons, each with its own nginx on its own loopback address
 * (127.0.0.2, .3), one desired set in a real etcd. The fleet holds the file paths; each host
 * checks and copies its own files. A TLS stream created through one host serves its certificate
 * on both (a verified TLS client through each host's nginx); files that do not pass on the host
 * that takes the call are refused naming the field, nothing changed on either host; a renewal is
 * picked up by each host; a host whose files are missing reports the stream failed with the
 * reason (its port closed in the kernel) while the other serves on, and serves it once the files
 * are back.
 */

import { copyFile, mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { StreamView } from '@stream-conductor/shared';
import {
  type Certs,
  certificateValidBetween,
  fingerprintOf,
  makeCerts,
  signCertificate,
  tlsRoundTrip,
} from '../helpers/certs.js';
import { runCli } from '../helpers/cli.js';
import type { Daemon, DaemonOptions } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { startFleetHosts } from '../helpers/fleet-hosts.js';
import { connectOutcome, EchoBackend, listeningOn } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';
import { eventually } from '../helpers/wait.js';

const SIZE = 6;
const ADDRESSES = ['127.0.0.2', '127.0.0.3'];

const daemons = daemonFixture();
let hosts: Daemon[];
let options: DaemonOptions[];
let P: number;
let certs: Certs;
let echo: EchoBackend;
let api: Awaited<ReturnType<typeof openApiChecker>>;

beforeAll(async () => {
  certs = await makeCerts(await mkdtemp(join(tmpdir(), 'sc-fleet-tls-')));
  echo = await EchoBackend.start('e');
  ({
    start: P,
    hosts,
    options,
  } = await startFleetHosts(daemons, {
    name: 'fleet-tls',
    size: SIZE,
    addresses: ADDRESSES,
    env: { CONDUCTOR_STREAM_TLS_INTERVAL: '1' },
  }));
  api = await openApiChecker(hosts[0] as Daemon);
});

afterAll(async () => {
  await echo?.close();
  await rm(certs.dir, { recursive: true, force: true });
});

const host = (i: number): Daemon => hosts[i] as Daemon;

const streamOn = async (i: number, port: number): Promise<StreamView | undefined> => {
  const answer = await host(i).get(`/v1/streams/${port}`);
  return answer.status === 200 ? (answer.json as { stream: StreamView }).stream : undefined;
};

/** The certificate each host's nginx shows on `port` (verified against the test CA), or why not. */
async function served(port: number): Promise<string[]> {
  return Promise.all(
    ADDRESSES.map(async (address) => {
      if ((await connectOutcome(port, address)) === 'refused') return 'refused';
      const { answer, fingerprint256 } = await tlsRoundTrip(port, 'hi', certs.ca, 'localhost', address);
      return answer === 'e:hi' ? fingerprint256 : `answered ${answer}`;
    }),
  );
}

/** What each host lists, and which ports of the range listen on each host's address. */
async function everything(): Promise<unknown> {
  const lists = await Promise.all(
    ADDRESSES.map(async (_, i) => ((await host(i).get('/v1/streams')).json as { streams: StreamView[] }).streams),
  );
  const kernel = await Promise.all(
    ADDRESSES.map(async (address) =>
      [...(await listeningOn(address))].filter((port) => port >= P && port < P + SIZE).sort(),
    ),
  );
  return { lists: lists.map((list) => list.map(({ port, state, tlsCert }) => ({ port, state, tlsCert }))), kernel };
}

describe('TLS on a stream in fleet mode, on two hosts', () => {
  it('is created through one host and served with its certificate by both, each from its own files', async () => {
    const created = await runCli(
      [
        '--json',
        'create',
        String(P),
        `127.0.0.1:${echo.port}`,
        '--tls-cert',
        certs.serverCert,
        '--tls-key',
        certs.serverKey,
      ],
      { CONDUCTOR_URL: host(0).url },
    );
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    const { stream } = JSON.parse(created.stdout) as { stream: StreamView };
    expect(stream).toMatchObject({ port: P, state: 'live', tlsCert: certs.serverCert });
    expect(stream.hosts).toContainEqual({ host: 'host-0', state: 'live' });
    const print = await fingerprintOf(certs.serverCert);
    expect((await served(P))[0]).toBe(print);
    const both = await eventually(
      () => served(P),
      (seen) => seen.every((one) => one === print),
      15_000,
    );
    expect(both).toEqual([print, print]);
    // Each host shows the certificate it serves, and every host live.
    for (const i of [0, 1]) {
      const view = await eventually(
        () => streamOn(i, P),
        (one) => one?.hosts?.every((entry) => entry.state === 'live') === true,
        15_000,
      );
      expect(view?.tlsMaterial?.certificates[0]?.fingerprint256).toBe(print);
    }
  });

  it('refuses files that do not pass on the host taking the call, naming the field, with nothing changed on any host', async () => {
    const before = await everything();
    const bad = await host(1).request('POST', '/v1/streams', {
      port: P + 1,
      backend: `127.0.0.1:${echo.port}`,
      tlsCert: certs.serverCert,
      tlsKey: certs.wrongServerKey,
    });
    expect(bad.status).toBe(400);
    api.check('/v1/streams', 'post', 400, bad.json);
    expect(JSON.stringify(bad.json)).toMatch(/tlsKey: .* is not the key of the certificate/);
    const missing = await host(0).request('PUT', `/v1/streams/${P}`, {
      backend: `127.0.0.1:${echo.port}`,
      tlsCert: join(certs.dir, 'nowhere.pem'),
      tlsKey: certs.serverKey,
    });
    expect(missing.status).toBe(400);
    expect(JSON.stringify(missing.json)).toContain('tlsCert: cannot read');
    expect(await everything()).toEqual(before);
  });

  it('a dry run of a set checks its TLS files on the host taking the call as the apply does, with nothing changed on any host', async () => {
    const expired = await certificateValidBetween(
      certs.dir,
      'ca',
      'expired',
      certs.serverKey,
      '20200101000000Z',
      '20200102000000Z',
    );
    const backend = `127.0.0.1:${echo.port}`;
    const nowhere = join(certs.dir, 'nowhere.pem');
    const cases: Array<[string, Record<string, unknown>, RegExp]> = [
      ['missing', { tlsCert: nowhere, tlsKey: certs.serverKey }, /streams\[1\]\.tlsCert: cannot read .*nowhere\.pem/],
      // A folder where the certificate should be (the tests may run as root, who reads any file).
      [
        'not a file',
        { tlsCert: certs.dir, tlsKey: certs.serverKey },
        /streams\[1\]\.tlsCert: .* is not a regular file/,
      ],
      [
        'mismatched',
        { tlsCert: certs.serverCert, tlsKey: certs.wrongServerKey },
        /streams\[1\]\.tlsKey: .*wrong-server\.key is not the key of the certificate/,
      ],
      ['expired', { tlsCert: expired, tlsKey: certs.serverKey }, /streams\[1\]\.tlsCert: .*expired at 2020-01-02/],
      [
        'a missing backend CA',
        { backendTls: true, backendCa: nowhere, backendName: 'localhost' },
        /streams\[1\]\.backendCa: cannot read .*nowhere\.pem/,
      ],
    ];
    const before = await everything();
    for (const [what, fields, message] of cases) {
      const set = {
        streams: [
          { port: P + 4, backend },
          { port: P + 3, backend, ...fields },
        ],
      };
      for (const [i, dryRun] of [
        [0, true],
        [1, true],
        [0, false],
      ] as const) {
        const answer = await host(i).request('POST', '/v1/apply', { ...set, dryRun });
        expect([what, dryRun, answer.status]).toEqual([what, dryRun, 400]);
        api.check('/v1/apply', 'post', 400, answer.json);
        expect(JSON.stringify(answer.json)).toMatch(message);
      }
      expect(await everything()).toEqual(before);
    }
    // Files that pass: the dry run plans, and nothing changes.
    const good = await host(1).request('POST', '/v1/apply', {
      streams: [{ port: P + 3, backend, tlsCert: certs.serverCert, tlsKey: certs.serverKey }],
      dryRun: true,
    });
    expect(good.status).toBe(200);
    expect(good.json).toMatchObject({ dryRun: true, applied: false, plan: { create: [P + 3] } });
    expect(await everything()).toEqual(before);
  });

  it('a renewal (certbot style) is picked up by each host', async () => {
    const renewedPem = await signCertificate(certs.dir, 'ca', 'renewed', 'server', 60);
    await copyFile(join(certs.dir, 'renewed.key'), `${certs.serverKey}.new`);
    await copyFile(renewedPem, `${certs.serverCert}.new`);
    await rename(`${certs.serverKey}.new`, certs.serverKey);
    await rename(`${certs.serverCert}.new`, certs.serverCert);
    const renewed = await fingerprintOf(renewedPem);
    expect(
      await eventually(
        () => served(P),
        (seen) => seen.every((one) => one === renewed),
        20_000,
      ),
    ).toEqual([renewed, renewed]);
  });

  it('a host whose files are missing reports the stream failed with the reason, and serves it once they are back', async () => {
    const cert = join(certs.dir, 'only-here.pem');
    const key = join(certs.dir, 'only-here.key');
    await copyFile(certs.serverCert, cert);
    await copyFile(certs.serverKey, key);
    const print = await fingerprintOf(cert);
    await host(1).stop();
    const created = await host(0).request('POST', '/v1/streams', {
      port: P + 2,
      backend: `127.0.0.1:${echo.port}`,
      tlsCert: cert,
      tlsKey: key,
    });
    expect(created.status).toBe(201);
    api.check('/v1/streams', 'post', 201, created.json);
    // Host 0 serves from its own copies; host 1, started again, finds no files.
    await rm(cert);
    hosts[1] = await daemons.start({ ...(options[1] as DaemonOptions), home: host(1).home });
    const view = await eventually(
      () => streamOn(0, P + 2),
      (one) => one?.hosts?.find((entry) => entry.host === 'host-1')?.state === 'failed',
      20_000,
    );
    expect(view?.state).toBe('live');
    expect(view?.hosts?.find((entry) => entry.host === 'host-1')?.reason).toMatch(
      /tlsCert: cannot read .*only-here\.pem/,
    );
    expect((await streamOn(1, P + 2))?.state).toBe('failed');
    expect(await served(P + 2)).toEqual([print, 'refused']);
    // The stream on P is served on both all along.
    expect((await served(P)).every((one) => one !== 'refused')).toBe(true);
    // The files back: host 1 tries again and serves it.
    await copyFile(certs.serverCert, cert);
    expect(
      await eventually(
        () => served(P + 2),
        (seen) => seen[1] === print,
        20_000,
      ),
    ).toEqual([print, print]);
  });
});
