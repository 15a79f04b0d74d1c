/**
 * A daemon whose home comes back without its TLS copies (stream-tls/ not restored, a copy
 * deleted): at start-up it makes them again from the operator's files when those still check out,
 * and when they do not, it starts anyway, serves every other stream and reports the one it cannot
 * serve (state failed, the reason naming the file) instead of nginx refusing the whole
 * configuration.
 */

import { copyFile, mkdtemp, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { StreamView } from '@stream-conductor/shared';
import { type Certs, fingerprintOf, makeCerts, tlsRoundTrip } from '../helpers/certs.js';
import { runCli } from '../helpers/cli.js';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';

let daemon: Daemon;
let certs: Certs;
let dir: string;
let backend: EchoBackend;
const daemons = daemonFixture();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sc-tls-restore-'));
  certs = await makeCerts(dir);
  daemon = await daemons.start({ rangeSize: 8 });
  backend = await EchoBackend.start('echo', 0, '127.0.0.2');
}, 60_000);

afterAll(async () => {
  await backend?.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('a start-up without the TLS copies', () => {
  it("makes them again from the operator's files, and serves the others when a file is gone", async () => {
    const S = daemon.rangeStart;
    // Stream A's files stay; stream B's certificate is deleted while the daemon is down.
    const aCert = join(dir, 'a.crt');
    const bCert = join(dir, 'b.crt');
    await copyFile(certs.serverCert, aCert);
    // Another certificate and key: copies are named by their content, so B's are not A's.
    await copyFile(certs.wrongServerCert, bCert);
    const target = `127.0.0.2:${backend.port}`;
    for (const [port, cert, key] of [
      [S, aCert, certs.serverKey],
      [S + 1, bCert, certs.wrongServerKey],
    ] as const) {
      const created = await daemon.request('POST', '/v1/streams', {
        port,
        backend: target,
        tlsCert: cert,
        tlsKey: key,
      });
      expect(created.status).toBe(201);
    }
    expect((await daemon.request('POST', '/v1/streams', { port: S + 2, backend: target })).status).toBe(201);
    await daemon.stop();
    await rm(join(daemon.home, 'stream-tls'), { recursive: true, force: true });
    await unlink(bCert);

    daemon = await daemons.start({ home: daemon.home, rangeStart: S, rangeSize: 8 });
    const served = await fingerprintOf(aCert);
    expect(await tlsRoundTrip(S, 'a', certs.ca)).toEqual({ answer: 'echo:a', fingerprint256: served });
    expect(await roundTrip(S + 2, 'plain')).toBe('echo:plain');
    expect(await connectOutcome(S + 1)).toBe('refused');

    const b = (await daemon.get(`/v1/streams/${S + 1}`)).json as { stream: StreamView };
    expect(b.stream.state).toBe('failed');
    expect(b.stream.reason).toContain(bCert);
    expect(b.stream.reason).toMatch(/TLS copy stream-tls\/[0-9a-f]+\.cert\.pem is missing and cannot be made again/);
    expect(b.stream.reason).not.toContain(daemon.home);
    const a = (await daemon.get(`/v1/streams/${S}`)).json as { stream: StreamView };
    expect(a.stream.state).toBe('live');
    const status = (await daemon.get('/v1/status')).json as { problems: string[] };
    expect(status.problems).toEqual([expect.stringContaining(`stream on port ${S + 1} is not served`)]);
    expect(status.problems[0]).toContain(bCert);
    const listed = (await daemon.get('/v1/streams')).json as { streams: StreamView[] };
    expect(listed.streams.map((stream) => [stream.port, stream.state])).toEqual([
      [S, 'live'],
      [S + 1, 'failed'],
      [S + 2, 'live'],
    ]);
    const shown = await runCli(['get', String(S + 1)], { CONDUCTOR_URL: daemon.url });
    expect(shown.stdout).toContain(bCert);

    // The operator's file back, a restart serves it again.
    await copyFile(certs.wrongServerCert, bCert);
    await daemon.stop();
    daemon = await daemons.start({ home: daemon.home, rangeStart: S, rangeSize: 8 });
    expect(await tlsRoundTrip(S + 1, 'b', certs.wrongCa)).toEqual({
      answer: 'echo:b',
      fingerprint256: await fingerprintOf(bCert),
    });
    expect(((await daemon.get('/v1/status')).json as { problems: string[] }).problems).toEqual([]);
    // A failed stream can be removed like any other.
    expect((await runCli(['rm', String(S + 1)], { CONDUCTOR_URL: daemon.url })).code).toBe(0);
  }, 120_000);
});
