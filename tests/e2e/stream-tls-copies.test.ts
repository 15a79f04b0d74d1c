/**
 * Where the daemon keeps its copies of a stream's TLS files (under its home) is not shown: not to a
 * read token, not to a write token, in no v1 answer (create, get, list, put, apply, drain) and not
 * in the CLI's -o json; what operators need (each certificate's subject, end and fingerprint) is.
 */

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { StreamView } from '@stream-conductor/shared';
import { type Certs, fingerprintOf, makeCerts } from '../helpers/certs.js';
import { runCli } from '../helpers/cli.js';
import type { Daemon } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { EchoBackend } from '../helpers/net.js';
import { openApiChecker } from '../helpers/openapi.js';

const WRITER = 'writer-token-0123456789';
const READER = 'reader-token-0123456789';
let daemon: Daemon;
let certs: Certs;
let dir: string;
let backend: EchoBackend;
const daemons = daemonFixture();
const as = (token: string) => ({ authorization: `Bearer ${token}` });
let api: Awaited<ReturnType<typeof openApiChecker>>;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sc-tls-copies-'));
  certs = await makeCerts(dir);
  const tokens = join(dir, 'tokens');
  await writeFile(tokens, `ops ${WRITER} write\nmonitoring ${READER} read\n`, { mode: 0o600 });
  daemon = await daemons.start({ rangeSize: 6, env: { CONDUCTOR_TOKEN_FILE: tokens } });
  backend = await EchoBackend.start('echo');
  api = await openApiChecker(daemon, async () => (await daemon.get('/v1/openapi.json', as(READER))).json);
}, 60_000);

afterAll(async () => {
  await backend?.close();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

/** Every tlsMaterial in `body`: only its id and certificates, nothing under the daemon's home. */
function expectNoCopyPaths(body: unknown): void {
  const text = JSON.stringify(body);
  expect(text).toContain('"tlsMaterial"');
  expect(text).not.toContain(daemon.home);
  expect(text).not.toContain('stream-tls');
  const found: unknown[] = [];
  JSON.parse(text, (key, value: unknown) => {
    if (key === 'tlsMaterial') found.push(value);
    return value;
  });
  for (const material of found) expect(Object.keys(material as object).sort()).toEqual(['certificates', 'id']);
}

describe("the daemon's copies of TLS files", () => {
  it('are not shown in any answer, to a read or a write token, nor by the CLI', async () => {
    const at = daemon.rangeStart;
    const body = { port: at, backend: `127.0.0.1:${backend.port}`, tlsCert: certs.serverCert, tlsKey: certs.serverKey };
    const created = await daemon.request('POST', '/v1/streams', body, as(WRITER));
    expect(created.status).toBe(201);
    api.check('/v1/streams', 'post', 201, created.json);
    expectNoCopyPaths(created.json);
    const print = await fingerprintOf(certs.serverCert);
    expect((created.json as { stream: StreamView }).stream.tlsMaterial?.certificates[0]?.fingerprint256).toBe(print);

    for (const token of [READER, WRITER]) {
      const get = await daemon.get(`/v1/streams/${at}`, as(token));
      expect(get.status).toBe(200);
      api.check('/v1/streams/{port}', 'get', 200, get.json);
      expectNoCopyPaths(get.json);
      const list = await daemon.get('/v1/streams?stats=1', as(token));
      api.check('/v1/streams', 'get', 200, list.json);
      expectNoCopyPaths(list.json);
      const health = await daemon.request('POST', `/v1/streams/${at}/health`, undefined, as(token));
      expect(health.status).toBe(200);
      expectNoCopyPaths(health.json);
    }
    const put = await daemon.request('PUT', `/v1/streams/${at}`, { ...body, labels: { a: 'b' } }, as(WRITER));
    expect(put.status).toBe(200);
    api.check('/v1/streams/{port}', 'put', 200, put.json);
    expectNoCopyPaths(put.json);

    for (const token of [READER, WRITER]) {
      const env = { CONDUCTOR_URL: daemon.url, CONDUCTOR_TOKEN: token };
      for (const args of [
        ['get', String(at), '-o', 'json'],
        ['ls', '-o', 'json'],
        ['--json', 'get', String(at)],
      ]) {
        const cli = await runCli(args, env);
        expect([args, cli.code, cli.stderr]).toEqual([args, 0, '']);
        expectNoCopyPaths(JSON.parse(cli.stdout));
      }
      const shown = await runCli(['get', String(at), '--no-color'], env);
      expect(shown.stdout).not.toContain(daemon.home);
      expect(shown.stdout).toContain(print);
    }
    expect((await daemon.request('DELETE', `/v1/streams/${at}`, undefined, as(WRITER))).status).toBe(200);
  });
});
