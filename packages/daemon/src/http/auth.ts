/** Bearer-token authentication, compared in constant time. */
import { createHash, timingSafeEqual } from 'node:crypto';
import { ConductorError, ErrorCode } from '@stream-conductor/shared';
import type { NextFunction, Request, Response } from 'express';

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

/**
 * The name of the token an Authorization header carries, or undefined. Every token is compared,
 * whichever matches, so the time taken does not tell which one (or how much of one) was right.
 */
export function tokenName(
  tokens: Array<{ name: string; token: string }>,
  header: string | undefined,
): string | undefined {
  let found: string | undefined;
  for (const { name, token } of tokens) if (bearerMatches(token, header) && found === undefined) found = name;
  return found;
}

/** Paths anyone may read without a token. */
const OPEN_PATHS = new Set(['/status']);

/**
 * Express middleware: when tokens are set, every path but the open ones needs one. `refuse`
 * writes the 401 answer in the shape the path's API uses.
 */
export function requireToken(
  tokens: Array<{ name: string; token: string }>,
  refuse: (req: Request, res: Response, error: ConductorError) => void,
): (req: Request, res: Response, next: NextFunction) => void {
  return (req, res, next) => {
    // Who is asking, for the audit log: the token's name, or anonymous when there is no auth.
    const actor = tokens.length === 0 ? 'anonymous' : tokenName(tokens, req.get('authorization'));
    res.locals.actor = actor ?? 'anonymous';
    if (tokens.length === 0 || actor !== undefined || OPEN_PATHS.has(req.path)) {
      next();
      return;
    }
    res.set('WWW-Authenticate', 'Bearer realm="stream-conductor"');
    // A client without the token keeps no connection: this one closes once the 401 has left.
    res.set('Connection', 'close');
    refuse(
      req,
      res,
      new ConductorError(ErrorCode.Unauthorized, 'missing or wrong API token', {
        hint: 'send Authorization: Bearer <token> (conductor --token or CONDUCTOR_TOKEN)',
      }),
    );
  };
}
