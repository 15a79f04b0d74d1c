/** Bearer-token authentication, compared in constant time. */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { ConductorError, ErrorCode } from '@stream-conductor/shared';

const digest = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();

/**
 * Whether an Authorization header carries `expected`. Both sides are hashed first so the
 * comparison takes the same time whatever the length or content of what was sent.
 */
export function bearerMatches(expected: string, header: string | undefined): boolean {
  const match = /^Bearer[ ]+(\S+)\s*$/i.exec(header ?? '');
  const given = match?.[1] ?? '';
  const same = timingSafeEqual(digest(expected), digest(given));
  return same && match !== null;
}

/** Paths anyone may read without a token. */
const OPEN_PATHS = new Set(['/status']);

/**
 * Express middleware: when a token is set, every path but the open ones needs it. `refuse`
 * writes the 401 answer in the shape the path's API uses.
 */
export function requireToken(
  token: string | undefined,
  refuse: (req: Request, res: Response, error: ConductorError) => void,
): (req: Request, res: Response, next: NextFunction) => void {
  return (req, res, next) => {
    if (token === undefined || OPEN_PATHS.has(req.path) || bearerMatches(token, req.get('authorization'))) {
      next();
      return;
    }
    res.set('WWW-Authenticate', 'Bearer realm="stream-conductor"');
    refuse(
      req,
      res,
      new ConductorError(ErrorCode.Unauthorized, 'missing or wrong API token', {
        hint: 'send Authorization: Bearer <token> (conductor --token or CONDUCTOR_TOKEN)',
      }),
    );
  };
}
