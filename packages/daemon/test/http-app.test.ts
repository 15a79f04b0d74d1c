/**
 * The HTTP surface through `createApp` with a fake service, over a real loopback socket: status
 * codes, the error bodies of both APIs, authentication, the input limits, and that a request the
 * HTTP layer refuses never reaches the service.
 */

import type { Server } from 'node:http';
import { afterEach, describe, expect, it } from '@jest/globals';
import {
  type ApplyPlan,
  type ApplyResult,
  ConductorError,
  type CreateResult,
  type DaemonStatus,
  type DrainAnswer,
  ErrorCode,
  httpStatusFor,
  type RouteSpec,
  type StreamSpec,
  type StreamView,
} from '@stream-conductor/shared';
import { type HttpAnswer, requestJson } from '../../../tests/helpers/http.js';
import { createApp } from '../src/http/app.js';
import type { ApiToken } from '../src/http/auth.js';
import type { LogFields, Logger } from '../src/log.js';
// The one import of the service interface: moving it means changing this line only.
import type { StreamService } from '../src/service/service.js';

/** One call the service received: the method and its arguments. */
type Call = [method: keyof StreamService, ...args: unknown[]];

const view = (spec: Pick<StreamSpec, 'port'> & Partial<StreamSpec>): StreamView => ({
  protocol: 'tcp',
  backends: [{ address: '127.0.0.1:22' }],
  balance: 'round-robin',
  allow: [],
  proxyProtocol: false,
  labels: {},
  createdAt: '2026-12-04T00:00:00.000Z',
  ...spec,
  state: 'live',
});

const STATUS: DaemonStatus = {
  version: '9.9.9',
  mode: 'managed',
  portRange: { start: 9000, end: 9009 },
  streams: { total: 0, live: 0, failed: 0 },
  nginx: { state: 'running', restarts: 0 },
  nginxInstances: [],
  failed: [],
  problems: [],
  startedAt: '2026-12-04T00:00:00.000Z',
};

/**
 * A StreamService that records every call and answers from `streams`; `failWith` makes every
 * change throw it instead.
 */
class FakeService implements StreamService {
  readonly calls: Call[] = [];
  readonly streams = new Map<number, StreamView>();
  failWith: unknown;
  free: number | undefined = 9005;

  private change<T>(call: Call, answer: () => T): Promise<T> {
    this.calls.push(call);
    if (this.failWith !== undefined) return Promise.reject(this.failWith);
    return Promise.resolve(answer());
  }

  create(spec: StreamSpec): Promise<CreateResult> {
    return this.change(['create', spec], () => ({
      stream: view({ ...spec, port: spec.port || 9001 }),
      warnings: [],
      change: 'created',
    }));
  }
  put(spec: StreamSpec): Promise<CreateResult> {
    return this.change(['put', spec], () => ({
      stream: view(spec),
      warnings: [],
      change: this.streams.has(spec.port) ? 'replaced' : 'created',
    }));
  }
  renew(port: number, expiresAt: string | undefined): Promise<CreateResult> {
    return this.change(['renew', port, expiresAt], () => ({
      stream: view({ port, ...(expiresAt ? { expiresAt } : {}) }),
      warnings: [],
    }));
  }
  remove(port: string | number, options?: { killSessions?: boolean }): Promise<{ warnings: string[] }> {
    return this.change(['remove', port, options], () => ({ warnings: [] }));
  }
  drain(port: number, timeoutMs: number): Promise<DrainAnswer> {
    return this.change(['drain', port, timeoutMs], () => ({ stream: { ...view({ port }), state: 'draining' } }));
  }
  undrain(port: number): Promise<CreateResult> {
    return this.change(['undrain', port], () => ({ stream: view({ port }), warnings: [], change: 'replaced' }));
  }
  addRoute(port: number, route: RouteSpec): Promise<CreateResult> {
    return this.change(['addRoute', port, route], () => ({ stream: view({ port }), warnings: [], change: 'replaced' }));
  }
  removeRoute(port: number, id: string): Promise<{ removed: 'route'; warnings: string[] }> {
    return this.change(['removeRoute', port, id], () => ({ removed: 'route' as const, warnings: [] }));
  }
  plan(specs: StreamSpec[], prune: boolean): ApplyPlan {
    this.calls.push(['plan', specs, prune]);
    return { create: specs.map((spec) => spec.port), update: [], delete: [], unchanged: [] };
  }
  apply(specs: StreamSpec[], options: { prune: boolean; dryRun: boolean }): Promise<ApplyResult> {
    return this.change(['apply', specs, options], () => ({
      dryRun: options.dryRun,
      applied: !options.dryRun,
      plan: { create: specs.map((spec) => spec.port), update: [], delete: [], unchanged: [] },
      warnings: [],
    }));
  }
  freePort(): Promise<number | undefined> {
    return this.change(['freePort'], () => this.free);
  }
  list(): StreamView[] {
    this.calls.push(['list']);
    return [...this.streams.values()];
  }
  get(port: number): StreamView | undefined {
    this.calls.push(['get', port]);
    return this.streams.get(port);
  }
  checkHealth(port: number): Promise<StreamView> {
    return this.change(['checkHealth', port], () => this.streams.get(port) ?? view({ port }));
  }
  status(): DaemonStatus {
    this.calls.push(['status']);
    return STATUS;
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** A logger that keeps its error lines, so a test can tell an expected refusal from a bug. */
function quietLogger(errors: Array<[string, LogFields | undefined]>): Logger {
  const log: Logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: () => undefined,
    error: (msg, fields) => errors.push([msg, fields]),
    child: () => log,
  };
  return log;
}

interface Harness {
  service: FakeService;
  errors: Array<[string, LogFields | undefined]>;
  request(
    method: string,
    path: string,
    options?: { body?: string | object; headers?: Record<string, string> },
  ): Promise<HttpAnswer>;
}

const servers: Server[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((done) => server.close(done));
  }
});

/** The app on a loopback port of its own, with a fresh fake service. */
async function harness(tokens: ApiToken[] = []): Promise<Harness> {
  const service = new FakeService();
  const errors: Array<[string, LogFields | undefined]> = [];
  const app = createApp({
    conductor: service,
    tokens,
    log: quietLogger(errors),
    now: () => new Date('2026-12-04T12:00:00.000Z'),
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise<void>((done) => server.once('listening', done));
  const { port } = server.address() as { port: number };
  return {
    service,
    errors,
    request: (method, path, options = {}) =>
      requestJson(`http://127.0.0.1:${port}${path}`, method, options.body, options.headers),
  };
}

const BACKEND = '127.0.0.1:22';

describe('status codes of the v1 API', () => {
  it("answers 201 for a create, 201 then 200 for a put, 200 for a delete, with the service's result", async () => {
    const { request, service } = await harness();
    const created = await request('POST', '/v1/streams', { body: { port: 9000, backend: BACKEND } });
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({ stream: { port: 9000, state: 'live' }, warnings: [], change: 'created' });

    expect((await request('PUT', '/v1/streams/9002', { body: { backend: BACKEND } })).status).toBe(201);
    service.streams.set(9002, view({ port: 9002 }));
    expect((await request('PUT', '/v1/streams/9002', { body: { backend: BACKEND } })).status).toBe(200);

    const removed = await request('DELETE', '/v1/streams/9002?kill_sessions=1');
    expect(removed.status).toBe(200);
    expect(removed.json).toEqual({ port: 9002, warnings: [] });
    expect(service.calls.at(-1)).toEqual(['remove', 9002, { killSessions: true }]);
  });

  it('answers a stream it has 200 and one it has not 404 NOT_FOUND', async () => {
    const { request, service } = await harness();
    service.streams.set(9003, view({ port: 9003 }));
    expect((await request('GET', '/v1/streams/9003')).json).toMatchObject({ stream: { port: 9003 } });
    const missing = await request('GET', '/v1/streams/9004');
    expect(missing.status).toBe(404);
    expect(missing.json).toEqual({ error: { code: 'NOT_FOUND', message: 'no stream listens on port 9004' } });
  });

  it('answers no free port 409 NO_FREE_PORT with its hint', async () => {
    const { request, service } = await harness();
    expect((await request('GET', '/v1/free-port')).json).toEqual({ port: 9005 });
    service.free = undefined;
    const none = await request('GET', '/v1/free-port');
    expect(none.status).toBe(409);
    expect(none.json).toEqual({
      error: {
        code: 'NO_FREE_PORT',
        message: 'no free port left in the port range',
        hint: 'remove streams, or widen PORT_RANGE',
      },
    });
  });

  it('answers an unknown route 404 NO_ROUTE in the shape of the API the path belongs to', async () => {
    const { request, service } = await harness();
    const v1 = await request('GET', '/v1/nope');
    expect(v1.status).toBe(404);
    expect(v1.json).toEqual({ error: { code: 'NO_ROUTE', message: 'no route for GET /v1/nope' } });
    const legacy = await request('POST', '/createstream/9000/127.0.0.1:22');
    expect(legacy.status).toBe(404);
    expect(legacy.text).toMatch(/^\{"result": "error", "errors": "no such legacy call: the paths are \/status, /);
    expect(service.calls).toEqual([]);
  });
});

describe('routes by server name', () => {
  it('passes a parsed route to addRoute and a route id to removeRoute; a bad one reaches no service call', async () => {
    const { request, service } = await harness();
    const added = await request('POST', '/v1/streams/9000/routes', {
      body: { sni: 'Git.Example.com', backend: BACKEND },
    });
    expect(added.status).toBe(200);
    const removed = await request('DELETE', '/v1/streams/9000/routes/@default');
    expect([removed.status, removed.json]).toEqual([
      200,
      { port: 9000, route: '@default', removed: 'route', warnings: [] },
    ]);
    expect((await request('DELETE', '/v1/streams/9000/routes/*.db.example.com')).status).toBe(200);
    const bad = await request('POST', '/v1/streams/9000/routes', { body: { sni: 'a.*.b', backend: BACKEND } });
    expect([bad.status, (bad.json as { error: { message: string } }).error.message]).toEqual([
      400,
      'route.sni: "a.*.b": * may only be the whole first label (*.example.com)',
    ]);
    expect((await request('DELETE', '/v1/streams/9000/routes/10.0.0.1')).status).toBe(400);
    expect(service.calls).toEqual([
      ['addRoute', 9000, { kind: 'name', name: 'git.example.com', backends: [{ address: BACKEND }] }],
      ['removeRoute', 9000, '@default'],
      ['removeRoute', 9000, '*.db.example.com'],
    ]);
  });
});

describe('drain', () => {
  it('passes the timeout to the service (10 minutes when not given) and answers the draining stream', async () => {
    const { request, service } = await harness();
    const given = await request('POST', '/v1/streams/9000/drain', { body: { timeout: '90s' } });
    expect(given.status).toBe(200);
    expect((given.json as { stream: StreamView }).stream).toMatchObject({ port: 9000, state: 'draining' });
    expect((await request('POST', '/v1/streams/9001/drain')).status).toBe(200);
    const cancelled = await request('DELETE', '/v1/streams/9000/drain');
    expect(cancelled.status).toBe(200);
    expect((cancelled.json as CreateResult).change).toBe('replaced');
    expect(service.calls).toEqual([
      ['drain', 9000, 90_000],
      ['drain', 9001, 600_000],
      ['undrain', 9000],
    ]);
  });

  it('answers a drain the service cannot do in its mode 501 NOT_SUPPORTED with its hint', async () => {
    const { request, service } = await harness();
    service.failWith = new ConductorError(
      ErrorCode.NotSupported,
      'a drain is not available in fleet mode (port 9000)',
      {
        hint: 'remove the stream',
      },
    );
    const answer = await request('POST', '/v1/streams/9000/drain');
    expect(answer.status).toBe(501);
    expect(answer.json).toEqual({
      error: {
        code: 'NOT_SUPPORTED',
        message: 'a drain is not available in fleet mode (port 9000)',
        hint: 'remove the stream',
      },
    });
  });
});

describe('errors the service throws', () => {
  const codes = Object.values(ErrorCode);

  it.each(codes)('%s: the v1 API answers its status and {error: {code, message, hint}}', async (code) => {
    const { request, service, errors } = await harness();
    service.failWith = new ConductorError(code, `refused with ${code}`, { hint: `do something about ${code}` });
    const answer = await request('POST', '/v1/streams', { body: { port: 9000, backend: BACKEND } });
    expect(answer.status).toBe(httpStatusFor(code));
    expect(answer.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(answer.json).toEqual({
      error: { code, message: `refused with ${code}`, hint: `do something about ${code}` },
    });
    expect(errors).toEqual([]);
  });

  it.each(codes)('%s: the legacy API answers 200 with "result": "error" as old scripts expect', async (code) => {
    const { request, service } = await harness();
    service.failWith = new ConductorError(code, `refused with ${code}`, { hint: 'never shown by the legacy API' });
    const answer = await request('GET', `/createstream/9000/${BACKEND}`);
    expect(answer.status).toBe(200);
    expect(answer.text).toBe(`{"result": "error", "errors": "refused with ${code}"}`);
  });

  it('answers a bug 500 INTERNAL without its message, and logs it', async () => {
    const { request, service, errors } = await harness();
    service.failWith = new Error('secret detail of /var/lib/conductor');
    const v1 = await request('POST', '/v1/streams', { body: { port: 9000, backend: BACKEND } });
    expect(v1.status).toBe(500);
    expect(v1.json).toEqual({ error: { code: 'INTERNAL', message: 'internal error' } });
    const legacy = await request('GET', `/createstream/9000/${BACKEND}`);
    expect(legacy.status).toBe(500);
    expect(legacy.text).toBe('{"result": "error", "errors": "internal error"}');
    expect(errors.map(([msg]) => msg)).toEqual(['unexpected error', 'legacy request failed']);
  });

  it('answers a legacy remove of a port without a stream {"result": "error", "error": "not found"}', async () => {
    const { request, service } = await harness();
    service.failWith = new ConductorError(ErrorCode.NotFound, 'no stream listens on port 9000');
    const answer = await request('GET', '/removestream/9000');
    expect(answer.status).toBe(200);
    expect(answer.text).toBe('{"result": "error", "error": "not found"}');
  });
});

describe('the legacy API on success', () => {
  it("answers the old service's JSON byte for byte", async () => {
    const { request, service } = await harness();
    expect((await request('GET', '/status')).text).toBe('{"version": "9.9.9", "available_ports": "range(9000, 9010)"}');
    expect((await request('GET', `/createstream/9000/${BACKEND}`)).text).toBe('{"result": "ok", "errors": ""}');
    service.streams.set(9000, view({ port: 9000 }));
    expect((await request('GET', '/getstreams')).text).toBe('[{"listen": 9000, "proxy_pass": "127.0.0.1:22"}]');
    expect((await request('GET', '/hasstream/9000')).text).toBe('{"result": "true"}');
    expect((await request('GET', '/getfreeport')).text).toBe('{"result": "ok", "port": 9005}');
    service.free = undefined;
    expect((await request('GET', '/getfreeport')).text).toBe('{"result": "none available"}');
    expect((await request('GET', '/removestream/9000')).text).toBe('{"result": "ok", "errors": ""}');
  });
});

describe('authentication', () => {
  const TOKENS = [
    { name: 'alice', token: 'alice-token-0123456789' },
    { name: 'bob', token: 'bob-token-9876543210' },
  ];
  const UNAUTHORIZED = {
    error: {
      code: 'UNAUTHORIZED',
      message: 'missing or wrong API token',
      hint: 'send Authorization: Bearer <token> (conductor --token or CONDUCTOR_TOKEN)',
    },
  };

  it.each([
    ['no token', {}],
    ['a wrong token', { authorization: 'Bearer wrong-token' }],
    ['a right token without the Bearer scheme', { authorization: 'alice-token-0123456789' }],
    ['a right token under another scheme', { authorization: 'Basic alice-token-0123456789' }],
    ['a token with a right one as its prefix', { authorization: 'Bearer alice-token-01234567890' }],
  ])(
    'refuses %s with 401, a challenge and a closed connection, without calling the service',
    async (_what, headers) => {
      const { request, service } = await harness(TOKENS);
      for (const [method, path, body] of [
        ['POST', '/v1/streams', { port: 9000, backend: BACKEND }],
        ['GET', '/v1/streams', undefined],
        ['GET', '/v1/status', undefined],
        ['DELETE', '/v1/streams/9000', undefined],
      ] as const) {
        const answer = await request(method, path, { headers, ...(body ? { body } : {}) });
        expect(answer.status).toBe(401);
        expect(answer.json).toEqual(UNAUTHORIZED);
        expect(answer.headers.get('www-authenticate')).toBe('Bearer realm="stream-conductor"');
        expect(answer.headers.get('connection')).toBe('close');
      }
      const legacy = await request('GET', `/createstream/9000/${BACKEND}`, { headers });
      expect(legacy.status).toBe(401);
      expect(legacy.text).toBe('{"result": "error", "errors": "missing or wrong API token"}');
      expect(service.calls).toEqual([]);
    },
  );

  it('refuses a body it would not parse with 401, not 400 or 413: the token is checked first', async () => {
    const { request, service } = await harness(TOKENS);
    expect((await request('POST', '/v1/streams', { body: '{not json' })).status).toBe(401);
    expect((await request('POST', '/v1/streams', { body: { port: 9000, backend: 'x'.repeat(100_000) } })).status).toBe(
      401,
    );
    expect(service.calls).toEqual([]);
  });

  it('takes every configured token, with the scheme in any case', async () => {
    const { request, service } = await harness(TOKENS);
    for (const authorization of [
      'Bearer alice-token-0123456789',
      'bearer bob-token-9876543210',
      'BEARER   alice-token-0123456789  ',
    ]) {
      expect(
        (await request('POST', '/v1/streams', { body: { port: 9000, backend: BACKEND }, headers: { authorization } }))
          .status,
      ).toBe(201);
    }
    expect(service.calls.map(([method]) => method)).toEqual(['create', 'create', 'create']);
  });

  it('leaves the legacy /status open, and only it', async () => {
    const { request } = await harness(TOKENS);
    expect((await request('GET', '/status')).status).toBe(200);
    expect((await request('GET', '/getstreams')).status).toBe(401);
    expect((await request('GET', '/v1/status')).status).toBe(401);
    expect((await request('GET', '/metrics')).status).toBe(401);
  });

  it('asks for nothing when no token is configured', async () => {
    const { request } = await harness([]);
    expect((await request('POST', '/v1/streams', { body: { port: 9000, backend: BACKEND } })).status).toBe(201);
    expect((await request('GET', '/getstreams', { headers: { authorization: 'Bearer anything' } })).status).toBe(200);
  });
});

describe('token roles', () => {
  const TOKENS: ApiToken[] = [
    { name: 'ops', token: 'ops-token-0123456789', role: 'write' },
    { name: 'monitoring', token: 'monitoring-token-0123', role: 'read' },
    { name: 'legacy', token: 'legacy-token-0123456789' },
  ];
  const as = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

  it('a read token is answered 403 on every change and the service never hears of it', async () => {
    const { request, service } = await harness(TOKENS);
    for (const [method, path, body] of [
      ['POST', '/v1/streams', { port: 9000, backend: BACKEND }],
      ['PUT', '/v1/streams/9000', { backend: BACKEND }],
      ['DELETE', '/v1/streams/9000', undefined],
      ['POST', '/v1/streams/9000/renew', { ttl: '1h' }],
      ['POST', '/v1/streams/9000/drain', undefined],
      ['DELETE', '/v1/streams/9000/drain', undefined],
      ['POST', '/v1/apply', { streams: [{ port: 9000, backend: BACKEND }] }],
      ['GET', '/v1/nothing-here', undefined],
    ] as const) {
      const answer = await request(method, path, { ...as('monitoring-token-0123'), ...(body ? { body } : {}) });
      expect({ method, path, status: answer.status, body: answer.json }).toEqual({
        method,
        path,
        status: 403,
        body: {
          error: {
            code: 'FORBIDDEN',
            message: `the token monitoring has the read role, which may only look: ${method} ${path} needs the write role`,
            hint: 'use a token with the write role (a line "<name> <token> write" in the daemon\'s CONDUCTOR_TOKEN_FILE)',
          },
        },
      });
    }
    const legacy = await request('GET', `/removestream/9000`, as('monitoring-token-0123'));
    expect(legacy.status).toBe(403);
    expect(legacy.text).toBe(
      '{"result": "error", "errors": "the token monitoring has the read role, which may only look: GET /removestream/9000 needs the write role"}',
    );
    expect(service.calls).toEqual([]);
  });

  it('a read token reads, probes and plans; a write token, or one without a role, changes', async () => {
    const { request, service } = await harness(TOKENS);
    service.streams.set(9000, view({ port: 9000 }));
    expect((await request('GET', '/v1/streams', as('monitoring-token-0123'))).status).toBe(200);
    expect((await request('GET', '/getstreams', as('monitoring-token-0123'))).status).toBe(200);
    const plan = await request('POST', '/v1/apply', {
      ...as('monitoring-token-0123'),
      body: { streams: [{ port: 9000, backend: BACKEND }], dryRun: true },
    });
    expect(plan.status).toBe(200);
    expect((await request('DELETE', '/v1/streams/9000', as('ops-token-0123456789'))).status).toBe(200);
    const created = await request('POST', '/v1/streams', {
      ...as('legacy-token-0123456789'),
      body: { port: 9001, backend: BACKEND },
    });
    expect(created.status).toBe(201);
    expect(service.calls.map((call) => call[0])).toEqual(['list', 'list', 'apply', 'get', 'remove', 'create']);
    expect(JSON.stringify(service.calls[2])).toContain('"dryRun":true');
  });
});

describe('input limits (the service is never called)', () => {
  it('refuses a body over 64 KiB with 413 PAYLOAD_TOO_LARGE; /v1/apply takes more', async () => {
    const { request, service } = await harness();
    const big = { port: 9000, backend: BACKEND, labels: { note: 'x'.repeat(70_000) } };
    const refused = await request('POST', '/v1/streams', { body: big });
    expect(refused.status).toBe(413);
    expect(refused.json).toEqual({ error: { code: 'PAYLOAD_TOO_LARGE', message: 'the request body is too large' } });
    const legacyShaped = await request('POST', '/getstreams', { body: big });
    expect(legacyShaped.status).toBe(413);
    expect(legacyShaped.text).toBe('{"result": "error", "errors": "the request body is too large"}');
    expect(service.calls).toEqual([]);

    // 2,000 streams are about 100 kB: over the general limit, well under the apply's 16 MiB.
    const streams = Array.from({ length: 2000 }, (_, i) => ({ port: 10_000 + i, backend: `127.0.0.1:${1000 + i}` }));
    const applied = await request('POST', '/v1/apply', { body: { streams, dryRun: true } });
    expect(applied.status).toBe(200);
    expect(service.calls.map(([method]) => method)).toEqual(['apply']);
  });

  it('refuses an apply over 16 MiB with 413', async () => {
    const { request, service } = await harness();
    const answer = await request('POST', '/v1/apply', {
      body: `{"streams": [], "pad": "${'x'.repeat(16 * 1024 * 1024)}"}`,
    });
    expect(answer.status).toBe(413);
    expect(answer.json).toEqual({ error: { code: 'PAYLOAD_TOO_LARGE', message: 'the request body is too large' } });
    expect(service.calls).toEqual([]);
  });

  it('refuses a body that is not JSON, or not a JSON object, with 400 INVALID_INPUT', async () => {
    const { request, service } = await harness();
    const broken = await request('POST', '/v1/streams', { body: '{"port": 9000,' });
    expect(broken.status).toBe(400);
    expect(broken.json).toEqual({ error: { code: 'INVALID_INPUT', message: 'the request body is not valid JSON' } });
    // strict: a bare value is not taken as a body
    expect((await request('POST', '/v1/streams', { body: '"9000"' })).status).toBe(400);
    const list = await request('POST', '/v1/streams', { body: [{ port: 9000 }] });
    expect(list.status).toBe(400);
    expect((list.json as { error: { message: string; hint: string } }).error).toMatchObject({
      message: 'the request body must be a JSON object',
    });
    const text = await request('POST', '/v1/streams', { body: 'port=9000', headers: { 'content-type': 'text/plain' } });
    expect(text.status).toBe(400);
    expect(text.json).toMatchObject({
      error: { code: 'INVALID_INPUT', message: 'the request body must be a JSON object' },
    });
    expect(service.calls).toEqual([]);
  });

  it('refuses a value nested thousands of levels deep with 400, naming the field', async () => {
    const { request, service } = await harness();
    const depth = 20_000;
    for (const [path, field] of [
      ['/v1/streams', 'backend'],
      ['/v1/streams', 'labels'],
      ['/v1/apply', 'streams'],
    ] as const) {
      const deep = `${'['.repeat(depth)}${']'.repeat(depth)}`;
      const body =
        path === '/v1/apply'
          ? `{"streams": [{"port": 9000, "backend": "${BACKEND}", "labels": ${deep}}]}`
          : `{"port": 9000, "backend": "${BACKEND}", "${field}": ${deep}}`;
      const answer = await request('POST', path, { body });
      expect(answer.status).toBe(400);
      const { error } = answer.json as { error: { code: string; message: string } };
      expect(error.code).toBe('INVALID_INPUT');
      expect(error.message).toMatch(path === '/v1/apply' ? /^streams\[0\]\.labels/ : new RegExp(`^${field}`));
    }
    expect(service.calls).toEqual([]);
  });

  it.each(['9e3', '9000.0', '9.0e3', '-9000', '0x2328'])(
    'refuses a body port written %s, naming it as written',
    async (written) => {
      const { request, service } = await harness();
      const own = await request('POST', '/v1/streams', { body: `{"port": ${written}, "backend": "${BACKEND}"}` });
      const inApply = await request('POST', '/v1/apply', {
        body: `{"streams": [{"port": 9001, "backend": "${BACKEND}"}, {"port": ${written}, "backend": "${BACKEND}"}]}`,
      });
      if (written === '0x2328') {
        // not JSON at all
        expect(own.json).toEqual({ error: { code: 'INVALID_INPUT', message: 'the request body is not valid JSON' } });
      } else {
        expect(own.json).toEqual({
          error: { code: 'INVALID_INPUT', message: `port must be a whole number from 1 to 65535, got "${written}"` },
        });
        expect(inApply.json).toEqual({
          error: {
            code: 'INVALID_INPUT',
            message: `streams[1]: port must be a whole number from 1 to 65535, got "${written}"`,
          },
        });
      }
      expect([own.status, inApply.status]).toEqual([400, 400]);
      expect(service.calls).toEqual([]);
    },
  );

  it('takes a port under another key (a label) as the spec rules, not as a port', async () => {
    const { request, service } = await harness();
    const answer = await request('POST', '/v1/streams', {
      body: `{"port": 9000, "backend": "${BACKEND}", "labels": {"port": 1e3}}`,
    });
    expect(answer.status).toBe(400);
    expect((answer.json as { error: { message: string } }).error.message).toMatch(/^labels\.port/);
    expect(service.calls).toEqual([]);
  });

  it.each(['0', '65536', '9e3', '0x2328', '9000.0', '-1', ' 9000'])(
    'refuses the v1 path port %j with 400 INVALID_INPUT',
    async (text) => {
      const { request, service } = await harness();
      for (const [method, path] of [
        ['GET', `/v1/streams/${text}`],
        ['DELETE', `/v1/streams/${text}`],
        ['POST', `/v1/streams/${text}/renew`],
        ['POST', `/v1/streams/${text}/health`],
      ] as const) {
        const answer = await request(method, path, method === 'POST' ? { body: { ttl: '1h' } } : {});
        expect(answer.status).toBe(400);
        expect((answer.json as { error: { code: string } }).error.code).toBe('INVALID_INPUT');
      }
      expect(service.calls).toEqual([]);
    },
  );

  it.each(['9e3', '0x2328', '9000.0', '-1', 'abc'])(
    'answers a legacy path port %j 404 in the old shape, as the old routes did not match it',
    async (text) => {
      const { request, service } = await harness();
      for (const path of [`/createstream/${text}/${BACKEND}`, `/removestream/${text}`, `/hasstream/${text}`]) {
        const answer = await request('GET', path);
        expect(answer.status).toBe(404);
        expect(answer.text).toBe(
          `{"result": "error", "errors": ${JSON.stringify(`port must be a whole number, got ${JSON.stringify(text)}`)}}`,
        );
      }
      expect(service.calls).toEqual([]);
    },
  );

  it('answers a legacy whole number out of 1-65535 as the old service did, without creating', async () => {
    const { request, service } = await harness();
    const created = await request('GET', `/createstream/70000/${BACKEND}`);
    expect(created.status).toBe(200);
    expect(created.text).toBe(
      '{"result": "error", "errors": "port must be a whole number from 1 to 65535, got 70000"}',
    );
    expect((await request('GET', '/hasstream/123456')).text).toBe('{"result": "false"}');
    expect((await request('GET', '/hasstream/0')).text).toBe('{"result": "false"}');
    const badBackend = await request('GET', '/createstream/9000/no-port-here');
    expect(badBackend.status).toBe(200);
    expect((badBackend.json as { result: string }).result).toBe('error');
    expect(service.calls).toEqual([]);
  });

  it('refuses unknown fields and wrong types of an apply and a renew before the service', async () => {
    const { request, service } = await harness();
    const refusals: Array<[string, unknown, string]> = [
      ['/v1/apply', { streams: [], force: true }, 'force: unknown field (streams, prune, dryRun)'],
      ['/v1/apply', { streams: {} }, 'streams: must be a list of streams'],
      ['/v1/apply', { streams: [], prune: 'yes' }, 'prune: must be true or false'],
      ['/v1/apply', { streams: [{ port: 9000, backend: BACKEND }, { port: 9001 }] }, 'streams[1]'],
      ['/v1/streams/9000/renew', { ttl: '1h', later: true }, 'later: unknown field (ttl or expiresAt)'],
      ['/v1/streams/9000/renew', {}, 'give either ttl'],
      ['/v1/streams/9000/drain', { timeout: '10m', force: true }, 'force: unknown field (timeout)'],
      ['/v1/streams/9000/drain', { timeout: '10 minutes' }, 'timeout: must be a duration'],
      ['/v1/streams/9000/drain', { timeout: 0 }, 'timeout: must be at least 1 ms'],
      ['/v1/streams/9000/drain', { timeout: '400d' }, 'timeout: must be at most 365 days'],
      ['/v1/streams/9000/drain', [], 'must be a JSON object'],
    ];
    for (const [path, body, message] of refusals) {
      const answer = await request('POST', path, { body: body as object });
      expect(answer.status).toBe(400);
      expect((answer.json as { error: { message: string } }).error.message).toContain(message);
    }
    expect((await request('GET', '/v1/events?limit=0')).status).toBe(400);
    expect(service.calls).toEqual([]);
  });
});
