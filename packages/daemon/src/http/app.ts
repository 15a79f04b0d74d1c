/**
 * Builds the express application; it never listens (main.ts does), so tests can drive it with
 * their own dependencies.
 */

import { ConductorError, ErrorCode, httpStatusFor } from '@stream-conductor/shared';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from '../log.js';
import type { Observatory } from '../observe/observatory.js';
import type { StreamService } from '../service/service.js';
import { auditor } from './audit.js';
import { type ApiToken, requireRole, requireToken } from './auth.js';
import { refuseNonDecimalPorts } from './json-ports.js';
import { isLegacyPath, legacyRouter, sendLegacy } from './legacy-routes.js';
import { v1Router } from './v1-routes.js';

export interface AppDeps {
  conductor: StreamService;
  /** API tokens by name, with their roles; empty: no authentication. */
  tokens: ApiToken[];
  log: Logger;
  now?: () => Date;
  observatory?: Observatory;
}

/** Answers an error in the shape of the API the path belongs to. */
function sendError(req: Request, res: Response, error: ConductorError): void {
  const status = httpStatusFor(error.code);
  if (isLegacyPath(req.path)) {
    sendLegacy(res, status, { result: 'error', errors: error.message });
  } else {
    res.status(status).json(error.toBody());
  }
}

/** Turns what express and body-parser throw into our errors; anything else is a bug. */
function toConductorError(error: unknown, log: Logger): ConductorError {
  if (error instanceof ConductorError) return error;
  const status = (error as { status?: unknown }).status;
  const type = (error as { type?: unknown }).type;
  if (type === 'entity.too.large' || status === 413) {
    return new ConductorError(ErrorCode.PayloadTooLarge, 'the request body is too large');
  }
  if (type === 'entity.parse.failed')
    return new ConductorError(ErrorCode.InvalidInput, 'the request body is not valid JSON');
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new ConductorError(ErrorCode.InvalidInput, 'the request is malformed');
  }
  log.error('unexpected error', { error });
  return new ConductorError(ErrorCode.Internal, 'internal error');
}

export function createApp(deps: AppDeps): express.Express {
  const { conductor, log } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.use((req, res, next) => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      log.info('request', {
        method: req.method,
        path: req.originalUrl.split('?')[0],
        status: res.statusCode,
        ms: Number((process.hrtime.bigint() - started) / 1000n) / 1000,
        remote: req.socket.remoteAddress,
      });
    });
    next();
  });

  app.use(requireToken(deps.tokens, sendError));
  // A declarative apply carries the whole set of streams; everything else is small. A port must be
  // written in decimal digits, which only the body's text shows (see json-ports.ts). Read as
  // latin1: UTF-8's multi-byte characters hold no ASCII byte, so JSON's structure reads the same.
  const verify = (_req: unknown, _res: unknown, body: Buffer): void => refuseNonDecimalPorts(body.toString('latin1'));
  app.use('/v1/apply', express.json({ limit: '16mb', strict: true, verify }));
  app.use(express.json({ limit: '64kb', strict: true, verify }));
  // After the body: a dry-run apply only reads (see access.ts).
  app.use(
    requireRole(sendError, (req, actor) =>
      log.warn('refused a call to a read token', { token: actor, method: req.method, path: req.path }),
    ),
  );

  const audited = auditor(deps.observatory);
  app.use('/v1', v1Router(conductor, deps.now ?? (() => new Date()), audited, deps.observatory));
  app.use(legacyRouter(conductor, log, audited, deps.observatory));

  app.get('/metrics', async (_req, res) => {
    if (!deps.observatory) throw new ConductorError(ErrorCode.NoRoute, 'metrics are not enabled');
    res.type(deps.observatory.metrics.contentType).send(await deps.observatory.metrics.render());
  });

  app.use((req: Request, res: Response) => {
    const error = isLegacyPath(req.path)
      ? new ConductorError(
          ErrorCode.NoRoute,
          'no such legacy call: the paths are /status, /getstreams, /createstream/<port>/<host:port>, /removestream/<port>, /hasstream/<port> and /getfreeport (all GET)',
        )
      : new ConductorError(ErrorCode.NoRoute, `no route for ${req.method} ${req.path}`);
    sendError(req, res, error);
  });

  app.use((error: unknown, req: Request, res: Response, _next: NextFunction) => {
    if (res.headersSent) {
      log.error('error after the answer started', { error });
      res.end();
      return;
    }
    sendError(req, res, toConductorError(error, log));
  });

  return app;
}
