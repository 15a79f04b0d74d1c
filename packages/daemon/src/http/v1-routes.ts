/**
 * The v1 API: resources under /v1 with real status codes. Errors are answered by the error
 * middleware as `{"error": {"code", "message", "hint"}}`.
 */

import {
  ConductorError,
  DEFAULT_DRAIN_MS,
  DEFAULT_ROUTE_ID,
  describeBackends,
  ErrorCode,
  formatPorts,
  isRangeText,
  NO_TLS_ROUTE_ID,
  parseDuration,
  parseLabelSelector,
  parsePort,
  parsePortSpan,
  parseRoute,
  parseServerName,
  parseStreamInput,
  portsOf,
  type RouteSpec,
  routeId,
  type StreamSpec,
  type StreamView,
  simpleSpec,
} from '@stream-conductor/shared';
import { type Request, Router } from 'express';
import { type Observatory, withBackendCheck } from '../observe/observatory.js';
import { noFreePort } from '../service/free-port.js';
import type { StreamService } from '../service/service.js';
import type { Audited } from './audit.js';
import { withoutCopyPaths } from './copy-paths.js';
import { openApiDocument } from './openapi.js';

function portParam(req: Request<{ port: string }>): number {
  return parsePort(req.params.port);
}

function object(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ConductorError(ErrorCode.InvalidInput, 'the request body must be a JSON object', {
      hint: 'send Content-Type: application/json with an object such as {"port": 9000, "backend": "host:22"}',
    });
  }
  return body as Record<string, unknown>;
}

/** Reads a boolean query flag: present, 1, true or yes means on. */
function flag(value: unknown): boolean {
  if (value === undefined) return false;
  if (typeof value === 'string' && /^(|1|true|yes)$/i.test(value)) return true;
  if (typeof value === 'string' && /^(0|false|no)$/i.test(value)) return false;
  throw new ConductorError(ErrorCode.InvalidInput, `expected true or false, got ${JSON.stringify(value)}`);
}

function labelSelectors(value: unknown): Array<[string, string]> {
  if (value === undefined) return [];
  const texts = Array.isArray(value) ? value : [value];
  return texts.flatMap((text) => {
    if (typeof text !== 'string') throw new ConductorError(ErrorCode.InvalidInput, 'label must be key=value');
    return text.split(',').map((part) => parseLabelSelector(part));
  });
}

const describe = (spec: StreamSpec): string =>
  `${spec.portEnd === undefined ? '' : `ports ${formatPorts(spec)} to `}${describeBackends(spec.backends)}`;

/** Whether a PUT or apply entry names its ports (a range in the path or body, or portEnd). */
function namesSpan(body: unknown, pathIsRange = false): boolean {
  if (pathIsRange) return true;
  if (typeof body !== 'object' || body === null) return false;
  const { port, portEnd } = body as { port?: unknown; portEnd?: unknown };
  return (portEnd !== undefined && portEnd !== null) || (typeof port === 'string' && isRangeText(port));
}

/** What withBackendCheck needs to probe one route's backends. */
function routeProbeSpec(port: number, route: RouteSpec): StreamSpec {
  return { ...simpleSpec(port, route.backends[0]?.address ?? '127.0.0.1:1'), backends: route.backends };
}

export function v1Router(
  conductor: StreamService,
  now: () => Date,
  audited: Audited,
  observatory: Observatory | undefined,
): Router {
  const router = Router();
  router.use((_req, res, next) => {
    const json = res.json.bind(res);
    res.json = (body: unknown) => json(withoutCopyPaths(body));
    next();
  });

  /**
   * The port of the path: a port (a port inside a range finds the range), or a range written
   * FIRST-LAST, which must be a range the daemon has exactly (404 otherwise, naming what is there).
   */
  const portOf = (req: Request<{ port: string }>): number => {
    if (!isRangeText(req.params.port)) return portParam(req);
    const span = parsePortSpan(req.params.port);
    const stream = conductor.get(span.port);
    if (!stream || stream.port !== span.port || stream.portEnd !== span.portEnd)
      throw new ConductorError(
        ErrorCode.NotFound,
        `no stream listens on ports ${formatPorts(span)}${stream ? ` (port ${span.port} is part of ${formatPorts(stream)})` : ''}`,
      );
    return span.port;
  };

  router.get('/status', (_req, res) => {
    res.json(conductor.status());
  });

  router.get('/openapi.json', (_req, res) => {
    res.json(openApiDocument());
  });

  /** With ?stats: traffic, open connections and backend health, when the daemon watches them. */
  const withStats = async (streams: StreamView[], wanted: boolean): Promise<StreamView[]> =>
    wanted && observatory ? observatory.withStats(streams) : streams;

  router.get('/streams', async (req, res) => {
    const streams = conductor.list({ labels: labelSelectors(req.query.label) });
    res.json({ streams: await withStats(streams, flag(req.query.stats)) });
  });

  router.get('/streams/:port', async (req: Request<{ port: string }>, res) => {
    const port = portOf(req);
    const stream = conductor.get(port);
    if (!stream) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    const [shown] = await withStats([stream], flag(req.query.stats));
    res.json({ stream: shown });
  });

  // Probes the stream's backends now and answers the stream with its fresh health.
  router.post('/streams/:port/health', async (req: Request<{ port: string }>, res) => {
    const [shown] = await withStats([await conductor.checkHealth(portOf(req))], true);
    res.json({ stream: shown });
  });

  router.get('/events', (req, res) => {
    const limit = req.query.limit === undefined ? 100 : Number(req.query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
      throw new ConductorError(ErrorCode.InvalidInput, 'limit: a whole number from 1 to 1000');
    const port = req.query.port === undefined ? undefined : parsePort(String(req.query.port));
    const sinceText = req.query.since === undefined ? undefined : String(req.query.since);
    const sinceMs = sinceText === undefined ? undefined : Date.parse(sinceText);
    if (sinceMs !== undefined && Number.isNaN(sinceMs))
      throw new ConductorError(ErrorCode.InvalidInput, 'since: an ISO 8601 time');
    // Events carry UTC ISO times, compared as text: the given time in the same form.
    const since = sinceMs === undefined ? undefined : new Date(sinceMs).toISOString();
    res.json({ events: observatory?.audit.query({ limit, port, since }) ?? [] });
  });

  // Create: with a port, that port (409 when it has a stream); without, a free one.
  router.post('/streams', async (req, res) => {
    const spec = parseStreamInput(object(req.body), { portOptional: true, now: now() });
    const result = await audited(
      req,
      res,
      { action: 'create', ports: spec.port === 0 ? [] : portsOf(spec), detail: describe(spec) },
      () => withBackendCheck(observatory, spec, () => conductor.create(spec)),
    );
    res.status(201).json(result);
  });

  // Create or replace, idempotent: the same body twice changes nothing the second time.
  router.put('/streams/:port', async (req: Request<{ port: string }>, res) => {
    const path = isRangeText(req.params.port) ? parsePortSpan(req.params.port) : { port: portParam(req) };
    const body = object(req.body);
    const spec = parseStreamInput(body, { ...path, now: now() });
    const spanNamed = namesSpan(body, isRangeText(req.params.port));
    const result = await audited(req, res, { action: 'replace', ports: portsOf(spec), detail: describe(spec) }, () =>
      withBackendCheck(observatory, spec, () => conductor.put(spec, undefined, spanNamed)),
    );
    res.status(result.change === 'created' ? 201 : 200).json(result);
  });

  router.post('/streams/:port/renew', async (req: Request<{ port: string }>, res) => {
    const port = portOf(req);
    const body = object(req.body ?? {});
    const unknown = Object.keys(body).filter((key) => key !== 'ttl' && key !== 'expiresAt');
    if (unknown.length > 0)
      throw new ConductorError(ErrorCode.InvalidInput, `${unknown[0]}: unknown field (ttl or expiresAt)`);
    if ((body.ttl === undefined) === (body.expiresAt === undefined)) {
      throw new ConductorError(
        ErrorCode.InvalidInput,
        'give either ttl (e.g. "2h") or expiresAt (ISO 8601), or expiresAt: null to keep the stream for good',
      );
    }
    let expiresAt: string | undefined;
    if (body.ttl !== undefined) expiresAt = new Date(now().getTime() + parseDuration(body.ttl, 'ttl')).toISOString();
    else if (body.expiresAt !== null) {
      // Validated as part of a spec, so the rules (ISO, future, within a year) are the same.
      expiresAt = parseStreamInput({ port, backend: 'x:1', expiresAt: body.expiresAt }, { now: now() }).expiresAt;
    }
    res.json(
      await audited(
        req,
        res,
        { action: 'renew', ports: [port], detail: expiresAt === undefined ? 'never expires' : `expires ${expiresAt}` },
        () => conductor.renew(port, expiresAt),
      ),
    );
  });

  // Drain: the port refuses new connections now; the stream goes when its sessions have ended,
  // or at the deadline with its sessions cut. DELETE calls the drain off.
  router.post('/streams/:port/drain', async (req: Request<{ port: string }>, res) => {
    const port = portOf(req);
    const body = object(req.body ?? {});
    const unknown = Object.keys(body).filter((key) => key !== 'timeout');
    if (unknown.length > 0) throw new ConductorError(ErrorCode.InvalidInput, `${unknown[0]}: unknown field (timeout)`);
    const timeoutMs = body.timeout === undefined ? DEFAULT_DRAIN_MS : parseDuration(body.timeout, 'timeout');
    const until = new Date(now().getTime() + timeoutMs).toISOString();
    const answer = await audited(req, res, { action: 'drain', ports: [port], detail: `until ${until}` }, () =>
      conductor.drain(port, timeoutMs),
    );
    res.json(answer.warnings?.length ? answer : { stream: answer.stream });
  });

  router.delete('/streams/:port/drain', async (req: Request<{ port: string }>, res) => {
    const port = portOf(req);
    res.json(await audited(req, res, { action: 'undrain', ports: [port] }, () => conductor.undrain(port)));
  });

  router.delete('/streams/:port', async (req: Request<{ port: string }>, res) => {
    const port = portOf(req);
    const stream = conductor.get(port);
    const portEnd = stream?.port === port ? stream.portEnd : undefined;
    const killSessions = flag(req.query.kill_sessions);
    const { warnings } = await audited(
      req,
      res,
      { action: 'remove', ports: portsOf(stream ?? { port }), detail: killSessions ? 'sessions cut' : undefined },
      () => conductor.remove(port, { killSessions }),
    );
    res.json({ port, ...(portEnd === undefined ? {} : { portEnd }), warnings });
  });

  // Routes by TLS server name: one route added (the port made when it has no stream) or removed
  // (the last one takes the port). The route's id in the path: its name, @default or @no-tls.
  router.post('/streams/:port/routes', async (req: Request<{ port: string }>, res) => {
    const port = portParam(req);
    const route = parseRoute(object(req.body), 'route', { port });
    const id = routeId(route);
    const result = await audited(
      req,
      res,
      { action: 'route-add', ports: [port], detail: `${id} to ${describeBackends(route.backends)}` },
      // The new route's backends are probed, as a create probes a stream's.
      () => withBackendCheck(observatory, routeProbeSpec(port, route), () => conductor.addRoute(port, route)),
    );
    res.status(result.change === 'created' ? 201 : 200).json(result);
  });

  router.delete('/streams/:port/routes/:route', async (req: Request<{ port: string; route: string }>, res) => {
    const port = portParam(req);
    const given = req.params.route;
    const id = given === DEFAULT_ROUTE_ID || given === NO_TLS_ROUTE_ID ? given : parseServerName(given, 'route');
    const answer = await audited(req, res, { action: 'route-remove', ports: [port], detail: id }, () =>
      conductor.removeRoute(port, id),
    );
    res.json({ port, route: id, ...answer });
  });

  router.get('/free-port', async (_req, res) => {
    const port = await conductor.freePort();
    if (port === undefined) {
      throw noFreePort();
    }
    res.json({ port });
  });

  // Declarative: the whole desired set, answered with the plan; applied all or nothing.
  router.post('/apply', async (req, res) => {
    const body = object(req.body);
    const unknown = Object.keys(body).filter((key) => !['streams', 'prune', 'dryRun'].includes(key));
    if (unknown.length > 0)
      throw new ConductorError(ErrorCode.InvalidInput, `${unknown[0]}: unknown field (streams, prune, dryRun)`);
    if (!Array.isArray(body.streams))
      throw new ConductorError(ErrorCode.InvalidInput, 'streams: must be a list of streams');
    for (const key of ['prune', 'dryRun'] as const) {
      if (body[key] !== undefined && typeof body[key] !== 'boolean')
        throw new ConductorError(ErrorCode.InvalidInput, `${key}: must be true or false`);
    }
    const at = now();
    const specs: StreamSpec[] = body.streams.map((entry: unknown, index: number) => {
      try {
        return parseStreamInput(entry, { now: at });
      } catch (error) {
        if (error instanceof ConductorError) {
          const field = /^[A-Za-z][A-Za-z0-9.[\]]*: /.test(error.message);
          throw new ConductorError(error.code, `streams[${index}]${field ? '.' : ': '}${error.message}`, {
            hint: error.hint,
          });
        }
        throw error;
      }
    });
    const spanNamed = new Set(
      specs.filter((_spec, index) => namesSpan((body.streams as unknown[])[index])).map((spec) => spec.port),
    );
    const options = { prune: body.prune === true, dryRun: body.dryRun === true, spanNamed };
    if (options.dryRun) {
      res.json(await conductor.apply(specs, options));
      return;
    }
    const detail = `${specs.length} stream(s)${options.prune ? ', prune' : ''}`;
    res.json(
      await audited(req, res, { action: 'apply', ports: specs.map((spec) => spec.port), detail }, () =>
        conductor.apply(specs, options),
      ),
    );
  });

  return router;
}
