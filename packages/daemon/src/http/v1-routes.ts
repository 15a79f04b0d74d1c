/**
 * The v1 API: resources under /v1 with real status codes. Errors are answered by the error
 * middleware as `{"error": {"code", "message", "hint"}}`.
 */
import { Router, type Request } from 'express';
import { ConductorError, ErrorCode, parsePort } from '@stream-conductor/shared';
import type { Conductor } from '../conductor.js';

function portParam(req: Request<{ port: string }>): number {
  return parsePort(req.params.port);
}

function field(body: unknown, name: string): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ConductorError(ErrorCode.InvalidInput, 'the request body must be a JSON object');
  }
  return (body as Record<string, unknown>)[name];
}

export function v1Router(conductor: Conductor): Router {
  const router = Router();

  router.get('/status', (_req, res) => {
    res.json(conductor.status());
  });

  router.get('/streams', (_req, res) => {
    res.json({ streams: conductor.list() });
  });

  router.get('/streams/:port', (req: Request<{ port: string }>, res) => {
    const port = portParam(req);
    const stream = conductor.get(port);
    if (!stream) throw new ConductorError(ErrorCode.NotFound, `no stream listens on port ${port}`);
    res.json({ stream });
  });

  router.post('/streams', async (req, res) => {
    const port = field(req.body, 'port');
    const backend = field(req.body, 'backend');
    if (typeof port !== 'number' && typeof port !== 'string') {
      throw new ConductorError(ErrorCode.InvalidInput, 'port is required: a whole number from 1 to 65535');
    }
    if (typeof backend !== 'string') throw new ConductorError(ErrorCode.InvalidInput, 'backend is required: host:port');
    const result = await conductor.create(port, backend);
    res.status(201).json(result);
  });

  router.delete('/streams/:port', async (req: Request<{ port: string }>, res) => {
    const port = portParam(req);
    const { warnings } = await conductor.remove(port);
    res.json({ port, warnings });
  });

  router.get('/free-port', async (_req, res) => {
    const port = await conductor.freePort();
    if (port === undefined) {
      throw new ConductorError(ErrorCode.NoFreePort, 'no free port left in the port range', {
        hint: 'remove streams, or widen PORT_RANGE',
      });
    }
    res.json({ port });
  });

  return router;
}
