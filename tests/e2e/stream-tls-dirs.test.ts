/**
 * CONDUCTOR_STREAM_TLS_DIRS: the folders the streams' TLS files may come from. A file outside them,
 * also one reached through a link inside them or a folder whose name only starts like an allowed
 * one, is refused 400 naming the file and the folders, with nothing changed; a file inside serves.
 */

import { copyFile, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type Certs, fingerprintOf, makeCerts, tlsRoundTrip } from '../helpers/certs.js';
import { runCli } from '../helpers/cli.js';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { connectOutcome, EchoBackend } from '../helpers/net.js';
import { snapshot } from '../helpers/state.js';

let daemon: Daemon;
let certs: Certs;
let dir: string;
let allowed: string;
let other: string;
let backend: EchoBackend;
const daemons = daemonFixture();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sc-tls-dirs-'));
  await mkdir(join(dir, 'outside'));
  certs = await makeCerts(join(dir, 'outside'));
  allowed = join(dir, 'allowed');
  other = join(dir, 'certs2');
  await mkdir(allowed);
  await mkdir(join(dir, 'allowed-not'));
  await mkdir(other);
  for (const folder of [allowed, join(dir, 'allowed-not'), other]) {
    await copyFile(certs.serverCert, join(folder, 'server.pem'));
    await copyFile(certs.serverKey, join(folder, 'server.key'));
  }
  // A link inside the allowed folder that leads out of it.
  await symlink(certs.serverKey, join(allowed, 'link.key'));
  daemon = await daemons.start({ rangeSize: 6, env: { CONDUCTOR_STREAM_TLS_DIRS: `${allowed}:${other}/` } });
  backend = await EchoBackend.start('echo');
}, 60_000);

afterAll(async () => {
  await backend?.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('CONDUCTOR_STREAM_TLS_DIRS', () => {
  it('refuses files outside the folders, naming the file and the folders, with nothing changed', async () => {
    const at = daemon.rangeStart;
    const before = await snapshot(daemon);
    const cases: Array<[string, Record<string, unknown>, string]> = [
      ['outside', { tlsCert: certs.serverCert, tlsKey: join(allowed, 'server.key') }, 'tlsCert'],
      ['through a link', { tlsCert: join(allowed, 'server.pem'), tlsKey: join(allowed, 'link.key') }, 'tlsKey'],
      [
        'a folder named like an allowed one',
        { tlsCert: join(dir, 'allowed-not', 'server.pem'), tlsKey: join(allowed, 'server.key') },
        'tlsCert',
      ],
      ['a missing file outside', { tlsCert: join(dir, 'nope.pem'), tlsKey: join(allowed, 'server.key') }, 'tlsCert'],
      [
        'a backend CA outside',
        { backendTls: true, backendCa: certs.ca, backendName: 'localhost', backend: '127.0.0.1:1' },
        'backendCa',
      ],
    ];
    for (const [what, fields, field] of cases) {
      const answer = await daemon.request('POST', '/v1/streams', {
        port: at,
        backend: `127.0.0.1:${backend.port}`,
        ...fields,
      });
      expect([what, answer.status]).toEqual([what, 400]);
      const message = (answer.json as { error: { message: string } }).error.message;
      expect(message).toMatch(new RegExp(`^${field}: `));
      expect(message).toContain(String(fields[field]));
      expect(message).toContain(
        `is not inside the folders TLS files may come from (CONDUCTOR_STREAM_TLS_DIRS: ${allowed}:${other})`,
      );
    }
    const cli = await runCli(
      ['create', String(at), `127.0.0.1:${backend.port}`, '--tls-cert', certs.serverCert, '--tls-key', certs.serverKey],
      { CONDUCTOR_URL: daemon.url },
    );
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain('CONDUCTOR_STREAM_TLS_DIRS');
    expect(await snapshot(daemon)).toEqual(before);
    expect(await connectOutcome(at)).toBe('refused');
  });

  it('serves files inside either folder', async () => {
    for (const [offset, folder] of [
      [1, allowed],
      [2, other],
    ] as const) {
      const at = daemon.rangeStart + offset;
      const answer = await daemon.request('POST', '/v1/streams', {
        port: at,
        backend: `127.0.0.1:${backend.port}`,
        tlsCert: join(folder, 'server.pem'),
        tlsKey: join(folder, 'server.key'),
      });
      expect(answer.status).toBe(201);
      expect(await tlsRoundTrip(at, 'in', certs.ca)).toEqual({
        answer: 'echo:in',
        fingerprint256: await fingerprintOf(certs.serverCert),
      });
    }
  });
});
