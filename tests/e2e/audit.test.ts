/**
 * Nothing of ours serves what the daemon does not list, and no answer rests on a signal alone:
 * the audit compares each master's kernel sockets with the definitions and brings it back in line,
 * and a remove whose old worker cannot let go of the port (stopped) is answered only once the
 * kernel shows the port closed.
 */

import { appendFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type Daemon, masterPidFor } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend, roundTrip } from '../helpers/net.js';
import { alive, eventually } from '../helpers/wait.js';

let daemon: Daemon;
let alpha: EchoBackend;

interface AuditView {
  inLine: boolean;
  missing: number[];
  extra: number[];
  strays: number;
}

const audit = async (): Promise<AuditView | undefined> =>
  ((await daemon.request('GET', '/v1/status')).json as { nginx: { audit?: AuditView } }).nginx.audit;

const daemons = daemonFixture();

beforeAll(async () => {
  alpha = await EchoBackend.start('alpha');
  daemon = await daemons.start({
    rangeSize: 6,
    env: { CONDUCTOR_NGINX_INSTANCES: '1', CONDUCTOR_AUDIT_INTERVAL: '0.3' },
  });
});

afterAll(async () => {
  await alpha?.close();
});

function workersOf(master: number): Promise<number[]> {
  return readFile(`/proc/${master}/task/${master}/children`, 'utf8').then((text) =>
    text.trim().split(/\s+/).filter(Boolean).map(Number),
  );
}

/**
 * The master's workers of its current generation: an old one from an earlier reload, still
 * shutting down (longer on a busy core), holds no listening socket any more.
 */
async function currentWorkersOf(master: number): Promise<number[]> {
  const current: number[] = [];
  for (const pid of await workersOf(master)) {
    const title = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (title.startsWith('nginx: worker process') && !title.includes('shutting down')) current.push(pid);
  }
  return current;
}

describe('the audit', () => {
  it('finds a port nginx serves that no stream has, says so in status, and brings nginx back in line', async () => {
    const [listed, smuggled] = [daemon.rangeStart, daemon.rangeStart + 1];
    expect(
      (await daemon.request('POST', '/v1/streams', { port: listed, backend: `127.0.0.1:${alpha.port}` })).status,
    ).toBe(201);
    await eventually(audit, (found) => found?.inLine === true);
    // Someone adds a server to nginx's files by hand and reloads nginx behind the daemon's back.
    const bundle = join(daemon.home, 'stream.d', '0', '_conductor_streams.conf');
    await appendFile(
      bundle,
      `server {\n    listen 127.0.0.1:${smuggled};\n    proxy_pass 127.0.0.1:${alpha.port};\n}\n`,
    );
    process.kill(await masterPidFor(daemon, listed), 'SIGHUP');
    await eventually(
      () => roundTrip(smuggled, 'x').catch(() => 'refused'),
      (answer) => answer === 'alpha:x',
    );
    // The audit sees it, and status says so rather than healthy.
    const seen = await eventually(
      audit,
      (found) => found?.inLine === false && (found.extra.includes(smuggled) ?? false),
    );
    expect(seen?.extra).toEqual([smuggled]);
    const cli = (await daemon.request('GET', '/v1/status')).json as { nginx: { audit: AuditView } };
    expect(cli.nginx.audit.inLine).toBe(false);
    // Then brings nginx back to the definitions: the port closes, the listed stream flows on.
    await eventually(
      () => connectOutcome(smuggled),
      (outcome) => outcome === 'refused',
      15_000,
    );
    await eventually(audit, (found) => found?.inLine === true);
    expect(await roundTrip(listed, 'kept')).toBe('alpha:kept');
    // The audit log tells what happened.
    const events = (await daemon.request('GET', '/v1/events?limit=100')).json as {
      events: Array<{ action: string; detail?: string }>;
    };
    expect(
      events.events.some((event) => event.action === 'audit' && (event.detail ?? '').includes(`extra ${smuggled}`)),
    ).toBe(true);
    expect((await daemon.request('DELETE', `/v1/streams/${listed}`)).status).toBe(200);
  });
});

describe('a remove whose old worker is stopped', () => {
  it('is answered only once the kernel refuses the port: the stuck worker is ended first', async () => {
    const [port, other] = [daemon.rangeStart + 2, daemon.rangeStart + 3];
    expect((await daemon.request('POST', '/v1/streams', { port, backend: `127.0.0.1:${alpha.port}` })).status).toBe(
      201,
    );
    expect(
      (await daemon.request('POST', '/v1/streams', { port: other, backend: `127.0.0.1:${alpha.port}` })).status,
    ).toBe(201);
    const master = await masterPidFor(daemon, port);
    const [worker] = await currentWorkersOf(master);
    expect(worker).toBeDefined();
    process.kill(worker as number, 'SIGSTOP'); // it holds every listening socket and will not act on SIGQUIT
    try {
      const removed = await daemon.request('DELETE', `/v1/streams/${port}`);
      expect(removed.status).toBe(200);
      // The answer is true the moment it arrives.
      expect(await connectOutcome(port)).toBe('refused');
      // The stopped worker held that socket, so the refusal means its descriptors are closed: it was
      // killed. Its exit finishes a moment after the kernel closed its files (longer on a busy core).
      expect(
        await eventually(
          () => alive(worker as number),
          (running) => !running,
          5000,
        ),
      ).toBe(false);
      expect(await roundTrip(other, 'still')).toBe('alpha:still');
    } finally {
      if (await alive(worker as number)) process.kill(worker as number, 'SIGCONT');
    }
    expect((await daemon.request('DELETE', `/v1/streams/${other}`)).status).toBe(200);
  });
});
