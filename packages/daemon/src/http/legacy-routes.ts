/**
 * The legacy API, kept byte-compatible for curl one-liners and runbook scripts: GET only, the old
 * paths, the old field names and value types, answered as the old service's JSON. Refusals keep
 * answering 200 with `"result": "error"` as scripts expect; a port that is not a whole number is a
 * 404, as it did not match the old routes.
 */

import { ConductorError, ErrorCode, formatPorts, parsePort, simpleSpec } from '@stream-conductor/shared';
import { type Request, type Response, Router } from 'express';
import type { Logger } from '../log.js';
import { type Observatory, withBackendCheck } from '../observe/observatory.js';
import type { StreamService } from '../service/service.js';
import { type Audited, backendDetail } from './audit.js';
import { pythonJson } from './python-json.js';

export function sendLegacy(res: Response, status: number, body: unknown): void {
  res.status(status).type('application/json').send(pythonJson(body));
}

const WHOLE_NUMBER = /^[0-9]+$/;

/** The legacy paths' prefixes, to answer their own errors in their own shape. */
export const LEGACY_PREFIXES = [
  '/status',
  '/getstreams',
  '/createstream',
  '/removestream',
  '/hasstream',
  '/getfreeport',
];

export function isLegacyPath(path: string): boolean {
  return LEGACY_PREFIXES.some((prefix) => path === prefix || path.startsWith(`${prefix}/`));
}

/** `range(start, stop)` as Python prints it: stop is exclusive, so PORT_RANGE's end + 1. */
export function pythonRange(start: number, end: number): string {
  return `range(${start}, ${end + 1})`;
}

/**
 * The legacy API removes single ports only: a range's first port would close all its ports from
 * a path that names one, so it is refused, pointing to the v1 API (a port inside a range is
 * refused by the service: a range is removed whole).
 */
function refuseLegacyRangeRemoval(conductor: StreamService, port: number): void {
  const stream = conductor.get(port);
  // A port that routes by server name carries several services (one per route): the legacy API,
  // which knows one backend per port, does not remove them all from a path that names one.
  if (stream?.port === port && stream.routes !== undefined)
    throw new ConductorError(
      ErrorCode.Conflict,
      `port ${port} routes by TLS server name (${stream.routes.length} route(s)): the legacy API removes plain streams only; remove one route with conductor rm ${port} --sni NAME, or the whole port with DELETE /v1/streams/${port} (conductor rm ${port})`,
    );
  if (stream?.port !== port || stream.portEnd === undefined) return;
  const range = formatPorts(stream);
  throw new ConductorError(
    ErrorCode.Conflict,
    `port ${port} is the first port of the range ${range}: the legacy API removes single ports only; remove the range with DELETE /v1/streams/${range} (conductor rm ${range})`,
  );
}

export function legacyRouter(
  conductor: StreamService,
  log: Logger,
  audited: Audited,
  observatory: Observatory | undefined,
): Router {
  const router = Router();

  const notWholeNumber = (res: Response, value: string): void => {
    sendLegacy(res, 404, { result: 'error', errors: `port must be a whole number, got ${JSON.stringify(value)}` });
  };
  const failure = (res: Response, error: unknown): void => {
    if (error instanceof ConductorError) {
      sendLegacy(res, 200, { result: 'error', errors: error.message });
      return;
    }
    log.error('legacy request failed', { error });
    sendLegacy(res, 500, { result: 'error', errors: 'internal error' });
  };

  router.get('/status', (_req, res) => {
    const { portRange, version } = conductor.status();
    sendLegacy(res, 200, { version, available_ports: pythonRange(portRange.start, portRange.end) });
  });

  router.get('/getstreams', (_req, res) => {
    sendLegacy(
      res,
      200,
      // A stream with several backends shows its first one: the old service knew only one. A port
      // range is one entry, its first port, with `listen_end` its last (single ports as before).
      conductor.list().map((stream) => ({
        listen: stream.port,
        ...(stream.portEnd === undefined ? {} : { listen_end: stream.portEnd }),
        proxy_pass: stream.backends[0]?.address ?? '',
      })),
    );
  });

  router.get('/createstream/:port/:backend', async (req: Request<{ port: string; backend: string }>, res) => {
    const { port, backend } = req.params;
    if (!WHOLE_NUMBER.test(port)) {
      notWholeNumber(res, port);
      return;
    }
    try {
      const { warnings } = await audited(
        req,
        res,
        { action: 'create', ports: [Number(port)], detail: backendDetail(backend) },
        () => {
          const spec = simpleSpec(parsePort(port), backend);
          return withBackendCheck(observatory, spec, () => conductor.create(spec));
        },
      );
      sendLegacy(res, 200, { result: 'ok', errors: warnings.join('; ') });
    } catch (error) {
      failure(res, error);
    }
  });

  router.get('/removestream/:port', async (req: Request<{ port: string }>, res) => {
    const { port } = req.params;
    if (!WHOLE_NUMBER.test(port)) {
      notWholeNumber(res, port);
      return;
    }
    try {
      // Parsed inside the audited change, so a port out of 1-65535 is recorded as refused and
      // answered as the old service did (200, "result": "error").
      const { warnings } = await audited(req, res, { action: 'remove', ports: [Number(port)] }, async () => {
        const parsed = parsePort(port);
        refuseLegacyRangeRemoval(conductor, parsed);
        return conductor.remove(parsed);
      });
      sendLegacy(res, 200, { result: 'ok', errors: warnings.join('; ') });
    } catch (error) {
      if (error instanceof ConductorError && error.code === ErrorCode.NotFound) {
        sendLegacy(res, 200, { result: 'error', error: 'not found' });
        return;
      }
      failure(res, error);
    }
  });

  router.get('/hasstream/:port', (req: Request<{ port: string }>, res) => {
    const { port } = req.params;
    if (!WHOLE_NUMBER.test(port)) {
      notWholeNumber(res, port);
      return;
    }
    const found = /^[1-9][0-9]{0,4}$/.test(port) && conductor.get(Number(port)) !== undefined;
    sendLegacy(res, 200, { result: found ? 'true' : 'false' });
  });

  router.get('/getfreeport', async (_req, res) => {
    try {
      const port = await conductor.freePort();
      sendLegacy(res, 200, port === undefined ? { result: 'none available' } : { result: 'ok', port });
    } catch (error) {
      failure(res, error);
    }
  });

  return router;
}
