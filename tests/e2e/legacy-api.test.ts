/**
 * The legacy API byte for byte, as the old service's scripts see it: paths, JSON field names and
 * value types, Python's `json.dumps` spacing, `application/json`, and the 404 of a non-number
 * port. Then authentication, on and off.
 */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type Daemon, ROOT } from '../helpers/daemon.js';
import { daemonFixture } from '../helpers/daemon-fixture.js';
import { EchoBackend } from '../helpers/net.js';
import { snapshot } from '../helpers/state.js';

let backend: EchoBackend;
const { version } = JSON.parse(readFileSync(join(ROOT, 'packages/daemon/package.json'), 'utf8')) as { version: string };

beforeAll(async () => {
  backend = await EchoBackend.start('b');
});

afterAll(async () => {
  await backend?.close();
});

describe('without a token', () => {
  const daemons = daemonFixture();
  let daemon: Daemon;

  beforeAll(async () => {
    daemon = await daemons.start({ rangeSize: 10 });
  });

  it('answers every call with application/json and the exact old bytes', async () => {
    const { rangeStart: first, rangeEnd: last } = daemon;
    const status = await daemon.get('/status');
    expect(status.status).toBe(200);
    expect(status.contentType).toBe('application/json; charset=utf-8');
    expect(status.text).toBe(`{"version": "${version}", "available_ports": "range(${first}, ${last + 1})"}`);

    expect((await daemon.get('/getstreams')).text).toBe('[]');
    expect((await daemon.get(`/hasstream/${first}`)).text).toBe('{"result": "false"}');
    expect((await daemon.get('/getfreeport')).text).toBe(`{"result": "ok", "port": ${first}}`);

    const created = await daemon.get(`/createstream/${first}/127.0.0.1:${backend.port}`);
    expect(created.status).toBe(200);
    expect(created.contentType).toBe('application/json; charset=utf-8');
    expect(created.text).toBe('{"result": "ok", "errors": ""}');
    expect((await daemon.get('/getstreams')).text).toBe(
      `[{"listen": ${first}, "proxy_pass": "127.0.0.1:${backend.port}"}]`,
    );
    expect((await daemon.get(`/hasstream/${first}`)).text).toBe('{"result": "true"}');
    expect((await daemon.get('/getfreeport')).text).toBe(`{"result": "ok", "port": ${first + 1}}`);

    const again = await daemon.get(`/createstream/${first}/127.0.0.1:${backend.port}`);
    expect(again.status).toBe(200);
    expect(again.text).toBe(
      `{"result": "error", "errors": "port ${first} already has a stream (to 127.0.0.1:${backend.port})"}`,
    );

    expect((await daemon.get(`/removestream/${first}`)).text).toBe('{"result": "ok", "errors": ""}');
    const missing = await daemon.get(`/removestream/${first}`);
    expect(missing.status).toBe(200);
    expect(missing.text).toBe('{"result": "error", "error": "not found"}');
  });

  it('answers "none available" when every port of the range is taken', async () => {
    const ports = Array.from({ length: 10 }, (_, i) => daemon.rangeStart + i);
    await Promise.all(ports.map((port) => daemon.get(`/createstream/${port}/127.0.0.1:${backend.port}`)));
    expect((await daemon.get('/getfreeport')).text).toBe('{"result": "none available"}');
    await Promise.all(ports.map((port) => daemon.get(`/removestream/${port}`)));
    expect((await daemon.get('/getstreams')).text).toBe('[]');
  });

  it('escapes non-ASCII and control characters the way Python did', async () => {
    const answer = await daemon.get('/createstream/12ü/x:1');
    expect(answer.status).toBe(404);
    expect(answer.text).toBe('{"result": "error", "errors": "port must be a whole number, got \\"12\\u00fc\\""}');
  });

  it.each(['/hasstream/abc', '/removestream/abc', '/createstream/abc/x:1', '/removestream/-5'])(
    'answers 404 JSON for %s',
    async (path) => {
      const answer = await daemon.get(path);
      expect(answer.status).toBe(404);
      expect(answer.contentType).toBe('application/json; charset=utf-8');
      expect(answer.json).toMatchObject({ result: 'error' });
    },
  );

  it('answers 404 JSON for unknown paths and methods other than GET, changing nothing', async () => {
    const before = await snapshot(daemon);
    for (const [method, path] of [
      ['GET', '/nope'],
      ['POST', `/createstream/${daemon.rangeStart}/127.0.0.1:${backend.port}`],
      ['DELETE', `/removestream/${daemon.rangeStart}`],
      ['GET', '/createstream'],
      ['GET', `/createstream/${daemon.rangeStart}`],
    ] as const) {
      const answer = await daemon.request(method, path);
      expect(answer.status).toBe(404);
      expect(answer.contentType).toMatch(/^application\/json/);
    }
    expect(await snapshot(daemon)).toEqual(before);
  });

  it('answers a malformed percent-encoding with a 400, not a crash', async () => {
    const answer = await daemon.get('/createstream/9000/%E0%A4%A');
    expect(answer.status).toBe(400);
    expect(answer.json).toMatchObject({ result: 'error' });
    expect((await daemon.get('/status')).status).toBe(200);
  });
});

describe('with a token', () => {
  const token = 'test-token-0123456789abcdef';
  const daemons = daemonFixture();
  let daemon: Daemon;

  beforeAll(async () => {
    daemon = await daemons.start({ rangeSize: 10, env: { CONDUCTOR_TOKEN: token } });
  });

  it('leaves /status open', async () => {
    expect((await daemon.get('/status')).status).toBe(200);
  });

  it.each([
    ['no header', {}],
    ['a wrong token', { authorization: 'Bearer wrong-token-0123456789' }],
    ['a prefix of the token', { authorization: `Bearer ${token.slice(0, -1)}` }],
    ['the token with more after it', { authorization: `Bearer ${token}x` }],
    ['the token without Bearer', { authorization: token }],
    ['Basic auth', { authorization: `Basic ${Buffer.from(`x:${token}`).toString('base64')}` }],
  ])('refuses %s with 401 JSON on every other path, changing nothing', async (_what, headers) => {
    const before = await snapshot(daemon);
    for (const path of [
      '/getstreams',
      `/createstream/${daemon.rangeStart}/127.0.0.1:${backend.port}`,
      `/removestream/${daemon.rangeStart}`,
      `/hasstream/${daemon.rangeStart}`,
      '/getfreeport',
      '/v1/streams',
      '/v1/status',
    ]) {
      const answer = await daemon.get(path, headers);
      expect(answer.status).toBe(401);
      expect(answer.contentType).toMatch(/^application\/json/);
      expect(answer.text).not.toContain(token.slice(0, 8));
    }
    const v1 = await daemon.get('/v1/streams', headers);
    expect(v1.json).toEqual({
      error: {
        code: 'UNAUTHORIZED',
        message: 'missing or wrong API token',
        hint: 'send Authorization: Bearer <token> (conductor --token or CONDUCTOR_TOKEN)',
      },
    });
    expect((await daemon.get('/getstreams', headers)).text).toBe(
      '{"result": "error", "errors": "missing or wrong API token"}',
    );
    expect(await snapshot(daemon)).toEqual(before);
    expect(daemon.logs).not.toContain(token);
  });

  it('serves every path with the right token', async () => {
    const auth = { authorization: `Bearer ${token}` };
    expect((await daemon.get(`/createstream/${daemon.rangeStart}/127.0.0.1:${backend.port}`, auth)).json).toEqual({
      result: 'ok',
      errors: '',
    });
    expect((await daemon.get('/getstreams', auth)).json).toEqual([
      { listen: daemon.rangeStart, proxy_pass: `127.0.0.1:${backend.port}` },
    ]);
    expect((await daemon.get(`/removestream/${daemon.rangeStart}`, auth)).json).toEqual({ result: 'ok', errors: '' });
    expect(daemon.logs).not.toContain(token);
  });
});
