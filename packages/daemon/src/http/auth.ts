/** Bearer-token authentication, compared in constant time. */
import { createHash, timingSafeEqual } from 'node:crypto';
import { ConductorError, ErrorCode } from '@stream-conductor/shared';
import type { NextFunction, Request, Response } from 'express';
import type { TokenRole } from '../config/tokens.js';
import { accessFor } from './access.js';

/** A token as the API checks it; a token without a role may do everything (write). */
export interface ApiToken {
  name: string;
  token: string;
  role?: TokenRole;
}

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
export function tokenName(tokens: ApiToken[], header: string | undefined): string | undefined {
  return tokenFor(tokens, header)?.name;
}

/** The token an Authorization header carries, or undefined; every token is compared, as above. */
export function tokenFor(tokens: ApiToken[], header: string | undefined): ApiToken | undefined {
  let found: ApiToken | undefined;
  for (const candidate of tokens) if (bearerMatches(candidate.token, header) && found === undefined) found = candidate;
  return found;
}

/** Paths anyone may read without a token. */
const OPEN_PATHS = new Set(['/status']);

/**
 * Express middleware: when tokens are set, every path but the open ones needs one. `refuse`
 * writes the 401 answer in the shape the path's API uses.
 */
export function requireToken(
  tokens: ApiToken[],
  refuse: (req: Request, res: Response, error: ConductorError) => void,
): (req: Request, res: Response, next: NextFunction) => void {
  return (req, res, next) => {
    // Who is asking, for the audit log: the token's name, or anonymous when there is no auth.
    const token = tokens.length === 0 ? undefined : tokenFor(tokens, req.get('authorization'));
    const actor = tokens.length === 0 ? 'anonymous' : token?.name;
    res.locals.actor = actor ?? 'anonymous';
    // Without authentication everyone may do everything; a client without a token gets past this
    // check only on the open paths, which read; a token without a role may do everything.
    const role: TokenRole = tokens.length === 0 ? 'write' : token === undefined ? 'read' : (token.role ?? 'write');
    res.locals.role = role;
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

/**
 * Express middleware, after the body is parsed (a dry-run apply is told by its body): a token whose
 * role does not cover the call is answered 403 FORBIDDEN, naming the token, its role and the role
 * the call needs. `refused` hears of each refusal (the daemon logs it).
 */
export function requireRole(
  refuse: (req: Request, res: Response, error: ConductorError) => void,
  refused?: (req: Request, actor: string) => void,
): (req: Request, res: Response, next: NextFunction) => void {
  return (req, res, next) => {
    const role = res.locals.role as TokenRole | undefined;
    if (role === 'write' || accessFor(req.method, req.path, req.body) === 'read') {
      next();
      return;
    }
    const actor = String(res.locals.actor ?? 'anonymous');
    refused?.(req, actor);
    refuse(
      req,
      res,
      new ConductorError(
        ErrorCode.Forbidden,
        `the token ${actor} has the read role, which may only look: ${req.method} ${req.path} needs the write role`,
        {
          hint: 'use a token with the write role (a line "<name> <token> write" in the daemon\'s CONDUCTOR_TOKEN_FILE)',
        },
      ),
    );
  };
}
