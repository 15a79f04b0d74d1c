/** Recording changes made through the API in the audit log: who, from where, what, how it ended. */

import { type AuditEvent, ConductorError, parseBackend, printable, quote } from '@stream-conductor/shared';
import type { Request, Response } from 'express';
import type { Observatory } from '../observe/observatory.js';

export type Audited = <T>(
  req: Request,
  res: Response,
  event: Pick<AuditEvent, 'action' | 'ports'> & { detail?: string },
  change: () => Promise<T>,
) => Promise<T>;

// Room for the longest valid detail (32 backends); only text that never passed validation is cut.
const MAX_DETAIL = 16_384;

/** A backend as the audit log shows it: its canonical form, or the text sent, quoted, when invalid. */
export function backendDetail(text: string): string {
  try {
    return parseBackend(text).address;
  } catch {
    return quote(text);
  }
}

/** Runs `change` and records its outcome; what it throws is thrown on unchanged. */
export function auditor(observatory: Observatory | undefined): Audited {
  return async (req, res, event, change) => {
    const base = {
      actor: String(res.locals.actor ?? 'anonymous'),
      remote: req.socket.remoteAddress ?? '',
      ...event,
      ...(event.detail === undefined ? {} : { detail: printable(event.detail, MAX_DETAIL) }),
    };
    try {
      const result = await change();
      observatory?.record({ ...base, result: 'ok' });
      return result;
    } catch (error) {
      if (error instanceof ConductorError)
        observatory?.record({
          ...base,
          result: 'refused',
          code: error.code,
          message: printable(error.message, MAX_DETAIL),
        });
      throw error;
    }
  };
}
