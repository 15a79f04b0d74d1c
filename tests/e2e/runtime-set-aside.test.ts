/**
 * One bad stream never blocks the others at runtime: a stream whose backend name stopped
 * resolving after it was created is set aside as failed with nginx's reason when the next change
 * reaches its master, the other changes go through, and the retry brings it back once the name
 * resolves again. The daemon and its nginx see a hosts file of the test's as /etc/hosts.
 */

import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';
import { eventually } from '../helpers/wait.js';

let daemon: Daemon;
let alpha: EchoBackend;
let hosts: string;
let folder: string;

const HOSTS = '127.0.0.1 localhost\n::1 localhost\n';

const daemons = daemonFixture();

beforeAll(async () => {
  alpha = await EchoBackend.start('alpha');
  folder = await daemons.dir();
  hosts = join(folder, 'hosts');
  await writeFile(hosts, `${HOSTS}127.0.0.1 flaky.test\n`);
  // One master, so that every change lands where the broken stream is.
  daemon = await daemons.start({
    rangeSize: 6,
    hostsFile: hosts,
    env: { CONDUCTOR_NGINX_INSTANCES: '1', CONDUCTOR_RETRY_INTERVAL: '1' },
  });
});

afterAll(async () => {
  await alpha?.close();
});

interface Listed {
  port: number;
  state: string;
  reason?: string;
}

describe('a backend name that stops resolving after create', () => {
  it('is set aside with nginx reason, never blocks other changes, and comes back when it resolves again', async () => {
    const [flaky, steady, fresh] = [daemon.rangeStart, daemon.rangeStart + 1, daemon.rangeStart + 2];
    expect(
      (await daemon.request('POST', '/v1/streams', { port: flaky, backend: `flaky.test:${alpha.port}` })).status,
    ).toBe(201);
    expect(
      (await daemon.request('POST', '/v1/streams', { port: steady, backend: `127.0.0.1:${alpha.port}` })).status,
    ).toBe(201);
    expect(await roundTrip(flaky, 'before')).toBe('alpha:before');

    // The name stops resolving (edited in place: the daemon's /etc/hosts is this very file).
    await writeFile(hosts, HOSTS);

    // Changes to other streams on the same master still go through, each answered for itself.
    const created = await daemon.request('POST', '/v1/streams', { port: fresh, backend: `127.0.0.1:${alpha.port}` });
    expect(created.status).toBe(201);
    expect(await roundTrip(fresh, 'fresh')).toBe('alpha:fresh');
    expect((await daemon.request('PUT', `/v1/streams/${steady}`, { backend: `localhost:${alpha.port}` })).status).toBe(
      200,
    );
    expect(await roundTrip(steady, 'steady')).toBe('alpha:steady');
    expect((await daemon.request('DELETE', `/v1/streams/${fresh}`)).status).toBe(200);
    expect(await connectOutcome(fresh)).toBe('refused');

    // The broken stream is listed as failed with nginx's reason, and status counts it.
    const listed = ((await daemon.request('GET', `/v1/streams/${flaky}`)).json as { stream: Listed }).stream;
    expect(listed.state).toBe('failed');
    expect(listed.reason).toMatch(/host not found in upstream "flaky\.test/);
    const status = (await daemon.request('GET', '/v1/status')).json as { streams: { failed: number } };
    expect(status.streams.failed).toBe(1);

    // The name resolves again: the retry brings the stream back by itself.
    await writeFile(hosts, `${HOSTS}127.0.0.1 flaky.test\n`);
    await eventually(
      async () => ((await daemon.request('GET', `/v1/streams/${flaky}`)).json as { stream: Listed }).stream.state,
      (state) => state === 'live',
      15_000,
    );
    expect(await roundTrip(flaky, 'after')).toBe('alpha:after');
    expect(((await daemon.request('GET', '/v1/status')).json as { streams: { failed: number } }).streams.failed).toBe(
      0,
    );
  });
});
